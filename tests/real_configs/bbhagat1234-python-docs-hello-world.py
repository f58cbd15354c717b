# Source: bbhagat1234/python-docs-hello-world, gunicorn.py. Written from a
# description, not copied. Settings written YAML-style as annotations; the
# last one is not valid Python, so the file does not load and neither
# server is expected to start.
bind = "0.0.0.0:8000"
workers: 1
worker_class: gevent
accesslog: /var/log/gunicorn/access.log
