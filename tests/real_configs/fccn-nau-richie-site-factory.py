# Source: fccn/nau-richie-site-factory, docker/files/usr/local/etc/gunicorn/app.py.
# Written from a description, not copied. `bind` is a list; the harness
# binds with -b.
import traceback
from io import StringIO

bind = ["0.0.0.0:8000"]
name = "app"  # not a config-file setting: ignored
python_path = "/app/sites/nau/src/backend"  # typo for pythonpath: ignored
graceful_timeout = 90
timeout = 90
workers = 3
accesslog = "-"
errorlog = "-"
loglevel = "info"


def worker_abort(worker):
    buffer = StringIO()
    traceback.print_stack(file=buffer)
    worker.log.critical("Worker aborted:\n%s", buffer.getvalue())
