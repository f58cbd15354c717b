"""asyncio and anyio task semantics inside a request, for tests/asgi.rs
(compared with gunicorn + UvicornWorker): cancel scopes with timeouts and
shields, task groups (finished and cancelled), the request's own task and
its context variables, a response sent by a child task, and a request task
that cancels itself and goes on."""
import asyncio
import contextvars
import json

import anyio

request_var = contextvars.ContextVar("request_var", default="unset")


async def reply(send, obj):
    body = json.dumps(obj, sort_keys=True).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def timeout():
    try:
        with anyio.fail_after(0.05):
            await asyncio.sleep(5)
    except TimeoutError:
        return {"timed_out": True}
    return {"timed_out": False}


async def shield():
    with anyio.move_on_after(0.02) as scope:
        with anyio.CancelScope(shield=True):
            await anyio.sleep(0.05)
        await anyio.sleep(5)
    return {"cancelled_caught": scope.cancelled_caught}


async def group():
    done = []

    async def child(i):
        await anyio.sleep(0.01 * i)
        done.append(i)

    async with anyio.create_task_group() as tg:
        for i in range(3):
            tg.start_soon(child, i)
    return {"done": done}


async def cancel_group():
    async with anyio.create_task_group() as tg:
        tg.start_soon(anyio.sleep, 5)
        await anyio.sleep(0.01)
        tg.cancel_scope.cancel()
    return {"cancel_called": tg.cancel_scope.cancel_called}


async def own_task():
    task = asyncio.current_task()
    request_var.set("this request")
    await asyncio.sleep(0.01)
    info = anyio.get_current_task()
    return {"same_task": asyncio.current_task() is task,
            "var": request_var.get(),
            "anyio_id": info.id == id(task),
            "cancelling": task.cancelling()}


async def self_cancel():
    task = asyncio.current_task()
    task.cancel()
    try:
        await asyncio.sleep(5)
    except asyncio.CancelledError:
        task.uncancel()
        return {"caught": True}
    return {"caught": False}


ROUTES = {"/timeout": timeout, "/shield": shield, "/group": group,
          "/cancel-group": cancel_group, "/own-task": own_task,
          "/self-cancel": self_cancel}


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return  # nothing to start: a lifespan app may just return
    path = scope["path"]
    if path == "/child-sends":
        # The whole response from another task (its head too).
        await asyncio.get_running_loop().create_task(reply(send, {"from": "child"}))
        return
    if path == "/pid":
        return await reply(send, {"ok": True})
    await reply(send, await ROUTES[path]())
