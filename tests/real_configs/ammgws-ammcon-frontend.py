# Source: ammgws/ammcon-frontend, gunicorn_cfg.py. Written from a
# description, not copied. The harness makes server.pem/server.key in the
# working directory (the source's file names are relative too) and binds
# with -b.
import os

os.makedirs("logs", exist_ok=True)

bind = "0.0.0.0:8058"
loglevel = "DEBUG"
accesslog = "logs/gunicorn_access.log"
errorlog = "logs/gunicorn_error.log"
certfile = "server.pem"
keyfile = "server.key"
