# The ASGI app of the authentik config: post_worker_init calls
# call_startup() on the loaded app object (worker.app.callable) in the
# worker whose stable id is 1; GET / tells whether that happened here, and
# GET /metrics-files lists the prometheus files named by worker id.
import os

from prometheus_client import Counter

# Created when the worker imports the app, after post_fork set the value
# class: its file is named after the worker id, not the pid.
REQUESTS = Counter("authentik_requests", "Requests served")


class App:
    def __init__(self):
        self.started = False

    def call_startup(self):
        self.started = True

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return
        REQUESTS.inc()
        if scope["path"] == "/metrics-files":
            names = sorted(os.listdir(os.environ["PROMETHEUS_MULTIPROC_DIR"]))
            body = " ".join(names) + "\n"
        else:
            body = f"Hello from authentik, startup called: {self.started}\n"
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body.encode()})


application = App()
