"""A Flask app of the shape gevent deployments serve (JSON, forms, a
redirect, an error handler, a streamed response, a cooperative sleep),
for tests/gevent.rs: the same answers from rgunicorn and gunicorn 27.0.1."""

import gevent
from flask import Flask, Response, jsonify, redirect, request, stream_with_context

app = Flask(__name__)


@app.route("/health")
def health():
    return "ok"


@app.route("/")
def index():
    return "hello from flask"


@app.route("/json")
def as_json():
    return jsonify(items=[1, 2, 3], name=request.args.get("name", "x"))


@app.route("/form", methods=["POST"])
def form():
    return jsonify(sorted(request.form.items()))


@app.route("/upload", methods=["POST"])
def upload():
    data = request.get_data()
    return jsonify(size=len(data), head=data[:8].decode("latin-1"))


@app.route("/old")
def old():
    return redirect("/new", code=301)


@app.route("/sleep")
def sleep():
    gevent.sleep(0.05)
    return "slept"


@app.route("/stream")
def stream():
    def gen():
        for i in range(3):
            gevent.sleep(0.01)
            yield "part %d\n" % i

    return Response(stream_with_context(gen()), mimetype="text/plain")


@app.route("/fail")
def fail():
    raise ValueError("boom")


@app.errorhandler(404)
def not_found(e):
    return jsonify(error="not here"), 404


@app.errorhandler(500)
def server_error(e):
    return jsonify(error="server"), 500
