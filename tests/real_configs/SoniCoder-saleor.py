# Source: SoniCoder/saleor, gunicorn_config.py. Written from a description,
# not copied. The harness binds with -b and sends X-Forwarded-Proto: https;
# GET /info/scheme shows the scheme the app saw.
forwarded_allow_ips = "*"
secure_scheme_headers = {"X-FORWARDED-PROTO": "https"}
# access_log_format = '%({X-Forwarded-For}i)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %(D)s'
