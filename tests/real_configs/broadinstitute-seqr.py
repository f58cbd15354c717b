# Source: broadinstitute/seqr, deploy/docker/seqr/config/gunicorn_config.py.
# Written from a description, not copied. The harness binds with -b.
command = "gunicorn"  # a removed setting: ignored
bind = "0.0.0.0:8000"
workers = 1
loglevel = "info"
timeout = 3600
errorlog = "-"
