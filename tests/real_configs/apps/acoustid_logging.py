# A stand-in for acoustid.logging.JsonLogFormatter: a formatter class named
# by the "class" key of a logging dict.
import json
import logging


class JsonLogFormatter(logging.Formatter):
    def format(self, record):
        return json.dumps({"level": record.levelname, "logger": record.name, "msg": record.getMessage()})
