# The app factory of c4rlo/vimhelp (vimhelp/webapp.py: create_app()).
from flask import Flask


def create_app():
    app = Flask("vimhelp")

    @app.get("/")
    def index():
        return "Hello from vimhelp\n"

    return app
