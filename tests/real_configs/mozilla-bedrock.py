# Source: mozilla/bedrock, wsgi/config.py. Written from a description, not
# copied. Settings arrive as strings from the environment. The source's
# default worker class is meinheld's (not installed); the harness sets
# GUNICORN_WORKER_CLASS=sync, WEB_CONCURRENCY=2 (a string) and PORT.
from os import getenv

bind = f"0.0.0.0:{getenv('PORT', '8000')}"
workers = getenv("WEB_CONCURRENCY", 2)
accesslog = "-"
errorlog = "-"
loglevel = getenv("LOGLEVEL", "info")
worker_tmp_dir = "/dev/shm"

# Larger keep-alive values may be needed when directly talking to ELB
keepalive = getenv("WSGI_KEEP_ALIVE", 2)

worker_class = getenv("GUNICORN_WORKER_CLASS", "meinheld.gmeinheld.MeinheldWorker")
worker_connections = getenv("GUNICORN_WORKER_CONNECTIONS", "1000")


def post_fork(server, worker):
    server.log.info("Worker spawned (pid: %s)", worker.pid)
