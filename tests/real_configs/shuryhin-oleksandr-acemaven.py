# Source: shuryhin-oleksandr/acemaven, app/core/util/workers.py, named by
# `worker_class`. Written from a description (of the worker module only),
# not copied. The harness binds with -b; GET /scope shows the scope's
# root_path and scheme.
worker_class = "acemaven_workers.AsyncioUvicornWorker"
workers = 1
