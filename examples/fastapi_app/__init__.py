"""The migration guide's FastAPI app (level 2, "Application Health
Endpoint"): serve it with `rgunicorn 'examples.fastapi_app.main:create_app()'
-c examples/gunicorn.conf.py` from the repository root, or with gunicorn
and the same config."""
