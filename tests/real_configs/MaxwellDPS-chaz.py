# Source: MaxwellDPS/chaz, src/chaz/gunicorn.conf.py. Written from a
# description, not copied. gevent family; greenpg stands in for psycogreen
# (django_db_geventpool is left out). The source runs as user/group 69; not
# here. The harness binds with -b; the app comes from `wsgi_app`.
from gevent import monkey

monkey.patch_all()

import multiprocessing

import greenpg

bind = "0.0.0.0:8888"
workers = multiprocessing.cpu_count() * 2 + 1
worker_class = "gevent"
threads = 10
keep_alive = 5  # typo for keepalive: ignored
limit_request_fields = 10000
timeout = 300
graceful_timeout = 120
max_requests = 1500
wsgi_app = "project.wsgi"


def post_fork(server, worker):
    greenpg.patch_psycopg()
    monkey.patch_all()
    worker.log.info("Made Psycopg Green")
