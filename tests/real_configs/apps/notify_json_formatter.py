# A JSON formatter in the spirit of notifications_utils.logging.formatting:
# one JSON object per record, with the `extra=` fields the hooks pass.
import json
import logging

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S"


class JSONFormatter(logging.Formatter):
    def format(self, record):
        out = {
            "time": self.formatTime(record, self.datefmt),
            "level": record.levelname,
            "name": record.name,
            "message": record.getMessage(),
        }
        if hasattr(record, "process_"):
            out["process_"] = record.process_
        return json.dumps(out)
