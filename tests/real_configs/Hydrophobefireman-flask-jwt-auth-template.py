# Source: Hydrophobefireman/flask-jwt-auth-template, app/gunicorn.conf.py.
# Written from a description, not copied. The source touches
# /tmp/app-initialized; a relative path here keeps runs apart. The harness
# binds with -b.
bind = "0.0.0.0:8080"
workers = 4
threads = 4
max_requests = 1200
max_requests_jitter = 10
timeout = 500


def when_ready(server):
    try:
        open("app-initialized", "w").close()
    except Exception:
        pass
