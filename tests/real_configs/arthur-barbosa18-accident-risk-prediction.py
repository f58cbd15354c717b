# Source: arthur-barbosa18/accident-risk-prediction, gunicorn.conf.py.
# Written from a description, not copied. The harness binds with -b and
# serves risk_app:app, importable only through `pythonpath`; GUNICORN_THREADS
# and GUNICORN_WORKERS come as strings when set (unset here).
import os

bind = "0.0.0.0:80"
max_requests = 1000
max_requests_jitter = 100
preload_app = True
pythonpath = os.path.join(os.path.dirname(os.path.abspath(__file__)), "risk_src")

os.environ["HOST"] = "localhost"  # a side effect of loading the config

threads = os.environ.get("GUNICORN_THREADS", 4)
workers = os.environ.get("GUNICORN_WORKERS", 2)
timeout = 10
worker_class = "gthread"
worker_tmp_dir = "/dev/shm"

# statsd_host = "localhost:9125"
# statsd_prefix = "accident-risk"
