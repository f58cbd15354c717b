# Source: openedx/ecommerce, ecommerce/docker_gunicorn_configuration.py.
# Written from a description, not copied. The harness binds with -b.
timeout = 300
bind = "127.0.0.1:8130"
pythonpath = "/edx/app/ecommerce/ecommerce"
workers = 2
worker_class = "sync"
max_requests = 1000


def pre_request(worker, req):
    worker.log.info("%s %s" % (req.method, req.path))
