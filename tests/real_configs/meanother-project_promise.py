# Source: meanother/project_promise, config/gunicorn_config.py. Written from
# a description, not copied. The harness binds with -b and serves
# promise_app:app, importable only through `pythonpath`.
import os

command = "/home/www/venv/bin/gunicorn"  # a removed setting: ignored
pythonpath = os.path.join(os.path.dirname(os.path.abspath(__file__)), "promise_config")
bind = "0.0.0.0:8283"
workers = 5
limit_request_field = 32000  # typo: ignored
limit_request_field_size = 0
raw_env = "DJANGO_SETTINGS_MODULE=config.settings"  # one string, not a list
errorlog = "gunicorn_error.log"
accesslog = "gunicorn_access.log"
loglevel = "info"
access_log_format = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'
redirect_stderr = True  # supervisor keys pasted in: ignored
autorestart = True


def post_fork(server, worker):
    server.log.info("Worker spawned (pid: %s)", worker.pid)


def pre_fork(server, worker):
    pass


def pre_exec(server):
    server.log.info("Forked child, re-executing.")


def when_ready(server):
    server.log.info("Server is ready. Spawning workers")


def worker_int(worker):
    worker.log.info("worker received INT or QUIT signal")


def worker_abort(worker):
    worker.log.info("worker received SIGABRT signal")
