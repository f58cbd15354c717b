# Source: Manigetz81/DigitalSizing, gunicorn.conf.py. Written from a
# description, not copied. The harness binds with -b and sends
# X-Forwarded-Ssl: on.
bind = "0.0.0.0:8000"
workers = 2
secure_scheme_headers = {
    "X-FORWARDED-PROTOCOL": "ssl",
    "X-FORWARDED-PROTO": "https",
    "X-FORWARDED-SSL": "on",
}
forwarded_allow_ips = "*"
user = None
group = None
tmp_upload_dir = None
max_requests = 1000
max_requests_jitter = 50
