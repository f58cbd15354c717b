#!/usr/bin/env python3
"""The pip path, as a new user takes it: build the wheel with maturin,
install it into a fresh virtualenv with FastAPI, run

    rgunicorn 'examples.fastapi_app.main:create_app()' -c examples/gunicorn.conf.py

from that venv with a bare PATH (no activation, no LD_LIBRARY_PATH), get a
200, read the worker table with the venv's `rgunicornc` console script,
then HUP and USR2 (+ TERM to the old master) and still get 200s.
Run by tests/run; stdlib only; every wait is bounded."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.path.join(REPO, "target")
WAIT = 60


def log(msg):
    print(f"wheel_install: {msg}", flush=True)


def run(*args, **kw):
    log(" ".join(str(a) for a in args))
    subprocess.run(args, check=True, **kw)


def venv(path, *packages):
    if os.path.exists(path):
        shutil.rmtree(path)
    run(sys.executable, "-m", "venv", path)
    if packages:
        run(os.path.join(path, "bin", "pip"), "install", "--quiet",
            "--disable-pip-version-check", *packages)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port, path="/health"):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except OSError as e:
        return 0, str(e)


def wait_for(what, cond):
    deadline = time.monotonic() + WAIT
    while not cond():
        if time.monotonic() > deadline:
            raise SystemExit(f"wheel_install: timed out waiting for {what}")
        time.sleep(0.05)


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def main():
    # 1. The wheel, built as a user would (maturin from PyPI).
    build_venv = os.path.join(TARGET, "wheel-build-venv")
    if not os.path.exists(os.path.join(build_venv, "bin", "maturin")):
        venv(build_venv, "maturin>=1.5,<2")
    wheels = os.path.join(TARGET, "wheel-test")
    shutil.rmtree(wheels, ignore_errors=True)
    run(os.path.join(build_venv, "bin", "maturin"), "build", "--release",
        "--out", wheels, cwd=REPO)
    wheel = [os.path.join(wheels, w) for w in os.listdir(wheels) if w.endswith(".whl")]
    assert len(wheel) == 1, wheel

    # 2. A fresh venv with the wheel and FastAPI.
    app_venv = os.path.join(TARGET, "wheel-app-venv")
    venv(app_venv, wheel[0], "fastapi")

    # 3. The migration guide's app and config, unchanged, from a bare PATH.
    work = tempfile.mkdtemp(prefix="rgunicorn-wheel-")
    shutil.copytree(os.path.join(REPO, "examples"), os.path.join(work, "examples"),
                    ignore=shutil.ignore_patterns("*.rs", "__pycache__"))
    port = free_port()
    env = {"PATH": "/usr/bin:/bin", "PORT": str(port), "WORKERS": "2"}
    ctl = os.path.join(work, "ctl.sock")
    errlog = open(os.path.join(work, "server.log"), "w+")
    server = subprocess.Popen(
        [os.path.join(app_venv, "bin", "rgunicorn"),
         "examples.fastapi_app.main:create_app()", "-c", "examples/gunicorn.conf.py",
         "--control-socket", ctl],
        cwd=work, env=env, stdout=errlog, stderr=subprocess.STDOUT)
    new_master = None
    try:
        wait_for("a first 200", lambda: get(port)[0] == 200)
        status, body = get(port)
        assert body == '{"status":"healthy"}', body
        log(f"200 {body}")

        # The rgunicornc console script: the worker table is the master's children.
        def table():
            out = subprocess.run(
                [os.path.join(app_venv, "bin", "rgunicornc"), "-s", ctl, "-j", "-c", "show workers"],
                env=env, capture_output=True, text=True)
            return out.returncode, out.stdout
        wait_for("rgunicornc show workers", lambda: table()[0] == 0
                 and sorted(w["pid"] for w in json.loads(table()[1])["workers"])
                 == sorted(children(server.pid)))
        log("rgunicornc: the worker table")

        # HUP: a new generation of workers, 200s all along.
        before = set(children(server.pid))
        server.send_signal(signal.SIGHUP)
        wait_for("new workers after HUP", lambda: len(children(server.pid)) == 2
                 and not (set(children(server.pid)) & before))
        assert get(port)[0] == 200
        log("HUP: new workers, 200")

        # USR2: a new master (our child's child) with its own workers.
        old_workers = set(children(server.pid))
        server.send_signal(signal.SIGUSR2)
        wait_for("the new master", lambda: any(p not in old_workers for p in children(server.pid)))
        new_master = next(p for p in children(server.pid) if p not in old_workers)
        wait_for("the new master's workers", lambda: len(children(new_master)) == 2)
        assert get(port)[0] == 200
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=WAIT)
        errlog.seek(0)
        wait_for("promotion", lambda: "Master has been promoted." in open(errlog.name).read())
        for _ in range(20):
            status, body = get(port, "/health/worker")
            assert status == 200, (status, body)
            assert any(f'"worker_id":{w}' in body for w in children(new_master)), body
        log("USR2 + TERM to the old master: the new master serves, 200")
    finally:
        for pid in ([new_master] if new_master else []) + [server.pid]:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        try:
            server.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            server.kill()
        if new_master:
            wait_for("the new master to stop", lambda: not os.path.exists(f"/proc/{new_master}")
                     or open(f"/proc/{new_master}/stat").read().split(") ")[1].startswith("Z"))
        errlog.seek(0)
        print(errlog.read()[-4000:], flush=True)
    log("ok")


if __name__ == "__main__":
    main()
