# Source: HuzaifaIrfan-Web/chatwoot-webhook, gunicorn_config.py. Written
# from a description, not copied. The source logs under /var/log/gunicorn;
# here under chatwoot_logs. It runs 4 workers; 2 here keep the test short.
# The harness binds with -b and serves fastapi_main:app.
bind = "0.0.0.0:8000"
worker_class = "uvicorn.workers.UvicornWorker"
workers = 2
accesslog = "chatwoot_logs/access.log"
errorlog = "chatwoot_logs/error.log"
