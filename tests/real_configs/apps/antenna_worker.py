# Source: mozilla-services/antenna, antenna/gunicornworker.py: a GeventWorker
# whose patch() also patches a library for gevent (grpc there; a marker
# here, grpcio is not installed).
from gunicorn.workers.ggevent import GeventWorker

PATCHED = []


class GeventGrpcWorker(GeventWorker):
    def patch(self):
        super().patch()
        PATCHED.append("grpc")
