"""The WSGI app of tests/gate_vs_gunicorn.rs, served by rgunicorn and called
by the model of gunicorn 27.0.1 (gunicorn_gate_model.py) alike: it reads the
whole body and answers 200 with what it was called with, as JSON."""

import json

# Keys that differ between two servers by nature (ports, software, objects).
SKIP = ("SERVER_NAME", "SERVER_PORT", "SERVER_SOFTWARE", "REMOTE_PORT", "REMOTE_ADDR")


def app(environ, start_response):
    body = environ["wsgi.input"].read()
    seen = {
        k: v
        for k, v in environ.items()
        if isinstance(v, str) and k.isupper() and k not in SKIP
        and not k.startswith("wsgi.")
    }
    if "PROXY_PROTOCOL" in environ:
        seen["REMOTE_ADDR"] = environ.get("REMOTE_ADDR")
        seen["REMOTE_PORT"] = environ.get("REMOTE_PORT")
    seen["wsgi.url_scheme"] = environ["wsgi.url_scheme"]
    seen["wsgi.input"] = body.decode("latin-1")
    out = json.dumps(seen, sort_keys=True).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(out)))])
    return [out]
