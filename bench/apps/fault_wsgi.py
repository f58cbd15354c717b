"""The WSGI peer of rgunicorn's examples/testapp.rs for the fault runs:
`/health`, `/health/worker` (pid as worker_id), `/sleep?s=N` and
`/block?s=N`. In a sync worker both of the last two hold the worker for N
seconds (so `/block` stops its heartbeat and the master's `timeout` kills it).
"""

import json
import os
import time
from urllib.parse import parse_qs

STARTED = time.monotonic()
SERVED = 0


def _seconds(environ):
    try:
        return float(parse_qs(environ.get("QUERY_STRING", "")).get("s", ["1"])[0])
    except ValueError:
        return 1.0


def _reply(start_response, status, body, ctype="application/json"):
    body = body.encode()
    start_response(status, [("Content-Type", ctype), ("Content-Length", str(len(body)))])
    return [body]


def app(environ, start_response):
    global SERVED
    SERVED += 1
    path = environ.get("PATH_INFO", "/")
    if path == "/health":
        return _reply(start_response, "200 OK", '{"status":"healthy"}')
    if path == "/health/worker":
        body = json.dumps(
            {
                "status": "healthy",
                "worker_id": os.getpid(),
                "uptime_seconds": round(time.monotonic() - STARTED, 3),
                "requests_served": SERVED,
            },
            separators=(",", ":"),
        )
        return _reply(start_response, "200 OK", body)
    if path in ("/sleep", "/block"):
        time.sleep(_seconds(environ))
        return _reply(start_response, "200 OK", "slept" if path == "/sleep" else "blocked", "text/plain")
    return _reply(start_response, "404 Not Found", '{"detail":"Not Found"}')
