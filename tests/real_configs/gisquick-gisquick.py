# Source: gisquick/gisquick, docker/django/gunicorn_conf.py. Written from a
# description, not copied. Every GUNICORN_* variable becomes a setting, as a
# string. The harness sets GUNICORN_BIND=127.0.0.1:<port>,
# GUNICORN_WORKERS=2 and GUNICORN_TIMEOUT=45.
import os

bind = "0.0.0.0:8002"
loglevel = "info"
errorlog = "-"
accesslog = "-"

for k, v in os.environ.items():
    if k.startswith("GUNICORN_"):
        key = k.split("_", 1)[1].lower()
        globals()[key] = v
