# Source: makeplane/plane, apiserver/gunicorn.config.py. Written from a
# description, not copied. gevent family: the worker class comes from the
# command line (-k gevent, given by the harness); greenpg stands in for
# psycogreen. The harness binds with -b.
import greenpg


def post_fork(server, worker):
    greenpg.patch_psycopg()
    worker.log.info("Made Psycopg2 Green")
