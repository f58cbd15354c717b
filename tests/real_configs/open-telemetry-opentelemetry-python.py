# Source: open-telemetry/opentelemetry-python,
# docs/examples/fork-process-model/flask-gunicorn/gunicorn.conf.py. Written
# from a description, not copied. The source exports over OTLP/gRPC; the
# console exporters of opentelemetry-sdk (into /dev/null) stand in, so that
# the test needs no collector and no grpcio. The harness binds with -b.
import os

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

bind = "127.0.0.1:8000"

# Sample Worker processes
workers = 4
worker_class = "sync"
worker_connections = 1000
timeout = 30
keepalive = 2

# Sample logging
errorlog = "-"
loglevel = "info"
accesslog = "-"
access_log_format = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'


def post_fork(server, worker):
    server.log.info("Worker spawned (pid: %s)", worker.pid)

    resource = Resource.create(
        attributes={
            "service.name": "api-service",
            # If workers are not distinguished within attributes, traces and
            # metrics exported from each worker will be indistinguishable.
            "worker": worker.pid,
        }
    )

    devnull = open(os.devnull, "w")
    trace.set_tracer_provider(TracerProvider(resource=resource))
    span_processor = BatchSpanProcessor(ConsoleSpanExporter(out=devnull))
    trace.get_tracer_provider().add_span_processor(span_processor)

    reader = PeriodicExportingMetricReader(ConsoleMetricExporter(out=devnull))
    metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=[reader]))
