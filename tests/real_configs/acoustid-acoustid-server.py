# Source: acoustid/acoustid-server, acoustid/gunicorn_config.py. Written
# from a description, not copied. Only logging: access lines go to a
# NullHandler. The harness binds with -b.
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": True,
    "formatters": {
        "json": {"class": "acoustid_logging.JsonLogFormatter"},
    },
    "handlers": {
        "stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"},
        "null": {"class": "logging.NullHandler"},
    },
    "root": {"level": "INFO", "handlers": ["stderr"]},
    "loggers": {
        "gunicorn.error": {"level": "INFO", "handlers": ["stderr"], "propagate": False, "qualname": "gunicorn.error"},
        "gunicorn.access": {"level": "ERROR", "handlers": ["null"], "propagate": False, "qualname": "gunicorn.access"},
    },
}
