# Source: langgenius/dify, api/gunicorn.conf.py. Written from a description,
# not copied. gevent family: the worker class comes from the command line
# (-k gevent, given by the harness); greenpg stands in for psycogreen and
# grpc is left out. The harness binds with -b.
import logging
import signal

import gevent.events
import greenpg

_logger = logging.getLogger(__name__)


def _patch_after_gevent(event):
    if isinstance(event, gevent.events.GeventDidPatchBuiltinModulesEvent):
        greenpg.patch_psycopg()


gevent.events.subscribers.append(_patch_after_gevent)


def post_worker_init(worker):
    original_handler = signal.getsignal(signal.SIGTERM)
    if not callable(original_handler):
        raise RuntimeError(f"unexpected SIGTERM handler {original_handler!r}")

    def graceful_shutdown(signum, frame):
        try:
            _logger.info("draining the app before shutdown")
        except Exception:
            worker.log.exception("failed to drain the app")
        original_handler(signum, frame)

    signal.signal(signal.SIGTERM, graceful_shutdown)
    signal.siginterrupt(signal.SIGTERM, False)
