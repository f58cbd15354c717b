#!/usr/bin/env python3
"""rgunicorn's benchmark and fault harness (stdlib only). Start it with
`bench/run`, which installs wrk and the venv and builds the binaries first;
see bench/README.md for the method. Everything runs on 127.0.0.1, bounded
in time, and every process it starts is stopped by pid before it exits.
"""

import argparse
import ctypes
import json
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APPS = ROOT / "bench" / "apps"
RESULTS = ROOT / "bench" / "results"
VENV = ROOT / "target" / "bench-venv"
TMP = ROOT / "target" / "bench-tmp"
RELEASE = ROOT / "target" / "release"
RGUNICORN = RELEASE / "rgunicorn"
BARE_HYPER = RELEASE / "examples" / "bare_hyper"
# rgunicorn built with the `bench-ungated` feature (bench/run builds it for a
# full run): its rust-health row is what gunicorn's request checks cost.
UNGATED = ROOT / "target" / "bench-ungated" / "release" / "rgunicorn"
GUNICORN = VENV / "bin" / "gunicorn"
GRANIAN = VENV / "bin" / "granian"
VENV_PYTHON = VENV / "bin" / "python"

NOT_YET = "not yet: rgunicorn does not serve Python apps (issue 6)"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def now():
    """One clock for everything that is compared with process start times."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


@dataclass
class Plan:
    name: str
    reps: int
    warmup: int  # seconds (wrk takes whole seconds)
    warmup_each: bool  # before every run, or only before the first (c64)
    duration: int
    settle: float  # after the workers are up, before idle memory is read
    fault_window: int  # seconds of load per fault run
    fault_timeout: int  # the servers' `timeout` in the blocking-worker run
    slow_seconds: float  # /sleep?s= of the in-flight requests in the TERM run
    graceful_timeout: int


FULL = Plan("full", reps=3, warmup=1, warmup_each=True, duration=5, settle=1.0,
            fault_window=20, fault_timeout=5, slow_seconds=3.0, graceful_timeout=10)
# quick only keeps the harness from rotting (CI, under 3 minutes): no warm-up.
QUICK = Plan("quick", reps=1, warmup=0, warmup_each=False, duration=1, settle=0.3,
             fault_window=3, fault_timeout=2, slow_seconds=1.5, graceful_timeout=3)

BENCH_CONNS = (64, 16)
FAULT_CONNS = 32
PROBE_PERIOD = 0.05
PROBE_TIMEOUT = 10.0
WRK_FAULT_TIMEOUT = "10s"


# --------------------------------------------------------------------------
# progress

class Progress:
    def __init__(self):
        self.t0 = time.monotonic()
        self.tty = sys.stderr.isatty()
        self.width = 0

    def __call__(self, msg, final=False):
        el = int(time.monotonic() - self.t0)
        line = f"[{el // 60:2d}:{el % 60:02d}] {msg}"
        if self.tty:
            pad = max(0, self.width - len(line))
            sys.stderr.write("\r" + line + " " * pad + ("\n" if final else ""))
            self.width = 0 if final else len(line)
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def elapsed(self):
        return time.monotonic() - self.t0


progress = Progress()


# --------------------------------------------------------------------------
# processes, memory and sockets from /proc

def proc_table():
    """{pid: (ppid, starttime in seconds since boot)} for every process."""
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        table[int(name)] = (int(fields[1]), int(fields[19]) / CLK_TCK)
    return table


def descendants(root, table=None):
    table = table if table is not None else proc_table()
    children = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def children_of(pid, table=None):
    table = table if table is not None else proc_table()
    return sorted(p for p, (pp, _) in table.items() if pp == pid)


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def cpu_ticks_split(pids):
    """(utime, stime), in clock ticks (1/100 s), summed over pids."""
    user = system = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            user, system = user + int(fields[11]), system + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return user, system


def cpu_ticks(pids):
    """utime + stime, in clock ticks (1/100 s), summed over pids."""
    return sum(cpu_ticks_split(pids))


def memory_kib(pids):
    """(PSS, RSS) in KiB summed over pids, from smaps_rollup."""
    pss = rss = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        pss += int(line.split()[1])
                    elif line.startswith("Rss:"):
                        rss += int(line.split()[1])
        except OSError:
            pass
    return pss, rss


def socket_inodes(pid):
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    except OSError:
        pass
    return inodes


def tcp_sockets(port):
    """{inode: state} of the TCP sockets whose local port is `port`."""
    out = {}
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if int(parts[1].rsplit(":", 1)[1], 16) == port:
                        out[parts[9]] = parts[3]
        except OSError:
            pass
    return out


def connections_per_worker(root, port):
    """ESTABLISHED sockets on `port` held by each worker process (the
    descendants of root that hold a socket on the port; root itself when it
    has no such descendant: one process with threads)."""
    socks = tcp_sockets(port)
    counts = []
    for pid in descendants(root):
        inodes = socket_inodes(pid) & socks.keys()
        if inodes:
            counts.append(sum(1 for i in inodes if socks[i] == "01"))
    if not counts:
        counts = [sum(1 for i in socket_inodes(root) & socks.keys() if socks[i] == "01")]
    return sorted(counts, reverse=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kill(pid, sig):
    try:
        os.kill(pid, sig)
        return True
    except ProcessLookupError:
        return False


def reap_strays():
    """Reap children that are not subprocess.Popen objects (orphans of a
    re-exec'd master reparented to this subreaper)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def stop_tree(root, masters=(), sig=signal.SIGTERM, wait=5.0, keep=()):
    """Stop the masters with `sig`, then SIGKILL whatever is left of the
    descendants of this harness (except `keep`), and reap."""
    masters = [m for m in (root, *masters) if m and alive(m)]
    for m in masters:
        kill(m, sig)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and any(alive(m) for m in masters):
        reap_strays()
        time.sleep(0.02)
    me = os.getpid()
    for pid in descendants(me):
        if pid not in keep:
            kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(p not in keep for p in descendants(me)):
        reap_strays()
        time.sleep(0.02)
    reap_strays()


# --------------------------------------------------------------------------
# HTTP on raw sockets (the start-up poller, the prober, slow requests)

def http_get(port, path, timeout):
    """One request on a fresh connection. Returns (status, body); raises
    OSError subclasses on connection failures."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
            head, sep, body = data.partition(b"\r\n\r\n")
            if sep:
                m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
                if m and len(body) >= int(m.group(1)):
                    break
    if not data:
        raise ConnectionAbortedError("connection closed without a response")
    head, _, body = data.partition(b"\r\n\r\n")
    try:
        status = int(head.split(b" ", 2)[1])
    except (IndexError, ValueError):
        raise ConnectionAbortedError("malformed response")
    return status, body


def failure_kind(exc):
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, ConnectionResetError):
        return "reset"
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "timeout"
    if isinstance(exc, ConnectionAbortedError):
        return "closed"
    return type(exc).__name__


class Prober:
    """A fresh connection every PROBE_PERIOD (each probe in its own thread,
    so a stalled one does not delay the next) to /health/worker, whose
    `worker_id` tells which worker answered."""

    def __init__(self, port):
        self.port = port
        self.results = []  # (t_sent, t_done, ok, kind, pid)
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = []
        self.loop = threading.Thread(target=self._loop, daemon=True)

    def start(self):
        self.loop.start()

    def _loop(self):
        nxt = time.monotonic()
        while not self.stopping.is_set():
            t = threading.Thread(target=self._probe, daemon=True)
            t.start()
            self.threads.append(t)
            nxt += PROBE_PERIOD
            self.stopping.wait(max(0.0, nxt - time.monotonic()))

    def _probe(self):
        sent = now()
        pid, ok, kind = None, False, ""
        try:
            status, body = http_get(self.port, "/health/worker", PROBE_TIMEOUT)
            ok = 200 <= status < 300
            kind = "ok" if ok else f"status {status}"
            try:
                pid = json.loads(body).get("worker_id")
            except ValueError:
                pass
        except OSError as e:
            kind = failure_kind(e)
        with self.lock:
            self.results.append((sent, now(), ok, kind, pid))

    def stop(self):
        self.stopping.set()
        self.loop.join()
        for t in self.threads:
            t.join(PROBE_TIMEOUT + 1)


class Monitor(threading.Thread):
    """Every 50 ms: the descendants of this harness, when each was born
    (/proc starttime) and its parent."""

    def __init__(self):
        super().__init__(daemon=True)
        self.seen = {}  # pid -> {"ppid", "birth", "first_seen"}
        self.stopping = threading.Event()

    def run(self):
        me = os.getpid()
        while not self.stopping.is_set():
            table = proc_table()
            t = now()
            for pid in descendants(me, table):
                if pid not in self.seen:
                    ppid, birth = table[pid]
                    self.seen[pid] = {"ppid": ppid, "birth": birth, "first_seen": t}
            self.stopping.wait(0.05)

    def stop(self):
        self.stopping.set()
        self.join()


# --------------------------------------------------------------------------
# wrk

UNIT = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def parse_wrk(out):
    r = {"rps": 0.0, "requests": 0, "lat": {}, "errors": {"connect": 0, "read": 0, "write": 0, "timeout": 0},
         "non2xx": 0}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if m:
        r["rps"] = float(m.group(1))
    m = re.search(r"(\d+) requests in", out)
    if m:
        r["requests"] = int(m.group(1))
    for pct, val, unit in re.findall(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M):
        r["lat"][pct] = float(val) * UNIT[unit]
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        r["errors"] = dict(zip(("connect", "read", "write", "timeout"), map(int, m.groups())))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        r["non2xx"] = int(m.group(1))
    return r


def wrk_cmd(port, path, conns, seconds, timeout=None):
    cmd = ["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--latency"]
    if timeout:
        cmd += ["--timeout", timeout]
    return cmd + [f"http://127.0.0.1:{port}{path}"]


def run_wrk(port, path, conns, seconds, during=None):
    """Run wrk; `during()` is called half-way through and its value returned."""
    p = subprocess.Popen(wrk_cmd(port, path, conns, seconds), stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    sample = None
    if during:
        time.sleep(seconds / 2)
        sample = during()
    out, _ = p.communicate(timeout=seconds + 30)
    r = parse_wrk(out)
    r["raw"] = out
    return r, sample


# --------------------------------------------------------------------------
# servers

@dataclass
class Spec:
    app: str  # table key
    label: str
    argv: object  # port -> list
    path: str
    workers: int  # worker processes to wait for (0: one process)
    rgunicorn: bool = False
    python_app: bool = False
    unavailable: str = ""  # set when it cannot serve (NOT_YET)
    runs: list = field(default_factory=list)
    conns: tuple = BENCH_CONNS  # wrk -c of each run, the first also sampled
    # A full run's length for this row when longer than the plan's: a row
    # whose requests take 0.2 s has only 25 per connection in 5 s, so its
    # p99 would be the first wave on fresh connections, not the steady state.
    full_seconds: int = 0

    def seconds(self, plan):
        return max(plan.duration, self.full_seconds) if plan is FULL else plan.duration


def python_env(*extra):
    """The environment of every server: bench/apps (and `extra`, e.g. the
    repository root for the FastAPI example) and the bench venv's
    site-packages on PYTHONPATH, so that rgunicorn's embedded CPython (the
    release binary is not in the venv) sees what the venv's servers see."""
    env = dict(os.environ)
    site = next(iter((VENV / "lib").glob("python3*/site-packages")), None)
    env["PYTHONPATH"] = os.pathsep.join(str(p) for p in (APPS, *extra, site) if p)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


