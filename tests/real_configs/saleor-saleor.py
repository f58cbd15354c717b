# Source: saleor/saleor, saleor/asgi/gunicorn_worker.py, selected by the
# worker class setting as older saleor images did on the command line.
# Written from a description, not copied. The harness binds with -b.
worker_class = "saleor_gunicorn_worker.UvicornWorker"
workers = 2
