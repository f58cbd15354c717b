# A stand-in for City of Helsinki's django-logger-extra filter: adds a
# context field to every record.
import logging


class LoggerContextFilter(logging.Filter):
    def filter(self, record):
        record.context = "parking-permits"
        return True
