# Source: willnx/sawmill_api, api_config.py. Written from a description, not
# copied. The ssl_context hook has misnamed (but two) parameters and no
# certfile is set, so gunicorn never calls it. The harness binds with -b;
# the app comes from `wsgi_app`.
import ssl

keepalive = 30
threads = 200
workers = 1
wsgi_app = "sawmill_app:make_app()"
bind = "0.0.0.0:443"
errorlog = "-"
accesslog = "/dev/null"


def ssl_context(address, port):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain("/etc/sawmill/server.crt", "/etc/sawmill/server.key")
    context.options |= ssl.OP_NO_TLSv1 | ssl.OP_NO_TLSv1_1
    return context
