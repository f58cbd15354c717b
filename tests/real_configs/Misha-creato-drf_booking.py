# Source: Misha-creato/drf_booking, gunicorn.conf.py. Written from a
# description, not copied. `logger_class` is a class object. The source's
# worker class is gevent; the harness runs it with -k sync (the command line
# overrides the file) so that the logger class is tested apart from gevent.
# The harness binds with -b; the app comes from `wsgi_app`.
import logging

from gunicorn.glogging import Logger as GLogger

project_logger = logging.getLogger("drf_booking")
project_logger.addHandler(logging.StreamHandler())
project_logger.setLevel(logging.INFO)


class GunicornLogger(GLogger):
    def setup(self, cfg):
        super().setup(cfg)
        self.access_log = project_logger
        self.error_log = project_logger


logger_class = GunicornLogger
wsgi_app = "project.wsgi"
worker_class = "gevent"
workers = 2
