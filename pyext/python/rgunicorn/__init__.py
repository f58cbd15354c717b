"""rgunicorn: a Rust drop-in replacement for the gunicorn command.

The console scripts ``rgunicorn`` and ``rgunicornc`` (and ``python -m
rgunicorn``) run the Rust code of the extension module ``_rgunicorn``
inside this interpreter, so the venv and its packages are the app's.
"""

from rgunicorn._rgunicorn import __version__, ctl_main, main

__all__ = ["__version__", "ctl_main", "main"]
