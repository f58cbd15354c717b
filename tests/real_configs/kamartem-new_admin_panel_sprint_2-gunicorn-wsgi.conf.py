# Source: kamartem/new_admin_panel_sprint_2, movies_admin/src/gunicorn-wsgi.conf.py.
# Written from a description, not copied. The harness binds with -b; the
# app comes from `wsgi_app`.
bind = "0.0.0.0:8000"
workers = 2
wsgi_app = "project.wsgi:application"
worker_class = "gthread"
threads = 4
max_requests = 1000
max_requests_jitter = 2
timeout = 30
worker_tmp_dir = "/dev/shm"
accesslog = errorlog = "-"
