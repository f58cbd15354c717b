# Source: karrioapi/karrio, apps/api/karrio/server/workers.py: a subclass
# with the same name as its base, fixing uvicorn's loop, parser and lifespan.
from uvicorn.workers import UvicornWorker as BaseUvicornWorker


class UvicornWorker(BaseUvicornWorker):
    CONFIG_KWARGS = {"loop": "asyncio", "http": "h11", "lifespan": "off"}
