# Source: hackersandslackers/flask-assets-tutorial, gunicorn.conf.py. Written
# from a description, not copied. .env selects the development branch
# (reload, a list bind); the production branch daemonizes, which the
# harness cannot follow. dogstatsd_tags is production-only in the source; it
# is set for both here so that the test covers it, with statsd_host at the
# harness's unused UDP port (STATSD_ADDR). The harness binds with -b; the
# app comes from `wsgi_app`.
import os

from dotenv import load_dotenv

basedir = os.path.abspath(os.path.dirname(__file__))
load_dotenv(os.path.join(basedir, ".env"))

ENVIRONMENT = os.getenv("ENVIRONMENT")

proc_name = "flaskassets"
wsgi_app = "wsgi:app"
bind = "unix:flask.sock"
threads = 4
workers = 2
statsd_host = os.getenv("STATSD_ADDR")
dogstatsd_tags = "env:prod,service:flaskassets,language:python"

if ENVIRONMENT == "development":
    reload = True
    workers = 1
    threads = 1
    bind = ["127.0.0.1:8000"]
elif ENVIRONMENT == "production":
    daemon = True
    accesslog = "/var/log/flaskassets/access.log"
    errorlog = "/var/log/flaskassets/error.log"
    loglevel = "trace"
