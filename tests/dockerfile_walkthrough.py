#!/usr/bin/env python3
"""examples/Dockerfile and examples/Dockerfile.wheel, followed step by step
without a Docker engine, so that neither can rot unseen.

    tests/dockerfile_walkthrough.py --wheels DIR

Each Dockerfile is parsed and every instruction carried out, with the
same commands and paths, under a temporary root: a stage's filesystem is
<root>/<stage>, and the paths a stage creates (its WORKDIR and COPY
destinations: /app, /wheels, /src) are rewritten there in RUN, ENV and
COPY; anything else (the base image's /usr, /root/.cargo) is this
machine's. The base image python:3.11-slim is a fresh venv of CPython
3.11 first on PATH. Two kinds of step are this machine's already and
are checked instead of run: installing OS packages (apt-get: the tools
they bring must be here) and installing Rust with rustup (cargo must be
here). A RUN also gets this machine's proxy and CA certificate variables
(as Docker passes its proxy variables to a build), never the CMD. The
build contexts: the main one is the migration guide's project
(examples/docker's pyproject.toml and uv.lock, examples/fastapi_app as
src/app, examples/gunicorn.conf.py); `rgunicorn` is this repository (its
.dockerignore applied); `wheels` is DIR (pyext/build-wheels' output).
cargo builds into target/wheels-build, shared with pyext/build-wheels, as
a cache mount would share it.

Then the final stage's CMD runs with the image's environment only (its
ENV lines, the base PATH): the FastAPI app must answer 200, and TERM must
stop it with status 0. docker-compose.yml must supply every named build
context and run the CMD. Run by tests/run with the test venv's Python
(PyYAML, for docker-compose.yml)."""

import fnmatch
import glob
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(REPO, "examples")
WAIT = 60


def log(msg):
    print(f"dockerfile_walkthrough: {msg}", flush=True)


def instructions(path):
    """(INSTRUCTION, arguments) in order: comments and parser directives
    dropped, continuation lines joined."""
    out, current = [], ""
    with open(path) as f:
        for line in f:
            stripped = line.strip()
            if not current and (not stripped or stripped.startswith("#")):
                continue
            if stripped.startswith("#"):
                continue
            if stripped.endswith("\\"):
                current += stripped[:-1] + " "
                continue
            current += stripped
            word, _, rest = current.partition(" ")
            out.append((word.upper(), rest.strip()))
            current = ""
    assert not current, f"{path}: a continuation line ends the file"
    return out


def python311():
    found = shutil.which("python3.11")
    if not found or "/shims/" in found:
        root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
        found = sorted(glob.glob(f"{root}/versions/3.11.*/bin/python3.11"))[-1]
    return found


def dockerignored(context):
    path = os.path.join(context, ".dockerignore")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [l.strip().rstrip("/") for l in f if l.strip() and not l.startswith("#")]


def copy_context(src, dest, ignored, base):
    """COPY of a file or a directory's contents, minus .dockerignore."""
    def skip(p):
        rel = os.path.relpath(p, base)
        for pat in ignored:
            if pat.startswith("**/"):
                if fnmatch.fnmatch(os.path.basename(rel), pat[3:]):
                    return True
            elif fnmatch.fnmatch(rel, pat) or rel.startswith(pat + "/"):
                return True
        return False
    if os.path.isdir(src):
        os.makedirs(dest, exist_ok=True)
        for name in os.listdir(src):
            s = os.path.join(src, name)
            if skip(s):
                continue
            d = os.path.join(dest, name)
            if os.path.isdir(s) and not os.path.islink(s):
                copy_context(s, d, ignored, base)
            else:
                shutil.copy2(s, d, follow_symlinks=False)
    else:
        if dest.endswith("/") or os.path.isdir(dest):
            os.makedirs(dest, exist_ok=True)
            dest = os.path.join(dest, os.path.basename(src))
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        shutil.copy2(src, dest)


