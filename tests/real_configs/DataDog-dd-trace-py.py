# Source: DataDog/dd-trace-py, benchmarks/django_simple/gunicorn.conf.py.
# Written from a description, not copied. The harness binds with -b; the
# app comes from `wsgi_app` (no app argument).
import os

bind = "0.0.0.0:8000"
worker_class = "sync"
workers = 1
wsgi_app = "ddapp:get_wsgi_application()"
pidfile = "gunicorn.pid"
raw_env = ["DJANGO_SETTINGS_MODULE=app"]


def post_fork(server, worker):
    if os.environ.get("PERF_TRACER_ENABLED", "False") == "True":
        os.environ.update({"DD_TRACE_ENABLED": "true"})
    else:
        os.environ.update({"DD_TRACE_ENABLED": "false"})
    if os.environ.get("PERF_PROFILER_ENABLED", "False") == "True":
        os.environ.update({"DD_PROFILING_ENABLED": "1"})
    os.environ.update({"DD_APPSEC_ENABLED": os.environ.get("PERF_APPSEC_ENABLED", "false")})
    if os.environ.get("PERF_TRACER_ENABLED", "False") == "True":
        import ddtrace.bootstrap.sitecustomize  # noqa: F401 - not installed: stays off


def post_worker_init(worker):
    if os.environ.get("PERF_PROFILER_ENABLED", "False") == "True":
        import ddtrace.profiling.auto  # noqa: F401
