# Source: johang88/guessr, gunicorn.conf.py. Written from a description, not
# copied. The control socket path gets the master's pid so that runs do not
# meet. The harness binds with -b and sets OTEL_EXPORTER_OTLP_ENDPOINT: the
# OTLP log exporter is not installed, so post_fork takes its warning path.
import os

bind = "0.0.0.0:5000"
workers = 2
timeout = 120
worker_tmp_dir = "/dev/shm"
control_socket = f"/dev/shm/guessr-{os.getpid()}.sock"
accesslog = "-"
errorlog = "-"
loglevel = "info"


def post_fork(server, worker):
    if not os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return
    try:
        from opentelemetry._logs import set_logger_provider
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
        from opentelemetry.sdk._logs import LoggerProvider
        from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

        provider = LoggerProvider()
        provider.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter()))
        set_logger_provider(provider)
    except Exception as e:
        server.log.warning("Failed to set up OpenTelemetry logging in worker %s: %s", worker.pid, e)
