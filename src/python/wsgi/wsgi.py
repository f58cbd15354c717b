import inspect
import io

class ErrorStream(io.RawIOBase):
    def __init__(self, sink):
        self._sink = sink

    def writable(self):
        return True

    def write(self, data):
        self._sink(data)

class FileWrapper:
    def __init__(self, filelike, blksize=8192):
        self.filelike = filelike
        self.blksize = blksize
        if hasattr(filelike, 'close'):
            self.close = filelike.close

    def __getitem__(self, key):
        data = self.filelike.read(self.blksize)
        if data:
            return data
        raise IndexError

    def __iter__(self):
        return self

    def __next__(self):
        data = self.filelike.read(self.blksize)
        if data:
            return data
        raise StopIteration


def server_software(default):
    """SERVER_SOFTWARE: a config that set `gunicorn.SERVER_SOFTWARE` (to
    hide the version, say) is obeyed, as gunicorn's environ reads it."""
    import sys
    gunicorn = sys.modules.get("gunicorn")
    if gunicorn is None or not hasattr(gunicorn, "SERVER_SOFTWARE"):
        return default
    if gunicorn.SERVER_SOFTWARE == "gunicorn/%s" % getattr(gunicorn, "__version__", ""):
        return default
    return gunicorn.SERVER_SOFTWARE


def is_asgi(app):
    """An ASGI 3 app: a coroutine function (or an object whose __call__
    is one) that takes (scope, receive, send)."""
    if inspect.isclass(app):
        return False
    call = app
    if not (inspect.iscoroutinefunction(call) or inspect.isroutine(call)):
        call = getattr(app, "__call__", None)
    if call is None or not inspect.iscoroutinefunction(call):
        return False
    try:
        inspect.signature(call).bind(None, None, None)
    except TypeError:
        return False
    except ValueError:
        pass
    return True
