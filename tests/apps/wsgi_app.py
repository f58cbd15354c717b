"""The WSGI app of tests/wsgi.rs, served by rgunicorn and by gunicorn 27.0.1.

Routes (PATH_INFO):
  /health        200 ok
  /env           the environ, one `key<TAB>json` line per key (non-str values described)
  /echo?n=N      reads the body with wsgi.input.read(N) until b"", returns its length and sha256
  /echo_stream   reads 5 bytes, writes $MARKER_DIR/first_read, then reads the rest
  /lines         the body by readline(), readlines() and iteration
  /stream        a generator: a first chunk, then waits for $MARKER_DIR/go, then a second
  /hold          writes $MARKER_DIR/held, then waits for $MARKER_DIR/go
  /stuck         appends the worker's pid to $MARKER_DIR/stuck, then waits (20 s at most) for $MARKER_DIR/go
  /pid           the worker's pid
  /big?n=N       a generator of N chunks of 64 KiB
  /close         an iterable whose close() writes $MARKER_DIR/closed
  /write         write() then an iterable
  /excinfo       start_response, an exception, start_response again with exc_info
  /excinfo_late  write() then start_response with exc_info (re-raised: the response is cut)
  /error         raises
  /bad_header    a response header with a newline in its value
  /status        a status with its own reason phrase
  /filewrapper   wsgi.file_wrapper over this file
  /barrier?n=N   waits (10 s at most) until N requests are inside the app at once
  /concurrency   counts requests inside the app at once, holds 0.3 s, returns the max seen
  /pythread      runs a Python thread and joins it
  /version       the module's VERSION (changed on disk by the reload test)
  /errors        writes to wsgi.errors
  any path with an `X-Dump-Env` header: as /env (PATH_INFO may be anything)
"""

import hashlib
import json
import os
import sys
import threading
import time

VERSION = "one"
# The process that imported this module (the master with preload_app).
IMPORTED_IN = os.getpid()

MARKER_DIR = os.environ.get("MARKER_DIR", ".")


def _marker(name):
    return os.path.join(MARKER_DIR, name)


