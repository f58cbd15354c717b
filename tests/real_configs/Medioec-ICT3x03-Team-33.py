# Source: Medioec/ICT3x03-Team-33, cinema-booking/common/gunicorn_conf.py.
# Written from a description, not copied. Integer ssl_version and cert_reqs
# (1 = optional client certificate), a cipher string. The harness makes
# the certificates in the working directory, binds with -b and sends no
# client certificate.
worker_tmp_dir = "/dev/shm"
graceful_timeout = 120
timeout = 120
keepalive = 5
threads = 3
bind = "0.0.0.0:443"

keyfile = "server.key"
certfile = "server.pem"
ca_certs = "ca.pem"
ssl_version = 2
cert_reqs = 1
ciphers = "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-GCM-SHA256"
ssl_options = {"ssl_version": 2}  # not a setting: ignored
preload = True  # not preload_app: ignored
