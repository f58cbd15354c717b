"""The WSGI app of tests/conformance.rs, served by rgunicorn and by gunicorn
27.0.1 side by side. Like the app gunicorn's request corpus was measured
with, it reads the whole body and answers 200 on any path and method;
unlike it, it sends a Content-Length, and its body says what it was called
with: the method, the raw target and how many body bytes it read.
"""


def app(environ, start_response):
    n = len(environ["wsgi.input"].read())
    body = ("%s %s %d\n" % (environ["REQUEST_METHOD"], environ["RAW_URI"], n)).encode("latin-1")
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
