"""The hub side of rgunicorn's gevent workers (the Rust half is `mod.rs` beside it).

In a worker: `patch()` right after `post_fork`, as gunicorn's
GeventWorker.init_process patches before anything else; then `serve()` on
the worker's main thread runs gevent's hub until the Rust side has drained.
Requests, hook calls and log records come from the tokio thread through an
inbox in Rust and an eventfd this loop watches; each request runs in its
own greenlet, at most `limit` (worker_connections) at once."""

import collections

# Greenlets parked in Rust (wsgi.input waiting for body bytes, a streamed
# response waiting for room), by token; woken from the hub.
_waiters = {}

# The attributes of gunicorn's Worker that a patch() override may read.
_WORKER_ATTRS = (
    "pid", "ppid", "age", "nr", "alive", "booted", "aborted",
    "max_requests", "timeout", "cfg", "log",
)


def patch(cls, worker):
    """gunicorn 27's GeventWorker.patch(): monkey.patch_all() (the listening
    sockets it would wrap are Rust's here), or the class's own patch(),
    called on an instance made without __init__ (no sockets, no temp
    file), so that super().patch() works; then hub.reinit() as gunicorn's
    init_process does."""
    if cls is None:
        from gevent import monkey
        monkey.patch_all()
    else:
        self = cls.__new__(cls)
        for name in _WORKER_ATTRS:
            try:
                setattr(self, name, getattr(worker, name))
            except Exception:
                pass
        self.sockets = []
        self.worker_connections = worker.cfg.worker_connections
        self.patch()
    from gevent import hub
    hub.reinit()


def park(token):
    """Switch to the hub until the Rust side wakes `token`."""
    from gevent.hub import Waiter
    waiter = Waiter()
    _waiters[token] = waiter
    try:
        waiter.get()
    finally:
        _waiters.pop(token, None)


def serve(inlet, fd, limit):
    """Run the hub until the inbox says stop."""
    import gevent
    from gevent.event import Event

    hub = gevent.get_hub()
    done = Event()
    spawn = gevent.spawn
    # [greenlets running a request, requests waiting for one]
    counts = [0, 0]

    def run_request():
        try:
            inlet.run_request()
        finally:
            counts[0] -= 1
            start_requests()

    def start_requests():
        while counts[1] and counts[0] < limit:
            counts[1] -= 1
            counts[0] += 1
            spawn(run_request)

    def on_ready():
        # In the hub: wake parked greenlets, start new ones; never block.
        wakes, requests, calls, stop = inlet.take()
        for token in wakes:
            waiter = _waiters.pop(token, None)
            if waiter is not None:
                waiter.switch(None)
        for _ in range(calls):
            spawn(inlet.run_call)
        if requests:
            counts[1] += requests
            start_requests()
        if stop:
            done.set()

    watcher = hub.loop.io(fd, 1)
    watcher.start(on_ready)
    # The worker's heartbeat: a greenlet that keeps the hub busy stops it,
    # and the master aborts the worker after `timeout`.
    beat = hub.loop.timer(0.0, 0.5)
    beat.start(inlet.beat)
    try:
        done.wait()
    finally:
        watcher.stop()
        beat.stop()
