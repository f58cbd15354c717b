# Source: craig8/UUDEX, server/src/gunicorn_direct.conf.py with
# server_handlers/gunicorn_handler.py (mutual TLS). Written from a
# description, not copied. The harness makes the certificates (server.pem,
# server.key, ca.pem in the working directory), binds with -b and sends a
# client certificate; GET /info/header/X-User-Cn shows what the worker
# class read from it.
import ssl

bind = "0.0.0.0:3546"
worker_class = "uudex_handler.CustomWorker"
ca_certs = "ca.pem"
certfile = "server.pem"
keyfile = "server.key"
cert_reqs = ssl.CERT_REQUIRED
do_handshake_on_connect = True
