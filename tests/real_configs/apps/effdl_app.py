# The Flask app of mryab/efficient-dl-systems' metrics week: internal
# multiprocess metrics at /metrics of the app itself.
from flask import Flask
from prometheus_flask_exporter.multiprocess import GunicornInternalPrometheusMetrics

app = Flask(__name__)
metrics = GunicornInternalPrometheusMetrics(app)


@app.get("/")
def index():
    return "Hello from the metrics week\n"
