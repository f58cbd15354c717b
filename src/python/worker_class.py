"""worker_class resolved as gunicorn 27's util.load_class resolves it, then
classified by the worker classes it derives from. The names rgunicorn
knows are classified without importing anything (gunicorn need not be
installed); any other dotted path is imported, as gunicorn imports it."""

import importlib
import importlib.metadata
import inspect
import traceback

# gunicorn 27's gunicorn.workers.SUPPORTED_WORKERS.
SUPPORTED_WORKERS = {
    "sync": "gunicorn.workers.sync.SyncWorker",
    "gevent": "gunicorn.workers.ggevent.GeventWorker",
    "gevent_wsgi": "gunicorn.workers.ggevent.GeventPyWSGIWorker",
    "gevent_pywsgi": "gunicorn.workers.ggevent.GeventPyWSGIWorker",
    "tornado": "gunicorn.workers.gtornado.TornadoWorker",
    "gthread": "gunicorn.workers.gthread.ThreadWorker",
    "asgi": "gunicorn.workers.gasgi.ASGIWorker",
}

_UVICORN = {"loop": "auto", "http": "auto"}
_UVICORN_H11 = {"loop": "asyncio", "http": "h11"}

# Known classes by `module.QualName`: their kind, and the CONFIG_KWARGS of
# uvicorn's classes. uvicorn_worker defines its classes in a private
# module and exports them from the package; both spellings are here.
KNOWN = {
    "gunicorn.workers.sync.SyncWorker": ("sync", None),
    "gunicorn.workers.gthread.ThreadWorker": ("gthread", None),
    "gunicorn.workers.gasgi.ASGIWorker": ("asgi", None),
    "gunicorn.workers.ggevent.GeventWorker": ("gevent", None),
    "gunicorn.workers.ggevent.GeventPyWSGIWorker": ("gevent", None),
    "gunicorn.workers.gtornado.TornadoWorker": ("tornado", None),
    # Flask-SocketIO's worker: websockets through gevent-websocket's
    # handler, which takes over the connection's socket.
    "geventwebsocket.gunicorn.workers.GeventWebSocketWorker": ("geventwebsocket", None),
    "uvicorn.workers.UvicornWorker": ("uvicorn", _UVICORN),
    "uvicorn.workers.UvicornH11Worker": ("uvicorn", _UVICORN_H11),
    "uvicorn_worker.UvicornWorker": ("uvicorn", _UVICORN),
    "uvicorn_worker.UvicornH11Worker": ("uvicorn", _UVICORN_H11),
    "uvicorn_worker._workers.UvicornWorker": ("uvicorn", _UVICORN),
    "uvicorn_worker._workers.UvicornH11Worker": ("uvicorn", _UVICORN_H11),
}

# Attributes of a class body that are not overrides.
_NOT_METHODS = {
    "__module__", "__qualname__", "__doc__", "__dict__", "__weakref__",
    "__annotations__", "__firstlineno__", "__static_attributes__",
    "CONFIG_KWARGS",
}


def _invalid(uri):
    # gunicorn's message, with the traceback of the exception being handled.
    return RuntimeError(
        "class uri %r invalid or not found: \n\n[%s]" % (uri, traceback.format_exc())
    )


def _entry_point(dist, group, name):
    # gunicorn 27 declares no entry points: the same answer whether or not
    # it is installed here.
    if dist == "gunicorn":
        raise ImportError("Entry point %r not found" % ((group, name),))
    eps = [
        ep
        for ep in importlib.metadata.distribution(dist).entry_points
        if ep.group == group and ep.name == name
    ]
    if not eps:
        raise ImportError("Entry point %r not found" % ((group, name),))
    return eps[0].load()


