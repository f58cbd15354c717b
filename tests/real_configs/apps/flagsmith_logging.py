# Source: Flagsmith/flagsmith, api/util/logging.py: a statsd logger
# subclass that switches gunicorn's error and access logs to JSON, reading
# the access record's args as a dict of atoms.
import json
import logging
import sys
from datetime import datetime

from gunicorn.config import Config
from gunicorn.instrument.statsd import Statsd as StatsdGunicornLogger


class JsonFormatter(logging.Formatter):
    def format(self, record):
        return json.dumps({"levelname": record.levelname, "message": record.getMessage()})


class GunicornAccessLogJsonFormatter(JsonFormatter):
    def format(self, record):
        args = record.args
        url = args["U"]
        if q := args["q"]:
            url += f"?{q}"
        return json.dumps(
            {
                "time": datetime.strptime(args["t"], "[%d/%b/%Y:%H:%M:%S %z]").isoformat(),
                "remote_ip": args["h"],
                "method": args["m"],
                "path": url,
                "status": str(args["s"]),
                "user_agent": args["a"],
                "referer": args["f"],
                "duration_in_ms": args["M"],
                "pid": args["p"],
            }
        )


class GunicornJsonCapableLogger(StatsdGunicornLogger):
    def setup(self, cfg: Config) -> None:
        super().setup(cfg)
        self._set_handler(self.error_log, cfg.errorlog, JsonFormatter())
        self._set_handler(self.access_log, cfg.accesslog, GunicornAccessLogJsonFormatter(), stream=sys.stdout)
