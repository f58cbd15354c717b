"""The smallest WSGI app, for tests that run it under rgunicorn and under
gunicorn 27.0.1: 200 with a Content-Length (so that gunicorn does not
chunk it), the body `ok`, or on /pid the pid of the worker that served it."""

import os


def application(environ, start_response):
    body = str(os.getpid()).encode() if environ["PATH_INFO"] == "/pid" else b"ok"
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]
