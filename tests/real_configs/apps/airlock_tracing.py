# The project's tracing module of opensafely-core/airlock and job-server:
# an opentelemetry-sdk TracerProvider per worker (console exporter into
# /dev/null here; the projects export over OTLP).
import os

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter


def setup_default_tracing():
    provider = TracerProvider(resource=Resource.create({"service.name": "airlock"}))
    provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter(out=open(os.devnull, "w"))))
    trace.set_tracer_provider(provider)
