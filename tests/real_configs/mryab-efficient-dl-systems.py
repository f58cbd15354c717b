# Source: mryab/efficient-dl-systems, week06_deployment/04_metrics/gunicorn.py.
# Written from a description, not copied. The harness binds with -b and sets
# PROMETHEUS_MULTIPROC_DIR to an empty directory.
from prometheus_flask_exporter.multiprocess import GunicornInternalPrometheusMetrics

bind = "0.0.0.0:8080"
workers = 1


def child_exit(server, worker):
    GunicornInternalPrometheusMetrics.mark_process_dead_on_child_exit(worker.pid)
