//! The master and its workers as a child process: start-up hook order,
//! serving the built-in app, HUP / TTIN / TTOU / max_requests under a
//! closed-loop keep-alive load with zero failed requests, TERM.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use common::*;

const HOOKS_CONF: &str = r#"
bind = "127.0.0.1:0"
workers = 2
graceful_timeout = 5
timeout = 30
import os
HOOK_LOG = os.environ["HOOK_LOG"]
def _rec(*parts):
    with open(HOOK_LOG, "a") as f:
        f.write(" ".join(str(p) for p in parts) + "\n")
def nworkers_changed(server, new_value, old_value): _rec("nworkers_changed", os.getpid(), new_value, old_value)
def on_starting(server): _rec("on_starting", os.getpid(), server.pid, server.cfg.workers)
def when_ready(server): _rec("when_ready", os.getpid())
def pre_fork(server, worker): _rec("pre_fork", os.getpid(), worker.pid, worker.age)
def post_fork(server, worker): _rec("post_fork", os.getpid(), worker.pid, worker.ppid == server.pid)
def post_worker_init(worker): _rec("post_worker_init", os.getpid(), worker.pid)
def on_reload(server): _rec("on_reload", os.getpid())
def worker_exit(server, worker): _rec("worker_exit", os.getpid(), worker.pid)
def child_exit(server, worker): _rec("child_exit", os.getpid(), worker.pid)
def on_exit(server): _rec("on_exit", os.getpid())
def worker_abort(worker): _rec("worker_abort", os.getpid(), worker.pid)
def pre_exec(server): _rec("pre_exec", os.getpid(), server.pid)
"#;

struct Server {
    child: Child,
    port: u16,
    hook_log: std::path::PathBuf,
    stderr_lines: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Server {
    fn start(dir: &Path, extra_args: &[&str]) -> Server {
        Server::start_program(&rgunicorn(), "rgunicorn:health", dir, extra_args)
    }

    fn start_program(program: &Path, app: &str, dir: &Path, extra_args: &[&str]) -> Server {
        let hook_log = dir.join("hooks.log");
        std::fs::write(dir.join("hooks.conf.py"), HOOKS_CONF).unwrap();
        let mut child = Command::new(program)
            .current_dir(dir)
            .args([app, "-c", "hooks.conf.py"])
            .args(extra_args)
            .env("HOOK_LOG", &hook_log)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let stderr_lines = Arc::new(std::sync::Mutex::new(Vec::new()));
        let lines = stderr_lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("server: {line}");
                lines.lock().unwrap().push(line.clone());
                // The receiver goes away after start-up; keep draining.
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        let port = loop {
            let line = rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("no Listening line");
            if let Some(rest) = line.split("Listening at: http://127.0.0.1:").nth(1) {
                break rest
                    .split_whitespace()
                    .next()
                    .unwrap()
                    .parse::<u16>()
                    .unwrap();
            }
        };
        let server = Server {
            child,
            port,
            hook_log,
            stderr_lines,
        };
        server.wait_until(|| {
            server
                .get("/health")
                .map(|(s, _)| s == 200)
                .unwrap_or(false)
        });
        server
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn get(&self, path: &str) -> std::io::Result<(u16, String)> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        )?;
        let mut buf = String::new();
        s.read_to_string(&mut buf)?;
        let status = buf
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = buf.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
        Ok((status, body))
    }

