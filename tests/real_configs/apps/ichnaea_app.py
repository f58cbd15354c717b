# The lazily built WSGI app of mozilla/ichnaea (ichnaea/webapp/app.py's
# pattern): calling it with (None, None) builds the app without serving a
# request, which the config's post_worker_init does in each worker.
_APP = None
_WARMED_UP = False


def _make_app():
    def app(environ, start_response):
        body = f"Hello from ichnaea, warmed up before the first request: {_WARMED_UP}\n"
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [body.encode()]

    return app


def wsgi_app(environ, start_response):
    global _APP, _WARMED_UP
    if _APP is None:
        _APP = _make_app()
    if environ is None and start_response is None:
        _WARMED_UP = True
        return None
    return _APP(environ, start_response)
