//! The `server`, `worker`, `cfg` and `log` objects as real configs use
//! them, against gunicorn 27.0.1: one config records what its hooks see
//! (`vars()`, attributes stored by hooks, `LISTENERS` and their sockets,
//! `cfg.settings`, `cfg.worker_class`, `worker.tmp`, ...) under both
//! servers and the records must agree; a `worker.max_requests` written in
//! `post_fork` recycles that worker in both. rgunicorn only: the hooks'
//! listener sockets are copies (closing one changes nothing for serving),
//! a draining worker lets go of its copy (a stopping server refuses new
//! connections at once), the master reads a worker's heartbeat through
//! `worker.tmp.last_update()`, and without gunicorn `cfg.worker_class` is
//! the class's name.

use crate::common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::server::{stop_child, wait_exit};
use common::*;

const WAIT: Duration = Duration::from_secs(20);

/// The app both servers serve: 200 "ok", or after 3 s on /slow.
const APP: &str = r#"
import time
def application(environ, start_response):
    if environ["PATH_INFO"] == "/slow":
        time.sleep(3)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
"#;

/// Every hook writes `hook label = repr(value)` lines to $REC.
const REC: &str = r#"
import os
def rec(hook, label, value):
    with open(os.environ["REC"], "a") as f:
        f.write("%s %s = %r\n" % (hook, label, value))
"#;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Prog {
    Rgunicorn,
    Gunicorn,
}

/// The test venv's site-packages, so that rgunicorn's interpreter sees the
/// gunicorn it is compared with (`cfg.worker_class` loads its classes).
fn site_packages() -> PathBuf {
    let lib = gunicorn().parent().unwrap().parent().unwrap().join("lib");
    std::fs::read_dir(&lib)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path().join("site-packages"))
        .find(|p| p.join("gunicorn").exists())
        .unwrap_or_else(|| panic!("gunicorn is not installed under {}", lib.display()))
}

struct Server {
    prog: Prog,
    child: Child,
    dir: PathBuf,
    lines: Arc<Mutex<Vec<String>>>,
    port: u16,
}

