# Source: joeyorlando/self_driving_car, config/gunicorn.py. Written from a
# description, not copied. The harness binds with -b.
import multiprocessing

bind = "0.0.0.0:5000"
workers = (multiprocessing.cpu_count() * 2) + 1
accesslog = "-"
loglevel = "INFO"
proc_name = "gunicorn_api"
preload = True  # the setting is preload_app: ignored
access_log_format = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" \"%({Host}i)s\"'


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
