# Source: wegamekinglc/service-streamer, example_bert/gunicorn.py. Written
# from a description, not copied. gevent family, named by the built-in
# worker's full dotted path. The source runs 8 workers; 2 here. The harness
# binds with -b.
from gevent import monkey; monkey.patch_all()

bind = "0.0.0.0:5005"
workers = 2
worker_class = "gunicorn.workers.ggevent.GeventWorker"
