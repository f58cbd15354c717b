"""Python's logging set up as gunicorn 27's glogging.Logger.setup sets it
up, with handlers that write through rgunicorn's own error and access
logs (same format, same files, reopened on USR1), and the test of
whether rgunicorn's own lines must go through Python's handlers."""

import json
import logging
import logging.config
import logging.handlers
import os
import socket
import sys

ERROR_FMT = r"%(asctime)s [%(process)d] [%(levelname)s] %(message)s"
DATEFMT = r"[%Y-%m-%d %H:%M:%S %z]"
ACCESS_FMT = "%(message)s"
SYSLOG_FMT = "[%(process)d] %(message)s"

SYSLOG_FACILITIES = {
    "auth": 4, "authpriv": 10, "cron": 9, "daemon": 3, "ftp": 11, "kern": 0,
    "lpr": 6, "mail": 2, "news": 7, "security": 4, "syslog": 5, "user": 1,
    "uucp": 8, "local0": 16, "local1": 17, "local2": 18, "local3": 19,
    "local4": 20, "local5": 21, "local6": 22, "local7": 23,
}

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


def parse_syslog_address(addr):
    """gunicorn's glogging.parse_syslog_address."""
    if addr.startswith("unix://"):
        sock_type = None
        parts = addr.split("#", 1)
        if len(parts) == 2:
            addr = parts[0]
            if parts[1] == "dgram":
                sock_type = socket.SOCK_DGRAM
        return (sock_type, addr.split("unix://")[1])
    if addr.startswith("udp://"):
        addr = addr.split("udp://")[1]
        socktype = socket.SOCK_DGRAM
    elif addr.startswith("tcp://"):
        addr = addr.split("tcp://")[1]
        socktype = socket.SOCK_STREAM
    else:
        raise RuntimeError("invalid syslog address")
    if "[" in addr and "]" in addr:
        host = addr.split("]")[0][1:].lower()
    elif ":" in addr:
        host = addr.split(":")[0].lower()
    elif addr == "":
        host = "localhost"
    else:
        host = addr.lower()
    addr = addr.split("]")[-1]
    if ":" in addr:
        port = addr.split(":", 1)[1]
        if not port.isdigit():
            raise RuntimeError("%r is not a valid port number." % port)
        port = int(port)
    else:
        port = 514
    return (socktype, (host, port))


def _set_syslog_handler(log, syslog, name):
    """gunicorn's Logger._set_syslog_handler."""
    prefix = "gunicorn.%s.%s" % (syslog["prefix"], name)
    fmt = logging.Formatter(r"%s: %s" % (prefix, SYSLOG_FMT))
    try:
        facility = SYSLOG_FACILITIES[syslog["facility"].lower()]
    except KeyError as exc:
        raise RuntimeError("unknown facility name") from exc
    socktype, addr = parse_syslog_address(syslog["addr"])
    h = logging.handlers.SysLogHandler(address=addr, facility=facility, socktype=socktype)
    h.setFormatter(fmt)
    h._gunicorn = True
    log.addHandler(h)


def _capture_output(errorlog):
    """capture_output: the process's stdout and stderr into the error log
    file, as gunicorn dups them (inherited by the workers)."""
    for stream in sys.stdout, sys.stderr:
        stream.flush()
    old = _installed.get("logfile")
    logfile = open(errorlog, "a+")
    os.dup2(logfile.fileno(), sys.stdout.fileno())
    os.dup2(logfile.fileno(), sys.stderr.fileno())
    _installed["logfile"] = logfile
    if old is not None:
        old.close()


def reopen_files():
    """gunicorn's Logger.reopen_files (USR1): the captured output, and every
    FileHandler of every logger."""
    if _installed.get("capture"):
        _capture_output(_installed["capture"])
    for log in [logging.root] + [
        logging.getLogger(name) for name in list(logging.root.manager.loggerDict)
    ]:
        for handler in getattr(log, "handlers", []):
            if isinstance(handler, logging.FileHandler):
                handler.acquire()
                try:
                    if handler.stream:
                        handler.close()
                        handler.stream = handler._open()
                finally:
                    handler.release()


