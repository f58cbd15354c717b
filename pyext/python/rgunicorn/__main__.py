"""``python -m rgunicorn``: the ``rgunicorn`` console script's entry, named
``rgunicorn`` in ``--version`` and ``--help`` as ``python -m gunicorn`` is
named ``gunicorn``."""

from rgunicorn import main

if __name__ == "__main__":
    main(prog="rgunicorn")
