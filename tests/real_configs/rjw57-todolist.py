# Source: rjw57/todolist, gunicornconf.py. Written from a description, not
# copied. A structlog formatter given as a class object; the dict has no
# "loggers" and no "root". The harness binds with -b.
import structlog

pre_chain = [
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso"),
]

logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
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
}
