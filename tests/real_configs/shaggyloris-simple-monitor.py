# Source: shaggyloris/simple-monitor, gunicorn_conf.py. Written from a
# description, not copied. The harness binds with -b.
bind = "0.0.0.0:5000"
backlog = 2048
workers = 2
worker_connections = 1000
keepalive = 2

access_logfile = "-"  # not setting names: ignored
error_logfile = "-"
log_level = "debug"


def post_fork(server, worker):
    server.log.info("Worker spawned (pid: %s)", worker.pid)


def pre_fork(server, worker):
    pass


def pre_exec(server):
    server.log.info("Forked child, re-executing.")


def when_read(server):  # typo for when_ready: never called
    server.log.info("Server is ready. Spawning workers")


def worker_int(worker):
    worker.log.info("worker received INT or QUIT signal")


def worker_abort(worker):
    worker.log.info("worker received SIGABRT signal")
