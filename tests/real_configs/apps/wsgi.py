# The `wsgi:app` module of hackersandslackers/flask-assets-tutorial and
# toddbirchard/broiestbot-db.
from webapp import app  # noqa: F401