impl Server {
    /// Serve the app with REC + `conf` in a fresh directory (also HOME, so
    /// that each run has its own control socket); wait for the port.
    fn start(prog: Prog, name: &str, conf: &str) -> Server {
        let dir = scratch_dir(&format!("hookobj-{name}-{prog:?}"));
        std::fs::write(dir.join("app.py"), APP).unwrap();
        std::fs::write(dir.join("conf.py"), format!("{REC}\n{conf}")).unwrap();
        let program = match prog {
            Prog::Rgunicorn => rgunicorn(),
            Prog::Gunicorn => gunicorn(),
        };
        let mut child = Command::new(program)
            .current_dir(&dir)
            .args(["app:application", "-c", "conf.py"])
            .env("REC", dir.join("rec.log"))
            .env("HOME", &dir)
            .env("PYTHONPATH", site_packages())
            .env_remove("SENDFILE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("{prog:?}: {line}");
                l.lock().unwrap().push(line);
            }
        });
        let mut server = Server {
            prog,
            child,
            dir,
            lines,
            port: 0,
        };
        const AT: &str = "Listening at: http://127.0.0.1:";
        server.wait_until("the Listening line", |s| {
            s.stderr().lines().any(|l| l.contains(AT))
        });
        server.port = server
            .stderr()
            .split(AT)
            .nth(1)
            .and_then(|rest| {
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                digits.parse().ok()
            })
            .expect("port in the Listening line");
        server
    }

    fn stderr(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// The records, `hook label` -> `repr(value)`, the last one winning.
    fn records(&self) -> BTreeMap<String, String> {
        std::fs::read_to_string(self.dir.join("rec.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once(" = "))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn record(&self, key: &str) -> Option<String> {
        self.records().get(key).cloned()
    }

    fn wait_until(&self, what: &str, mut cond: impl FnMut(&Server) -> bool) {
        let deadline = Instant::now() + WAIT;
        while !cond(self) {
            assert!(
                Instant::now() < deadline,
                "{:?}: timed out waiting for {what}; records: {:#?}\nstderr:\n{}",
                self.prog,
                self.records(),
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_record(&self, key: &str) -> String {
        self.wait_until(&format!("record {key:?}"), |s| s.record(key).is_some());
        self.record(key).unwrap()
    }

    fn get(&self, path: &str) -> u16 {
        get_on(self.port, path)
    }

    fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn stop(&mut self) -> i32 {
        self.signal("TERM");
        wait_exit(&mut self.child, WAIT)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}

/// What hooks read and store, recorded the same way under both servers.
const OBJECTS_CONF: &str = r#"
import logging, socket, sys, time
bind = ["127.0.0.1:0", "unix:s.sock"]
workers = 1
worker_class = "sync"
threads = 2
raw_env = ["A=1"]
pidfile = "app.pid"
graceful_timeout = 5

def when_ready(server):
    server.my_thing = 42
    rec("when_ready", "vars(server)[my_thing]", vars(server)["my_thing"])
    l0, l1 = server.LISTENERS
    port = l0.sock.getsockname()[1]
    rec("when_ready", "port", port)
    rec("when_ready", "str(LISTENERS[0]) is the url", str(l0) == "http://127.0.0.1:%d" % port)
    rec("when_ready", "str(LISTENERS[1])", str(l1))
    rec("when_ready", "sock types", (type(l0.sock).__name__, l0.sock.family == socket.AF_INET,
                                     l1.sock.family == socket.AF_UNIX, l1.sock.getsockname()))
    rec("when_ready", "listener delegates", l0.getsockname() == l0.sock.getsockname())
    cfg = server.cfg
    rec("when_ready", "cfg.worker_class", cfg.worker_class)
    rec("when_ready", "cfg.worker_class_str", cfg.worker_class_str)
    rec("when_ready", "server.worker_class", server.worker_class)
    for name in ("workers", "bind", "worker_class", "timeout", "pre_fork"):
        s = cfg.settings[name]
        value = s.value if not callable(s.value) else s.value.__name__
        rec("when_ready", "settings[%s]" % name, (s.name, value, s.get() == s.value, s.section, s.cli))
    for name in ("workers", "bind", "timeout", "keepalive"):
        rec("when_ready", "settings[%s].default" % name, cfg.settings[name].default)
    rec("when_ready", "settings order", (cfg.settings["workers"] < cfg.settings["threads"],
                                         cfg.settings["bind"] < cfg.settings["workers"]))
    rec("when_ready", "cfg.workers", cfg.workers)
    rec("when_ready", "cfg.address", cfg.address)
    rec("when_ready", "server.address", server.address)
    rec("when_ready", "cfg.uid/gid", (cfg.uid == os.geteuid(), cfg.gid == os.getegid()))
    rec("when_ready", "cfg.is_ssl", cfg.is_ssl)
    rec("when_ready", "cfg.ssl_options", sorted(cfg.ssl_options.items()))
    rec("when_ready", "cfg.env", cfg.env)
    rec("when_ready", "cfg.sendfile", cfg.sendfile)
    rec("when_ready", "cfg.reuse_port", cfg.reuse_port)
    rec("when_ready", "cfg.paste_global_conf", cfg.paste_global_conf)
    rec("when_ready", "cfg.logger_class", cfg.logger_class)
    rec("when_ready", "cfg.proc_name", cfg.proc_name)
    rec("when_ready", "str(cfg) lines", [l.split(" = ")[0].strip() for l in str(cfg).splitlines()][:3])
    try:
        cfg.workers = 3
    except AttributeError as e:
        rec("when_ready", "cfg.workers assigned", str(e))
    try:
        cfg.nope
    except AttributeError as e:
        rec("when_ready", "cfg.nope", str(e))
    cfg.custom = 5
    rec("when_ready", "cfg.custom", (cfg.custom, vars(cfg)["custom"]))
    cfg.set("keepalive", "7")
    rec("when_ready", "cfg.set(keepalive)", (cfg.keepalive, cfg.settings["keepalive"].value))
    log = server.log
    rec("when_ready", "log loggers", (log.error_log is logging.getLogger("gunicorn.error"),
                                      log.access_log is logging.getLogger("gunicorn.access")))
    rec("when_ready", "log.access()", log.access(None, None, {}, 0.1))
    rec("when_ready", "log.log('info')", log.log("info", "hook objects: %s", "logged"))
    rec("when_ready", "log attrs", (log.cfg is server.cfg, log.loglevel, log.access_log_enabled))
    rec("when_ready", "server.app.cfg is cfg", server.app.cfg is cfg)
    rec("when_ready", "server attrs", (server.num_workers, server.timeout, server.worker_age,
                                       server.master_name, server.reexec_pid, server.master_pid,
                                       server.systemd, server.pidfile.fname, server.proc_name,
                                       server.WORKER_BOOT_ERROR, server.APP_LOAD_ERROR,
                                       server.dirty_arbiter_pid))
    rec("when_ready", "START_CTX", (server.START_CTX["cwd"] == os.getcwd(),
                                    sorted(k for k in server.START_CTX if isinstance(k, str)),
                                    0 in server.START_CTX))

def pre_fork(server, worker):
    if worker.age != 1:
        return
    rec("pre_fork", "str(worker)", str(worker))
    rec("pre_fork", "shared", (worker.sockets is server.LISTENERS, worker.app is server.app,
                               worker.cfg is server.cfg, worker.log is server.log,
                               worker.ppid == server.pid))
    rec("pre_fork", "attrs", (worker.age, worker.nr, worker.alive, worker.booted, worker.aborted,
                              worker.timeout, worker.reloader, worker.max_requests == sys.maxsize))
    rec("pre_fork", "notify", (worker.notify(), worker.tmp.notify(),
                               type(worker.tmp.last_update()).__name__))

def post_fork(server, worker):
    if worker.age != 1:
        return
    worker.foo = 1
    rec("post_fork", "vars(worker)[foo]", vars(worker)["foo"])
    rec("post_fork", "pid", worker.pid == os.getpid())
    rec("post_fork", "server.my_thing", server.my_thing)
    rec("post_fork", "port", server.LISTENERS[0].sock.getsockname()[1])
    before = worker.tmp.last_update()
    time.sleep(0.05)
    worker.tmp.notify()
    after = worker.tmp.last_update()
    rec("post_fork", "tmp.notify()", (after > before, abs(time.monotonic() - after) < 1))
    time.sleep(0.05)
    worker.notify()
    rec("post_fork", "notify()", worker.tmp.last_update() > after)

def post_worker_init(worker):
    rec("post_worker_init", "attrs", (worker.booted, worker.foo))

def on_exit(server):
    rec("on_exit", "LISTENERS", server.LISTENERS)
"#;

#[test]
fn hook_objects_match_gunicorn() {
    let mut runs = Vec::new();
    for prog in [Prog::Rgunicorn, Prog::Gunicorn] {
        let mut s = Server::start(prog, "objects", OBJECTS_CONF);
        s.wait_record("post_worker_init attrs");
        assert_eq!(s.get("/"), 200, "{prog:?}");
        // The hooks saw the port the server listens on, in the master and
        // in the worker.
        let port = s.port.to_string();
        assert_eq!(s.record("when_ready port"), Some(port.clone()), "{prog:?}");
        assert_eq!(s.record("post_fork port"), Some(port), "{prog:?}");
        assert_eq!(s.stop(), 0, "{prog:?}");
        s.wait_record("on_exit LISTENERS");
        runs.push((prog, s.records()));
    }
    let (ours, theirs) = (&runs[0].1, &runs[1].1);
    for key in ["when_ready port", "post_fork port"] {
        assert!(ours.contains_key(key) && theirs.contains_key(key));
    }
    let keys: Vec<&String> = theirs.keys().filter(|k| !k.ends_with(" port")).collect();
    assert!(keys.len() >= 50, "too few records: {theirs:#?}");
    let differ: Vec<String> = keys
        .iter()
        .filter(|k| ours.get(**k) != theirs.get(**k))
        .map(|k| {
            format!(
                "{k}:\n  rgunicorn: {}\n  gunicorn:  {}",
                ours.get(*k).map_or("(none)", String::as_str),
                theirs[*k]
            )
        })
        .collect();
    assert!(differ.is_empty(), "records differ:\n{}", differ.join("\n"));
    // The facts the records stand for, spelled out.
    assert_eq!(ours["when_ready vars(server)[my_thing]"], "42");
    assert_eq!(ours["when_ready str(LISTENERS[1])"], "'unix:s.sock'");
    assert_eq!(
        ours["when_ready cfg.worker_class"],
        "<class 'gunicorn.workers.gthread.ThreadWorker'>"
    );
    assert_eq!(ours["when_ready cfg.worker_class_str"], "'gthread'");
    assert_eq!(ours["when_ready cfg.workers assigned"], "'Invalid access!'");
    assert_eq!(
        ours["when_ready settings[workers]"],
        "('workers', 1, True, 'Worker Processes', ['-w', '--workers'])"
    );
    assert_eq!(ours["post_fork tmp.notify()"], "(True, True)");
    assert_eq!(ours["post_fork notify()"], "True");
    assert_eq!(ours["on_exit LISTENERS"], "[]");
}

/// `worker.max_requests` written by `post_fork` for the first worker only.
const MAX_REQUESTS_CONF: &str = r#"
bind = "127.0.0.1:0"
workers = 1
graceful_timeout = 5

def post_fork(server, worker):
    if worker.age == 1:
        worker.max_requests = 3

def post_worker_init(worker):
    rec("post_worker_init", "age %d" % worker.age, worker.max_requests)

def worker_exit(server, worker):
    rec("worker_exit", "age %d" % worker.age, (worker.nr, worker.max_requests))
"#;

#[test]
fn max_requests_written_in_post_fork_recycles_that_worker() {
    for prog in [Prog::Rgunicorn, Prog::Gunicorn] {
        let mut s = Server::start(prog, "maxreq", MAX_REQUESTS_CONF);
        assert_eq!(s.wait_record("post_worker_init age 1"), "3", "{prog:?}");
        for _ in 0..3 {
            assert_eq!(s.get("/"), 200, "{prog:?}");
        }
        // Three requests and no more: the worker leaves, its replacement
        // keeps the configured threshold (none).
        assert_eq!(s.wait_record("worker_exit age 1"), "(3, 3)", "{prog:?}");
        assert_eq!(
            s.wait_record("post_worker_init age 2"),
            i64::MAX.to_string(),
            "{prog:?}"
        );
        assert_eq!(s.get("/"), 200, "{prog:?}");
        assert_eq!(s.stop(), 0, "{prog:?}");
    }
}

/// Hooks close their copies of the first listener, in the master and in a
/// worker, and keep those of the second.
const COPIES_CONF: &str = r#"
import time
bind = ["127.0.0.1:0", "127.0.0.1:0"]
workers = 1
graceful_timeout = 10

def when_ready(server):
    for i, l in enumerate(server.LISTENERS):
        rec("when_ready", "port%d" % i, l.sock.getsockname()[1])
    server.LISTENERS[0].sock.close()

def post_fork(server, worker):
    rec("post_fork", "age %d inherited closed" % worker.age, server.LISTENERS[0].sock.fileno())
    worker.sockets[0].close()
    rec("post_fork", "age %d sock after close()" % worker.age, worker.sockets[0].sock)
    rec("post_fork", "age %d port1" % worker.age, worker.sockets[1].sock.getsockname()[1])

def post_worker_init(worker):
    rec("post_worker_init", "age %d" % worker.age, True)

def pre_request(worker, req):
    rec("pre_request", req.path, True)

def nworkers_changed(server, new_value, old_value):
    if old_value is None:
        return
    # The heartbeat the master reads moves: the worker beats every 0.5 s.
    (w,) = server.WORKERS.values()
    before = w.tmp.last_update()
    time.sleep(1.2)
    rec("nworkers_changed", "heartbeat moves", w.tmp.last_update() > before)
"#;

#[test]
fn listener_copies_belong_to_the_hooks() {
    let mut s = Server::start(Prog::Rgunicorn, "copies", COPIES_CONF);
    assert_eq!(s.wait_record("when_ready port0"), s.port.to_string());
    let port1: u16 = s.wait_record("when_ready port1").parse().unwrap();
    s.wait_record("post_worker_init age 1");
    assert_eq!(s.record("post_fork age 1 inherited closed").unwrap(), "-1");
    assert_eq!(
        s.record("post_fork age 1 sock after close()").unwrap(),
        "None"
    );
    assert_eq!(
        s.record("post_fork age 1 port1").unwrap(),
        port1.to_string()
    );
    assert_eq!(s.get("/"), 200);
    assert_eq!(get_on(port1, "/"), 200);
    // A worker forked after the hooks closed their copies serves too.
    s.signal("TTIN");
    assert_eq!(s.wait_record("nworkers_changed heartbeat moves"), "True");
    s.wait_record("post_worker_init age 2");
    for _ in 0..4 {
        assert_eq!(s.get("/"), 200);
        assert_eq!(get_on(port1, "/"), 200);
    }

    // Stopping while a request is in the app: the master closes its
    // listeners and its copies, each worker, as it starts draining, its
    // listener fds and the copies it inherited. New connections are then
    // refused at once, while the slow request still completes.
    let slow = std::thread::spawn(move || {
        let mut c = TcpStream::connect(("127.0.0.1", port1)).unwrap();
        c.set_read_timeout(Some(WAIT)).unwrap();
        write!(
            c,
            "GET /slow HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut buf = String::new();
        let _ = c.read_to_string(&mut buf);
        (buf, Instant::now())
    });
    s.wait_record("pre_request /slow");
    s.signal("TERM");
    let sent = Instant::now();
    let refused = loop {
        if let Err(e) = TcpStream::connect(("127.0.0.1", port1)) {
            if e.kind() == std::io::ErrorKind::ConnectionRefused {
                break Instant::now();
            }
        }
        assert!(sent.elapsed() < WAIT, "connections never refused");
        std::thread::sleep(Duration::from_millis(10));
    };
    let (answer, answered) = slow.join().unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "the slow request failed: {answer:?}"
    );
    assert!(
        refused < answered,
        "new connections were refused only {:?} after the slow request ended",
        refused - answered
    );
    assert_eq!(wait_exit(&mut s.child, WAIT), 0);
}

/// Status of a GET on `port` with `Connection: close` (0: no answer).
fn get_on(port: u16, path: &str) -> u16 {
    common::server::get(port, path).map_or(0, |(status, _)| status)
}

/// gunicorn hidden from the interpreter: its import fails as a missing
/// package's does.
const NO_GUNICORN_CONF: &str = r#"
import sys
class HideGunicorn:
    def find_spec(self, name, path=None, target=None):
        if name == "gunicorn":
            raise ModuleNotFoundError("No module named 'gunicorn'", name=name)
sys.meta_path.insert(0, HideGunicorn())
bind = "127.0.0.1:0"
workers = 1
threads = 2

def when_ready(server):
    rec("when_ready", "classes", (server.cfg.worker_class, server.cfg.worker_class_str,
                                  server.worker_class, server.cfg.logger_class))
"#;

#[test]
fn without_gunicorn_worker_class_is_its_name() {
    let mut s = Server::start(Prog::Rgunicorn, "nogunicorn", NO_GUNICORN_CONF);
    assert_eq!(
        s.wait_record("when_ready classes"),
        "('gthread', 'gthread', 'gthread', 'gunicorn.glogging.Logger')"
    );
    assert_eq!(s.get("/"), 200);
    assert_eq!(s.stop(), 0);
}
