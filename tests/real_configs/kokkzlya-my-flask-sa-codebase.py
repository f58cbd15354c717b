# Source: kokkzlya/my-flask-sa-codebase, src/myproject/gunicorn_cfg.py.
# Written from a description, not copied. gevent family; greenpg stands in
# for psycogreen. The harness binds with -b.
import gevent
import greenpg

bind = "0.0.0.0:5000"
forwarded_allow_ips = "*"
timeout = 180
worker_class = "gevent"
workers = 5


def post_fork(server, worker):
    gevent.monkey.patch_all()
    greenpg.patch_psycopg()
