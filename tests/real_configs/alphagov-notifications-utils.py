# Source: alphagov/notifications-utils, notifications_utils/gunicorn/defaults.py,
# as an app's gunicorn_config.py uses it: one call fills globals(). The
# app's own config (alphagov/notifications-api) adds gevent; this one keeps
# the library's defaults only. Written from a description, not copied.
# The harness sets PORT.
from notify_gunicorn_defaults import set_gunicorn_defaults

set_gunicorn_defaults(globals())

workers = 2