def setup(loglevel, accesslog, logconfig_dict, logconfig_json, logconfig,
          write_error, write_access, capture, syslog):
    """gunicorn's Logger.setup; RuntimeError as gunicorn raises it.

    `capture`: the errorlog file when capture_output applies; `syslog`:
    None, or the syslog settings (addr, facility, prefix, access)."""
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
    _installed["capture"] = capture
    if capture:
        _capture_output(capture)
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
    if syslog is not None:
        _set_syslog_handler(error_log, syslog, "error")
        if syslog["access"]:
            _set_syslog_handler(access_log, syslog, "access")
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
    if _installed.get("logger") is not None:
        return (True, True)
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
    if _installed.get("logger") is not None:
        return route_error_logger(level, msg)
    logging.getLogger("gunicorn.error").log(level, msg)


def route_access(fmt, atoms):
    if _installed.get("logger") is not None:
        return route_access_logger(fmt, atoms)
    # gunicorn's Logger.access: the format is the message, the atoms its
    # arguments (a mapping, for %(name)s).
    logging.getLogger("gunicorn.access").info(fmt, SafeAtoms(atoms))


# logger_class: gunicorn's glogging.Logger and its statsd subclass are what
# rgunicorn's own logging does; any other class is instantiated and used.
NATIVE_LOGGERS = ("gunicorn.glogging.Logger", "gunicorn.instrument.statsd.Statsd")


def install_logger_class(uri, cfg):
    """gunicorn's `cfg.logger_class(cfg)`, unless it is a class rgunicorn
    does natively; True when a custom logger is in use."""
    _installed["logger"] = None
    name = uri if isinstance(uri, str) else "%s.%s" % (uri.__module__, uri.__qualname__)
    if name in ("simple",) + NATIVE_LOGGERS:
        return False
    try:
        import gunicorn.glogging  # noqa: F401
    except ImportError:
        raise RuntimeError(
            "logger_class %r needs gunicorn installed in this environment: "
            "a logger class derives from gunicorn.glogging.Logger" % name
        )
    klass = cfg.logger_class
    if "%s.%s" % (klass.__module__, klass.__qualname__) in NATIVE_LOGGERS:
        return False
    if hasattr(klass, "install"):
        klass.install()
    _installed["logger"] = klass(cfg)
    return True


def custom_logger():
    return _installed.get("logger")


def error_logger():
    """Where hook lines go: the custom logger, else gunicorn.error."""
    return _installed.get("logger") or logging.getLogger("gunicorn.error")


_LEVEL_METHODS = {10: "debug", 20: "info", 30: "warning", 40: "error", 50: "critical"}


def route_error_logger(level, msg):
    getattr(_installed["logger"], _LEVEL_METHODS.get(level, "info"))(msg)


class _Response:
    """The parts of gunicorn's Response that Logger.atoms reads."""

    def __init__(self, status, headers, sent):
        self.status = status
        self.headers = headers
        self.sent = sent


class _Request:
    def __init__(self, headers):
        self.headers = headers


def route_access_logger(fmt, atoms):
    """A record to the custom logger's access(resp, req, environ,
    request_time), with objects shaped as gunicorn's."""
    import datetime

    req_headers = [(k[1:-2].upper(), v) for k, v in atoms.items() if k.endswith("}i")]
    resp_headers = [(k[1:-2], v) for k, v in atoms.items() if k.endswith("}o")]
    environ = {
        "REQUEST_METHOD": atoms["m"],
        "RAW_URI": atoms["{raw_uri}e"],
        "PATH_INFO": atoms["U"],
        "QUERY_STRING": atoms["q"],
        "SERVER_PROTOCOL": atoms["H"],
        "REMOTE_ADDR": atoms["h"],
    }
    for name, value in req_headers:
        key = "HTTP_" + name.replace("-", "_")
        environ[key] = environ[key] + "," + value if key in environ else value
    # gunicorn's Response.status is the status line's text ("200 OK").
    try:
        import http
        status = "%d %s" % (atoms["s"], http.HTTPStatus(atoms["s"]).phrase)
    except ValueError:
        status = str(atoms["s"])
    resp = _Response(status, resp_headers, atoms["B"])
    request_time = datetime.timedelta(microseconds=atoms["D"])
    _installed["logger"].access(resp, _Request(req_headers), environ, request_time)


def config_dump(cfg):
    """gunicorn's arbiter's debug line: every setting, in its order."""
    return "Current configuration:\n{0}".format(
        "\n".join(
            "  {0}: {1}".format(name, setting.value)
            for name, setting in sorted(cfg.settings.items(), key=lambda s: s[1])
        )
    )
