# Source: opensafely-core/airlock, gunicorn.conf.py. Written from a
# description, not copied. `bind` names a host only (gunicorn's default port
# 8000 then) and `port` is not a setting; the harness binds with -b.
import os

workers = 4
port = 8000  # not a setting: ignored
bind = "0.0.0.0"


# workers need their own tracing set up after the fork
def post_fork(server, worker):
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "airlock.settings")
    server.log.info("Worker spawned (pid: %s)", worker.pid)
    from airlock_tracing import setup_default_tracing

    setup_default_tracing()
