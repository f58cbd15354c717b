"""UvicornWorker without uvloop and httptools: the pure-Python asyncio loop
and the h11 parser (the same settings as uvicorn_worker.UvicornH11Worker)."""

from uvicorn_worker import UvicornWorker


class AsyncioH11Worker(UvicornWorker):
    CONFIG_KWARGS = {"loop": "asyncio", "http": "h11"}
