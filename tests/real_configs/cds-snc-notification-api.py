# Source: cds-snc/notification-api, gunicorn_config.py. Written from a
# description, not copied. gevent family. The harness sets PORT.
import os
import sys
import time
import traceback

import gunicorn

workers = 4
worker_class = "gevent"
worker_connections = 256
bind = "0.0.0.0:{}".format(os.getenv("PORT"))
accesslog = "-"

gunicorn.SERVER = "Undisclosed"

on_aws = os.environ.get("NOTIFY_ENVIRONMENT", "") in ["production", "staging", "scratch", "dev"]
if on_aws:
    keepalive = 75
    graceful_timeout = 85
    timeout = 90

start_time = time.time()


def on_starting(server):
    server.log.info("Starting Notifications API")


def worker_abort(worker):
    worker.log.info("worker received SIGABRT {}".format(worker.pid))
    for threadId, stack in sys._current_frames().items():
        worker.log.error("".join(traceback.format_stack(stack)))


def on_exit(server):
    elapsed = time.time() - start_time
    server.log.info("Stopping Notifications API")
    server.log.info("Time running: {:.1f} s".format(elapsed))


def worker_int(worker):
    worker.log.info("worker: received SIGINT {}".format(worker.pid))
