# Source: goauthentik/authentik, lifecycle/gunicorn.conf.py with
# lifecycle/worker.py (stable worker ids after hynek's gist). Written from a
# description, not copied. The harness binds with -b (over the unix socket)
# and sets AUTHENTIK_WEB__WORKERS=1 so that the answering worker is id 1.
import os
from hashlib import sha512
from multiprocessing import cpu_count
from os import makedirs
from pathlib import Path
from tempfile import gettempdir

from prometheus_client.values import MultiProcessValue

_tmp = Path(gettempdir())
worker_class = "lifecycle_worker.DjangoUvicornWorker"
worker_tmp_dir = str(_tmp.joinpath("authentik_worker_tmp"))
prometheus_tmp_dir = str(Path.cwd().joinpath("authentik_prometheus_tmp"))
makedirs(worker_tmp_dir, exist_ok=True)
makedirs(prometheus_tmp_dir, exist_ok=True)

bind = f"unix://{_tmp}/authentik-core.sock"

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "authentik.root.settings")
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", prometheus_tmp_dir)

preload = True  # not preload_app: ignored

max_requests = 1000
max_requests_jitter = 50


def get_logger_config():
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
        "loggers": {
            "gunicorn.error": {"handlers": ["console"], "level": "INFO", "propagate": False},
            "gunicorn.access": {"handlers": ["console"], "level": "INFO", "propagate": False},
        },
    }


logconfig_dict = get_logger_config()

workers = int(os.environ.get("AUTHENTIK_WEB__WORKERS", 2))
threads = int(os.environ.get("AUTHENTIK_WEB__THREADS", 4))

_instance = sha512(str(cpu_count()).encode()).hexdigest()[:8]


def post_fork(server, worker):
    """Tell prometheus to use worker number instead of process ID for multiprocess"""
    from prometheus_client import values

    values.ValueClass = MultiProcessValue(lambda: worker._worker_id)


def worker_exit(server, worker):
    """Remove pid dbs when worker is shutdown"""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker._worker_id)


def on_starting(server):
    """Attach a set of IDs that can be temporarily re-used.
    Used on reloads when each worker exists twice."""
    server._worker_id_overload = set()


def nworkers_changed(server, new_value, old_value):
    """Gets called on startup too.
    Set the current number of workers.  Required if we raise the worker count
    temporarily using TTIN because server.cfg.workers won't be updated and if
    one of those workers dies, we wouldn't know the ids go that far."""
    server._worker_id_current_workers = new_value


def _next_worker_id(server):
    """If there are IDs open for re-use, take one.  Else look for a free
    ID."""
    if server._worker_id_overload:
        return server._worker_id_overload.pop()

    in_use = {w._worker_id for w in tuple(server.WORKERS.values()) if w.alive}
    free = set(range(1, server._worker_id_current_workers + 1)) - in_use

    return free.pop()


def on_reload(server):
    """Add a full set of ids into overload so it can be re-used once."""
    server._worker_id_overload = set(range(1, server.cfg.workers + 1))


def pre_fork(server, worker):
    """Attach the next free worker_id before forking off."""
    worker._worker_id = _next_worker_id(server)


def post_worker_init(worker):
    """Notify ASGI app that its started up"""
    # Only trigger startup DB logic on first worker
    if worker._worker_id != 1:
        return
    worker.app.callable.call_startup()
