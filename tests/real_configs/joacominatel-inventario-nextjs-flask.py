# Source: joacominatel/inventario-nextjs-flask, backend/config/gunicorn_config.py.
# Written from a description, not copied. The harness sets
# GUNICORN_BIND=127.0.0.1:<port> and sends X-Forwarded-Protocol: ssl.
import os

workers = int(os.environ.get("GUNICORN_PROCESSES", "2"))
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8010")

forwarded_allow_ips = "*"
secure_scheme_headers = {
    "X-FORWARDED-PROTOCOL": "ssl",
    "X-FORWARDED-PROTO": "https",
    "X-FORWARDED-SSL": "on",
}
