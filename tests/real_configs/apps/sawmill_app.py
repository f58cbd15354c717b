# The app factory of willnx/sawmill_api (`wsgi_app = "...:make_app()"`).
from flask import Flask


def make_app():
    app = Flask("sawmill_api")

    @app.get("/")
    def index():
        return "Hello from sawmill_api\n"

    return app
