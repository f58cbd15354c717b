"""gunicorn 27.0.1 serving one connection, in memory, for
tests/gate_vs_gunicorn.rs: its own parser (gunicorn.http.RequestParser), its
own environ (gunicorn.http.wsgi.create) and its gthread worker's request and
error handling (ThreadWorker.handle_request, Worker.handle_error), over a
socket-like object that hands out the client's bytes in the chunks given,
as gunicorn's tests do with their FakeSocket. What the server would write
back is returned."""

import ast
import sys

from gunicorn.config import Config
from gunicorn.http.errors import NoMoreData
from gunicorn.http.parser import RequestParser
from gunicorn.workers.base import Worker
from gunicorn.workers.gthread import ThreadWorker


class FakeSocket:
    """`recv` hands out the chunks in order, at most `size` bytes at a time
    as a socket does; with `one_read`, all that is left at once (a schedule
    no socket gives, to tell where gunicorn's answer depends on its reads)."""

    def __init__(self, chunks, one_read=False):
        self.chunks = [c for c in chunks if c]
        if one_read:
            self.chunks = [b"".join(self.chunks)]
        self.one_read = one_read
        self.out = bytearray()
        self.timeout = None

    def recv(self, size):
        if not self.chunks:
            return b""
        first = self.chunks[0]
        if len(first) > size and not self.one_read:
            self.chunks[0] = first[size:]
            return first[:size]
        self.chunks.pop(0)
        return first

    def send(self, data):
        self.out += data
        return len(data)

    def sendall(self, data):
        self.out += data

    def gettimeout(self):
        return self.timeout

    def settimeout(self, t):
        self.timeout = t

    def setblocking(self, flag):
        self.timeout = None if flag else 0.0


class Log:
    def __getattr__(self, name):
        return lambda *args, **kwargs: None


class Conn:
    def __init__(self, sock, client, server):
        self.sock, self.client, self.server = sock, client, server


class StubWorker:
    """What ThreadWorker.handle_request and Worker.handle_error use."""

    handle_request = ThreadWorker.handle_request
    handle_error = Worker.handle_error

    def __init__(self, cfg, app):
        self.cfg = cfg
        self.log = Log()
        self.wsgi = app
        self.alive = True
        self.nr = 0
        self.max_requests = sys.maxsize
        self.keepalived_conns = ()
        self.max_keepalived = sys.maxsize


def config(settings):
    """A Config with `settings`: (name, Python literal) pairs, as the lines
    of the config file rgunicorn is given."""
    cfg = Config()
    for name, value in settings:
        cfg.set(name, ast.literal_eval(value))
    return cfg


CLIENT = ("127.0.0.1", 40000)
SERVER = ("127.0.0.1", 8000)


def serve(cfg, app, chunks, one_read=False):
    """The bytes gunicorn's gthread worker writes back on a connection
    whose client sends `chunks` and then half-closes."""
    sock = FakeSocket(chunks, one_read)
    parser = RequestParser(cfg, sock, CLIENT)
    worker = StubWorker(cfg, app)
    conn = Conn(sock, CLIENT, SERVER)
    while True:
        req = None
        try:
            req = next(parser)
            if not req:
                break
            if not worker.handle_request(req, conn):
                break
            if not parser.finish_body():
                break
        except (NoMoreData, StopIteration, OSError):
            break
        except Exception as e:  # pylint: disable=broad-except
            worker.handle_error(req, sock, CLIENT, e)
            break
    return bytes(sock.out)


def serve_all(settings, app, cases, one_read=False):
    cfg = config(settings)
    return [serve(cfg, app, chunks, one_read) for chunks in cases]
