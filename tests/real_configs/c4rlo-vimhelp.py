# Source: c4rlo/vimhelp, gunicorn.conf.dev.py. Written from a description,
# not copied. gevent family. The harness binds with -b; the app comes from
# `wsgi_app`, a factory call.
import traceback

loglevel = "debug"
reload = True
timeout = 15
worker_class = "gevent"
wsgi_app = "vimhelp_webapp:create_app()"


def worker_abort(worker):
    traceback.print_stack()
