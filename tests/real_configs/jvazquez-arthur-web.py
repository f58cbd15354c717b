# Source: jvazquez/arthur-web, hooks_config.py. Written from a description,
# not copied. Hooks only; the harness binds with -b.
def on_starting(server):
    print("on_starting", server.__dict__)


def on_reload(server):
    print("on_reload")


def post_worker_init(worker):
    print("post_worker_init", worker.pid)
