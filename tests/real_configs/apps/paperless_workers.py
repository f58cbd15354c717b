# Source: paperless-ngx/paperless-ngx, src/paperless/workers.py: a
# UvicornWorker subclass whose CONFIG_KWARGS set uvicorn's root_path from
# the project's settings (Django's FORCE_SCRIPT_NAME there; the variable it
# comes from here).
import os

from uvicorn.workers import UvicornWorker


class ConfigurableWorker(UvicornWorker):
    CONFIG_KWARGS = {
        "root_path": os.environ.get("PAPERLESS_FORCE_SCRIPT_NAME") or "",
    }
