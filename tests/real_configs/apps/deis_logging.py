# Source: deis/controller, rootfs/deis/gunicorn/logging.py: a logger class
# that leaves health checks out of the access log.
from gunicorn.glogging import Logger


class Logging(Logger):
    def access(self, resp, req, environ, request_time):
        # health check endpoints are only logged in debug mode
        if req.path in ["/readiness", "/healthz"]:
            return
        Logger.access(self, resp, req, environ, request_time)
