# Source: cmendesce/znn-python, config.py. Written from a description, not
# copied. The harness binds with -b, sets METRICS_PORT to a free port and
# PROMETHEUS_MULTIPROC_DIR to an empty directory.
import os
from multiprocessing import cpu_count

from prometheus_flask_exporter.multiprocess import GunicornPrometheusMetrics

loglevel = "info"
workers = cpu_count() * 2 + 1


def when_ready(server):
    GunicornPrometheusMetrics.start_http_server_when_ready(int(os.getenv("METRICS_PORT")))


def child_exit(server, worker):
    GunicornPrometheusMetrics.mark_process_dead_on_child_exit(worker.pid)
