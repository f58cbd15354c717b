# Source: ryan-marsh119/Secure-Tasker-Updated, backend/gunicorn.conf.py.
# Written from a description, not copied. The harness binds with -b.
workers = 2
forwarded_allow_ips = "*"
accesslog = "-"
access_log_format = '%({x-forwarded-for}i)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'
