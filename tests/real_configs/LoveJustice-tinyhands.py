# Source: LoveJustice/tinyhands, application/bin/gunicorn_config.py. Written
# from a description, not copied. The source's log paths are absolute
# (/data/log/...); here they are under the config's directory. The harness
# binds with -b.
import os

_here = os.path.dirname(os.path.abspath(__file__))

bind = "0.0.0.0:9001"
loglevel = "INFO"
workers = "3"  # a string
reload = True
errorlog = os.path.join(_here, "tinyhands_logs", "gunicorn_error.log")
accesslog = os.path.join(_here, "tinyhands_logs", "gunicorn_access.log")
