"""The app of the fault runs, served by rgunicorn and by gunicorn +
UvicornWorker alike: `fault_fastapi:create_app()`.

It is the migration guide's FastAPI example (`examples.fastapi_app.main
.create_app()`: `/health`, `/health/worker` with the worker's pid as
`worker_id`, `/health/ready`; the repository root must be on `sys.path`,
bench.py puts it on PYTHONPATH) with two bench-only endpoints:

- `/sleep?s=N`: `await asyncio.sleep(N)`, a slow request that does not hold
  the worker (the TERM run: it must finish while the server drains);
- `/block?s=N`: `time.sleep(N)` in an `async def`, so the worker's event loop
  stops turning, its heartbeat stops and the master kills it after `timeout`
  (UvicornWorker notifies gunicorn from its loop; rgunicorn's ASGI heartbeat
  checks that the asyncio loop turns).
"""

import asyncio
import time

from fastapi.responses import PlainTextResponse

from examples.fastapi_app.main import create_app as create_example_app


def create_app():
    app = create_example_app()

    @app.get("/sleep", response_class=PlainTextResponse)
    async def sleep(s: float = 1.0):
        await asyncio.sleep(s)
        return "slept"

    @app.get("/block", response_class=PlainTextResponse)
    async def block(s: float = 1.0):
        time.sleep(s)
        return "blocked"

    return app
