"""An app module that raises while it is imported (a worker exits 3)."""

raise RuntimeError("boom at import")
