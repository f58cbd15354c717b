# Source: apache/airflow, airflow/www/gunicorn_config.py. Written from a
# description, not copied. The harness binds with -b and serves
# airflow_app:app, which reports the worker's process title.
import setproctitle

PREFIX = "[ready] "


def post_worker_init(_):
    """Airflow's CLI counts ready workers by this title prefix."""
    old_title = setproctitle.getproctitle()
    setproctitle.setproctitle(PREFIX + old_title)


def on_starting(server):
    # Airflow loads its providers once, before forking.
    import json

    json.dumps({"providers": []})
