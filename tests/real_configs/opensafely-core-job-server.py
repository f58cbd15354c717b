# Source: opensafely-core/job-server, gunicorn.conf.py with
# services/logging.py. Written from a description, not copied. The source
# runs 9 workers; 3 here keep the test short. The harness binds with -b.
import os

from jobserver_logging import logging_config_dict

accesslog = "-"
errorlog = "-"
workers = 3
timeout = 50
port = 8000  # not a setting: ignored
bind = "0.0.0.0"

logconfig_dict = logging_config_dict


def post_fork(server, worker):
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "jobserver.settings")
    server.log.info("Worker spawned (pid: %s)", worker.pid)
    from airlock_tracing import setup_default_tracing

    setup_default_tracing()