@dataclass
class Running:
    popen: subprocess.Popen
    port: int
    start_s: float  # Popen -> first 2xx
    log: Path


def start_server(argv, path, log, port, timeout=30.0, cwd=APPS, env=None):
    """Start a server and wait for its first 2xx on `path`. Returns Running,
    or a string (why it did not serve)."""
    logf = open(log, "w")
    t0 = time.monotonic()
    p = subprocess.Popen([str(a) for a in argv], cwd=cwd, env=env or python_env(), stdout=logf,
                         stderr=subprocess.STDOUT)
    logf.close()
    deadline = t0 + timeout
    while time.monotonic() < deadline:
        if p.poll() is not None:
            return f"exited with status {p.returncode} before serving: {log_tail(log)}"
        try:
            status, _ = http_get(port, path, 1.0)
            if 200 <= status < 300:
                return Running(p, port, time.monotonic() - t0, log)
        except OSError:
            pass
        time.sleep(0.01)
    stop_tree(p.pid)
    p.wait()
    return f"no 2xx within {timeout:.0f} s: {log_tail(log)}"


def log_tail(log, n=3):
    try:
        lines = [ln.strip() for ln in Path(log).read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return " | ".join(lines[-n:])


def wait_workers(pid, n, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(children_of(pid)) >= n:
            return True
        time.sleep(0.02)
    return False


def bench_specs():
    b = lambda port: f"127.0.0.1:{port}"  # noqa: E731
    specs = [
        Spec("rust-health", "rgunicorn `rgunicorn:health`",
             lambda p: [RGUNICORN, "rgunicorn:health", "-w", "2", "-b", b(p)], "/health", 2, rgunicorn=True),
    ]
    if UNGATED.exists():
        specs.append(Spec("rust-health", "rgunicorn, gunicorn's request checks compiled out (bench-only build)",
                          lambda p: [UNGATED, "rgunicorn:health", "-w", "2", "-b", b(p)], "/health", 2))
    specs += [
        Spec("rust-health", "bare hyper, 1 process x 2 threads",
             lambda p: [BARE_HYPER, "--bind", b(p), "--layout", "threads", "--workers", "2"], "/health", 0),
        Spec("rust-health", "bare hyper, 2 processes (SO_REUSEPORT)",
             lambda p: [BARE_HYPER, "--bind", b(p), "--layout", "processes", "--workers", "2"], "/health", 2),
    ]
    for app, module, path in (("asgi-hello", "asgi_hello:app", "/"),
                              ("fastapi-health", "fastapi_health:app", "/health")):
        gun = lambda p, k, m=module: [GUNICORN, m, "-w", "2", "-b", b(p), "-k", k]  # noqa: E731
        specs += [
            Spec(app, "rgunicorn", lambda p, m=module: [RGUNICORN, m, "-w", "2", "-b", b(p)], path, 2,
                 rgunicorn=True, python_app=True),
            Spec(app, "gunicorn + UvicornWorker (uvloop, httptools)",
                 lambda p, g=gun: g(p, "uvicorn_worker.UvicornWorker"), path, 2),
            Spec(app, "gunicorn + UvicornWorker (asyncio, h11)",
                 lambda p, g=gun: g(p, "uvicorn_plain.AsyncioH11Worker"), path, 2),
            Spec(app, "gunicorn -k asgi (uvloop)", lambda p, g=gun: g(p, "asgi"), path, 2),
            Spec(app, "granian --interface asgi",
                 lambda p, m=module: [GRANIAN, "--interface", "asgi", "--workers", "2", "--host", "127.0.0.1",
                                      "--port", str(p), m], path, 2),
        ]
    specs += [
        Spec("wsgi-hello", "rgunicorn", lambda p: [RGUNICORN, "wsgi_hello:app", "-w", "2", "-b", b(p)], "/", 2,
             rgunicorn=True, python_app=True),
        Spec("wsgi-hello", "gunicorn sync",
             lambda p: [GUNICORN, "wsgi_hello:app", "-w", "2", "-b", b(p), "-k", "sync"], "/", 2),
        Spec("wsgi-hello", "granian --interface wsgi",
             lambda p: [GRANIAN, "--interface", "wsgi", "--workers", "2", "--host", "127.0.0.1", "--port", str(p),
                        "wsgi_hello:app"], "/", 2),
    ]
    # The access log's cost: written from Rust (the default) and through
    # Python's logging (a logconfig_dict with gunicorn.access's own
    # handler), next to gunicorn sync writing it.
    specs += [
        Spec("wsgi-access-log", "rgunicorn, accesslog (Rust writer)",
             lambda p: [RGUNICORN, "wsgi_hello:app", "-w", "2", "-b", b(p), "--access-logfile", "/dev/null"],
             "/", 2, rgunicorn=True, python_app=True),
        Spec("wsgi-access-log", "rgunicorn, logconfig_dict (through Python's logging)",
             lambda p: [RGUNICORN, "wsgi_hello:app", "-w", "2", "-b", b(p), "-c", "access_python.conf.py"],
             "/", 2, rgunicorn=True, python_app=True),
        Spec("wsgi-access-log", "gunicorn sync, accesslog",
             lambda p: [GUNICORN, "wsgi_hello:app", "-w", "2", "-b", b(p), "-k", "sync",
                        "--access-logfile", "/dev/null"], "/", 2),
    ]
    # gevent: gunicorn 27's gevent worker is the peer (2 workers each).
    for app, path, conns, seconds in (("gevent-sleep", "/sleep", (200,), 20),
                                      ("gevent-hello", "/", (64, 16), 0),
                                      ("gevent-upstream", "/upstream", (64,), 0)):
        specs += [
            Spec(app, "rgunicorn -k gevent",
                 lambda p: [RGUNICORN, "gevent_bench:app", "-w", "2", "-b", b(p), "-k", "gevent"], path, 2,
                 rgunicorn=True, python_app=True, conns=conns, full_seconds=seconds),
            Spec(app, "gunicorn -k gevent",
                 lambda p: [GUNICORN, "gevent_bench:app", "-w", "2", "-b", b(p), "-k", "gevent"], path, 2,
                 conns=conns, full_seconds=seconds),
        ]
    return specs


class Upstream(threading.Thread):
    """The gevent-upstream rows' upstream: an asyncio HTTP/1.0 server that
    answers every request after 50 ms (many at once), in a thread of the
    harness."""

    DELAY = 0.05

    def __init__(self):
        super().__init__(daemon=True)
        self.port = free_port()
        self.ready = threading.Event()

    def run(self):
        import asyncio

        async def handle(reader, writer):
            try:
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass
                await asyncio.sleep(self.DELAY)
                writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\nupstream")
                await writer.drain()
            finally:
                writer.close()

        async def main():
            server = await asyncio.start_server(handle, "127.0.0.1", self.port, backlog=1024)
            self.ready.set()
            async with server:
                await server.serve_forever()

        asyncio.run(main())


APP_TITLES = {
    "rust-health": "Rust app: `GET /health` (rgunicorn's built-in app vs the same handler on bare hyper)",
    "asgi-hello": "Raw ASGI hello: `GET /`",
    "fastapi-health": "FastAPI: `GET /health`",
    "wsgi-hello": "Raw WSGI hello: `GET /`",
    "gevent-sleep": "gevent: `GET /sleep`, a 0.2 s monkey-patched `time.sleep` (ideal: 200 / 0.2 = 1,000 req/s; "
                    "20 s runs in a full run)",
    "gevent-hello": "gevent: raw WSGI hello `GET /`",
    "gevent-upstream": "gevent: `GET /upstream`, urllib to a local upstream answering after 50 ms "
                       "(ideal: 64 / 0.05 = 1,280 req/s)",
}


def bench_one(spec, plan, rep, step, total):
    tag = f"{spec.app}/{spec.label}"
    progress(f"bench {step}/{total} rep {rep + 1}/{plan.reps}: {tag}: starting")
    port = free_port()
    log = TMP / f"bench-{re.sub(r'[^a-z0-9]+', '-', tag.lower())}-{rep}.log"
    srv = start_server(spec.argv(port), spec.path, log, port,
                       timeout=10.0 if spec.python_app and spec.rgunicorn else 30.0)
    if isinstance(srv, str) and not (spec.python_app and spec.rgunicorn):
        port = free_port()  # once more, on another port (one taken meanwhile)
        srv = start_server(spec.argv(port), spec.path, log, port)
    if isinstance(srv, str):
        if spec.rgunicorn and spec.python_app:
            spec.unavailable = NOT_YET if "not implemented" in srv else f"did not serve: {srv}"
        else:
            spec.unavailable = f"did not serve: {srv}"
        stop_tree(0)
        progress(f"bench {step}/{total}: {tag}: {spec.unavailable[:80]}")
        return
    run = {"rep": rep, "start_s": srv.start_s}
    first = spec.conns[0]
    try:
        wait_workers(srv.popen.pid, spec.workers)
        time.sleep(plan.settle)
        pids = [srv.popen.pid] + descendants(srv.popen.pid)
        run["procs"] = len(pids)
        run["pss_kib"], run["rss_kib"] = memory_kib(pids)
        for conns in spec.conns:
            progress(f"bench {step}/{total} rep {rep + 1}/{plan.reps}: {tag}: c{conns}")
            if plan.warmup and (plan.warmup_each or conns == first):
                run_wrk(port, spec.path, conns, plan.warmup)
            during = (lambda: connections_per_worker(srv.popen.pid, port)) if conns == first else None
            server_pids = [srv.popen.pid] + descendants(srv.popen.pid)
            ticks = cpu_ticks(server_pids)
            r, sample = run_wrk(port, spec.path, conns, spec.seconds(plan), during)
            # The server's CPU time per request (all its processes): steadier
            # than req/s on a shared machine, as it doesn't count waiting.
            ticks = cpu_ticks(server_pids) - ticks
            r["cpu_us_per_req"] = ticks * 10_000 / r["requests"] if r["requests"] else 0.0
            r.pop("raw")
            run[f"c{conns}"] = r
            if sample is not None:
                run["conns_per_worker"] = sample
        progress(f"bench {step}/{total} rep {rep + 1}/{plan.reps}: {tag}: "
                 + ", ".join(f"c{c} {run[f'c{c}']['rps']:,.0f} req/s" for c in spec.conns))
    finally:
        stop_tree(srv.popen.pid)
        srv.popen.wait()
    spec.runs.append(run)


def run_bench(plan, specs):
    total = len(specs) * plan.reps
    step = 0
    for rep in range(plan.reps):
        # Interleave: every server once per repetition, the order rotated.
        k = rep * len(specs) // max(plan.reps, 1)
        for spec in specs[k:] + specs[:k]:
            step += 1
            if spec.unavailable:
                continue
            bench_one(spec, plan, rep, step, total)


# --------------------------------------------------------------------------
# faults

FAULTS = [
    ("hup2", "2x HUP"),
    ("usr2", "USR2, then TERM to the old master"),
    ("kill9", "kill -9 of one worker"),
    ("maxreq", "max_requests=1000, jitter 100"),
    ("ttin_ttou", "TTIN, then TTOU"),
    ("timeout", "a worker's loop blocks (killed after `timeout`)"),
    ("term", "TERM with slow requests in flight"),
]

# Both serve the migration guide's FastAPI example with the fault endpoints
# (bench/apps/fault_fastapi.py), from the same config file, whose
# worker_class is UvicornWorker: gunicorn runs uvicorn-worker's class,
# rgunicorn maps it to its own ASGI workers.
FAULT_APP = "fault_fastapi:create_app()"
FAULT_WORKER_CLASS = "uvicorn_worker.UvicornWorker"
FAULT_APP_TEXT = ("the FastAPI example (`examples/fastapi_app` + `/sleep`, `/block`: "
                  f"`bench/apps/fault_fastapi.py`), `worker_class = \"{FAULT_WORKER_CLASS}\"`")
FAULT_SERVERS = [
    ("rgunicorn", "rgunicorn (ASGI)"),
    ("gunicorn", "gunicorn + UvicornWorker"),
]


def fault_conf(path, port, pidfile, plan, fault):
    lines = [
        f'bind = "127.0.0.1:{port}"',
        "workers = 2",
        f"timeout = {plan.fault_timeout if fault == 'timeout' else 30}",
        f"graceful_timeout = {plan.graceful_timeout}",
        f'pidfile = "{pidfile}"',
        'loglevel = "info"',
        f'worker_class = "{FAULT_WORKER_CLASS}"',
    ]
    if fault == "maxreq":
        lines += ["max_requests = 1000", "max_requests_jitter = 100"]
    path.write_text("\n".join(lines) + "\n")


def run_fault(fault, server, plan, step, total):
    W = plan.fault_window
    label = dict(FAULTS)[fault]
    tag = f"fault {step}/{total}: {label}: {server}"
    progress(f"{tag}: starting")
    port = free_port()
    conf = TMP / f"fault-{fault}-{server}.conf.py"
    pidfile = TMP / f"fault-{fault}-{server}.pid"
    for p in (pidfile, Path(f"{pidfile}.2"), Path(f"{pidfile}.oldbin")):
        p.unlink(missing_ok=True)
    fault_conf(conf, port, pidfile, plan, fault)
    argv = [RGUNICORN if server == "rgunicorn" else GUNICORN, FAULT_APP, "-c", conf]
    log = TMP / f"fault-{fault}-{server}.log"
    srv = start_server(argv, "/health", log, port, env=python_env(ROOT))
    res = {"fault": fault, "server": server, "notes": [], "events": []}
    if isinstance(srv, str):
        res["error"] = srv
        stop_tree(0)
        return res
    master = srv.popen.pid
    masters = [master]
    wait_workers(master, 2)
    time.sleep(0.3)
    initial = set(descendants(os.getpid()))
    mon = Monitor()
    mon.start()
    prober = Prober(port)
    prober.start()
    wrk = subprocess.Popen(wrk_cmd(port, "/health", FAULT_CONNS, W, WRK_FAULT_TIMEOUT),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    t0 = now()
    extra_threads = []

    def at(t):
        time.sleep(max(0.0, t0 + t - now()))

    def event(name):
        res["events"].append((name, round(now() - t0, 3)))
        progress(f"{tag}: {name} at {now() - t0:.1f} s")

    term_sent = None
    try:
        if fault == "hup2":
            for t in (0.2 * W, 0.5 * W):
                at(t)
                kill(master, signal.SIGHUP)
                event("HUP")
        elif fault == "usr2":
            at(0.2 * W)
            old_workers = set(children_of(master))
            kill(master, signal.SIGUSR2)
            event("USR2")
            new_master = find_new_master(master, old_workers, pidfile, deadline=now() + 0.25 * W)
            if new_master is None:
                res["notes"].append(f"no new master within {0.25 * W:.0f} s of USR2 (USR2 not implemented "
                                    f"in this build?); TERM not sent")
            else:
                masters.append(new_master)
                event(f"new master {new_master}")
                # TERM the old master once the new one's workers answer.
                deadline = now() + 0.3 * W
                while now() < deadline:
                    kids = set(children_of(new_master))
                    served = {r[4] for r in list(prober.results) if r[2]} & kids
                    if len(served) >= 2:
                        break
                    time.sleep(0.02)
                kill(master, signal.SIGTERM)
                event("TERM to the old master")
                try:
                    srv.popen.wait(plan.graceful_timeout + 5)
                    event("old master exited")
                except subprocess.TimeoutExpired:
                    res["notes"].append("old master still running after graceful_timeout + 5 s")
        elif fault == "kill9":
            at(0.25 * W)
            victim = children_of(master)[0]
            kill(victim, signal.SIGKILL)
            event(f"SIGKILL worker {victim}")
        elif fault == "ttin_ttou":
            at(0.2 * W)
            kill(master, signal.SIGTTIN)
            event("TTIN")
            at(0.55 * W)
            kill(master, signal.SIGTTOU)
            event("TTOU")
        elif fault == "timeout":
            at(0.15 * W)
            block = {}

            def blocker():
                try:
                    block["status"] = http_get(port, f"/block?s={4 * plan.fault_timeout + 4}",
                                               4 * plan.fault_timeout + 10)[0]
                except OSError as e:
                    block["status"] = failure_kind(e)
            t = threading.Thread(target=blocker, daemon=True)
            t.start()
            extra_threads.append(t)
            event(f"GET /block (timeout = {plan.fault_timeout} s)")
            res["block"] = block
        elif fault == "term":
            at(0.2 * W)
            slow = []

            def slow_request():
                try:
                    status = http_get(port, f"/sleep?s={plan.slow_seconds}",
                                      plan.slow_seconds + plan.graceful_timeout + 5)[0]
                    slow.append("ok" if 200 <= status < 300 else f"status {status}")
                except OSError as e:
                    slow.append(failure_kind(e))
            for _ in range(2):
                t = threading.Thread(target=slow_request, daemon=True)
                t.start()
                extra_threads.append(t)
            event(f"2 x GET /sleep?s={plan.slow_seconds:g}")
            time.sleep(0.5)
            kill(master, signal.SIGTERM)
            term_sent = now()
            event("TERM")
            try:
                srv.popen.wait(plan.graceful_timeout + 5)
                event("master exited")
                res["master_exit_s"] = round(now() - term_sent, 3)
            except subprocess.TimeoutExpired:
                res["notes"].append("master still running after graceful_timeout + 5 s")
            time.sleep(0.2)
            wrk.send_signal(signal.SIGINT)  # the server is gone: stop the load
            res["slow"] = slow
        out, _ = wrk.communicate(timeout=W + 30)
    finally:
        if wrk.poll() is None:
            wrk.kill()
            wrk.wait()
        prober.stop()
        for t in extra_threads:
            t.join(plan.graceful_timeout + 4 * plan.fault_timeout + 15)
        mon.stop()
        stop_tree(master, masters[1:], sig=signal.SIGINT, wait=3.0)
        if srv.popen.poll() is None:
            srv.popen.wait()
    if fault == "term":
        res["slow"] = slow
    if fault == "timeout":
        res["block"] = block.get("status", "no answer")
    analyse_fault(res, parse_wrk(out), prober, mon, initial, masters, term_sent)
    res["log"] = str(log)
    progress(f"{tag}: {res['failed']} failed, {len(res['respawns'])} respawns")
    return res


def find_new_master(old, old_workers, pidfile, deadline):
    """The re-exec'd master: `<pidfile>.2`, or the child of the old master
    that is not one of its workers (and has children of its own)."""
    while now() < deadline:
        try:
            pid = int(Path(f"{pidfile}.2").read_text().strip())
            if alive(pid):
                return pid
        except (OSError, ValueError):
            pass
        table = proc_table()
        for pid in children_of(old, table):
            if pid not in old_workers and children_of(pid, table):
                return pid
        time.sleep(0.02)
    return None


def analyse_fault(res, w, prober, mon, initial, masters, term_sent):
    errors = dict(w["errors"])
    after_term = {}
    if term_sent is not None:
        # TERM run: once the server stops accepting, a new connection is
        # queued and reset (or refused once the listener is closed). wrk
        # reconnects each connection after its `Connection: close` answer
        # (one read error each, at most one per connection, then refused
        # reconnects counted as connect/write errors), and cannot say when
        # an error happened; the prober can. New connections into a stopping
        # server are shown, not counted; what counts is what was in flight.
        for kind in ("connect", "read", "write"):
            after_term[f"wrk {kind}"] = errors.pop(kind)
    res["wrk_requests"] = w["requests"]
    res["wrk_rps"] = w["rps"]
    res["wrk_errors"] = w["errors"]
    res["wrk_non2xx"] = w["non2xx"]
    probes = list(prober.results)
    fails = {}
    for sent, done, ok, kind, _ in probes:
        if ok:
            continue
        if term_sent is not None and sent >= term_sent:
            after_term[f"probes {kind}"] = after_term.get(f"probes {kind}", 0) + 1
            continue
        fails[kind] = fails.get(kind, 0) + 1
    res["probes_sent"] = len(probes)
    res["probe_failures"] = fails
    failed = sum(errors.values()) + w["non2xx"] + sum(fails.values())
    if res.get("slow") is not None:
        failed += sum(1 for s in res["slow"] if s != "ok")
    res["failed"] = failed
    if term_sent is not None:
        res["after_term"] = after_term
    # Respawns: worker processes born during the run (not masters), timed
    # from their fork to the first probe they answered.
    first_served = {}
    for sent, done, ok, kind, pid in probes:
        if ok and pid is not None and (pid not in first_served or done < first_served[pid]):
            first_served[pid] = done
    respawns = []
    for pid, info in sorted(mon.seen.items(), key=lambda kv: kv[1]["birth"]):
        if pid in initial or pid in masters or info["ppid"] not in masters:
            continue
        served = first_served.get(pid)
        respawns.append({"pid": pid, "to_first_served_s": None if served is None
                         else round(served - info["birth"], 3)})
    res["respawns"] = respawns


def run_faults(plan, only=""):
    results = []
    runs = [(f, s) for f, _ in FAULTS for s, _ in FAULT_SERVERS if not only or only in f"{f} {s}"]
    for i, (fault, server) in enumerate(runs, 1):
        results.append(run_fault(fault, server, plan, i, len(runs)))
    return results


# --------------------------------------------------------------------------
# report

def sh(cmd, stderr=subprocess.DEVNULL):
    try:
        return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=stderr, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine():
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1048576:.1f} GiB"
    os_name = "?"
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    pkgs = sh([str(VENV_PYTHON), "-c",
               "import importlib.metadata as m\n"
               "for p in ('gunicorn','uvicorn','uvicorn-worker','uvloop','httptools','h11','granian',"
               "'fastapi','starlette','gevent','greenlet'):\n"
               "    try: print(p, m.version(p))\n"
               "    except Exception: print(p, '-')"])
    commit = sh(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    dirty = sh(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"])
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "memory": mem,
        "kernel": platform.release(),
        "os": os_name,
        "rgunicorn": sh([str(RGUNICORN), "--version"]),
        "commit": commit + (" (with uncommitted changes)" if dirty else ""),
        "rustc": sh(["rustc", "--version"]),
        "python": sh([str(VENV_PYTHON), "--version"]),
        "wrk": (sh(["wrk", "-v"], stderr=subprocess.STDOUT) + "\n").splitlines()[0],
        "packages": dict(line.split(" ", 1) for line in pkgs.splitlines() if " " in line),
        "loadavg_start": loadavg(),
    }


def loadavg():
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def med_range(values, fmt):
    if not values:
        return "-"
    m = statistics.median(values)
    if len(values) == 1:
        return fmt(m)
    return f"{fmt(m)} ({fmt(min(values))}-{fmt(max(values))})"


def rps_fmt(v):
    return f"{v:,.0f}"


def ms_fmt(v):
    return f"{v * 1000:.2f} ms"


def spec_summary(spec):
    runs = spec.runs
    keys = [f"c{c}" for c in spec.conns]
    out = {
        "cpu": [r[keys[0]].get("cpu_us_per_req", 0.0) for r in runs],
        "pss": [r["pss_kib"] / 1024 for r in runs],
        "rss": [r["rss_kib"] / 1024 for r in runs],
        "start": [r["start_s"] for r in runs],
        "conns": [r.get("conns_per_worker", []) for r in runs],
        "errors": sum(sum(r[c]["errors"].values()) + r[c]["non2xx"] for r in runs for c in keys),
    }
    for c in keys:
        out[c] = [r[c]["rps"] for r in runs]
        out[f"p99_{c}"] = [r[c]["lat"].get("99", 0) for r in runs]
    return out


def ratio(a, b):
    return f"{a / b:.2f}" if a and b else "-"


def bench_tables(specs):
    lines = []
    apps = []
    for s in specs:
        if s.app not in apps:
            apps.append(s.app)
    headline = []
    for app in apps:
        group = [s for s in specs if s.app == app]
        rg = next((s for s in group if s.rgunicorn), None)
        rg_sum = spec_summary(rg) if rg and rg.runs else None
        keys = [f"c{c}" for c in group[0].conns]
        each = " / ".join(keys)
        lines += [f"### {APP_TITLES.get(app, app)}", "",
                  "| server | " + " | ".join(f"req/s {k}" for k in keys) + f" | p99 {each} "
                  f"| CPU per request, {keys[0]} | idle PSS (RSS) "
                  f"| start to first 200 | ESTABLISHED per worker, {keys[0]} | errors | rgunicorn / this, {each} |",
                  "|---|" + "---:|" * len(keys) + "---:|---:|---:|---:|---|---:|---:|"]
        for s in group:
            if not s.runs:
                lines.append(f"| {s.label} | {s.unavailable or 'no data'} |" + " |" * (len(keys) + 7))
                continue
            m = spec_summary(s)
            conns = ", ".join("/".join(str(c) for c in cs) for cs in m["conns"]) or "-"
            if s.app == "rust-health" and s.label.startswith("bare hyper, 1 process"):
                conns += " (1 process)"
            if rg_sum and s is not rg:
                rel = " / ".join(ratio(statistics.median(rg_sum[k]), statistics.median(m[k])) for k in keys)
                headline.append((app, s.label, rel))
            elif s is rg:
                rel = " / ".join("1.00" for _ in keys)
            else:
                rel = "- (rgunicorn: not yet)"
            lines.append(
                f"| {s.label} | " + " | ".join(med_range(m[k], rps_fmt) for k in keys) + " "
                f"| {' / '.join(ms_fmt(statistics.median(m[f'p99_{k}'])) for k in keys)} "
                f"| {statistics.median(m['cpu']):.1f} us "
                f"| {statistics.median(m['pss']):.1f} MiB ({statistics.median(m['rss']):.1f} MiB) "
                f"| {med_range(m['start'], lambda v: f'{v:.2f} s')} | {conns} | {m['errors']} | {rel} |")
        lines.append("")
    return lines, headline


def fault_tables(results):
    lines = [f"Both servers serve {FAULT_APP_TEXT}.", "",
             "### Faults: summary", "",
             "| fault | rgunicorn failed | gunicorn + UvicornWorker failed | rgunicorn respawn to first served "
             "| gunicorn + UvicornWorker respawn to first served | wrk requests, rgunicorn / gunicorn |",
             "|---|---:|---:|---|---|---:|"]
    by = {(r["fault"], r["server"]): r for r in results}
    for fault, label in FAULTS:
        rg, gu = by.get((fault, "rgunicorn")), by.get((fault, "gunicorn"))
        if not rg and not gu:
            continue
        def cell(r):
            if not r:
                return "-"
            if "error" in r:
                return r["error"][:60]
            if "after_term" in r:
                later = sum(v for k, v in r["after_term"].items() if not k.endswith(" refused")
                            and k not in ("wrk connect", "wrk write"))
                return f"{r['failed']} (+{later} reset after TERM)"
            return str(r["failed"])
        req = ratio(rg.get("wrk_requests"), gu.get("wrk_requests")) if rg and gu else "-"
        lines.append(f"| {label} | {cell(rg)} | {cell(gu)} | {respawn_cell(rg)} | {respawn_cell(gu)} | {req} |")
    lines += ["", "### Faults: detail", "",
              "| fault | server | failed | wrk socket errors c/r/w/t | wrk non-2xx | prober failed / sent "
              "| wrk requests | events (s from load start) | notes |",
              "|---|---|---:|---|---:|---|---:|---|---|"]
    for r in results:
        label = dict(FAULTS)[r["fault"]]
        server = dict(FAULT_SERVERS)[r["server"]]
        if "error" in r:
            lines.append(f"| {label} | {server} | - | | | | | | did not start: {r['error']} |")
            continue
        e = r["wrk_errors"]
        pf = r["probe_failures"]
        pf_s = f"{sum(pf.values())} / {r['probes_sent']}" + (
            " (" + ", ".join(f"{k} {v}" for k, v in sorted(pf.items())) + ")" if pf else "")
        notes = list(r["notes"])
        if "slow" in r:
            notes.append(f"slow requests: {sum(1 for s in r['slow'] if s == 'ok')}/{len(r['slow'])} finished"
                         + (f" ({', '.join(r['slow'])})" if any(s != 'ok' for s in r['slow']) else ""))
        if "master_exit_s" in r:
            notes.append(f"master exited {r['master_exit_s']:.2f} s after TERM")
        if "after_term" in r:
            notes.append("not counted, new connections after TERM: "
                         + ", ".join(f"{k} {v}" for k, v in r["after_term"].items() if v))
        if r["fault"] == "maxreq" and r["respawns"]:
            notes.append(f"{r['wrk_requests'] / (len(r['respawns']) + 2):,.0f} wrk requests per worker "
                         "process on average (max_requests 1000-1100)")
        if "block" in r:
            notes.append(f"the /block request itself (not counted): {r['block']}")
        events = ", ".join(f"{n} {t:.1f}" for n, t in r["events"])
        lines.append(f"| {label} | {server} | {r['failed']} | {e['connect']}/{e['read']}/{e['write']}/{e['timeout']} "
                     f"| {r['wrk_non2xx']} | {pf_s} | {r['wrk_requests']:,} | {events} | {'; '.join(notes)} |")
    lines.append("")
    return lines


def respawn_cell(r):
    if not r or "error" in r:
        return "-"
    times = [x["to_first_served_s"] for x in r["respawns"] if x["to_first_served_s"] is not None]
    n = len(r["respawns"])
    if n == 0:
        return "no respawn"
    if not times:
        return f"{n} respawns, none answered a probe"
    s = f"{statistics.median(times):.2f} s median, {max(times):.2f} s max"
    return s + (f" ({len(times)} of {n} respawns answered a probe)" if len(times) < n else f" ({n})")


def method_text(plan):
    return [
        "## Method",
        "",
        f"- Mode `{plan.name}`. Every server on 127.0.0.1 with 2 workers, started fresh for every "
        "repetition; logs in `target/bench-tmp/`.",
        f"- Load: `wrk -t1 -c64` and `wrk -t1 -c16`, {plan.duration} s per run "
        + (f"after a {plan.warmup} s warm-up run at the same concurrency" if plan.warmup else "without warm-up")
        + f"; {plan.reps} repetition(s) interleaved across servers (every "
        "server once per repetition, the order rotated each time); the median and, in parentheses, min-max.",
        "- Idle memory: PSS (and RSS) from `/proc/PID/smaps_rollup`, summed over the started process and all "
        f"its descendants, read {plan.settle:g} s after the first 200 once the worker processes exist.",
        "- Start to first 200: from `Popen` to the first 2xx on the benchmarked path (fresh connection every "
        "10 ms).",
        "- ESTABLISHED per worker: half-way through the c64 run, each worker process's socket inodes "
        "(`/proc/PID/fd`) matched against `/proc/net/tcp{,6}` entries in state ESTABLISHED with the server's "
        "local port; one number per repetition and worker.",
        "- Ratios: rgunicorn's median req/s divided by the row's.",
        f"- Faults: {plan.fault_window} s of `wrk -t1 -c{FAULT_CONNS} --timeout {WRK_FAULT_TIMEOUT}` keep-alive "
        f"load on `/health`, plus a prober opening a fresh connection to `/health/worker` every "
        f"{PROBE_PERIOD * 1000:.0f} ms (each probe in its own thread, {PROBE_TIMEOUT:.0f} s timeout). Failed = "
        "wrk socket errors (connect, read, write, timeout) + wrk non-2xx/3xx + failed probes. "
        f"Servers: rgunicorn and gunicorn 27 + UvicornWorker, both serving `{FAULT_APP}`: {FAULT_APP_TEXT}; "
        f"`workers = 2`, `graceful_timeout = {plan.graceful_timeout}`, `timeout = 30` "
        f"(`{plan.fault_timeout}` in the blocking run), same config file for both.",
        "- Respawn to first served: a worker process born during the run (seen by polling the process table "
        "every 50 ms), from its fork (`/proc/PID/stat` starttime, 10 ms ticks) to the first probe it answered; "
        f"resolution about {PROBE_PERIOD * 1000:.0f} ms x workers.",
        "",
    ]


def write_report(plan, specs, faults, info, started, elapsed):
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(started))
    base = RESULTS / f"{stamp}-{plan.name}"
    lines = [f"# rgunicorn benchmarks, {time.strftime('%Y-%m-%d %H:%M', time.localtime(started))} ({plan.name})",
             "",
             f"Command: `{' '.join(['bench/run'] + sys.argv[1:])}`; took {elapsed / 60:.1f} min.",
             "",
             "## Machine",
             "",
             f"- CPU: {info['cpu']}, {info['cores']} cores ({info['cores_usable']} usable), {info['memory']}",
             f"- OS: {info['os']}, kernel {info['kernel']}",
             f"- {info['rgunicorn']}, commit {info['commit']}; {info['rustc']}",
             f"- {info['python']}; " + ", ".join(f"{k} {v}" for k, v in info["packages"].items()),
             f"- {info['wrk']}",
             f"- Load average (1, 5, 15 min) at start: {info['loadavg_start']}; at end: {loadavg()} "
             "(anything else running on the machine shows here)",
             ""]
    lines += method_text(plan)
    headline = []
    if specs:
        tables, headline = bench_tables(specs)
        lines += ["## Throughput, memory, start-up", ""] + tables
    if faults:
        lines += ["## Faults", ""] + fault_tables(faults)
    md = "\n".join(lines)
    base.with_suffix(".md").write_text(md)
    raw = {"plan": plan.__dict__, "machine": info,
           "bench": [{"app": s.app, "label": s.label, "unavailable": s.unavailable, "runs": s.runs}
                     for s in specs],
           "faults": faults}
    base.with_suffix(".json").write_text(json.dumps(raw, indent=1, default=str))
    return base.with_suffix(".md"), base.with_suffix(".json"), headline


# --------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description="rgunicorn benchmark and fault harness (see bench/README.md)")
    ap.add_argument("--quick", action="store_true", help="one short repetition of everything (< 3 min)")
    ap.add_argument("--no-faults", action="store_true", help="skip the fault runs")
    ap.add_argument("--no-bench", action="store_true", help="skip the throughput runs")
    ap.add_argument("--only", default="", help="only the servers/faults whose name contains this")
    ap.add_argument("--no-build", action="store_true", help="(handled by bench/run)")
    args = ap.parse_args()
    plan = QUICK if args.quick else FULL

    missing = [p for p in (RGUNICORN, BARE_HYPER, GUNICORN, GRANIAN) if not p.exists()]
    if missing:
        sys.exit(f"missing: {', '.join(map(str, missing))}; run bench/run (it installs and builds them)")
    TMP.mkdir(parents=True, exist_ok=True)
    # Orphans (a re-exec'd master whose parent left) are reparented to us,
    # so that every process the harness starts stays its descendant.
    try:
        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        pass
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(130))

    started = time.time()
    info = machine()
    specs = [] if args.no_bench else [
        s for s in bench_specs() if not args.only or args.only.lower() in f"{s.app} {s.label}".lower()]
    if any(s.app == "gevent-upstream" for s in specs):
        upstream = Upstream()
        upstream.start()
        upstream.ready.wait(10)
        os.environ["GEVENT_BENCH_UPSTREAM"] = f"http://127.0.0.1:{upstream.port}/"
    faults = []
    try:
        if specs:
            run_bench(plan, specs)
        if not args.no_faults:
            faults = run_faults(plan, args.only.lower())
    except KeyboardInterrupt:
        progress("interrupted", final=True)
        stop_tree(0)
        sys.exit(130)
    finally:
        stop_tree(0)
    elapsed = progress.elapsed()
    md, js, headline = write_report(plan, specs, faults, info, started, elapsed)
    progress(f"done in {elapsed / 60:.1f} min", final=True)
    for app, label, rel in headline:
        conns = next(s.conns for s in specs if s.app == app)
        print(f"rgunicorn / {label} ({app}), req/s {' / '.join(f'c{c}' for c in conns)}: {rel}")
    for r in faults:
        if "error" not in r:
            print(f"fault {r['fault']:>10} {r['server']:>9}: {r['failed']} failed, "
                  f"{len(r['respawns'])} respawns; {respawn_cell(r)}")
    print(f"results: {md.relative_to(ROOT)} (raw: {js.relative_to(ROOT)})")


if __name__ == "__main__":
    main()
