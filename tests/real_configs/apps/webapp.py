"""The Flask app most real configs serve (they come from Flask and Django
projects; Flask stands in for both). GET / answers a fixed text; the
/info/... routes show what a config changed in the worker, so that the
harness compares the effect, not only the start."""
import os

from flask import Flask, request

app = Flask(__name__)


@app.get("/")
def index():
    return "Hello from Flask\n"


@app.get("/info/env/<name>")
def env(name):
    return f"{name}={os.environ.get(name)!r}\n"


@app.get("/info/cwd")
def cwd():
    return f"cwd={os.path.basename(os.getcwd())}\n"


@app.get("/info/umask")
def umask():
    current = os.umask(0)
    os.umask(current)
    return f"umask={oct(current)}\n"


@app.get("/info/scheme")
def scheme():
    return f"wsgi.url_scheme={request.environ['wsgi.url_scheme']}\n"


@app.get("/info/software")
def software():
    return f"SERVER_SOFTWARE={request.environ.get('SERVER_SOFTWARE')}\n"


@app.get("/info/header/<name>")
def header(name):
    return f"{name}={request.headers.get(name)!r}\n"
