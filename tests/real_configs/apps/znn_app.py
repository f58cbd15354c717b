# The Flask app of cmendesce/znn-python: prometheus_flask_exporter's
# multiprocess metrics (PROMETHEUS_MULTIPROC_DIR), served by the master's
# metrics server that the config's when_ready starts.
from flask import Flask
from prometheus_flask_exporter.multiprocess import GunicornPrometheusMetrics

app = Flask(__name__)
metrics = GunicornPrometheusMetrics(app)


@app.get("/")
def index():
    return "Hello from znn\n"
