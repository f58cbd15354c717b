# Source: WonderCode22/servicenow_component, service_now_service/gunicorn.py.
# Written from a description, not copied. The harness binds with -b and sets
# PROMETHEUS_MULTIPROC_DIR to an empty directory.
import os

from prometheus_client import multiprocess

bind = "0.0.0.0:5000"
workers = 4
threads = 4
if os.environ.get("MODE") == "dev":
    reload = True


def child_exit(server, worker):
    multiprocess.mark_process_dead(worker.pid)
