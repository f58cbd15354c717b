"""The gevent rows' app (served with `-k gevent`, so the worker has
monkey-patched time and socket before importing it):

  GET /          Hello, world! (text/plain)
  GET /sleep     time.sleep(0.2), patched: the greenlet waits, the hub runs
  GET /upstream  GET of $GEVENT_BENCH_UPSTREAM with urllib (patched sockets)
"""

import os
import time
import urllib.request

HELLO = b"Hello, world!"
UPSTREAM = os.environ.get("GEVENT_BENCH_UPSTREAM", "")


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/sleep":
        time.sleep(0.2)
        body = b"slept"
    elif path == "/upstream":
        with urllib.request.urlopen(UPSTREAM, timeout=30) as r:
            body = r.read()
    else:
        body = HELLO
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
