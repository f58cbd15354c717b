"""Python's logging set up as gunicorn 27's glogging.Logger.setup sets it
up, with handlers that write through rgunicorn's own error and access
logs (same format, same files, reopened on USR1), and the test of
whether rgunicorn's own lines must go through Python's handlers."""

import json
import logging
import logging.config
import os

ERROR_FMT = r"%(asctime)s [%(process)d] [%(levelname)s] %(message)s"
DATEFMT = r"[%Y-%m-%d %H:%M:%S %z]"
ACCESS_FMT = "%(message)s"

LOG_LEVELS = {
    "critical": logging.CRITICAL,
    "error": logging.ERROR,
    "warning": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
}

# gunicorn 27's glogging.CONFIG_DEFAULTS, merged under logconfig_dict and
# logconfig_json as gunicorn merges it (a shallow update).
CONFIG_DEFAULTS = {
    "version": 1,
    "disable_existing_loggers": False,
    "root": {"level": "INFO", "handlers": ["console"]},
    "loggers": {
        "gunicorn.error": {
            "level": "INFO",
            "handlers": ["error_console"],
            "propagate": True,
            "qualname": "gunicorn.error",
        },
        "gunicorn.access": {
            "level": "INFO",
            "handlers": ["console"],
            "propagate": True,
            "qualname": "gunicorn.access",
        },
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "generic",
            "stream": "ext://sys.stdout",
        },
        "error_console": {
            "class": "logging.StreamHandler",
            "formatter": "generic",
            "stream": "ext://sys.stderr",
        },
    },
    "formatters": {
        "generic": {
            "format": ERROR_FMT,
            "datefmt": DATEFMT,
            "class": "logging.Formatter",
        }
    },
}


class RgunicornHandler(logging.Handler):
    """Writes formatted records through one of rgunicorn's logs. Marked
    `_gunicorn` as gunicorn marks its own handlers, so that a reload (and
    code written for gunicorn) finds and replaces them."""

    def __init__(self, write):
        logging.Handler.__init__(self)
        self._write = write
        self._gunicorn = True

    def emit(self, record):
        try:
            self._write(self.format(record))
        except Exception:
            self.handleError(record)


class SafeAtoms(dict):
    """gunicorn's glogging.SafeAtoms: a missing atom is '-'; `{header}`
    atoms are looked up case-insensitively; quotes in strings escaped."""

    def __init__(self, atoms):
        dict.__init__(self)
        for key, value in atoms.items():
            if isinstance(value, str):
                self[key] = value.replace('"', '\\"')
            else:
                self[key] = value

    def __getitem__(self, k):
        if k.startswith("{"):
            kl = k.lower()
            if kl in self:
                return super().__getitem__(kl)
            return "-"
        if k in self:
            return super().__getitem__(k)
        return "-"


# What setup installed, to tell later whether anything replaced it.
_installed = {}


def setup(loglevel, accesslog, logconfig_dict, logconfig_json, logconfig,
          write_error, write_access):
    """gunicorn's Logger.setup; RuntimeError as gunicorn raises it."""
    error_log = logging.getLogger("gunicorn.error")
    error_log.propagate = False
    access_log = logging.getLogger("gunicorn.access")
    access_log.propagate = False
    level = LOG_LEVELS.get(loglevel.lower(), logging.INFO)
    error_log.setLevel(level)
    access_log.setLevel(logging.INFO)
    for log in (error_log, access_log):
        for handler in list(log.handlers):
            if getattr(handler, "_gunicorn", False):
                log.removeHandler(handler)
    error_handler = RgunicornHandler(write_error)
    error_handler.setFormatter(logging.Formatter(ERROR_FMT, DATEFMT))
    error_log.addHandler(error_handler)
    access_handler = None
    if accesslog is not None:
        access_handler = RgunicornHandler(write_access)
        access_handler.setFormatter(logging.Formatter(ACCESS_FMT))
        access_log.addHandler(access_handler)
    _installed.update(
        error=error_handler,
        error_formatter=error_handler.formatter,
        access=access_handler,
        access_formatter=access_handler and access_handler.formatter,
        level=level,
    )
    if logconfig_dict:
        config = CONFIG_DEFAULTS.copy()
        config.update(logconfig_dict)
        try:
            logging.config.dictConfig(config)
        except (AttributeError, ImportError, ValueError, TypeError) as exc:
            raise RuntimeError(str(exc)) from exc
    elif logconfig_json:
        config = CONFIG_DEFAULTS.copy()
        if os.path.exists(logconfig_json):
            try:
                with open(logconfig_json) as f:
                    config.update(json.load(f))
                logging.config.dictConfig(config)
            except (json.JSONDecodeError, AttributeError, ImportError,
                    ValueError, TypeError) as exc:
                raise RuntimeError(str(exc)) from exc
    elif logconfig:
        if os.path.exists(logconfig):
            defaults = CONFIG_DEFAULTS.copy()
            defaults["__file__"] = logconfig
            defaults["here"] = os.path.dirname(logconfig)
            logging.config.fileConfig(
                logconfig, defaults=defaults, disable_existing_loggers=False
            )
        else:
            raise RuntimeError("Error: log config '%s' not found" % logconfig)


def uvicorn_loggers():
    """What uvicorn's UvicornWorker.__init__ does: uvicorn's loggers take
    gunicorn's handlers and levels and do not propagate."""
    error_log = logging.getLogger("gunicorn.error")
    access_log = logging.getLogger("gunicorn.access")
    for name, source in (("uvicorn.error", error_log), ("uvicorn.access", access_log)):
        logger = logging.getLogger(name)
        logger.handlers = source.handlers
        logger.setLevel(source.level)
        logger.propagate = False


def _reaches_other_handlers(logger):
    """Whether records of `logger` propagate to a logger with handlers."""
    parent = logger.parent if logger.propagate else None
    while parent is not None:
        if parent.handlers:
            return True
        parent = parent.parent if parent.propagate else None
    return False


def routing():
    """(error, access): whether gunicorn.error / gunicorn.access handle
    records otherwise than the handlers setup installed, so that
    rgunicorn's own lines must go through Python's logging."""
    error_log = logging.getLogger("gunicorn.error")
    access_log = logging.getLogger("gunicorn.access")
    eh = _installed.get("error")
    error_plain = (
        eh is not None
        and error_log.handlers == [eh]
        and eh.formatter is _installed["error_formatter"]
        and not eh.filters
        and not error_log.filters
        and not error_log.disabled
        and error_log.level == _installed["level"]
        and not _reaches_other_handlers(error_log)
    )
    ah = _installed.get("access")
    access_plain = (
        access_log.handlers == ([ah] if ah is not None else [])
        and (ah is None or (ah.formatter is _installed["access_formatter"] and not ah.filters))
        and not access_log.filters
        and not access_log.disabled
        and access_log.level == logging.INFO
        and not _reaches_other_handlers(access_log)
    )
    return (not error_plain, not access_plain)


def route_error(level, msg):
    logging.getLogger("gunicorn.error").log(level, msg)


def route_access(fmt, atoms):
    # gunicorn's Logger.access: the format is the message, the atoms its
    # arguments (a mapping, for %(name)s).
    logging.getLogger("gunicorn.access").info(fmt, SafeAtoms(atoms))
