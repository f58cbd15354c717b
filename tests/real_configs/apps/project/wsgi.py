# A Django-style project module: `wsgi_app = "project.wsgi"` finds
# `application` in it.
from webapp import app as application  # noqa: F401
