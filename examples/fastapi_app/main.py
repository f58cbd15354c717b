"""`create_app()`: the FastAPI application factory gunicorn (and rgunicorn)
calls in each worker: `examples.fastapi_app.main:create_app()`."""
from fastapi import FastAPI

from .health import router as health_router


def create_app() -> FastAPI:
    app = FastAPI(title="production-fastapi-backend")
    app.include_router(health_router)
    return app
