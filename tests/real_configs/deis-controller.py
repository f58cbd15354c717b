# Source: deis/controller, rootfs/deis/gunicorn/config.py with
# rootfs/deis/gunicorn/logging.py. Written from a description, not copied.
# The source's pidfile is /tmp/gunicorn.pid; a relative one here keeps runs
# apart. The harness binds with -b (over the host-only bind) and sets
# GUNICORN_WORKERS=2.
import faulthandler
import os
import traceback
from os.path import dirname, realpath

faulthandler.enable()

bind = "0.0.0.0"

try:
    workers = int(os.environ.get("GUNICORN_WORKERS", "not set"))
    if workers < 1:
        raise ValueError()
except (NameError, ValueError):
    workers = (os.cpu_count() or 4) * 4 + 1

pythonpath = dirname(dirname(dirname(realpath(__file__))))
timeout = 1200
pidfile = "gunicorn.pid"
logger_class = "deis_logging.Logging"
loglevel = "info"
errorlog = "-"
accesslog = "-"
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s "%(a)s"'


def worker_int(worker):
    """Print a stack trace when a worker receives a SIGINT or SIGQUIT signal."""
    worker.log.warning("worker terminated")
    traceback.print_stack()


def worker_abort(worker):
    """Print a stack trace when a worker receives a SIGABRT signal."""
    worker.log.warning("worker aborted")
    traceback.print_stack()
