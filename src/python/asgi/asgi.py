import asyncio
import collections.abc
import inspect
import traceback


def new_loop(kind, warn):
    if kind in ("auto", "uvloop"):
        try:
            import uvloop
            return uvloop.new_event_loop(), "uvloop"
        except ImportError:
            if kind == "uvloop":
                warn("uvloop not available, falling back to asyncio")
    return asyncio.new_event_loop(), "asyncio"


def asgi3(app):
    """The app as ASGI 3: an ASGI 2 app (a class, or a callable that is
    not a coroutine function, as uvicorn's interface "auto") is wrapped."""
    if inspect.isclass(app):
        use_asgi_3 = hasattr(app, "__await__")
    elif inspect.isfunction(app):
        use_asgi_3 = inspect.iscoroutinefunction(app)
    else:
        use_asgi_3 = inspect.iscoroutinefunction(getattr(app, "__call__", None))
    if use_asgi_3:
        return app

    async def asgi2(scope, receive, send):
        instance = app(scope)
        await instance(receive, send)
    return asgi2


def heartbeat(loop, beat, every):
    def tick():
        beat()
        loop.call_later(every, tick)
    tick()


async def wait(fut):
    return await fut


def format_exception(typ, exc, tb):
    return "".join(traceback.format_exception(typ, exc, tb))


class ClientDisconnected(OSError):
    """Raised by a websocket's send() once the client is gone (ASGI 2.4:
    an OSError; uvicorn's has the same name)."""


async def run_ws(app, scope, proto):
    """The task of one websocket; its outcome goes to proto."""
    try:
        result = await app(scope, proto.receive, proto.send)
    except ClientDisconnected:
        proto.done(None)
    except BaseException:
        proto.failed(traceback.format_exc())
    else:
        proto.done(result)


def register(cls):
    collections.abc.Coroutine.register(cls)


class Lifespan:
    """ASGI lifespan, as uvicorn's LifespanOn: `mode` is auto or on."""

    def __init__(self, app, mode, info, error):
        self.app = app
        self.mode = mode
        self.info = info
        self.error = error
        self.state = {}
        self.queue = asyncio.Queue()
        self.startup_event = asyncio.Event()
        self.shutdown_event = asyncio.Event()
        self.startup_failed = False
        self.shutdown_failed = False
        self.error_occured = False
        self.task = None

    async def main(self):
        scope = {
            "type": "lifespan",
            "asgi": {"version": "3.0", "spec_version": "2.0"},
            "state": self.state,
        }
        try:
            await self.app(scope, self.receive, self.send)
        except BaseException as exc:
            self.error_occured = True
            if self.startup_failed or self.shutdown_failed:
                if not self.reported:
                    self.error("Exception in 'lifespan' protocol\n" + traceback.format_exc().rstrip())
            elif self.mode == "auto":
                self.info("ASGI 'lifespan' protocol appears unsupported.")
            else:
                self.error("Exception in 'lifespan' protocol\n" + traceback.format_exc().rstrip())
        finally:
            self.startup_event.set()
            self.shutdown_event.set()

    reported = False

    async def startup(self):
        """True when the worker may serve."""
        self.info("Waiting for application startup.")
        self.task = asyncio.get_running_loop().create_task(self.main())
        await self.queue.put({"type": "lifespan.startup"})
        await self.startup_event.wait()
        if self.startup_failed or (self.error_occured and self.mode == "on"):
            self.error("Application startup failed. Exiting.")
            return False
        if not self.error_occured:
            self.info("Application startup complete.")
        return True

    async def shutdown(self):
        if self.error_occured:
            return
        self.info("Waiting for application shutdown.")
        await self.queue.put({"type": "lifespan.shutdown"})
        await self.shutdown_event.wait()
        if self.shutdown_failed or (self.error_occured and self.mode == "on"):
            self.error("Application shutdown failed. Exiting.")
        else:
            self.info("Application shutdown complete.")

    async def receive(self):
        return await self.queue.get()

    async def send(self, message):
        kind = message["type"]
        if kind == "lifespan.startup.complete":
            self.startup_event.set()
        elif kind == "lifespan.startup.failed":
            self.startup_failed = True
            self.startup_event.set()
            if message.get("message"):
                self.reported = True
                self.error(message["message"].rstrip())
        elif kind == "lifespan.shutdown.complete":
            self.shutdown_event.set()
        elif kind == "lifespan.shutdown.failed":
            self.shutdown_failed = True
            self.shutdown_event.set()
            if message.get("message"):
                self.reported = True
                self.error(message["message"].rstrip())
