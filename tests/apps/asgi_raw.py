"""A raw ASGI 3 app for tests/asgi.rs: streaming both ways, disconnect,
the scope as JSON, errors, a blocked loop, and lifespan recorded to the
file named by $ASGI_LOG ($ASGI_FAIL_STARTUP makes startup fail)."""
import asyncio
import json
import os
import time
import traceback

LOG = os.environ.get("ASGI_LOG")


def record(*parts):
    if LOG:
        with open(LOG, "a") as f:
            f.write(" ".join(str(p) for p in parts) + "\n")


def jsonable(v):
    if isinstance(v, bytes):
        return v.decode("latin-1")
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, dict):
        return {k: jsonable(x) for k, x in v.items()}
    return v


async def lifespan(scope, receive, send):
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            try:
                if os.environ.get("ASGI_FAIL_STARTUP"):
                    raise RuntimeError("the database is down")
                scope["state"]["started_by"] = os.getpid()
                record("startup", os.getpid())
            except Exception:
                await send({"type": "lifespan.startup.failed",
                            "message": traceback.format_exc()})
                raise
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            record("shutdown", os.getpid())
            await send({"type": "lifespan.shutdown.complete"})
            return


async def reply(send, status, body, ctype=b"text/plain"):
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", ctype),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return await lifespan(scope, receive, send)
    # The route: the path below root_path (as Starlette routes).
    path = scope["path"][len(scope["root_path"]):]
    if path.startswith("/scope"):
        # One line per key: `key<TAB>json`, sorted (compared with uvicorn's).
        lines = [f"{k}\t{json.dumps(jsonable(v), sort_keys=True)}" for k, v in sorted(scope.items())]
        return await reply(send, 200, "\n".join(lines).encode())
    if path == "/echo":
        # Streamed both ways: each chunk received is sent back at once.
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/octet-stream")]})
        total = 0
        while True:
            message = await receive()
            chunk = message.get("body", b"")
            total += len(chunk)
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            if not message.get("more_body"):
                break
        record("echo", total)
        return await send({"type": "http.response.body", "body": b""})
    if path == "/stream":
        # Streams until the client goes away; the disconnect is recorded.
        gone = asyncio.Event()

        async def watch():
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    record("disconnect", path)
                    gone.set()
                    return

        watcher = asyncio.ensure_future(watch())
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        n = 0
        while not gone.is_set() and n < 100000:
            await send({"type": "http.response.body", "body": b"x" * 1024 + b"\n", "more_body": True})
            n += 1
            await asyncio.sleep(0.001)
        await watcher
        return
    if path == "/error":
        raise ValueError("boom in the app")
    if path == "/error-after-start":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        await asyncio.sleep(0.01)
        raise ValueError("boom after the start")
    if path == "/block":
        record("block", os.getpid())
        time.sleep(float(scope["query_string"] or b"10"))
        return await reply(send, 200, b"unblocked")
    if path == "/state":
        return await reply(send, 200, str(scope["state"].get("started_by")).encode())
    if path == "/pid":
        return await reply(send, 200, str(os.getpid()).encode())
    return await reply(send, 200, b"hello")


class Asgi2:
    """An ASGI 2 app (served through uvicorn's double-callable wrapper)."""

    def __init__(self, scope):
        self.scope = scope

    async def __call__(self, receive, send):
        if self.scope["type"] == "http":
            await reply(send, 200, b"asgi2 " + self.scope["path"].encode())
