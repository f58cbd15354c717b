"""The FastAPI app of tiangolo/uvicorn-gunicorn-docker's image (app/main.py)."""
from fastapi import FastAPI

app = FastAPI()


@app.get("/")
def read_root():
    return {"message": "Hello World from FastAPI"}