def _require_gevent(uri):
    """gunicorn's ggevent module refuses to load without gevent 24.10.1 or
    later; so does a gevent class here, with gunicorn's message."""
    try:
        try:
            import gevent
        except ImportError:
            raise RuntimeError("gevent worker requires gevent 24.10.1 or higher")
        parts = []
        for p in gevent.__version__.split(".")[:3]:
            digits = "".join(c for c in p if c.isdigit()) or "0"
            parts.append(int(digits))
        if tuple(parts) < (24, 10, 1):
            raise RuntimeError("gevent worker requires gevent 24.10.1 or higher")
        # What gunicorn's ggevent module imports, in the master as there:
        # configs use gevent.monkey after a bare `import gevent`.
        import gevent.hub  # noqa: F401
        import gevent.monkey  # noqa: F401
        import gevent.pool  # noqa: F401
        import gevent.pywsgi  # noqa: F401
        import gevent.server  # noqa: F401
        import gevent.socket  # noqa: F401
    except Exception:
        raise _invalid(uri)


def _path(cls):
    return "%s.%s" % (cls.__module__, cls.__qualname__)


def load(uri):
    """The class object for `uri`, or its dotted path when rgunicorn knows
    it without an import; RuntimeError with gunicorn's message otherwise."""
    if inspect.isclass(uri):
        return uri
    if uri.startswith("egg:"):
        entry = uri.split("egg:")[1]
        try:
            dist, name = entry.rsplit("#", 1)
        except ValueError:
            dist, name = entry, "gunicorn.workers.sync.SyncWorker"
        try:
            return _entry_point(dist, "gunicorn.workers", name)
        except Exception:
            raise _invalid(uri)
    components = uri.split(".")
    if len(components) == 1:
        while uri.startswith("#"):
            uri = uri[1:]
        if uri not in SUPPORTED_WORKERS:
            try:
                return _entry_point("gunicorn", "gunicorn.workers", uri)
            except Exception:
                raise _invalid(uri)
        uri = SUPPORTED_WORKERS[uri]
    if uri in KNOWN:
        return uri
    components = uri.split(".")
    klass = components.pop(-1)
    try:
        mod = importlib.import_module(".".join(components))
    except Exception:
        raise _invalid(uri)
    return getattr(mod, klass)


def classify(uri):
    """(kind, name, CONFIG_KWARGS or None, overridden methods) of `uri`.

    kind is that of the nearest known class the worker class derives
    from, or None when it derives from none of them."""
    found = load(uri)
    if isinstance(found, str):
        kind, kwargs = KNOWN[found]
        if kind == "gevent":
            # gunicorn names the class uri as given, less a leading "#".
            _require_gevent(uri.lstrip("#") if "." not in uri else uri)
        return kind, found, dict(kwargs) if kwargs is not None else None, []
    if not inspect.isclass(found):
        raise RuntimeError("worker_class %r is not a class: %r" % (uri, found))
    name = _path(found)
    overridden = []
    for base in found.__mro__:
        known = KNOWN.get(_path(base))
        if known is not None:
            kind, _ = known
            kwargs = None
            if kind == "uvicorn":
                kwargs = dict(getattr(found, "CONFIG_KWARGS", None) or {})
            if kind == "gevent":
                _require_gevent(uri if isinstance(uri, str) else name)
            return kind, name, kwargs, overridden
        for attr, value in vars(base).items():
            if attr in _NOT_METHODS or attr in overridden:
                continue
            if callable(value) or isinstance(value, (classmethod, staticmethod, property)):
                overridden.append(attr)
    return None, name, None, []


# gunicorn's per-connection and per-request handlers of its HTTP workers.
_CONNECTION_HANDLERS = ("handle", "handle_request")


def takes_over_connections(uri):
    """The handlers (`handle`, `handle_request`) that `uri`'s class
    overrides without calling gunicorn's: such a class serves each
    connection its own way (another protocol than gunicorn's HTTP). An
    override that delegates (`super().handle(...)`, or `Base.handle(self,
    ...)`) only wraps gunicorn's and is not counted."""
    found = load(uri)
    if isinstance(found, str) or not inspect.isclass(found):
        return []
    taken = []
    for base in found.__mro__:
        if _path(base) in KNOWN:
            break
        for name in _CONNECTION_HANDLERS:
            func = vars(base).get(name)
            code = getattr(func, "__code__", None)
            if code is None or name in taken:
                continue
            if "super" not in code.co_names and name not in code.co_names:
                taken.append(name)
    return taken
