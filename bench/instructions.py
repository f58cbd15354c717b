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
"""

import argparse
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
RGUNICORN = os.path.join(ROOT, "target/release/rgunicorn")
BARE_HYPER = os.path.join(ROOT, "target/release/examples/bare_hyper")
N1, N2, CONNS = 2000, 12000, 4
REQUEST = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def send(port, total):
    """`total` requests over CONNS keep-alive connections, each answer read."""
    def one(n):
        with socket.create_connection(("127.0.0.1", port)) as s:
            buf = b""
            for _ in range(n):
                s.sendall(REQUEST)
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


def totals(path):
    with open(path, errors="replace") as f:
        for line in f:
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    return 0


def run(argv, port, n):
    """The counts of every process of one run, largest last."""
    out = tempfile.mkdtemp(prefix="rg-callgrind-")
    proc = subprocess.Popen(["valgrind", "--tool=callgrind", "--trace-children=yes", *argv],
                            cwd=out, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5).read()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"{argv[0]} did not serve")
                time.sleep(0.2)
        send(port, n)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        proc.wait(timeout=120)
    counts = sorted(totals(p) for p in glob.glob(os.path.join(out, "callgrind.out.*")))
    shutil.rmtree(out, ignore_errors=True)
    return counts


def per_request(make_argv):
    """(N2 count - N1 count) / (N2 - N1) for the process whose count grew
    most: the worker."""
    port = free_port()
    a = run(make_argv(port), port, N1)
    port = free_port()
    b = run(make_argv(port), port, N2)
    grown = max(y - x for x, y in zip(a, b)) if len(a) == len(b) else max(b) - max(a)
    return grown / (N2 - N1)


def descendants(pid):
    """`pid` and every process below it."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        try:
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return found


def cpu_ticks(pids):
    """(user, system) clock ticks of `pids`, summed."""
    user = system = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            user, system = user + int(fields[11]), system + int(fields[12])
        except OSError:
            pass
    return user, system


def user_share(argv, port):
    """The share of user time in the server's CPU time under `wrk -c16`
    for 5 s (natively, after a 1 s warm-up): how much of a request's CPU
    the counted instructions stand for (the rest is the kernel's)."""
    if not shutil.which("wrk"):
        return None
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    return None
                time.sleep(0.05)
        url = f"http://127.0.0.1:{port}/health"
        subprocess.run(["wrk", "-t1", "-c16", "-d1s", url], capture_output=True)
        pids = descendants(proc.pid)
        u0, s0 = cpu_ticks(pids)
        subprocess.run(["wrk", "-t1", "-c16", "-d5s", url], capture_output=True)
        u1, s1 = cpu_ticks(pids)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    total = (u1 - u0) + (s1 - s0)
    return (u1 - u0) / total if total else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--label", default="", help="what the rgunicorn builds are, for the table")
    ap.add_argument("binaries", nargs="*", help="other rgunicorn binaries to count too")
    args = ap.parse_args()
    if not shutil.which("valgrind"):
        sys.exit("bench/instructions.py: needs valgrind (apt-get install -y valgrind)")
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
        count = per_request(make)
        port = free_port()
        share = user_share(make(port), port)
        rows.append((label, count, share))
        shown = "n/a" if share is None else f"{share:.0%}"
        print(f"{label}: {count:,.0f} instructions per request, user share {shown}", flush=True)
    bare = rows[-1][1]
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    lines = [f"# Instructions per request, {stamp}", "",
             f"Commit {commit}. {args.label}".rstrip(), "",
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
    path = os.path.join(ROOT, "bench", "results", f"{stamp}-instructions.md")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"results: {os.path.relpath(path, ROOT)}")


if __name__ == "__main__":
    main()
