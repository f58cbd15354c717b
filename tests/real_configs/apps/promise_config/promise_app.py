# Reached only through the config's `pythonpath` (meanother/project_promise
# adds its config directory to sys.path).
from webapp import app  # noqa: F401