class Stage:
    def __init__(self, name, root, base_env):
        self.name, self.root = name, root
        self.workdir = "/"
        self.env = dict(base_env)
        self.created = set()

    def host(self, path):
        """A container path of this stage on this machine."""
        path = path if path.startswith("/") else os.path.join(self.workdir, path)
        return self.root + os.path.normpath(path) + ("/" if path.endswith("/") else "")

    def create(self, path):
        path = path if path.startswith("/") else os.path.join(self.workdir, path)
        top = "/" + os.path.normpath(path).strip("/").split("/")[0]
        self.created.add(top)

    def rewrite(self, text):
        """Absolute paths under what this stage created, or under a
        top-level directory this machine does not have (made by a RUN of
        the image: /wheels), moved under the stage's root; the rest (the
        base image's /usr, /root) stays this machine's."""
        def move(m):
            top = "/" + m.group(1).split("/")[0]
            if top in self.created or not os.path.exists(top):
                return self.root + m.group(0)
            return m.group(0)
        return re.sub(r"(?<![\w./:-])/([\w.-]+(?:/[\w.*-]*)*)", move, text)

    def expand(self, value):
        return re.sub(r"\$\{?(\w+)\}?", lambda m: self.env.get(m.group(1), ""), value)


def network_env():
    """How this machine reaches the package registries (proxies, CA
    certificates): given to the RUN steps as Docker gives a build its
    proxy variables; not part of the image's environment."""
    names = {"SSL_CERT_FILE", "SSL_CERT_DIR", "PIP_CERT", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"}
    return {k: v for k, v in os.environ.items()
            if k in names or k.upper().endswith("_PROXY")}


def provided_here(command):
    """A RUN that installs what this machine has: checked, not run."""
    if command.startswith("apt-get"):
        packages = re.findall(r"install\s+(?:-\S+\s+)*([^&]+)", command)[0].split()
        tools = {"curl": "curl", "build-essential": "cc"}
        for p in packages:
            assert p in tools, f"apt-get installs {p}: the walk-through does not know what it brings"
            assert shutil.which(tools[p]), f"{tools[p]} (from {p}) is not on this machine"
        return f"OS packages {packages}: {', '.join(tools[p] for p in packages)} here"
    if "sh.rustup.rs" in command:
        assert shutil.which("cargo"), "cargo is not on this machine"
        return "Rust with rustup: cargo here"
    return None


def walk(dockerfile, contexts, work):
    """Carry out `dockerfile`; the final stage."""
    stages, stage = {}, None
    base_python = python311()
    for word, args in instructions(dockerfile):
        if word == "FROM":
            image, _, name = args.partition(" AS ")
            assert image.strip() == "python:3.11-slim", f"base image {image}: only python:3.11-slim is emulated"
            name = name.strip() or f"stage{len(stages)}"
            root = os.path.join(work, name)
            os.makedirs(root)
            base = os.path.join(work, f"{name}-python")
            subprocess.run([base_python, "-m", "venv", base], check=True)
            # The image's environment: its python and pip first on PATH.
            base_env = {"PATH": f"{base}/bin:/usr/local/bin:/usr/bin:/bin",
                        "HOME": os.path.expanduser("~"), "LANG": "C.UTF-8",
                        # The image's one Python, which uv finds by itself
                        # there (here it would skip a venv's for the
                        # machine's); never a downloaded one.
                        "UV_PYTHON": base_python, "UV_PYTHON_DOWNLOADS": "never",
                        "CARGO_TARGET_DIR": os.path.join(REPO, "target", "wheels-build")}
            stage = stages[name] = Stage(name, root, base_env)
            stage.build_env = network_env()
            log(f"FROM {image.strip()} ({name})")
        elif word == "WORKDIR":
            stage.create(args)
            stage.workdir = args
            os.makedirs(stage.host(args), exist_ok=True)
        elif word == "ENV":
            key, _, value = args.partition("=")
            stage.env[key] = stage.rewrite(stage.expand(value))
        elif word == "COPY":
            parts = shlex.split(args)
            source_from = None
            if parts[0].startswith("--from="):
                source_from = parts.pop(0)[len("--from="):]
            *sources, dest = parts
            stage.create(dest)
            for src in sources:
                if source_from in stages:
                    origin = stages[source_from].host(src)
                    ignored, base = [], origin
                else:
                    context = contexts[source_from or "."]
                    origin = os.path.join(context, src)
                    ignored, base = dockerignored(context), context
                matches = glob.glob(origin.rstrip("/")) or [origin]
                for m in matches:
                    target = stage.host(dest)
                    if os.path.isdir(m) and not src.endswith("/") and src != ".":
                        target = os.path.join(target, os.path.basename(m))
                    copy_context(m, target, ignored, base)
            log(f"COPY {args}")
        elif word == "RUN":
            command = stage.rewrite(args)
            checked = provided_here(args)
            if checked:
                log(f"RUN {args[:60]}...: this machine's ({checked})")
                continue
            log(f"RUN {args}")
            subprocess.run(["/bin/sh", "-c", command], cwd=stage.host(stage.workdir),
                           env=dict(stage.env, **stage.build_env), check=True)
        elif word == "EXPOSE":
            stage.exposed = args
        elif word == "CMD":
            stage.cmd = json.loads(args)
        else:
            raise SystemExit(f"{dockerfile}: {word}: the walk-through does not know this instruction")
    return stage


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


def serve(stage):
    """`docker run`: the CMD, from the WORKDIR, with the image's environment."""
    program = shutil.which(stage.cmd[0], path=stage.env["PATH"])
    assert program and program.startswith(stage.host("/app")), \
        f"{stage.cmd[0]} is not the image's own environment's: {program}"
    port = free_port()
    env = dict(stage.env, PORT=str(port))
    log(f"CMD {stage.cmd} (PORT={port}, {program})")
    server = subprocess.Popen(stage.cmd, cwd=stage.host(stage.workdir), env=env)
    try:
        deadline = time.monotonic() + WAIT
        while get(port)[0] != 200:
            assert server.poll() is None, f"the server exited with {server.returncode}"
            assert time.monotonic() < deadline, "no 200"
            time.sleep(0.1)
        status, body = get(port)
        assert body == '{"status":"healthy"}', body
        log(f"GET /health: {status} {body}")
    finally:
        server.send_signal(signal.SIGTERM)
        code = server.wait(timeout=WAIT)
    assert code == 0, f"TERM: exit {code}"
    log("TERM: exit 0")
    return stage.cmd


def main():
    args = sys.argv[1:]
    if args[:1] != ["--wheels"] or len(args) != 2:
        raise SystemExit(__doc__)
    wheels = os.path.abspath(args[1])
    work = tempfile.mkdtemp(prefix="rgunicorn-docker-")
    # The migration guide's project, as the main build context.
    project = os.path.join(work, "project")
    os.makedirs(os.path.join(project, "src"))
    for f in ("pyproject.toml", "uv.lock"):
        shutil.copy(os.path.join(EXAMPLES, "docker", f), project)
    shutil.copytree(os.path.join(EXAMPLES, "fastapi_app"), os.path.join(project, "src", "app"),
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(os.path.join(EXAMPLES, "gunicorn.conf.py"), project)
    contexts = {".": project, "rgunicorn": REPO, "wheels": wheels}
    passed = 0
    cmds = {}
    for name in ("Dockerfile.wheel", "Dockerfile"):
        log(f"--- examples/{name}")
        final = walk(os.path.join(EXAMPLES, name), contexts, os.path.join(work, name))
        cmds[name] = serve(final)
        passed += 1

    # Compose builds with what the Dockerfile needs and runs its CMD.
    with open(os.path.join(EXAMPLES, "docker-compose.yml")) as f:
        web = yaml.safe_load(f)["services"]["web"]
    dockerfile = web["build"]["dockerfile"]
    needed = {a.split("=", 1)[1].split()[0] for w, a in instructions(os.path.join(EXAMPLES, dockerfile))
              if w == "COPY" and a.startswith("--from=")}
    stages = {a.partition(" AS ")[2].strip() for w, a in instructions(os.path.join(EXAMPLES, dockerfile))
              if w == "FROM"}
    missing = needed - stages - set(web["build"].get("additional_contexts", {}))
    assert not missing, f"docker-compose.yml gives {dockerfile} no build context {missing}"
    assert web["command"] == cmds[dockerfile], (web["command"], cmds[dockerfile])
    log(f"docker-compose.yml: {dockerfile}, contexts {sorted(needed - stages)}, the CMD")
    passed += 1
    shutil.rmtree(work, ignore_errors=True)
    log(f"{passed} passed, 0 failed")


if __name__ == "__main__":
    main()
