# Source: sunnyyuanz/ufy_app_ai, gunicorn_config.py. Written from a
# description, not copied. `ssl_version` as a name. The source's key and
# certificate are under /etc/ssl; the harness makes them in the working
# directory and binds with -b.
bind = "0.0.0.0:443"
workers = 3
timeout = 120
ssl_version = "TLS"
keyfile = "server.key"
certfile = "server.pem"
