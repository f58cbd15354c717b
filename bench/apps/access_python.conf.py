# The access log through Python's logging (bench row "wsgi-access-log"):
# a logconfig_dict that gives gunicorn.access its own handler and
# formatter, so that rgunicorn hands each record to Python
# (info(access_log_format, atoms)) instead of writing it from Rust.
logconfig_dict = {
    "version": 1,
    "formatters": {"line": {"format": "%(message)s"}},
    "handlers": {
        "access": {"class": "logging.FileHandler", "formatter": "line", "filename": "/dev/null"},
        "error": {"class": "logging.StreamHandler", "formatter": "line", "stream": "ext://sys.stderr"},
    },
    "root": {"level": "WARNING", "handlers": ["error"]},
    "loggers": {
        "gunicorn.access": {"level": "INFO", "handlers": ["access"], "propagate": False},
        "gunicorn.error": {"level": "INFO", "handlers": ["error"], "propagate": False},
    },
}
