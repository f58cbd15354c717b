# Source: craig8/UUDEX, server/src/server_handlers/gunicorn_handler.py: a
# SyncWorker subclass that passes the client certificate's common name to
# the app as a request header.
from gunicorn.workers.sync import SyncWorker


class CustomWorker(SyncWorker):
    def handle_request(self, listener, req, client, addr):
        subject = dict(x[0] for x in client.getpeercert()["subject"])
        headers = [(k, v) for k, v in req.headers if k != "X-USER-CN"]
        headers.append(("X-USER-CN", subject.get("commonName", "")))
        req.headers = headers
        super().handle_request(listener, req, client, addr)
