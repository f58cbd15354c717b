# Source: toddbirchard/broiestbot-db, gunicorn.conf.py. Written from a
# description, not copied. With no known ENVIRONMENT the config raises while
# loading, so neither server is expected to start. The app comes from
# `wsgi_app`; the harness binds with -b.
import os

from dotenv import load_dotenv

basedir = os.path.abspath(os.path.dirname(__file__))
load_dotenv(os.path.join(basedir, ".env.broiestbot"))

ENVIRONMENT = os.getenv("ENVIRONMENT")

proc_name = "broiestbot-db"
wsgi_app = "wsgi:app"
bind = "unix:broiestbot-db.sock"
threads = 4
workers = 2

if ENVIRONMENT == "development":
    reload = True
    workers = 1
    threads = 1
    bind = ["127.0.0.1:8000"]
elif ENVIRONMENT == "production":
    daemon = True
    accesslog = "/var/log/broiestbot-db/access.log"
    errorlog = "/var/log/broiestbot-db/error.log"
    loglevel = "trace"
    dogstatsd_tags = "env:prod,service:broiestbot-db,language:python"
    access_log_format = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'
else:
    raise ValueError(f"Unknown environment {ENVIRONMENT!r}: cannot configure gunicorn.")
