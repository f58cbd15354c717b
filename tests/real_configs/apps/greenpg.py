# A stand-in for psycogreen.gevent (its only release is a source package and
# it needs psycopg2): patch_psycopg() installs a gevent wait callback the
# way psycogreen does, into a registry instead of psycopg2.extensions.
from gevent.socket import wait_read, wait_write

POLL_OK, POLL_READ, POLL_WRITE = 0, 1, 2
_registry = {}


def gevent_wait_callback(conn, timeout=None):
    while True:
        state = conn.poll()
        if state == POLL_OK:
            break
        elif state == POLL_READ:
            wait_read(conn.fileno(), timeout=timeout)
        elif state == POLL_WRITE:
            wait_write(conn.fileno(), timeout=timeout)
        else:
            raise OSError(f"Bad result from poll: {state!r}")


def patch_psycopg():
    _registry["wait_callback"] = gevent_wait_callback


def patched():
    return "wait_callback" in _registry
