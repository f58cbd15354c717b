"""
Gunicorn configuration for production deployment.

This file configures the Gunicorn ASGI server for running FastAPI
with multiple worker processes, health monitoring, and graceful restarts.
"""

import multiprocessing
import os

# Server socket
bind = f"0.0.0.0:{os.getenv('PORT', '8000')}"
backlog = 2048  # Max queued connections

# Worker processes
workers = int(os.getenv("WORKERS", multiprocessing.cpu_count() * 2 + 1))
worker_class = "uvicorn.workers.UvicornWorker"
worker_connections = 1000  # Max simultaneous connections per worker
max_requests = int(os.getenv("MAX_REQUESTS", "1000"))  # Restart worker after N requests
max_requests_jitter = int(os.getenv("MAX_REQUESTS_JITTER", "100"))  # Add randomness to prevent thundering herd

# Timeouts
timeout = int(os.getenv("WORKER_TIMEOUT", "30"))  # Worker silence timeout (seconds)
graceful_timeout = int(os.getenv("GRACEFUL_TIMEOUT", "30"))  # Grace period for shutdown
keepalive = int(os.getenv("KEEPALIVE", "5"))  # Keep-alive timeout

# Server mechanics
preload_app = False  # Don't preload app (allows code reload)
daemon = False  # Don't daemonize (Docker handles this)
pidfile = None  # No PID file needed (Docker handles this)
user = None  # Run as current user (Docker sets this)
group = None

# Logging
accesslog = "-"  # Log to stdout
errorlog = "-"  # Log to stderr
loglevel = os.getenv("LOG_LEVEL", "info")
access_log_format = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %(D)s'

# Process naming
proc_name = "production-fastapi-backend"

# Server hooks
def on_starting(server):
    """Called just before the master process is initialized."""
    server.log.info("Gunicorn master starting")

def on_reload(server):
    """Called to recycle workers during a reload via SIGHUP."""
    server.log.info("Reloading workers")

def when_ready(server):
    """Called just after the server is started."""
    server.log.info(f"Gunicorn ready. Workers: {workers}, Bind: {bind}")

def worker_int(worker):
    """Called just after a worker exited on SIGINT or SIGQUIT."""
    worker.log.info(f"Worker {worker.pid} received INT/QUIT signal")

def worker_abort(worker):
    """Called when a worker received the SIGABRT signal."""
    worker.log.warning(f"Worker {worker.pid} aborted (timeout or crash)")

def pre_fork(server, worker):
    """Called just before a worker is forked."""
    pass

def post_fork(server, worker):
    """Called just after a worker has been forked."""
    server.log.info(f"Worker {worker.pid} spawned")

def worker_exit(server, worker):
    """Called just after a worker has been exited, in the master process."""
    server.log.info(f"Worker {worker.pid} exited")
