"""FastAPI `GET /health` -> {"status":"healthy"}, as rgunicorn's built-in app."""

from fastapi import FastAPI

app = FastAPI()


@app.get("/health")
async def health():
    return {"status": "healthy"}
