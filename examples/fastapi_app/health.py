"""Health routes, as the migration guide's `src/app/api/routes/health.py`."""
import os
import time

from fastapi import APIRouter

router = APIRouter()

# Track worker start time (the module is imported in each worker, after fork).
WORKER_START_TIME = time.time()


@router.get("/health")
async def health():
    """Basic health check."""
    return {"status": "healthy"}


@router.get("/health/worker")
async def worker_health():
    """Worker-specific health check for load balancer."""
    return {
        "status": "healthy",
        "worker_id": os.getpid(),
        "uptime_seconds": time.time() - WORKER_START_TIME,
    }


@router.get("/health/ready")
async def readiness():
    """Readiness probe (check dependencies)."""
    # Check database
    # Check Redis
    # Check external services
    return {"status": "ready"}
