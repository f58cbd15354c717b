"""The WSGI app of tests/gevent.rs, served by rgunicorn's gevent workers and
by gunicorn 27.0.1's. Every route that waits does so cooperatively, so a
server without greenlet concurrency deadlocks on /barrier and /upstream.

Routes (PATH_INFO):
  /health            200 ok
  /barrier?n=N       waits (10 s at most) until N requests are inside the
                     app at once; answers ok or timeout
  /where?n=N         /barrier, then JSON: the OS thread (native id), whether
                     it is the process's main thread, whether the current
                     greenlet is the hub, the greenlet's id
  /patched           JSON: which modules gevent patched, where extlib was
                     initialised (a patch() override) and the wait callback
                     fakedb got in post_fork
  /db?n=N            a query through fakedb: waits on a pipe through its wait
                     callback until N queries are waiting
  /upstream?port=P   GET http://127.0.0.1:P/ with urllib (patched sockets)
  /concurrency       counts requests inside the app, holds 0.3 s, returns
                     the max seen so far
  /block             never yields to the hub (a CPU loop)
  /stream?n=N        N chunks, a cooperative sleep before each
  /big?n=N           N chunks of 64 KiB
  /echo              the body read in 8 KiB pieces: its length and sha256
  /hookthreads       what the request hooks recorded
"""

import hashlib
import json
import os
import sys
import threading
import time
import urllib.request

import gevent
from gevent.event import Event

_inside = [0, 0]  # inside now, max seen
_arrived = [0]
_all_here = Event()
HOOKS = []


def _query(environ):
    out = {}
    for part in environ.get("QUERY_STRING", "").split("&"):
        if "=" in part:
            k, v = part.split("=", 1)
            out[k] = v
    return out


def _barrier(n):
    _arrived[0] += 1
    if _arrived[0] >= n:
        _all_here.set()
    return _all_here.wait(10)


def _where():
    current = gevent.getcurrent()
    return {
        "native": threading.get_native_id(),
        "main_thread": threading.get_native_id() == os.getpid(),
        "hub": current is gevent.get_hub(),
        "greenlet": id(current),
    }


def app(environ, start_response):
    path = environ["PATH_INFO"]
    q = _query(environ)
    headers = [("Content-Type", "text/plain")]
    if path == "/health":
        start_response("200 OK", headers)
        return [b"ok"]
    if path == "/barrier":
        ok = _barrier(int(q["n"]))
        start_response("200 OK", headers)
        return [b"ok" if ok else b"timeout"]
    if path == "/where":
        ok = _barrier(int(q["n"]))
        body = dict(_where(), ok=bool(ok))
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps(body).encode()]
    if path == "/patched":
        from gevent import monkey
        extlib = sys.modules.get("extlib")
        fakedb = sys.modules.get("fakedb")
        body = {
            name: monkey.is_module_patched(name)
            for name in ("socket", "time", "threading", "select", "os", "ssl")
        }
        body["extlib_in_this_worker"] = bool(extlib) and extlib.initialised_in == os.getpid()
        body["fakedb_callback"] = getattr(fakedb, "wait_callback_name", None)
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps(body, sort_keys=True).encode()]
    if path == "/db":
        import fakedb
        got = fakedb.query(int(q["n"]))
        start_response("200 OK", headers)
        return [got]
    if path == "/upstream":
        with urllib.request.urlopen("http://127.0.0.1:%s/" % q["port"], timeout=20) as r:
            data = r.read()
        start_response("200 OK", headers)
        return [data]
    if path == "/concurrency":
        _inside[0] += 1
        _inside[1] = max(_inside[1], _inside[0])
        try:
            time.sleep(0.3)
        finally:
            _inside[0] -= 1
        start_response("200 OK", headers)
        return [str(_inside[1]).encode()]
    if path == "/block":
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            pass
        start_response("200 OK", headers)
        return [b"unblocked"]
    if path == "/stream":
        n = int(q.get("n", "5"))

        def chunks():
            for i in range(n):
                gevent.sleep(0.01)
                yield b"chunk %d\n" % i

        start_response("200 OK", headers)
        return chunks()
    if path == "/big":
        n = int(q.get("n", "64"))
        start_response("200 OK", headers)
        return (b"x" * 65536 for _ in range(n))
    if path == "/echo":
        h = hashlib.sha256()
        size = 0
        while True:
            piece = environ["wsgi.input"].read(8192)
            if not piece:
                break
            size += len(piece)
            h.update(piece)
        start_response("200 OK", headers)
        return [("%d %s" % (size, h.hexdigest())).encode()]
    if path == "/hookthreads":
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps(HOOKS).encode()]
    start_response("404 Not Found", headers)
    return [b"not found"]
