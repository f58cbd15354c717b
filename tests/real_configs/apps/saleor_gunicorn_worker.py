# Source: saleor/saleor, saleor/asgi/gunicorn_worker.py: uvicorn's loop,
# parser, lifespan and websockets fixed by CONFIG_KWARGS.
from uvicorn.workers import UvicornWorker as BaseUvicornWorker


class UvicornWorker(BaseUvicornWorker):
    CONFIG_KWARGS = {
        "loop": "uvloop",
        "http": "httptools",
        "lifespan": "off",
        "ws": "none",
    }
