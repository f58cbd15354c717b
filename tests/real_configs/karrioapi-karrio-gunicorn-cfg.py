# Source: karrioapi/karrio, apps/api/gunicorn-cfg.py (a dash in the name)
# with apps/api/karrio/server/workers.py. Written from a description, not
# copied. The harness sets KARRIO_HTTP_HOST, KARRIO_HTTP_PORT and
# KARRIO_WORKERS=2, and names the worker class with -k (this file does not
# name it).
import decouple

KARRIO_HTTP_HOST = decouple.config("KARRIO_HTTP_HOST", default="0.0.0.0")
KARRIO_HTTP_PORT = decouple.config("KARRIO_HTTP_PORT", default=5002, cast=int)

bind = f"{KARRIO_HTTP_HOST}:{KARRIO_HTTP_PORT}"
accesslog = "-"
workers = decouple.config("KARRIO_WORKERS", default=2, cast=int)
loglevel = "debug"
capture_output = True
enable_stdio_inheritance = True
# preload_app is not set: it does not work with the UvicornWorker.
