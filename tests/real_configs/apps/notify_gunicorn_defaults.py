# Source: alphagov/notifications-utils, notifications_utils/gunicorn/defaults.py:
# a library function that fills a gunicorn config module's globals() with
# settings and hooks. Written from a description, not copied.
import logging
import os
import sys
import traceback

import gunicorn
from gunicorn.glogging import CONFIG_DEFAULTS


def on_starting(server):
    server.log.info("Starting Notifications app", extra={"process_": "gunicorn"})


def on_exit(server):
    server.log.info("Stopping Notifications app", extra={"process_": "gunicorn"})


def post_fork(server, worker):
    # Quieten the root logger's handlers in the workers.
    for handler in logging.getLogger().handlers:
        handler.setLevel(logging.ERROR)


def worker_int(worker):
    worker.log.info("worker: received SIGINT %s", worker.pid, extra={"process_": "gunicorn"})


def worker_abort(worker):
    worker.log.info("worker received SIGABRT %s", worker.pid)
    for _threadid, stack in sys._current_frames().items():
        worker.log.error("".join(traceback.format_stack(stack)))


def set_gunicorn_defaults(globals_dict: dict):
    # Hide the Server header's version.
    gunicorn.SERVER_SOFTWARE = "None"
    gunicorn.SERVER = "None"
    globals_dict.update(
        bind=f"0.0.0.0:{os.getenv('PORT', '8080')}",
        control_socket_disable=True,
        disable_redirect_access_to_syslog=True,
        logconfig_dict={
            **CONFIG_DEFAULTS,
            "loggers": {
                **CONFIG_DEFAULTS["loggers"],
                "gunicorn.error": {
                    **CONFIG_DEFAULTS["loggers"]["gunicorn.error"],
                    "propagate": False,
                },
                "gunicorn.access": {
                    **CONFIG_DEFAULTS["loggers"]["gunicorn.access"],
                    "level": "CRITICAL",
                },
            },
            "formatters": {
                "generic": {
                    "class": "notify_json_formatter.JSONFormatter",
                    "format": "ext://notify_json_formatter.LOG_FORMAT",
                    "datefmt": "ext://notify_json_formatter.TIME_FORMAT",
                },
            },
        },
        on_starting=on_starting,
        on_exit=on_exit,
        post_fork=post_fork,
        worker_int=worker_int,
        worker_abort=worker_abort,
    )
