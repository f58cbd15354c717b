# A WSGI app that reports whether its worker's title carries the prefix
# apache/airflow's post_worker_init adds.
import setproctitle


def app(environ, start_response):
    ready = setproctitle.getproctitle().startswith("[ready] ")
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"Hello from airflow, title marked ready: {ready}\n".encode()]
