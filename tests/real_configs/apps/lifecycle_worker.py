# Source: goauthentik/authentik, lifecycle/worker.py: a UvicornWorker
# subclass with fixed uvicorn options and a worker id annotation.
from uvicorn.workers import UvicornWorker


class DjangoUvicornWorker(UvicornWorker):
    _worker_id: int

    CONFIG_KWARGS = {
        "loop": "uvloop",
        "http": "httptools",
        "lifespan": "off",
        "ws": "wsproto",
    }
