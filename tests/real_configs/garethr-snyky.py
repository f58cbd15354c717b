# Source: garethr/snyky, src/gunicorn.conf.py (the version with settings).
# Written from a description, not copied. `bind = ":PORT"`; the harness
# sets PORT.
import os
import re

import structlog

capture_output = True
workers = 2
threads = 4
worker_class = "gthread"
access_logfile = "-"  # not setting names: ignored
log_file = "-"
woker_tmp_dir = "/dev/shm"  # typo: ignored

port = os.getenv("PORT") or 8000
bind = ":%s" % port

_combined = re.compile(r'(?P<client>\S+) \S+ \S+ \[(?P<time>[^\]]+)\] "(?P<request>[^"]*)" (?P<status>\d{3}) (?P<size>\S+)')


def combined_logformat(logger, name, event_dict):
    if event_dict.get("logger") == "gunicorn.access":
        match = _combined.match(event_dict["event"])
        if match:
            event_dict.update(match.groupdict())
    return event_dict


pre_chain = [
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    combined_logformat,
]

logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": True,
    "formatters": {
        "json_formatter": {
            "()": structlog.stdlib.ProcessorFormatter,
            "processor": structlog.processors.JSONRenderer(),
            "foreign_pre_chain": pre_chain,
        }
    },
    "handlers": {
        "error_console": {"class": "logging.StreamHandler", "formatter": "json_formatter"},
        "console": {"class": "logging.StreamHandler", "formatter": "json_formatter"},
    },
    "root": {"level": "INFO", "handlers": ["console"], "propagate": False},
    "loggers": {
        "gunicorn.error": {"handlers": ["error_console"], "level": "INFO", "propagate": False},
        "gunicorn.access": {"handlers": ["console"], "level": "INFO", "propagate": False},
    },
}
