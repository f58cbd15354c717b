# Source: Atomicbeast101/hawk-backup, gunicorn.conf.py. Written from a
# description, not copied. The access format looks like JSON, has an empty
# atom `%()s` and a key twice. The harness binds with -b.
bind = "0.0.0.0:5000"
workers = 2
accesslog = "-"
access_log_format = '{"remote_ip":"%(h)s","request":"%(r)s","status":"%(s)s","empty":"%()s","status":"%(s)s","agent":"%(a)s"}'

logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s [%(levelname)s] %(name)s: %(message)s", "datefmt": "%Y-%m-%d %H:%M:%S"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stdout"}},
    "loggers": {
        "gunicorn.error": {"level": "INFO", "handlers": ["console"], "propagate": False},
        "gunicorn.access": {"level": "INFO", "handlers": ["console"], "propagate": False},
    },
}
