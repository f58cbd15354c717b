# Source: alphagov/notifications-api, gunicorn_config.py (with
# alphagov/notifications-utils' defaults). Written from a description, not
# copied. gevent family. The harness sets PORT.
import os

from notify_gunicorn_defaults import set_gunicorn_defaults

set_gunicorn_defaults(globals())

workers = 4
worker_class = "gevent"
worker_connections = 8
statsd_host = "{}:8125".format(os.getenv("STATSD_HOST"))  # "None:8125" when unset
keepalive = 0
timeout = int(os.getenv("HTTP_SERVE_TIMEOUT_SECONDS", 30))


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
