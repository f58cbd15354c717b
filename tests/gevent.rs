//! gevent worker classes, side by side with gunicorn 27.0.1's gevent
//! worker: the same app (`tests/apps/gevent_app.py`, a Flask app) and
//! config under both servers, from the venv `tests/run` makes (gevent and
//! flask in it).
//!
//! Concurrency is shown, not timed: requests that wait on a shared barrier
//! until all of them are in the app, an upstream server that answers only
//! once all its clients are connected, a database driver made cooperative
//! by a `post_fork` hook. A server that runs one request at a time
//! deadlocks on each of these until the test's read timeout.

use crate::common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::server::{children, free_port, stop_child, wait_exit, Load};
use common::{gunicorn, rgunicorn, scratch_dir};

fn venv() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-venv")
}

fn app_file(name: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/apps")
            .join(name),
    )
    .unwrap()
}

/// A server under test, in its own directory (the app files copied there).
struct Srv {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Srv {
    fn start(program: &Path, files: &[(&str, &str)], args: &[&str]) -> Srv {
        let dir = scratch_dir("gevent");
        std::fs::write(dir.join("gevent_app.py"), app_file("gevent_app.py")).unwrap();
        std::fs::write(dir.join("gevent_flask.py"), app_file("gevent_flask.py")).unwrap();
        for (name, body) in files {
            std::fs::write(dir.join(name), body).unwrap();
        }
        let port = free_port();
        let bind = format!("127.0.0.1:{port}");
        let child = Command::new(program)
            .current_dir(&dir)
            // gunicorn's gevent worker can wait out the whole graceful
            // timeout on TERM.
            .args(["-b", &bind, "--control-socket", "ctl.sock"])
            .args(["--graceful-timeout", "5"])
            .args(args)
            .env("VIRTUAL_ENV", venv())
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("stderr")).unwrap())
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let mut srv = Srv { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !get(port, "/health").is_ok_and(|r| r.status == 200) {
            assert!(
                srv.child.try_wait().unwrap().is_none(),
                "{program:?} exited: {}",
                srv.stderr()
            );
            assert!(Instant::now() < deadline, "{program:?} did not serve");
            std::thread::sleep(Duration::from_millis(50));
        }
        srv
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr")).unwrap_or_default()
    }

    fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status();
    }

    fn workers(&self) -> BTreeSet<i32> {
        children(self.child.id() as i32).into_iter().collect()
    }

    /// Wait until `cond` holds (20 s at most).
    fn wait_until(&self, what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !cond() {
            assert!(Instant::now() < deadline, "{what}: {}", self.stderr());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(mut self) -> i32 {
        self.signal("TERM");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(Instant::now() < deadline, "did not stop: {}", self.stderr());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Srv {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}

/// Both servers' names and binaries.
fn servers() -> [(&'static str, PathBuf); 2] {
    [("rgunicorn", rgunicorn()), ("gunicorn", gunicorn())]
}

#[derive(Debug, Clone, PartialEq)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// Read one response (the connection is closed by the server after it).
fn read_response(s: &mut impl Read) -> std::io::Result<Resp> {
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("no head in {raw:?}")))?;
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    Ok(Resp {
        status,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = data.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size_text = String::from_utf8_lossy(&data[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[eol + 2..eol + 2 + size]);
        data = &data[eol + 2 + size + 2..];
    }
}

fn connect(port: u16) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    Ok(s)
}

fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &str,
    body: &[u8],
) -> std::io::Result<Resp> {
    let mut s = connect(port)?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{headers}")
        .into_bytes();
    if !body.is_empty() {
        req.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    req.extend_from_slice(body);
    s.write_all(&req)?;
    read_response(&mut s)
}

fn get(port: u16, path: &str) -> std::io::Result<Resp> {
    request(port, "GET", path, "", b"")
}

/// `n` GETs of `path` at once, each on its own connection.
fn parallel(port: u16, path: &str, n: usize) -> Vec<Resp> {
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let path = path.to_string();
            std::thread::spawn(move || get(port, &path).unwrap())
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

/// One answer as compared: the request, status, Content-Type, Location,
/// body (no Date, no Server).
type Answer = (String, u16, Option<String>, Option<String>, String);

/// The answers a Flask app gives, as a client sees them.
fn flask_answers(port: u16) -> Vec<Answer> {
    let upload: Vec<u8> = (0..100_000u32)
        .map(|i| b"abcdefgh"[i as usize % 8])
        .collect();
    let form = "Content-Type: application/x-www-form-urlencoded\r\n";
    let cases: Vec<(&str, &str, &str, Vec<u8>)> = vec![
        ("GET", "/", "", vec![]),
        ("GET", "/json?name=abc", "", vec![]),
        ("POST", "/form", form, b"a=1&b=two+words".to_vec()),
        ("POST", "/upload", "", upload),
        ("GET", "/old", "", vec![]),
        ("GET", "/missing", "", vec![]),
        ("GET", "/fail", "", vec![]),
        ("GET", "/sleep", "", vec![]),
        ("GET", "/stream", "", vec![]),
        ("HEAD", "/", "", vec![]),
    ];
    cases
        .into_iter()
        .map(|(method, path, headers, body)| {
            let r = request(port, method, path, headers, &body).unwrap();
            (
                format!("{method} {path}"),
                r.status,
                r.header("content-type").map(str::to_string),
                r.header("location").map(str::to_string),
                r.text(),
            )
        })
        .collect()
}

#[test]
fn a_flask_app_answers_as_under_gunicorn_gevent() {
    let answers: Vec<_> = servers()
        .iter()
        .map(|(_, program)| {
            let srv = Srv::start(
                program,
                &[],
                &["gevent_flask:app", "-k", "gevent", "-w", "1"],
            );
            let answers = flask_answers(srv.port);
            assert_eq!(srv.stop(), 0);
            answers
        })
        .collect();
    assert_eq!(
        answers[0], answers[1],
        "rgunicorn (left) vs gunicorn (right)"
    );
    assert_eq!(answers[0][0].4, "hello from flask");
}

/// N requests each wait in the app until all N are in: they complete only
/// if the worker runs them at once. They share the main OS thread, each in
/// a greenlet of its own that is not the hub.
#[test]
fn barrier_requests_complete_in_greenlets_on_the_main_thread() {
    const N: usize = 20;
    for (name, program) in servers() {
        let srv = Srv::start(
            &program,
            &[],
            &["gevent_app:app", "-k", "gevent", "-w", "1"],
        );
        let answers = parallel(srv.port, &format!("/where?n={N}"), N);
        let seen: Vec<serde_json::Value> = answers.iter().map(Resp::json).collect();
        for w in &seen {
            assert_eq!(w["ok"], true, "{name}: {w}");
            assert_eq!(w["main_thread"], true, "{name}: {w}");
            assert_eq!(w["hub"], false, "{name}: {w}");
        }
        let natives: BTreeSet<String> = seen.iter().map(|w| w["native"].to_string()).collect();
        let greenlets: BTreeSet<String> = seen.iter().map(|w| w["greenlet"].to_string()).collect();
        assert_eq!(natives.len(), 1, "{name}: one OS thread");
        assert_eq!(greenlets.len(), N, "{name}: a greenlet per request");
        assert_eq!(srv.stop(), 0, "{name}");
    }
}

const PATCH_IN_CONFIG: &str = "\
from gevent import monkey
monkey.patch_all()
worker_class = 'gevent'
workers = 1
";

/// `monkey.patch_all()` at the top of the config runs in the master before
/// fork: the master still reloads and stops, the workers serve patched.
#[test]
fn patch_all_at_the_top_of_the_config() {
    let mut patched = Vec::new();
    for (name, program) in servers() {
        let srv = Srv::start(
            &program,
            &[("conf.py", PATCH_IN_CONFIG)],
            &["gevent_app:app", "-c", "conf.py"],
        );
        patched.push(get(srv.port, "/patched").unwrap().json());
        let met = parallel(srv.port, "/barrier?n=4", 4);
        assert!(met.iter().all(|r| r.text() == "ok"), "{name}: {met:?}");
        if name == "rgunicorn" {
            let old = srv.workers();
            srv.signal("HUP");
            srv.wait_until("a new worker after HUP", || {
                let now = srv.workers();
                now.len() == 1 && now.is_disjoint(&old)
            });
            assert_eq!(get(srv.port, "/patched").unwrap().json()["socket"], true);
        }
        assert_eq!(srv.stop(), 0, "{name}");
    }
    assert_eq!(patched[0], patched[1]);
    assert_eq!(patched[0]["socket"], true);
    assert_eq!(patched[0]["threading"], true);
}

/// A database driver that waits in C (as libpq does) unless given a wait
/// callback, as psycopg2's `set_wait_callback`.
const FAKEDB: &str = r#"
import os
wait_callback = None
wait_callback_name = None
_waiting = []

def set_wait_callback(cb):
    global wait_callback, wait_callback_name
    wait_callback = cb
    wait_callback_name = cb.__name__

def query(n):
    r, w = os.pipe()
    _waiting.append(w)
    if len(_waiting) >= n:
        for fd in _waiting:
            os.write(fd, b"1")
        _waiting.clear()
    if wait_callback is not None:
        wait_callback(r)
    got = os.read(r, 1)
    os.close(r)
    os.close(w)
    return b"row" if got == b"1" else b"?"
"#;

/// psycogreen's `patch_psycopg()`, for fakedb.
const PATCH_IN_POST_FORK: &str = r#"
worker_class = "gevent"
workers = 1
def post_fork(server, worker):
    import fakedb
    from gevent.socket import wait_read
    def gevent_wait_callback(fd):
        wait_read(fd)
    fakedb.set_wait_callback(gevent_wait_callback)
"#;

#[test]
fn a_driver_patched_in_post_fork_cooperates() {
    for (name, program) in servers() {
        let srv = Srv::start(
            &program,
            &[("conf.py", PATCH_IN_POST_FORK), ("fakedb.py", FAKEDB)],
            &["gevent_app:app", "-c", "conf.py"],
        );
        let rows = parallel(srv.port, "/db?n=5", 5);
        assert!(rows.iter().all(|r| r.text() == "row"), "{name}: {rows:?}");
        let patched = get(srv.port, "/patched").unwrap().json();
        assert_eq!(patched["fakedb_callback"], "gevent_wait_callback", "{name}");
        assert_eq!(patched["socket"], true, "{name}");
        assert_eq!(srv.stop(), 0, "{name}");
    }
}

const MYWORKERS: &str = r#"
from gunicorn.workers.ggevent import GeventWorker

class PatchedWorker(GeventWorker):
    def patch(self):
        super().patch()
        import extlib
        extlib.init_gevent(self)
"#;

const EXTLIB: &str = r#"
import os
initialised_in = None

def init_gevent(worker):
    global initialised_in
    assert worker.cfg.worker_connections > 0
    initialised_in = os.getpid()
"#;

/// A subclass's `patch()` (super().patch(), then a library's gevent
/// set-up, as grpc's) runs in every worker.
#[test]
fn a_patch_override_runs_in_each_worker() {
    for (name, program) in servers() {
        let srv = Srv::start(
            &program,
            &[("myworkers.py", MYWORKERS), ("extlib.py", EXTLIB)],
            &["gevent_app:app", "-k", "myworkers.PatchedWorker", "-w", "2"],
        );
        for _ in 0..6 {
            let patched = get(srv.port, "/patched").unwrap().json();
            assert_eq!(patched["extlib_in_this_worker"], true, "{name}: {patched}");
            assert_eq!(patched["socket"], true, "{name}: {patched}");
        }
        if name == "rgunicorn" {
            assert!(!srv.stderr().contains("patch()"), "{}", srv.stderr());
        }
        assert_eq!(srv.stop(), 0, "{name}");
    }
}

/// An upstream HTTP server that answers only once `n` clients are
/// connected and have sent their request.
fn barrier_upstream(n: usize) -> (u16, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let t = std::thread::spawn(move || {
        let mut held = Vec::new();
        while held.len() < n {
            let (s, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(s);
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap() > 2 {
                line.clear();
            }
            held.push(reader.into_inner());
        }
        for mut s in held {
            let _ = s.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\nConnection: close\r\n\r\nupstream-ok",
            );
        }
    });
    (port, t)
}

#[test]
fn patched_socket_calls_inside_requests_run_concurrently() {
    const N: usize = 5;
    for (name, program) in servers() {
        let srv = Srv::start(
            &program,
            &[],
            &["gevent_app:app", "-k", "gevent", "-w", "1"],
        );
        let (up, upstream) = barrier_upstream(N);
        let answers = parallel(srv.port, &format!("/upstream?port={up}"), N);
        upstream.join().unwrap();
        assert!(
            answers.iter().all(|r| r.text() == "upstream-ok"),
            "{name}: {answers:?}"
        );
        assert_eq!(srv.stop(), 0, "{name}");
    }
}

#[test]
fn worker_connections_bounds_the_requests_in_the_app() {
    for (name, program) in servers() {
        let srv = Srv::start(
            &program,
            &[],
            &[
                "gevent_app:app",
                "-k",
                "gevent",
                "-w",
                "1",
                "--worker-connections",
                "2",
            ],
        );
        let answers = parallel(srv.port, "/concurrency", 6);
        assert!(answers.iter().all(|r| r.status == 200), "{name}");
        // The most requests ever in the app at once.
        assert_eq!(get(srv.port, "/concurrency").unwrap().text(), "2", "{name}");
        assert_eq!(srv.stop(), 0, "{name}");
    }
}

const HOOKS_CONF: &str = r#"
import os, threading
import gevent
worker_class = "gevent"
workers = 1
timeout = 2

def _where():
    return {
        "main_thread": threading.get_native_id() == os.getpid(),
        "hub": gevent.getcurrent() is gevent.get_hub(),
    }

def _record(line):
    with open("hooks.log", "a") as f:
        f.write(line + "\n")

def pre_request(worker, req):
    import gevent_app
    gevent_app.HOOKS.append(dict(_where(), hook="pre_request", path=req.path))

def post_request(worker, req, environ, resp):
    import gevent_app
    gevent_app.HOOKS.append(dict(_where(), hook="post_request", path=req.path))

def worker_abort(worker):
    w = _where()
    _record("worker_abort %d main=%s" % (os.getpid(), w["main_thread"]))

def worker_int(worker):
    w = _where()
    _record("worker_int %d main=%s" % (os.getpid(), w["main_thread"]))
"#;

/// A greenlet that never yields stops the hub's heartbeat: the master
/// aborts the worker after `timeout` (its `worker_abort` on the main
/// thread) and a new one serves.
#[test]
fn a_request_blocking_the_hub_is_killed_after_timeout() {
    for (name, program) in servers() {
        let srv = Srv::start(
            &program,
            &[("conf.py", HOOKS_CONF)],
            &["gevent_app:app", "-c", "conf.py"],
        );
        let old = srv.workers();
        let port = srv.port;
        let blocked = std::thread::spawn(move || get(port, "/block"));
        srv.wait_until("a new worker", || {
            let now = srv.workers();
            !now.is_empty() && now.is_disjoint(&old)
        });
        srv.wait_until("the new worker serves", || {
            get(srv.port, "/health").is_ok_and(|r| r.status == 200)
        });
        // gunicorn's worker closes the connection; rgunicorn's answers 500.
        if let Ok(r) = blocked.join().unwrap() {
            assert_ne!(r.text(), "unblocked", "{name}");
        }
        let hooks = std::fs::read_to_string(srv.dir.join("hooks.log")).unwrap_or_default();
        let old_pid = old.iter().next().unwrap();
        assert!(
            hooks.contains(&format!("worker_abort {old_pid} main=True")),
            "{name}: {hooks}"
        );
        assert!(srv.stderr().contains("WORKER TIMEOUT"), "{name}");
        assert_eq!(srv.stop(), 0, "{name}");
    }
}

/// pre_request and post_request run on the worker's main thread, in a
/// greenlet (not the hub); so does worker_int on INT.
#[test]
fn request_hooks_run_on_the_hub_thread() {
    for (name, program) in servers() {
        let mut srv = Srv::start(
            &program,
            &[("conf.py", HOOKS_CONF)],
            &["gevent_app:app", "-c", "conf.py"],
        );
        for _ in 0..3 {
            assert_eq!(get(srv.port, "/stream?n=2").unwrap().status, 200);
        }
        // post_request runs after the response is sent: wait for it.
        let mut records = Vec::new();
        srv.wait_until("post_request of the third /stream", || {
            records = get(srv.port, "/hookthreads")
                .unwrap()
                .json()
                .as_array()
                .unwrap()
                .clone();
            records
                .iter()
                .filter(|r| r["hook"] == "post_request" && r["path"] == "/stream")
                .count()
                == 3
        });
        for r in &records {
            assert_eq!(r["main_thread"], true, "{name}: {r}");
            assert_eq!(r["hub"], false, "{name}: {r}");
        }
        let pid = *srv.workers().iter().next().unwrap();
        srv.signal("INT");
        wait_exit(&mut srv.child, Duration::from_secs(20));
        let hooks = std::fs::read_to_string(srv.dir.join("hooks.log")).unwrap_or_default();
        assert!(
            hooks.contains(&format!("worker_int {pid} main=True")),
            "{name}: {hooks}"
        );
    }
}

const WHERELOG: &str = r#"
import logging, os, threading

class Where(logging.Handler):
    def emit(self, record):
        with open("where.log", "a") as f:
            f.write("%s main=%s %s\n" % (
                record.name,
                threading.get_native_id() == os.getpid(),
                record.getMessage()[:60].replace("\n", " "),
            ))
"#;

const LOG_CONF: &str = r#"
worker_class = "gevent"
workers = 1
accesslog = "-"
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"where": {"class": "wherelog.Where"}},
    "root": {"level": "INFO", "handlers": ["where"]},
    "loggers": {
        "gunicorn.error": {"handlers": ["where"], "level": "INFO", "propagate": False},
        "gunicorn.access": {"handlers": ["where"], "level": "INFO", "propagate": False},
    },
}
"#;

/// Python log handlers see the workers' records (the access lines, the
/// traceback of a failed request) on the main thread.
#[test]
fn log_handlers_run_on_the_hub_thread() {
    for (name, program) in servers() {
        let srv = Srv::start(
            &program,
            &[("conf.py", LOG_CONF), ("wherelog.py", WHERELOG)],
            &["gevent_app:app", "-c", "conf.py"],
        );
        assert_eq!(get(srv.port, "/stream?n=1").unwrap().status, 200);
        assert_eq!(get(srv.port, "/missing-route").unwrap().status, 404);
        let read = || std::fs::read_to_string(srv.dir.join("where.log")).unwrap_or_default();
        srv.wait_until("the access records", || {
            read()
                .lines()
                .filter(|l| l.starts_with("gunicorn.access"))
                .count()
                >= 2
        });
        let text = read();
        let worker_lines: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("gunicorn.access"))
            .collect();
        assert!(!worker_lines.is_empty(), "{name}: {text}");
        for line in worker_lines {
            assert!(line.contains(" main=True "), "{name}: {line}");
        }
        assert_eq!(srv.stop(), 0, "{name}");
    }
}

/// Streamed responses and uploads: the same bytes as gunicorn's, and a
/// greenlet waiting for an upload's bytes or for a slow reader never holds
/// up the other requests.
#[test]
fn streaming_responses_and_uploads_cooperate() {
    let upload: Vec<u8> = (0..1_048_576u32).map(|i| (i % 251) as u8).collect();
    let mut answers = Vec::new();
    for (name, program) in servers() {
        let srv = Srv::start(
            &program,
            &[],
            &["gevent_app:app", "-k", "gevent", "-w", "1"],
        );
        let stream = get(srv.port, "/stream?n=5").unwrap().text();
        let echo = request(srv.port, "POST", "/echo", "", &upload)
            .unwrap()
            .text();
        let mut chunked = b"Transfer-Encoding: chunked\r\n\r\n".to_vec();
        for piece in upload.chunks(100_000) {
            chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
            chunked.extend_from_slice(piece);
            chunked.extend_from_slice(b"\r\n");
        }
        chunked.extend_from_slice(b"0\r\n\r\n");
        let mut s = connect(srv.port).unwrap();
        s.write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nConnection: close\r\n")
            .unwrap();
        s.write_all(&chunked).unwrap();
        let echo_chunked = read_response(&mut s).unwrap().text();

        // An upload half sent: its greenlet waits, others are served.
        let mut slow = connect(srv.port).unwrap();
        write!(
            slow,
            "POST /echo HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
            upload.len()
        )
        .unwrap();
        slow.write_all(&upload[..500_000]).unwrap();
        assert_eq!(get(srv.port, "/health").unwrap().text(), "ok", "{name}");
        slow.write_all(&upload[500_000..]).unwrap();
        let slow_echo = read_response(&mut slow).unwrap().text();

        // A 13 MB response its client does not read yet: the same.
        let mut reader = connect(srv.port).unwrap();
        reader
            .write_all(b"GET /big?n=200 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .unwrap();
        // The response has started (the rest waits for this client).
        let mut first = [0u8; 12];
        reader.read_exact(&mut first).unwrap();
        assert_eq!(get(srv.port, "/health").unwrap().text(), "ok", "{name}");
        let big = read_response(&mut (&first[..]).chain(&mut reader)).unwrap();
        assert_eq!(big.body.len(), 200 * 65536, "{name}");
        answers.push((stream, echo, echo_chunked, slow_echo));
        assert_eq!(srv.stop(), 0, "{name}");
    }
    assert_eq!(
        answers[0], answers[1],
        "rgunicorn (left) vs gunicorn (right)"
    );
    assert!(answers[0].1.starts_with("1048576 "), "{:?}", answers[0]);
    assert_eq!(answers[0].1, answers[0].2);
    assert_eq!(answers[0].1, answers[0].3);
}

/// HUP and max_requests replace gevent workers without a failed request
/// (rgunicorn's replace-first and drain; gunicorn's gevent worker drops
/// some).
#[test]
fn hup_and_max_requests_under_load_fail_no_request() {
    let srv = Srv::start(
        &rgunicorn(),
        &[],
        &["gevent_app:app", "-k", "gevent", "-w", "2"],
    );
    let load = Load::start(srv.port, 8);
    let old = srv.workers();
    srv.wait_until("load running", || {
        load.ok.load(std::sync::atomic::Ordering::Relaxed) > 200
    });
    srv.signal("HUP");
    srv.wait_until("new workers after HUP", || {
        let now = srv.workers();
        now.len() == 2 && now.is_disjoint(&old)
    });
    let before = load.ok.load(std::sync::atomic::Ordering::Relaxed);
    srv.wait_until("load after HUP", || {
        load.ok.load(std::sync::atomic::Ordering::Relaxed) > before + 200
    });
    let (ok, failed) = load.finish();
    assert_eq!(failed, 0, "{ok} ok");
    assert_eq!(srv.stop(), 0);

    let srv = Srv::start(
        &rgunicorn(),
        &[],
        &[
            "gevent_app:app",
            "-k",
            "gevent",
            "-w",
            "2",
            "--max-requests",
            "100",
        ],
    );
    let load = Load::start(srv.port, 8);
    let first = srv.workers();
    srv.wait_until("workers recycled twice over", || {
        let now = srv.workers();
        now.len() == 2 && now.is_disjoint(&first)
    });
    let (ok, failed) = load.finish();
    assert_eq!(failed, 0, "{ok} ok");
    assert!(ok > 200);
    assert_eq!(srv.stop(), 0);
}

/// Without gevent: gunicorn's error (its RuntimeError in a `class uri`
/// message), exit 1.
#[test]
fn without_gevent_the_start_fails_with_gunicorns_message() {
    let dir = scratch_dir("gevent-missing");
    let bare = dir.join("venv");
    let made = Command::new(venv().join("bin/python"))
        .args([
            "-c",
            "import sys, venv; venv.create(sys.argv[1], with_pip=False)",
        ])
        .arg(&bare)
        .env_remove("VIRTUAL_ENV")
        .status()
        .unwrap();
    assert!(made.success());
    std::fs::write(dir.join("gevent_app.py"), app_file("gevent_app.py")).unwrap();
    let out = Command::new(rgunicorn())
        .current_dir(&dir)
        .args(["gevent_app:app", "-k", "gevent", "-b", "127.0.0.1:0"])
        .env("VIRTUAL_ENV", &bare)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("Error: class uri 'gevent' invalid or not found: \n\n[Traceback")
            && err.contains("ModuleNotFoundError: No module named 'gevent'")
            && err.contains("RuntimeError: gevent worker requires gevent 24.10.1 or higher\n]"),
        "{err}"
    );
}

/// rgunicorn run to its end on `gevent_app:app` with `args` added (a
/// start that is refused): (status, stderr).
fn refused_start(dir: &Path, args: &[&str]) -> (Option<i32>, String) {
    std::fs::write(dir.join("gevent_app.py"), app_file("gevent_app.py")).unwrap();
    let out = Command::new(rgunicorn())
        .current_dir(dir)
        .args(["gevent_app:app", "-b", "127.0.0.1:0"])
        .args(args)
        .env("VIRTUAL_ENV", venv())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// gevent-websocket's worker (Flask-SocketIO) is refused by name.
#[test]
fn the_gevent_websocket_worker_is_refused_by_name() {
    let dir = scratch_dir("gevent-ws");
    let (status, err) = refused_start(
        &dir,
        &[
            "-k",
            "geventwebsocket.gunicorn.workers.GeventWebSocketWorker",
        ],
    );
    assert_eq!(status, Some(1), "{err}");
    assert!(
        err.contains("GeventWebSocketWorker) is not supported by rgunicorn: gevent-websocket"),
        "{err}"
    );
}

/// An RPC framework's pattern: a GeventWorker subclass whose `handle()`
/// gives each raw connection to its own server. rgunicorn's HTTP would
/// serve that app something else: the start fails (here its check),
/// naming the method. (A subclass that only wraps gunicorn's handler,
/// calling `super()`, is not refused: `worker_class`'s unit tests.)
#[test]
fn a_worker_class_taking_over_connections_is_refused_by_name() {
    let dir = scratch_dir("gevent-takeover");
    std::fs::write(
        dir.join("rpc_worker.py"),
        "from gunicorn.workers.ggevent import GeventWorker\n\
         class RpcWorker(GeventWorker):\n    def handle(self, listener, client, addr):\n\
         \x20       client.setblocking(1)\n        self.wsgi.handler(client, addr)\n",
    )
    .unwrap();
    let (status, err) = refused_start(&dir, &["-k", "rpc_worker.RpcWorker", "--check-config"]);
    assert_eq!(status, Some(1), "{err}");
    assert!(
        err.contains(
            "worker_class \"rpc_worker.RpcWorker\" (rpc_worker.RpcWorker) overrides handle() \
             without calling gunicorn's"
        ),
        "{err}"
    );
}
