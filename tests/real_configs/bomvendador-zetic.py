# Source: bomvendador/zetic, reports/gunicorn.conf.py. Written from a
# description, not copied. The host "0" (all interfaces); the source's port
# 8000 comes from PORT here, set by the harness. Log files are relative
# here (under /var/log in the source).
import os

bind = f"0:{os.environ.get('PORT', 8000)}"
workers = 3
accesslog = "zetic-access.log"
errorlog = "zetic-error.log"
capture_output = True
loglevel = "info"
