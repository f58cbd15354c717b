# Source: rantahar/aware_filter, gunicorn.conf.py. Written from a
# description, not copied. `ssl_version = 5` ("TLS 1.2" says the source).
# The source's files are under /tmp; the harness makes them in the working
# directory and binds with -b.
certfile = "server.pem"
keyfile = "server.key"
ssl_version = 5  # TLS 1.2
bind = "0.0.0.0:3446"
worker_class = "sync"
workers = 2
max_requests = 1000
max_requests_jitter = 100
preload_app = True
