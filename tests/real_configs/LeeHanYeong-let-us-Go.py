# Source: LeeHanYeong/let-us-Go, .config/gunicorn_dev.py. Written from a
# description, not copied. The source changes into /srv/app; here into the
# srv_app directory next to this file. Its worker class is gevent; the
# harness runs it with -k sync (the command line overrides the file) so
# that chdir is tested apart from gevent. The harness binds with -b and
# serves letusgo_app:app, found only through chdir.
import os

daemon = False
chdir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "srv_app")
bind = "unix:/tmp/app.sock"
worker_class = "gevent"
workers = 1
threads = 1
timeout = 60
accesslog = "letusgo-access.log"
errorlog = "letusgo-error.log"
capture_output = False
raw_env = ["DJANGO_SETTINGS_MODULE=config.settings.dev"]
