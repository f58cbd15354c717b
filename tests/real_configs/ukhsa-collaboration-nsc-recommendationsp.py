# Source: ukhsa-collaboration/nsc-recommendationsp, gunicorn.conf.py.
# Written from a description, not copied. The Server header and
# SERVER_SOFTWARE are replaced by an opaque string; GET /info/software shows
# what the app saw. The harness binds with -b.
import gunicorn

gunicorn.SERVER_SOFTWARE = "nsc"
workers = 4
threads = 4
bind = "0.0.0.0:8000"


def pre_request(worker, req):
    worker.log.info(f"Request: {req.method} ({req.path}): {req.headers}")


def post_request(worker, req, environ, resp):
    worker.log.info(f"Response: {req.method} ({req.path}): {resp.status}")
