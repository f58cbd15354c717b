"""A raw ASGI 3 app for tests/asgi.rs: streaming both ways, disconnect,
the scope as JSON, errors, a blocked loop, a CONNECT answered with a body,
websockets (echo, close codes, subprotocols, refusals, errors), and
lifespan and websocket disconnects recorded to the file named by $ASGI_LOG
($ASGI_FAIL_STARTUP makes startup fail)."""
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


def scope_lines(scope):
    """One line per key: `key<TAB>json`, sorted (compared with uvicorn's)."""
    return "\n".join(f"{k}\t{json.dumps(jsonable(v), sort_keys=True)}" for k, v in sorted(scope.items()))


async def websocket(scope, receive, send):
    path = scope["path"][len(scope["root_path"]):]
    message = await receive()
    assert message["type"] == "websocket.connect", message
    if path == "/ws/reject":
        return await send({"type": "websocket.close"})
    if path == "/ws/error":
        raise ValueError("boom before accept")
    if path == "/ws/return":
        return
    if path == "/ws/response":
        await send({"type": "websocket.http.response.start", "status": 418,
                    "headers": [(b"x-teapot", b"yes")]})
        await send({"type": "websocket.http.response.body", "body": b"short", "more_body": True})
        return await send({"type": "websocket.http.response.body", "body": b" and stout"})
    # The subprotocol we speak, if the client offers it.
    subprotocol = "chat.v2" if "chat.v2" in scope["subprotocols"] else None
    await send({"type": "websocket.accept", "subprotocol": subprotocol,
                "headers": [(b"x-accepted", b"yes")]})
    if path.startswith("/ws/scope"):
        await send({"type": "websocket.send", "text": scope_lines(scope)})
    # Echo; text commands: "close CODE REASON", "raise", "return", "pid".
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            record("ws-disconnect", path, message["code"], message.get("reason"))
            return
        text = message.get("text")
        if text is None:
            await send({"type": "websocket.send", "bytes": message["bytes"]})
        elif text.startswith("close "):
            _, code, reason = text.split(" ", 2)
            await send({"type": "websocket.close", "code": int(code), "reason": reason})
            message = await receive()
            record("ws-closed", path, message["code"], message.get("reason"))
            try:
                await send({"type": "websocket.send", "text": "after close"})
            except (RuntimeError, OSError) as e:
                record("ws-send-after-close", type(e).__name__)
            return
        elif text == "raise":
            raise RuntimeError("boom after accept")
        elif text == "return":
            return
        elif text == "pid":
            await send({"type": "websocket.send", "text": str(os.getpid())})
        else:
            await send({"type": "websocket.send", "text": text})


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return await lifespan(scope, receive, send)
    if scope["type"] == "websocket":
        return await websocket(scope, receive, send)
    # The route: the path below root_path (as Starlette routes).
    path = scope["path"][len(scope["root_path"]):]
    if path.startswith("/scope"):
        return await reply(send, 200, scope_lines(scope).encode())
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
    if scope["method"] == "CONNECT":
        # Answered as any request: no tunnel (as from gunicorn).
        return await reply(send, 200, b"CONNECT answered")
    return await reply(send, 200, b"hello")


class Asgi2:
    """An ASGI 2 app (served through uvicorn's double-callable wrapper)."""

    def __init__(self, scope):
        self.scope = scope

    async def __call__(self, receive, send):
        if self.scope["type"] == "http":
            await reply(send, 200, b"asgi2 " + self.scope["path"].encode())
