# Source: rayfok/intrin_posthoc_haidm, haidm/gunicorn.conf.py. Written from
# a description, not copied. The access log's name is computed when the
# config loads (logs/ exists in the project). The harness binds with -b.
import os
import time

workers = os.environ.get("WORKERS", 4)
loglevel = os.environ.get("LOG_LEVEL", "info")
accesslog = f"logs/gunicorn-{time.time()}.log"
preload = True  # not preload_app: ignored


def post_request(worker, req, environ, resp):
    worker.log.info(f"{req.method} {req.path}?{req.query} {resp.status}")
