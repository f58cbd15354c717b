# Reached only through the config's `pythonpath`
# (arthur-barbosa18/accident-risk-prediction adds its src directory).
import os

from flask import Flask

app = Flask(__name__)


@app.get("/")
def index():
    return f"Hello from accident-risk-prediction, HOST={os.environ.get('HOST')}\n"
