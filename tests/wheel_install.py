#!/usr/bin/env python3
"""The pip path, as a new user takes it, for every wheel of a release.

    tests/wheel_install.py [--wheels DIR]

Without --wheels, builds them first with pyext/build-wheels (the
manylinux2014 matrix, CPython 3.10-3.13, into target/wheels). Then, for
each wheel, in a fresh venv of that wheel's Python version made with
`env -i` and a bare PATH (no activation, no LD_LIBRARY_PATH, no
compiler needed): install the wheel and FastAPI, check
`python -m rgunicorn --version`, run

    rgunicorn 'examples.fastapi_app.main:create_app()' -c examples/gunicorn.conf.py

from that venv, get a 200, read the worker table with the venv's
`rgunicornc` console script, then HUP and USR2 (+ TERM to the old master)
and still get 200s. With uvloop installed, an ASGI app module that imports
nothing is served on uvloop (on 3.10-3.12 the first thread to import
threading becomes the main thread; the master imports it first). Also
checks the sdist holds what a source build needs.
Run by tests/run; stdlib only; every wait is bounded."""

import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.path.join(REPO, "target")
WAIT = 60
BARE = {"PATH": "/usr/bin:/bin"}


def log(msg):
    print(f"wheel_install: {msg}", flush=True)


def run(*args, **kw):
    log(" ".join(str(a) for a in args))
    return subprocess.run(args, check=True, **kw)


def interpreter(version):
    """CPython `version` (3.X) as pyext/build-wheels finds it."""
    found = shutil.which(f"python{version}")
    if not found or "/shims/" in found:
        root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
        candidates = sorted(glob.glob(f"{root}/versions/{version}.*/bin/python{version}"),
                            key=lambda p: [int(x) for x in re.findall(r"\d+", p.split("/versions/")[1].split("/")[0])])
        found = candidates[-1] if candidates else None
    if not found:
        raise SystemExit(f"wheel_install: no python{version}")
    return found


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


def check_sdist(wheels):
    sdists = glob.glob(os.path.join(wheels, "rgunicorn-*.tar.gz"))
    assert len(sdists) == 1, sdists
    with tarfile.open(sdists[0]) as t:
        names = {n.split("/", 1)[1] for n in t.getnames() if "/" in n}
    for needed in ("pyproject.toml", "Cargo.toml", "Cargo.lock", "LICENSE", "README.md",
                   "pyext/Cargo.toml", "pyext/src/lib.rs", "pyext/python/rgunicorn/__init__.py",
                   "pyext/python/rgunicorn/__main__.py", "src/lib.rs", "src/python/reloader.rs",
                   "src/python/wsgi/wsgi.py", "src/python/asgi/asgi.py", "src/python/sigterm.py",
                   "pyconf/Cargo.toml", "build.rs"):
        assert needed in names, f"{needed} missing from {sdists[0]}"
    log(f"{os.path.basename(sdists[0])}: the sources of a build")


BARE_APP = """async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"bare"})
"""


def check_uvloop_bare_app(app_venv, version):
    """uvloop installed, an ASGI module that imports nothing: served on
    uvloop, not every worker failing on set_wakeup_fd."""
    bin_dir = os.path.join(app_venv, "bin")
    run(os.path.join(bin_dir, "pip"), "install", "--quiet", "--disable-pip-version-check",
        "uvloop", env=BARE)
    # The case needs an interpreter whose start-up does not import threading.
    out = subprocess.run([os.path.join(bin_dir, "python"), "-c",
                          "import sys; print('threading' in sys.modules)"],
                         env=BARE, capture_output=True, text=True)
    assert out.stdout.strip() == "False", out
    work = tempfile.mkdtemp(prefix="rgunicorn-uvloop-")
    with open(os.path.join(work, "bare.py"), "w") as f:
        f.write(BARE_APP)
    port = free_port()
    errlog = open(os.path.join(work, "server.log"), "w+")
    server = subprocess.Popen(
        [os.path.join(bin_dir, "rgunicorn"), "bare:app", "-b", f"127.0.0.1:{port}",
         "--log-level", "debug", "--control-socket", os.path.join(work, "ctl.sock")],
        cwd=work, env=BARE, stdout=errlog, stderr=subprocess.STDOUT)
    try:
        wait_for("the bare ASGI app", lambda: get(port, "/") == (200, "bare")
                 or server.poll() is not None)
        assert get(port, "/") == (200, "bare"), open(errlog.name).read()[-2000:]
        assert "Using uvloop event loop" in open(errlog.name).read()
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=WAIT) == 0
        log(f"CPython {version}: uvloop, an app that imports nothing: 200")
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    shutil.rmtree(work, ignore_errors=True)


def check_wheel(wheel):
    tag = re.search(r"-cp3(\d+)-cp3\d+-", os.path.basename(wheel))
    version = f"3.{tag.group(1)}"
    assert "manylinux_2_17_x86_64" in wheel and "manylinux2014_x86_64" in wheel, wheel
    python = interpreter(version)

    # A fresh venv of the wheel's version, from a bare environment.
    app_venv = os.path.join(TARGET, f"wheel-app-venv-{version}")
    shutil.rmtree(app_venv, ignore_errors=True)
    run(python, "-m", "venv", app_venv, env=BARE)
    run(os.path.join(app_venv, "bin", "pip"), "install", "--quiet",
        "--disable-pip-version-check", wheel, "fastapi", env=BARE)

    # python -m rgunicorn: the console script's entry.
    out = subprocess.run([os.path.join(app_venv, "bin", "python"), "-m", "rgunicorn", "--version"],
                         env=BARE, capture_output=True, text=True)
    assert out.returncode == 0, out
    assert re.fullmatch(rf"rgunicorn \(version [0-9.]+, gunicorn 27\.0\.1 settings, "
                        rf"Python {re.escape(version)}\.\d+\)\n", out.stdout), out.stdout
    log(f"python -m rgunicorn --version: {out.stdout.strip()}")

    check_uvloop_bare_app(app_venv, version)

    # The migration guide's app and config, unchanged, from a bare PATH.
    work = tempfile.mkdtemp(prefix="rgunicorn-wheel-")
    shutil.copytree(os.path.join(REPO, "examples"), os.path.join(work, "examples"),
                    ignore=shutil.ignore_patterns("*.rs", "__pycache__"))
    port = free_port()
    env = dict(BARE, PORT=str(port), WORKERS="2")
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
        log(f"CPython {version}: 200 {body}")

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
        print(errlog.read()[-3000:], flush=True)
    shutil.rmtree(app_venv, ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)
    log(f"CPython {version}: ok")


def main():
    args = sys.argv[1:]
    if args[:1] == ["--wheels"] and len(args) == 2:
        wheels = os.path.abspath(args[1])
    elif not args:
        wheels = os.path.join(TARGET, "wheels")
        run(os.path.join(REPO, "pyext", "build-wheels"), "--out", wheels)
    else:
        raise SystemExit(__doc__)
    found = sorted(glob.glob(os.path.join(wheels, "rgunicorn-*.whl")))
    versions = sorted(re.search(r"-cp3(\d+)-", os.path.basename(w)).group(1) for w in found)
    assert versions == ["10", "11", "12", "13"], f"wheels for CPython 3.10-3.13 expected: {found}"
    check_sdist(wheels)
    for wheel in found:
        check_wheel(wheel)
    log(f"{len(found)} passed, 0 failed")


if __name__ == "__main__":
    main()
