# Source: pypi/warehouse, gunicorn-prod.conf.py. Written from a description,
# not copied. statsd goes to the harness's unused UDP port (STATSD_ADDR;
# localhost:8125 in the source). The harness binds with -b (over the unix
# socket).
import os

bind = "unix:/var/run/cabotage/cabotage.sock"
backlog = 2048
preload_app = True
max_requests = 2048
max_requests_jitter = 128
workers = 2
worker_connections = 1000
timeout = 60
keepalive = 2
errorlog = "-"
accesslog = "-"
loglevel = "info"
access_log_format = '%({Warehouse-Hashed-IP}i)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'
statsd_host = os.environ.get("STATSD_ADDR", "localhost:8125")
control_socket_disable = True
