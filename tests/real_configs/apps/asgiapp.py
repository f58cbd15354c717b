"""A raw ASGI app for the UvicornWorker configs: GET / answers a fixed
text, GET /scope shows the scope keys a worker class's CONFIG_KWARGS
change (root_path, scheme). Lifespan is answered when the worker sends it."""


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    if scope["path"].endswith("/scope"):
        body = f"root_path={scope.get('root_path', '')!r} scheme={scope['scheme']}\n"
    else:
        body = "Hello from ASGI\n"
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain")],
        }
    )
    await send({"type": "http.response.body", "body": body.encode()})
