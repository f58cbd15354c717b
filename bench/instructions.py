#!/usr/bin/env python3
"""Instructions per request in a worker, counted by valgrind (callgrind).

A steadier figure than req/s or CPU time on a shared machine: the same
binary and requests give the same count, so a change of a few percent in
the request path shows. Run from the repository root, after
`cargo build --release --bin rgunicorn --example bare_hyper`:

    python3 bench/instructions.py [--label TEXT] [BINARY ...]

Each server (rgunicorn's built-in app with 1 worker, and the same handler
on bare hyper with 1 process; plus any other rgunicorn BINARY given, e.g.
an older build) runs under `valgrind --tool=callgrind --trace-children=yes`
twice, serving N1 and then N2 keep-alive requests (`GET /health` over 4
connections); the worker's count at N2 minus its count at N1, over N2 - N1,
is its user-space instructions per request (start-up and the master
cancel out). Writes bench/results/<date>-instructions.md. Needs valgrind
(`apt-get install -y valgrind`).

`--python` counts Python ASGI servers instead, 1 worker each, on
`asgi_hello:app` (`GET /`) and `fastapi_health:app` (`GET /health`):
rgunicorn (and any other rgunicorn BINARY given), granian (`--interface
asgi`) and gunicorn + UvicornWorker, with bench/apps and the bench venv's
site-packages (`--venv`, default target/bench-venv) on PYTHONPATH and
PYTHONHASHSEED=0 (the servers' cwd is callgrind's output directory).
Python under callgrind is some 50 times slower, so these runs serve
PY_N1 and PY_N2 requests; all threads of the worker count. Each row also
splits the worker's count by shared object (libpython, the server's own
code, the event loop, libc, other), read from the callgrind files;
`--objects N` prints each row's N costliest functions too. `--only WORD`
keeps the rows whose label holds WORD. Writes
bench/results/<date>-instructions-python.md. With 4 connections the
requests a wake-up of the server finds vary with timing: counts of the
same build vary by some 0.5% (FastAPI) from run to run.

Binaries are looked up in $CARGO_TARGET_DIR (default target/) unless
`--rgunicorn` names one.
"""

