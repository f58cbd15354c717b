# Source: nofusscomputing/centurion_erp_migrated, includes/etc/gunicorn.conf.py.
# Written from a description, not copied. The source runs 10 workers; 2
# here keep the test short. The harness binds with -b (over the unix
# socket) and sends X-Real-Ip; GET /info/header/X-Real-Ip shows it.
access_logfile = "-"  # not a setting name: ignored
access_log_format = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %({x-forwarded-for}i)s'
bind = "unix:/run/gunicorn.sock"
forwarded_allow_ips = "*"
forwarder_headers = "X-REAL-IP,X-FORWARDED-FOR,X-FORWARDED-PROTO"
workers = 2