    fn hooks(&self) -> Vec<String> {
        std::fs::read_to_string(&self.hook_log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn wait_until(&self, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !cond() {
            assert!(
                Instant::now() < deadline,
                "condition not reached; hooks: {:#?}",
                self.hooks()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Worker pids alive now (children of the master).
    fn worker_pids(&self) -> Vec<i32> {
        let children =
            std::fs::read_to_string(format!("/proc/{}/task/{}/children", self.pid(), self.pid()))
                .unwrap_or_default();
        children
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }

    fn stop(mut self) -> i32 {
        self.signal("TERM");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(Instant::now() < deadline, "server did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A closed-loop keep-alive load: `conns` clients each sending requests
/// back to back on one connection (reconnecting after `Connection: close`),
/// counting every failure: connect errors, resets, early EOF, non-200.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(port: u16, conns: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let threads = (0..conns)
            .map(|_| {
                let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
                std::thread::spawn(move || {
                    let mut conn: Option<BufReader<TcpStream>> = None;
                    while !stop.load(Ordering::Relaxed) {
                        if conn.is_none() {
                            match TcpStream::connect(("127.0.0.1", port)) {
                                Ok(s) => {
                                    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                                    conn = Some(BufReader::new(s));
                                }
                                Err(e) => {
                                    eprintln!("load: connect failed: {e}");
                                    failed.fetch_add(1, Ordering::Relaxed);
                                    continue;
                                }
                            }
                        }
                        match one_request(conn.as_mut().unwrap()) {
                            Ok((200, close)) => {
                                ok.fetch_add(1, Ordering::Relaxed);
                                if close {
                                    conn = None;
                                }
                            }
                            Ok((status, _)) => {
                                eprintln!("load: status {status}");
                                failed.fetch_add(1, Ordering::Relaxed);
                                conn = None;
                            }
                            Err(e) => {
                                eprintln!("load: request failed: {e}");
                                failed.fetch_add(1, Ordering::Relaxed);
                                conn = None;
                            }
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failed,
            threads,
        }
    }

    fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

/// One keep-alive request: (status, server said Connection: close).
fn one_request(conn: &mut BufReader<TcpStream>) -> std::io::Result<(u16, bool)> {
    conn.get_mut()
        .write_all(b"GET /health HTTP/1.1\r\nHost: load\r\n\r\n")?;
    let mut line = String::new();
    if conn.read_line(&mut line)? == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "closed before response",
        ));
    }
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let (mut length, mut close) = (0usize, false);
    loop {
        line.clear();
        if conn.read_line(&mut line)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "closed in headers",
            ));
        }
        let l = line.trim_end().to_ascii_lowercase();
        if l.is_empty() {
            break;
        }
        if let Some(v) = l.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        if l == "connection: close" {
            close = true;
        }
    }
    let mut body = vec![0; length];
    conn.read_exact(&mut body)?;
    Ok((status, close))
}

fn count(hooks: &[String], name: &str) -> usize {
    hooks
        .iter()
        .filter(|l| l.split_whitespace().next() == Some(name))
        .count()
}

#[test]
fn startup_hook_order_and_builtin_app() {
    let dir = scratch_dir("master-start");
    let server = Server::start(&dir, &[]);
    server.wait_until(|| count(&server.hooks(), "post_worker_init") == 2);
    let hooks = server.hooks();
    let master = server.pid().to_string();
    let names: Vec<&str> = hooks
        .iter()
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(
        &names[..3],
        ["nworkers_changed", "on_starting", "when_ready"],
        "{hooks:#?}"
    );
    assert_eq!(hooks[0], format!("nworkers_changed {master} 2 None"));
    assert_eq!(hooks[1], format!("on_starting {master} {master} 2"));
    // pre_fork runs in the master with pid "[booting]", post_fork in the worker.
    let pre: Vec<&String> = hooks.iter().filter(|l| l.starts_with("pre_fork")).collect();
    assert_eq!(pre.len(), 2);
    assert!(
        pre.iter()
            .all(|l| l.starts_with(&format!("pre_fork {master} [booting]"))),
        "{pre:?}"
    );
    for l in hooks.iter().filter(|l| l.starts_with("post_fork")) {
        let f: Vec<&str> = l.split_whitespace().collect();
        assert_eq!(
            f[1], f[2],
            "post_fork runs in the worker with worker.pid set: {l}"
        );
        assert_ne!(f[1], master);
        assert_eq!(f[3], "True", "worker.ppid is the master: {l}");
    }
    assert_eq!(server.worker_pids().len(), 2);

    let (status, body) = server.get("/health").unwrap();
    assert_eq!((status, body.as_str()), (200, r#"{"status":"healthy"}"#));
    let (status, body) = server.get("/health/ready").unwrap();
    assert_eq!((status, body.as_str()), (200, r#"{"status":"ready"}"#));
    let (status, body) = server.get("/health/worker").unwrap();
    assert_eq!(status, 200);
    let worker_id: i32 = body
        .split("\"worker_id\":")
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(server.worker_pids().contains(&worker_id), "{body}");
    assert!(
        body.contains("\"uptime_seconds\":") && body.contains("\"requests_served\":"),
        "{body}"
    );
    assert_eq!(server.get("/nope").unwrap().0, 404);

    let hook_log = server.hook_log.clone();
    assert_eq!(server.stop(), 0);
    let hooks: Vec<String> = std::fs::read_to_string(hook_log)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(count(&hooks, "worker_exit"), 2);
    assert_eq!(count(&hooks, "child_exit"), 2);
    assert_eq!(hooks.last().unwrap(), &format!("on_exit {master}"));
}

#[test]
fn hup_ttin_ttou_lose_no_request_under_load() {
    let dir = scratch_dir("master-hup");
    let server = Server::start(&dir, &[]);
    server.wait_until(|| count(&server.hooks(), "post_worker_init") == 2);
    let load = Load::start(server.port, 16);
    server.wait_until(|| load.ok.load(Ordering::Relaxed) > 200);
    let before = server.worker_pids();

    for round in 1..=2 {
        server.signal("HUP");
        server.wait_until(|| count(&server.hooks(), "on_reload") == round);
        // A new generation serves and the old one is gone.
        server.wait_until(|| {
            count(&server.hooks(), "child_exit") == 2 * round && server.worker_pids().len() == 2
        });
        let served = load.ok.load(Ordering::Relaxed);
        server.wait_until(|| load.ok.load(Ordering::Relaxed) > served + 200);
    }
    let after = server.worker_pids();
    assert!(
        before.iter().all(|p| !after.contains(p)),
        "{before:?} -> {after:?}"
    );

    server.signal("TTIN");
    server.wait_until(|| server.worker_pids().len() == 3);
    assert!(server
        .hooks()
        .iter()
        .any(|l| l.starts_with("nworkers_changed") && l.ends_with(" 3 2")));
    server.signal("TTOU");
    server.wait_until(|| {
        server.worker_pids().len() == 2 && count(&server.hooks(), "child_exit") == 5
    });
    let served = load.ok.load(Ordering::Relaxed);
    server.wait_until(|| load.ok.load(Ordering::Relaxed) > served + 200);

    let (ok, failed) = load.finish();
    eprintln!("HUP x2 + TTIN + TTOU: {ok} requests served, {failed} failed");
    assert_eq!(failed, 0, "{ok} ok");
    assert_eq!(server.stop(), 0);
}

#[test]
fn max_requests_recycles_workers_without_failures() {
    let dir = scratch_dir("master-maxreq");
    let server = Server::start(
        &dir,
        &["--max-requests", "300", "--max-requests-jitter", "50"],
    );
    let load = Load::start(server.port, 16);
    // At least 4 workers replaced.
    server.wait_until(|| count(&server.hooks(), "child_exit") >= 4);
    let (ok, failed) = load.finish();
    eprintln!("max_requests=300: {ok} requests served, {failed} failed");
    assert_eq!(failed, 0, "{ok} ok");
    assert!(
        server
            .hooks()
            .iter()
            .filter(|l| l.starts_with("worker_exit"))
            .count()
            >= 4
    );
    assert_eq!(server.stop(), 0);
}

/// Kills a process that is not our child (the USR2 master) when dropped.
struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", &self.0.to_string()])
            .status();
    }
}

fn alive(pid: i32) -> bool {
    // A zombie (exited, not yet reaped by its new parent) counts as gone.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

fn children(pid: i32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

#[test]
fn usr2_upgrade_then_term_old_master_loses_no_request() {
    let dir = scratch_dir("master-usr2");
    let server = Server::start(&dir, &["--pid", "app.pid"]);
    server.wait_until(|| count(&server.hooks(), "post_worker_init") == 2);
    let old = server.pid();
    let old_workers = server.worker_pids();
    let load = Load::start(server.port, 32);
    server.wait_until(|| load.ok.load(Ordering::Relaxed) > 200);

    server.signal("USR2");
    let pid2 = dir.join("app.pid.2");
    server.wait_until(|| pid2.exists());
    let new: i32 = std::fs::read_to_string(&pid2)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let _guard = KillOnDrop(new);
    // The new master is the old one's child, runs pre_exec before exec,
    // starts afresh (nworkers_changed .. None, on_starting) and boots its
    // own workers on the inherited socket.
    assert!(server.worker_pids().contains(&new));
    server.wait_until(|| count(&server.hooks(), "post_worker_init") == 4);
    let hooks = server.hooks();
    assert!(
        hooks.contains(&format!("pre_exec {new} {old}")),
        "{hooks:#?}"
    );
    assert!(hooks.contains(&format!("nworkers_changed {new} 2 None")));
    assert!(hooks.contains(&format!("on_starting {new} {new} 2")));
    let new_workers = children(new);
    assert_eq!(new_workers.len(), 2);
    // USR2 again while the child exists is refused.
    server.signal("USR2");
    server.wait_until(|| {
        server
            .stderr_lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("USR2 signal ignored. Child exists."))
    });
    let served = load.ok.load(Ordering::Relaxed);
    server.wait_until(|| load.ok.load(Ordering::Relaxed) > served + 200);

    // TERM the old master: its workers drain, the new master is promoted.
    let hook_log = server.hook_log.clone();
    let lines = server.stderr_lines.clone();
    assert_eq!(server.stop(), 0);
    let wait = |what: &str, cond: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !cond() {
            assert!(Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait("promotion", &|| {
        lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains(&format!("[{new}] [INFO] Master has been promoted.")))
    });
    wait("pidfile renamed", &|| {
        !pid2.exists()
            && std::fs::read_to_string(dir.join("app.pid")).ok().as_deref()
                == Some(&format!("{new}\n"))
    });
    assert!(old_workers.iter().all(|p| !alive(*p)));
    let served = load.ok.load(Ordering::Relaxed);
    wait("serving after the upgrade", &|| {
        load.ok.load(Ordering::Relaxed) > served + 200
    });
    let (ok, failed) = load.finish();
    eprintln!("USR2 + TERM old master: {ok} requests served, {failed} failed");
    assert_eq!(failed, 0, "{ok} ok");
    assert_eq!(children(new), new_workers);

    // The promoted master stops like any master.
    let _ = Command::new("kill")
        .args(["-TERM", &new.to_string()])
        .status();
    wait("new master stops", &|| !alive(new));
    let hooks = std::fs::read_to_string(hook_log).unwrap();
    assert!(hooks.contains(&format!("on_exit {new}")), "{hooks}");
    assert!(!dir.join("app.pid").exists());
}

/// The test-only app binary (examples/testapp.rs), built by `cargo test`.
fn testapp() -> std::path::PathBuf {
    rgunicorn().parent().unwrap().join("examples/testapp")
}

#[test]
fn a_blocked_worker_is_aborted_and_replaced_within_timeout() {
    let dir = scratch_dir("master-timeout");
    let server = Server::start_program(&testapp(), "tests:app", &dir, &["--timeout", "2"]);
    server.wait_until(|| count(&server.hooks(), "post_worker_init") == 2);
    let before = server.worker_pids();
    let port = server.port;
    let started = Instant::now();
    // This request blocks its worker's serving loop for 30 s.
    let blocked = std::thread::spawn(move || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(40))).unwrap();
        s.write_all(b"GET /block?s=30 HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        buf
    });
    server.wait_until(|| count(&server.hooks(), "child_exit") == 1);
    server.wait_until(|| {
        server.worker_pids().len() == 2
            && server.get("/health").map(|r| r.0 == 200).unwrap_or(false)
    });
    let replaced_after = started.elapsed();
    let after = server.worker_pids();
    let killed: Vec<&i32> = before.iter().filter(|p| !after.contains(p)).collect();
    assert_eq!(killed.len(), 1, "{before:?} -> {after:?}");
    assert!(
        replaced_after <= Duration::from_secs(2 + 2),
        "replaced after {replaced_after:?}"
    );
    let hooks = server.hooks();
    assert!(
        hooks
            .iter()
            .any(|l| l == &format!("worker_abort {} {}", killed[0], killed[0])),
        "{hooks:#?}"
    );
    let lines = server.stderr_lines.lock().unwrap().clone();
    assert!(
        lines
            .iter()
            .any(|l| l.contains(&format!("[CRITICAL] WORKER TIMEOUT (pid:{})", killed[0]))),
        "{lines:#?}"
    );
    // The blocked client gets no response (the worker is gone).
    assert!(blocked.join().unwrap().is_empty());
    assert_eq!(server.stop(), 0);
}
