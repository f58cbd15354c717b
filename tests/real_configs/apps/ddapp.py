# The app factory of DataDog/dd-trace-py's benchmark config: `wsgi_app`
# names a call, "module:get_wsgi_application()", as Django's is.
import os


def get_wsgi_application():
    settings = os.environ.get("DJANGO_SETTINGS_MODULE")

    def application(environ, start_response):
        flags = ",".join(sorted(k for k in os.environ if k.startswith("DD_")))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [f"Hello from django_simple ({settings}), flags: {flags}\n".encode()]

    return application
