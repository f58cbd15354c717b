# Source: nexent-dev/faraja-yangu-tv-backend, .config/gunicorn_config.py.
# Written from a description, not copied. The harness binds with -b and
# serves asgiapp:app.
command = "gunicorn"  # a removed setting: ignored
pythonpath = "/app"
bind = "0.0.0.0:8000"
workers = 4
worker_class = "uvicorn.workers.UvicornH11Worker"
