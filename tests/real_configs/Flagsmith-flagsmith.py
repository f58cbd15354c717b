# Source: Flagsmith/flagsmith, api/scripts/run-docker.sh (command-line
# flags) with api/util/logging.py, as a config file. Written from a
# description, not copied. statsd goes to the harness's unused UDP port
# (STATSD_ADDR). The harness binds with -b.
import os

bind = "0.0.0.0:8000"
worker_tmp_dir = "/dev/shm"
timeout = 30
workers = 2
threads = 2
accesslog = "-"
logger_class = "flagsmith_logging.GunicornJsonCapableLogger"
access_log_format = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %({origin}i)s %({access-control-allow-origin}o)s'
keepalive = 2
statsd_host = os.environ["STATSD_ADDR"]
statsd_prefix = "flagsmith.api"