def _wait_for(name, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not os.path.exists(_marker(name)):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _describe(v):
    if isinstance(v, str):
        return v
    if isinstance(v, (bool, int, tuple)):
        return {"type": type(v).__name__, "value": list(v) if isinstance(v, tuple) else v}
    caps = sorted(a for a in ("read", "readline", "readlines", "__iter__", "write", "writelines", "flush")
                  if hasattr(v, a))
    return {"type": "object", "callable": callable(v), "has": caps}


def _query(environ):
    out = {}
    for part in environ.get("QUERY_STRING", "").split("&"):
        if "=" in part:
            k, v = part.split("=", 1)
            out[k] = v
    return out


def _json(start_response, obj, status="200 OK"):
    body = json.dumps(obj, sort_keys=True).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


class ClosingIterable:
    def __init__(self, chunks):
        self.chunks = chunks

    def __iter__(self):
        return iter(self.chunks)

    def close(self):
        with open(_marker("closed"), "w") as f:
            f.write("closed")


_lock = threading.Lock()
_inside = 0
_max_inside = 0
_barriers = {}


def application(environ, start_response):
    path = environ["PATH_INFO"]
    q = _query(environ)
    if path == "/sleep":
        # Stuck in the app (a sync worker's timeout must end it).
        time.sleep(float(q.get("s", "1")))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"slept"]
    if path == "/health":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]
    if path == "/hold":
        with open(_marker("held"), "w"):
            pass
        body = b"released" if _wait_for("go") else b"timeout"
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [body]
    if path == "/stuck":
        with open(_marker("stuck"), "a") as f:
            f.write("%d\n" % os.getpid())
        body = b"released" if _wait_for("go", 20.0) else b"timeout"
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [body]
    if path == "/pid":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [str(os.getpid()).encode()]
    if path == "/env" or path.startswith("/env/") or "HTTP_X_DUMP_ENV" in environ:
        environ["wsgi.input"].read()
        lines = sorted("%s\t%s\n" % (k, json.dumps(_describe(v), sort_keys=True)) for k, v in environ.items())
        start_response("200 OK", [("Content-Type", "text/plain")])
        return ["".join(lines).encode()]
    if path == "/echo":
        n = int(q.get("n", "1000"))
        inp = environ["wsgi.input"]
        h, total, reads = hashlib.sha256(), 0, 0
        while True:
            data = inp.read(n)
            if not data:
                break
            reads += 1
            assert len(data) <= n
            h.update(data)
            total += len(data)
        return _json(start_response, {"len": total, "sha256": h.hexdigest(), "reads": reads})
    if path == "/echo_stream":
        inp = environ["wsgi.input"]
        first = inp.read(5)
        with open(_marker("first_read"), "w") as f:
            f.write(first.decode())
        rest = inp.read()
        return _json(start_response, {"first": first.decode(), "rest": len(rest),
                                      "tail": rest[-9:].decode()})
    if path == "/lines":
        inp = environ["wsgi.input"]
        first = inp.readline()
        limited = inp.readline(3)
        second = inp.readlines()
        return _json(start_response, {"first": first.decode(), "limited": limited.decode(),
                                      "rest": [line.decode() for line in second]})
    if path == "/iter":
        lines = [line.decode() for line in environ["wsgi.input"]]
        return _json(start_response, {"lines": lines})
    if path == "/stream":
        def gen():
            start_response("200 OK", [("Content-Type", "text/plain")])
            yield b"first;"
            yield (b"second" if _wait_for("go") else b"timeout")
        return gen()
    if path == "/big":
        n = int(q.get("n", "16"))
        chunk = b"x" * 65536

        def gen():
            for _ in range(n):
                yield chunk
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return gen()
    if path == "/close":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return ClosingIterable([b"a", b"b", b"c"])
    if path == "/write":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written;")
        return [b"returned"]
    if path == "/excinfo":
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            raise ValueError("caught by the app")
        except ValueError:
            start_response("503 Handled", [("Content-Type", "text/plain")], sys.exc_info())
        return [b"handled"]
    if path == "/excinfo_late":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"partial")
        try:
            raise ValueError("too late to change the status")
        except ValueError:
            start_response("500 Oops", [("Content-Type", "text/plain")], sys.exc_info())
        return [b"never"]
    if path == "/error":
        raise RuntimeError("boom in the app")
    if path == "/bad_header":
        start_response("200 OK", [("X-Bad", "a\r\nb")])
        return [b"bad"]
    if path == "/status":
        start_response("299 Custom Thing", [("Content-Type", "text/plain")])
        return [b"custom"]
    if path == "/filewrapper":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return environ["wsgi.file_wrapper"](open(__file__, "rb"), 1024)
    if path == "/barrier":
        n = int(q.get("n", "4"))
        with _lock:
            b = _barriers.setdefault(n, threading.Barrier(n, timeout=10))
        try:
            b.wait()
            res = "together"
        except threading.BrokenBarrierError:
            res = "alone"
        return _json(start_response, {"result": res, "pid": os.getpid(),
                                      "thread": threading.get_ident()})
    if path == "/concurrency":
        global _inside, _max_inside
        with _lock:
            _inside += 1
            _max_inside = max(_max_inside, _inside)
        time.sleep(0.3)
        with _lock:
            _inside -= 1
            seen = _max_inside
        return _json(start_response, {"max": seen, "pid": os.getpid()})
    if path == "/pythread":
        box = []
        t = threading.Thread(target=lambda: box.append(sum(range(1000))))
        t.start()
        t.join(10)
        return _json(start_response, {"sum": box[0] if box else None})
    if path == "/imported_in":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [str(IMPORTED_IN).encode()]
    if path == "/version":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [VERSION.encode()]
    if path == "/errors":
        environ["wsgi.errors"].write("to wsgi.errors\n")
        environ["wsgi.errors"].flush()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"logged"]
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"not found"]


app = application


def create_app():
    return application


def make_app(greeting, punct="!"):
    def greeter(environ, start_response):
        if environ["PATH_INFO"] != "/greet":
            return application(environ, start_response)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [(greeting + punct).encode()]
    return greeter
