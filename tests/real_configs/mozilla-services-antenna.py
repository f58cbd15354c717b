# Source: mozilla-services/antenna, antenna/gunicornhooks.py (the hooks
# module used as the config) with antenna/gunicornworker.py. Written from a
# description, not copied. gevent family. The harness binds with -b.
import gc

from gevent import monkey

monkey.patch_all()

import gevent

worker_class = "antenna_worker.GeventGrpcWorker"
workers = 1
worker_connections = 4


def _start_heartbeat(worker):
    app = worker.wsgi.application if hasattr(worker.wsgi, "application") else worker.wsgi
    pool = None
    for obj in gc.get_objects():
        if isinstance(obj, gevent.pool.Pool) and obj.size == worker.cfg.worker_connections:
            pool = obj
            break

    def heartbeat():
        while worker.alive:
            worker.log.debug("heartbeat: app %r, pool %r", app, pool)
            gevent.sleep(30)

    gevent.spawn(heartbeat)


def post_worker_init(worker):
    gevent.spawn_later(2, _start_heartbeat, worker)
