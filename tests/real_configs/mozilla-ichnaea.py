# Source: mozilla/ichnaea, ichnaea/gunicorn_config.py (the older, sync
# version). Written from a description, not copied. The harness binds with
# -b and serves ichnaea_app:wsgi_app.
from random import randint

worker_class = "sync"
timeout = 60
max_requests = 100000
errorlog = "-"
loglevel = "warning"
workers = 2


def post_worker_init(worker):
    # Hand-made jitter: each worker gets its own max_requests.
    before = worker.max_requests
    worker.max_requests += randint(0, max_requests // 10)
    assert worker.max_requests >= before
    # Build the app now, not on the first request.
    worker.wsgi(None, None)