import argparse
import bench  # bench/bench.py: the harness's /proc helpers
import datetime
import glob
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.path.abspath(os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target"))
RGUNICORN = os.path.join(TARGET, "release/rgunicorn")
BARE_HYPER = os.path.join(TARGET, "release/examples/bare_hyper")
APPS = os.path.join(ROOT, "bench", "apps")
N1, N2, CONNS = 2000, 12000, 4
PY_N1, PY_N2 = 300, 1500


def wait_served(proc, port, path, timeout):
    """Whether the server answered `path` within `timeout` seconds (False
    as soon as the process is gone)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30).read()
            return True
        except OSError:
            time.sleep(0.1)
    return False


def send(port, total, path="/health"):
    """`total` requests over CONNS keep-alive connections, each answer read."""
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()

    def one(n):
        with socket.create_connection(("127.0.0.1", port)) as s:
            buf = b""
            for _ in range(n):
                s.sendall(request)
                while True:
                    end = buf.find(b"\r\n\r\n")
                    if end >= 0:
                        m = re.search(rb"(?i)content-length:\s*(\d+)", buf[:end])
                        size = end + 4 + int(m.group(1))
                        if len(buf) >= size:
                            buf = buf[size:]
                            break
                    chunk = s.recv(65536)
                    if not chunk:
                        raise RuntimeError("connection closed")
                    buf += chunk
    threads = [threading.Thread(target=one, args=(total // CONNS,)) for _ in range(CONNS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def pid_of(path):
    m = re.search(r"\.(\d+)$", path)
    return int(m.group(1)) if m else 0


def totals(path):
    with open(path, errors="replace") as f:
        for line in f:
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    return 0


def by_object(path):
    """The process's self cost by shared object and by function, read from
    the callgrind file itself (callgrind_annotate prints inlined code under
    its header file, without the object)."""
    names = {"ob": {}, "fn": {}}
    objects, functions = {}, {}
    ob = fn = ""
    skip = False
    with open(path, errors="replace") as f:
        for line in f:
            c = line[:1]
            if c.isdigit() or c in "+-*":
                if skip:  # the inclusive cost of a call
                    skip = False
                    continue
                parts = line.split()
                if len(parts) > 1:
                    n = int(parts[1])
                    objects[ob] = objects.get(ob, 0) + n
                    functions[fn] = functions.get(fn, 0) + n
                continue
            key, _, rest = line.rstrip("\n").partition("=")
            if key in ("ob", "fn"):
                m = re.match(r"\((\d+)\)(?: (.*))?$", rest)
                if m:
                    if m.group(2) is not None:
                        names[key][m.group(1)] = m.group(2)
                    name = names[key].get(m.group(1), "?")
                else:
                    name = rest
                if key == "ob":
                    ob = name
                else:
                    fn = f"{name} [{os.path.basename(ob)}]"
            elif key in ("cob", "cfn"):
                m = re.match(r"\((\d+)\) (.*)$", rest)
                if m:
                    names[key[1:]][m.group(1)] = m.group(2)
            elif key == "calls":
                skip = True
    return objects, functions


def run(argv, port, n, path="/health", env=None, timeout=120, split=False):
    """The (pid, count, objects) of every process of one run, by pid (the
    order the processes started in): `objects` is by_object's split when
    `split`. The servers run in the output directory: callgrind's default
    file name there (with --callgrind-out-file, a worker that sets its
    process title loses the option's text before its dump at exit)."""
    out = tempfile.mkdtemp(prefix="rg-callgrind-")
    proc = subprocess.Popen(["valgrind", "--tool=callgrind", "--trace-children=yes", *argv],
                            cwd=out, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        if not wait_served(proc, port, path, timeout):
            raise RuntimeError(f"{argv[0]} did not serve")
        send(port, n, path)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        # Children exit after the process valgrind started: wait until the
        # whole group is gone, so that every dump is written.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
    files = sorted(glob.glob(os.path.join(out, "callgrind.out.*")), key=pid_of)
    procs = [(pid_of(p), totals(p), by_object(p) if split else ({}, {})) for p in files]
    shutil.rmtree(out, ignore_errors=True)
    return procs


def per_request(make_argv, n1=N1, n2=N2, **kw):
    """(N2 count - N1 count) / (N2 - N1) for the process whose count grew
    most: the worker. Processes of the two runs are paired in the order
    they started. Returns (per request, {object: per request},
    {function: per request})."""
    port = bench.free_port()
    a = run(make_argv(port), port, n1, **kw)
    port = bench.free_port()
    b = run(make_argv(port), port, n2, **kw)
    if len(a) == len(b):
        x, y = max(zip(a, b), key=lambda xy: xy[1][1] - xy[0][1])
    else:
        x, y = max(a, key=lambda p: p[1]), max(b, key=lambda p: p[1])
    def diff(i):
        a, b = x[2][i], y[2][i]
        return {k: (b.get(k, 0) - a.get(k, 0)) / (n2 - n1) for k in set(a) | set(b)}
    return (y[1] - x[1]) / (n2 - n1), diff(0), diff(1)


def python_env(venv):
    env = dict(os.environ)
    site = next(iter(glob.glob(os.path.join(venv, "lib", "python3*", "site-packages"))), "")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (APPS, site) if p)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    # Fixed str hashes: the same dict layouts, and so the same counts, each run.
    env["PYTHONHASHSEED"] = "0"
    return env


def object_kind(obj, server, rgunicorn="rgunicorn"):
    """Which column a shared object goes to (`rgunicorn`: the binary's
    name)."""
    name = os.path.basename(obj)
    if name.startswith("libpython") or (name.startswith("python3") and ".so" not in name):
        return "libpython"
    if name.startswith(("libc.so", "libc-", "ld-linux", "libm.so", "libpthread")):
        return "libc/ld"
    if "/uvloop/" in obj or name.startswith("_asyncio."):
        return "uvloop/_asyncio"
    own = {"rgunicorn": ("/" + rgunicorn,), "granian": ("/_granian.",), "uvicorn": ("/httptools/",)}
    if any(k in obj for k in own[server]):
        return "server"
    return "other"


PY_SPLIT = ("libpython", "server", "uvloop/_asyncio", "libc/ld", "other")


def python_rows(args):
    venv = os.path.abspath(args.venv)
    env = python_env(venv)
    rg = os.path.abspath(args.rgunicorn) if args.rgunicorn else RGUNICORN
    # The other BINARYs given: older rgunicorn builds, a row each too.
    rgs = [(rg, "rgunicorn")] + [(os.path.abspath(b), f"rgunicorn `{b}`") for b in args.binaries]
    servers = []
    for app, path in (("asgi_hello:app", "/"), ("fastapi_health:app", "/health")):
        servers += [
            (f"{name} `{app}`", "rgunicorn", path,
             lambda p, a=app, b=binary: [b, a, "-w", "1", "-b", f"127.0.0.1:{p}",
                                         "--no-control-socket"], binary)
            for binary, name in rgs
        ]
        servers += [
            (f"granian --interface asgi `{app}`", "granian", path,
             lambda p, a=app: [os.path.join(venv, "bin", "granian"), "--interface", "asgi",
                               "--workers", "1", "--host", "127.0.0.1", "--port", str(p), a], None),
            (f"gunicorn + UvicornWorker `{app}`", "uvicorn", path,
             lambda p, a=app: [os.path.join(venv, "bin", "gunicorn"), a, "-w", "1",
                               "-k", "uvicorn_worker.UvicornWorker", "-b", f"127.0.0.1:{p}"], None),
        ]
    rows = []
    for label, kind, path, make, binary in servers:
        if args.only and args.only not in label:
            continue
        count, objects, functions = per_request(make, PY_N1, PY_N2, path=path, env=env,
                                     timeout=600, split=True)
        split = dict.fromkeys(PY_SPLIT, 0.0)
        for obj, n in objects.items():
            split[object_kind(obj, kind, os.path.basename(binary or rg))] += n
        rows.append((label, count, split))
        print(f"{label}: {count:,.0f} instructions per request ("
              + ", ".join(f"{k} {v:,.0f}" for k, v in split.items()) + ")", flush=True)
        if args.objects:
            for obj, n in sorted(objects.items(), key=lambda o: -abs(o[1]))[:8]:
                print(f"    {n:12,.0f}  {obj}")
            for fn, n in sorted(functions.items(), key=lambda o: -abs(o[1]))[:args.objects]:
                print(f"    {n:12,.0f}  {fn}")
    stamp, lines = results_header("Instructions per request, Python ASGI servers", args.label)
    lines += [
             f"User-space instructions executed by the worker per request, all its threads "
             f"(callgrind; {PY_N2} minus {PY_N1} keep-alive requests over {CONNS} connections, "
             f"1 worker), split by shared object (server: the server's "
             f"own code: rgunicorn's binary, granian's `_granian` extension, uvicorn's httptools; "
             f"the servers' Python code counts under libpython; all three run uvloop).", "",
             "| server | instructions per request | " + " | ".join(PY_SPLIT) + " |",
             "|---|---:|" + "---:|" * len(PY_SPLIT)]
    lines += [f"| {label} | {count:,.0f} | " + " | ".join(f"{split[k]:,.0f}" for k in PY_SPLIT) + " |"
              for label, count, split in rows]
    write_results(f"{stamp}-instructions-python.md", lines)


def write_results(name, lines):
    path = os.path.join(ROOT, "bench", "results", name)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"results: {os.path.relpath(path, ROOT)}")


def results_header(title, label):
    """(timestamp, the first lines of a results file)."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    return stamp, [f"# {title}, {stamp}", "", f"Commit {commit}. {label}".rstrip(), ""]


def user_share(argv, port):
    """The share of user time in the server's CPU time under `wrk -c16`
    for 5 s (natively, after a 1 s warm-up): how much of a request's CPU
    the counted instructions stand for (the rest is the kernel's)."""
    if not shutil.which("wrk"):
        return None
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        if not wait_served(proc, port, "/health", 30):
            return None
        url = f"http://127.0.0.1:{port}/health"
        subprocess.run(["wrk", "-t1", "-c16", "-d1s", url], capture_output=True)
        pids = [proc.pid, *bench.descendants(proc.pid)]
        u0, s0 = bench.cpu_ticks_split(pids)
        subprocess.run(["wrk", "-t1", "-c16", "-d5s", url], capture_output=True)
        u1, s1 = bench.cpu_ticks_split(pids)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    total = (u1 - u0) + (s1 - s0)
    return (u1 - u0) / total if total else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--label", default="", help="what the rgunicorn builds are, for the table")
    ap.add_argument("binaries", nargs="*", help="other rgunicorn binaries to count too")
    ap.add_argument("--python", action="store_true",
                    help="count the Python ASGI servers (rgunicorn, granian, UvicornWorker)")
    ap.add_argument("--venv", default=os.path.join(ROOT, "target", "bench-venv"),
                    help="the bench venv (granian, gunicorn, uvicorn-worker, fastapi)")
    ap.add_argument("--rgunicorn", help="the rgunicorn binary for --python")
    ap.add_argument("--only", default="", help="--python: only the rows whose label holds this")
    ap.add_argument("--objects", type=int, default=0, metavar="N",
                    help="--python: also print each row's largest shared objects and N functions")
    args = ap.parse_args()
    if not shutil.which("valgrind"):
        sys.exit("bench/instructions.py: needs valgrind (apt-get install -y valgrind)")
    if args.python:
        return python_rows(args)
    servers = [("rgunicorn `rgunicorn:health`, 1 worker", RGUNICORN, True),
               *((f"rgunicorn `{b}`", os.path.abspath(b), True) for b in args.binaries),
               ("bare hyper, 1 process", BARE_HYPER, False)]
    rows = []
    for label, binary, is_rg in servers:
        if is_rg:
            def make(port, binary=binary):
                return [binary, "rgunicorn:health", "-w", "1", "-b", f"127.0.0.1:{port}",
                        "--no-control-socket"]
        else:
            def make(port, binary=binary):
                return [binary, "--bind", f"127.0.0.1:{port}", "--layout", "processes",
                        "--workers", "1"]
        count = per_request(make)[0]
        port = bench.free_port()
        share = user_share(make(port), port)
        rows.append((label, count, share))
        shown = "n/a" if share is None else f"{share:.0%}"
        print(f"{label}: {count:,.0f} instructions per request, user share {shown}", flush=True)
    bare = rows[-1][1]
    stamp, lines = results_header("Instructions per request", args.label)
    lines += [
             f"User-space instructions executed by the worker per `GET /health` "
             f"(callgrind; {N2} minus {N1} keep-alive requests over {CONNS} connections).", "",
             "The user share is the user part of the server's CPU time (user + system, "
             "`/proc/PID/stat`) natively under `wrk -t1 -c16` for 5 s: the part of a "
             "request's CPU these instructions stand for; the rest is the kernel's.", "",
             "| server | instructions per request | / bare hyper | user share of CPU |",
             "|---|---:|---:|---:|"]
    lines += [f"| {label} | {count:,.0f} | {count / bare:.2f}x | "
              f"{'n/a' if share is None else f'{share:.0%}'} |" for label, count, share in rows]
    first, share = rows[0][1], rows[0][2]
    for label, count, _ in rows[1:-1]:
        extra = (first - count) / first
        line = (f"\nrgunicorn minus {label}: {first - count:,.0f} instructions per request, "
                f"{extra:.1%} of rgunicorn's user-space work")
        if share is not None:
            line += f"; at its user share of {share:.0%}, about {extra * share:.1%} of its CPU"
        lines.append(line + ".")
    write_results(f"{stamp}-instructions.md", lines)


if __name__ == "__main__":
    main()
