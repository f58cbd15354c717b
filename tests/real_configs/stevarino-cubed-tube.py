# Source: stevarino/cubed-tube, hermit_tube/gunicorn_conf.py. Written from a
# description, not copied. The harness binds with -b (over the unix socket
# below). gunicorn refuses the file: umask '007' is no Python int literal
# (int('007', 0) fails), and raw_env holds an empty string, which gunicorn
# also refuses ("environment setting '' invalid"). Neither server is
# expected to start.
workers = 5
raw_env = ["PROMETHEUS_MULTIPROC_DIR=./prometheus_tmp", ""]
bind = "unix:hermit-tube.socket"
umask = "007"
accesslog = "access.log"


def post_fork(server, worker):
    server.log.info("Worker spawned (pid: %s)", worker.pid)


def on_starting(server):
    server.log.info("Starting hermit-tube")


def when_ready(server):
    server.log.info("Server is ready.")


def when_ready(server):  # noqa: F811 - defined twice in the source; this one wins
    server.log.info("Server is ready. Spawning workers")


def pre_fork(server, worker):
    worker.log.info("Forking worker")


def pre_exec(server):
    server.log.info("Forked child, re-executing.")


def worker_int(worker):
    worker.log.info("worker received INT or QUIT signal")


def worker_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
