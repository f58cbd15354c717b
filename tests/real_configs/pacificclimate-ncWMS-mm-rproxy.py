# Source: pacificclimate/ncWMS-mm-rproxy, docker/production/gunicorn.config.py.
# Written from a description, not copied. print_config = True would print
# the settings and exit; deployments override it, and everything else,
# through GUNICORN_* variables written into locals(). The harness sets
# GUNICORN_PRINT_CONFIG=False, GUNICORN_BIND=127.0.0.1:<port> and
# GUNICORN_WORKERS=2.
import os

logconfig = "./ncwms_logging.config"
print_config = True
bind = ":8000"

for k, v in os.environ.items():
    if k.startswith("GUNICORN_"):
        key = k.split("_", 1)[1].lower()
        locals()[key] = v
