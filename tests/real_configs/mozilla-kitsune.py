# Source: mozilla/kitsune, wsgi/config.py. Written from a description, not
# copied. The source's default worker class is gevent; the harness sets
# GUNICORN_WORKER_CLASS=gthread, PORT and WSGI_NUM_WORKERS=2.
from os import getenv

bind = "0.0.0.0:{}".format(getenv("PORT", 8000))
workers = int(getenv("WSGI_NUM_WORKERS", 4))
threads = int(getenv("WSGI_NUM_THREADS", 2))
accesslog = "-"
errorlog = "-"
loglevel = getenv("WSGI_LOG_LEVEL", "info")
keepalive = int(getenv("WSGI_KEEP_ALIVE", 2))
timeout = int(getenv("WSGI_TIMEOUT", 30))
graceful_timeout = int(getenv("WSGI_GRACEFUL_TIMEOUT", 30))
worker_connections = int(getenv("WSGI_WORKER_CONNECTIONS", 1000))
worker_tmp_dir = getenv("WSGI_WORKER_TMP_DIR", "/dev/shm")
worker_class = getenv("GUNICORN_WORKER_CLASS", "gevent")
reload = getenv("DEV", False)
