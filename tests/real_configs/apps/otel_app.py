# The Flask app of open-telemetry/opentelemetry-python's fork-process-model
# example: each request makes a span with the tracer provider that the
# config's post_fork installed in this worker, whose resource names the
# worker's pid.
import os

from flask import Flask
from opentelemetry import trace

app = Flask(__name__)


@app.get("/")
def index():
    tracer = trace.get_tracer(__name__)
    with tracer.start_as_current_span("index") as span:
        provider = trace.get_tracer_provider()
        resource = getattr(provider, "resource", None)
        own = resource is not None and resource.attributes.get("worker") == os.getpid()
        recording = span.is_recording()
    return (
        f"Hello from the otel example, provider: {type(provider).__name__}, "
        f"resource names this worker: {own}, span recording: {recording}\n"
    )
