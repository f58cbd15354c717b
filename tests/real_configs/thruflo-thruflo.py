# Source: thruflo/thruflo, gunicorn.prod.py. Written from a description, not
# copied. gevent family, named by an egg: entry point; old hook names
# (ignored) written as lambdas. The harness binds with -b (over the unix
# socket).
bind = "unix:/tmp/gunicorn.sock"
daemon = False
debug = False  # removed setting: ignored
keepalive = 5
logfile = "thruflo.log"  # removed setting: ignored
pidfile = None
workers = 2
umask = 0
user = None
group = None
proc_name = None
spew = False
timeout = 30
tmp_upload_dir = None
worker_class = "egg:gunicorn#gevent"

after_fork = lambda server, worker: server.log.info("Worker spawned (pid: %s)" % worker.pid)
before_fork = lambda server, worker: True
before_exec = lambda server: server.log.info("Forked child, re-executing.")
when_ready = lambda server: server.log.info("Server is ready. Spawning workers")
