//! A running rgunicorn (or a Rust app binary built on it) as a child
//! process for the integration tests: start-up on the `Listening at:` line
//! and a first 200, signals, plain requests, the hook log, the process
//! tree, and a closed-loop keep-alive load that counts every failure.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use super::rgunicorn;

pub const HOOKS_CONF: &str = r#"
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
def worker_exit(server, worker): _rec("worker_exit", os.getpid(), worker.pid, worker.nr, worker.max_requests)
def child_exit(server, worker): _rec("child_exit", os.getpid(), worker.pid)
def on_exit(server): _rec("on_exit", os.getpid())
def worker_abort(worker): _rec("worker_abort", os.getpid(), worker.pid)
def worker_int(worker): _rec("worker_int", os.getpid(), worker.pid)
def pre_exec(server): _rec("pre_exec", os.getpid(), server.pid)
"#;

pub struct Server {
    pub child: Child,
    pub port: u16,
    pub hook_log: std::path::PathBuf,
    pub stderr_lines: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Server {
    pub fn start(dir: &Path, extra_args: &[&str]) -> Server {
        Server::start_program(&rgunicorn(), "rgunicorn:health", dir, extra_args)
    }

    /// Started with its own control socket, `<dir>/gunicorn.ctl` (see
    /// [`Server::control_socket`]), so that parallel tests do not meet at
    /// the default path; `extra_args` may name another or
    /// `--no-control-socket`.
    pub fn start_program(program: &Path, app: &str, dir: &Path, extra_args: &[&str]) -> Server {
        Server::start_program_env(program, app, dir, extra_args, &[])
    }

    /// [`Server::start_program`] with the environment changed by `env`
    /// (`None` removes a variable).
    pub fn start_program_env(
        program: &Path,
        app: &str,
        dir: &Path,
        extra_args: &[&str],
        env: &[(&str, Option<&str>)],
    ) -> Server {
        // gunicorn (the reference, started next to rgunicorn in one test
        // directory) gets its own.
        let name = if program.ends_with("gunicorn") {
            "gunicorn-ref.ctl"
        } else {
            "gunicorn.ctl"
        };
        let ctl = dir.join(name);
        let mut args = vec!["--control-socket", ctl.to_str().unwrap()];
        args.extend_from_slice(extra_args);
        Server::spawn(program, app, dir, HOOKS_CONF, &args, env)
    }

    /// [`Server::start_program`] with `conf` as its config file
    /// (`hooks.conf.py`, which a test may rewrite before a HUP) instead of
    /// [`HOOKS_CONF`].
    pub fn start_conf(
        program: &Path,
        app: &str,
        dir: &Path,
        conf: &str,
        extra_args: &[&str],
    ) -> Server {
        Server::spawn(program, app, dir, conf, extra_args, &[])
    }

    /// [`Server::start`] without a control socket option: the default path
    /// applies, from the environment as changed by `env` (`None` removes a
    /// variable).
    pub fn start_env(dir: &Path, extra_args: &[&str], env: &[(&str, Option<&str>)]) -> Server {
        Server::spawn(
            &rgunicorn(),
            "rgunicorn:health",
            dir,
            HOOKS_CONF,
            extra_args,
            env,
        )
    }

    /// The control socket [`Server::start`] gives it.
    pub fn control_socket(&self) -> std::path::PathBuf {
        self.hook_log.with_file_name("gunicorn.ctl")
    }

    fn spawn(
        program: &Path,
        app: &str,
        dir: &Path,
        conf: &str,
        extra_args: &[&str],
        env: &[(&str, Option<&str>)],
    ) -> Server {
        let hook_log = dir.join("hooks.log");
        std::fs::write(dir.join("hooks.conf.py"), conf).unwrap();
        let mut cmd = Command::new(program);
        cmd.current_dir(dir)
            .args([app, "-c", "hooks.conf.py"])
            .args(extra_args)
            .env("HOOK_LOG", &hook_log)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        let child = cmd.spawn().unwrap();
        // The Listening line is on stderr, or in the --error-logfile.
        let log_file = extra_args
            .iter()
            .position(|a| *a == "--error-logfile")
            .map(|i| dir.join(extra_args[i + 1]));
        let server = Server::listening(child, hook_log, log_file.as_deref(), true);
        // Ready once a worker answers (any status: not every app has /health).
        server.wait_until(|| server.get("/health").is_ok_and(|(s, _)| s != 0));
        server
    }

    /// `child`, spawned with its stderr piped, once its `Listening at:`
    /// line gives its port (read from stderr, or from `log_file` when the
    /// error log goes there), within 20 s. Its stderr is kept (see
    /// [`Server::log_lines`]) and, with `echo`, copied to the test's. It may
    /// have no worker ready yet.
    pub fn listening(
        mut child: Child,
        hook_log: std::path::PathBuf,
        log_file: Option<&Path>,
        echo: bool,
    ) -> Server {
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let stderr_lines = Arc::new(std::sync::Mutex::new(Vec::new()));
        let lines = stderr_lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if echo {
                    eprintln!("server: {line}");
                }
                lines.lock().unwrap().push(line.clone());
                // The receiver goes away after start-up; keep draining.
                let _ = tx.send(line);
            }
        });
        let port_in = |line: &str| {
            let rest = line.split("Listening at: http://127.0.0.1:").nth(1)?;
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<u16>().ok()
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        let port = loop {
            if Instant::now() >= deadline {
                let _ = child.kill();
                panic!(
                    "no Listening line; stderr: {:#?}",
                    stderr_lines.lock().unwrap()
                );
            }
            if let Some(path) = log_file {
                if let Some(port) = std::fs::read_to_string(path).ok().and_then(|t| port_in(&t)) {
                    break port;
                }
            }
            if let Ok(line) = rx.recv_timeout(Duration::from_millis(20)) {
                if let Some(port) = port_in(&line) {
                    break port;
                }
            }
        };
        Server {
            child,
            port,
            hook_log,
            stderr_lines,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    pub fn get(&self, path: &str) -> std::io::Result<(u16, String)> {
        get(self.port, path)
    }

    pub fn hooks(&self) -> Vec<String> {
        std::fs::read_to_string(&self.hook_log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    pub fn wait_until(&self, mut cond: impl FnMut() -> bool) {
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

    /// The stderr lines so far that match `pred`. A line comes through a
    /// pipe and a reader thread after whatever the server did: wait for
    /// it ([`Server::wait_until`]) rather than expect it at once.
    pub fn log_lines(&self, pred: impl Fn(&str) -> bool) -> Vec<String> {
        let lines = self.stderr_lines.lock().unwrap();
        lines.iter().filter(|l| pred(l)).cloned().collect()
    }

    /// How many stderr lines so far contain `text`.
    pub fn log_count(&self, text: &str) -> usize {
        let lines = self.stderr_lines.lock().unwrap();
        lines.iter().filter(|l| l.contains(text)).count()
    }

    /// Whether a stderr line so far contains `text`.
    pub fn logged(&self, text: &str) -> bool {
        self.log_count(text) > 0
    }

    /// The Prometheus port, from the master's `Metrics at:` line.
    pub fn metrics_port(&self) -> u16 {
        let lines = self.stderr_lines.lock().unwrap();
        lines
            .iter()
            .find_map(|l| {
                let rest = l.split("Metrics at: http://127.0.0.1:").nth(1)?;
                rest.split('/').next()?.parse().ok()
            })
            .expect("no Metrics at: line")
    }

    /// One `GET /metrics` on the Prometheus port: the whole response.
    pub fn metrics_response(&self) -> String {
        metrics_response(self.metrics_port())
    }

    /// Worker pids alive now (children of the master).
    pub fn worker_pids(&self) -> Vec<i32> {
        let children =
            std::fs::read_to_string(format!("/proc/{}/task/{}/children", self.pid(), self.pid()))
                .unwrap_or_default();
        children
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }

    pub fn stop(mut self) -> i32 {
        self.signal("TERM");
        wait_exit(&mut self.child, Duration::from_secs(20))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}

/// `GET path` on 127.0.0.1:`port` with `Connection: close`: (status, body).
pub fn get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: t\r\nUser-Agent: rgunicorn-tests/1\r\nConnection: close\r\n\r\n"
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

/// A port nothing listens on now (bound and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A server's exit status, waited for at most `within`.
pub fn wait_exit(child: &mut Child, within: Duration) -> i32 {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code().unwrap_or(-1);
        }
        assert!(Instant::now() < deadline, "server did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Stop a server child if it still runs (the tests' Drop): TERM, so the
/// master stops its workers (a SIGKILLed master leaves a blocked worker
/// behind), then SIGKILL after 10 s; reaped either way.
pub fn stop_child(child: &mut Child) {
    if child.try_wait().ok().flatten().is_none() {
        let pid = child.id() as i32;
        terminate(pid, || child.try_wait().ok().flatten().is_some());
        let _ = child.kill();
    }
    let _ = child.wait();
}

/// Send TERM to `pid` and wait (at most 10 s) until `gone()`, then SIGKILL.
fn terminate(pid: i32, mut gone: impl FnMut() -> bool) {
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !gone() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if !gone() {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }
}

/// Status and body of each answer, in the order they came.
type Answers = Arc<Mutex<Vec<(u16, String)>>>;

/// A closed-loop keep-alive load: `conns` clients each sending requests
/// back to back on one connection (reconnecting after `Connection: close`),
/// counting every failure: connect errors, resets, early EOF, and (unless
/// [`Load::recording`]) non-200 answers.
pub struct Load {
    pub stop: Arc<AtomicBool>,
    pub ok: Arc<AtomicU64>,
    pub failed: Arc<AtomicU64>,
    /// Every answer's status and body, when [`Load::recording`].
    answers: Option<Answers>,
    /// Why each failure failed.
    failures: Arc<Mutex<Vec<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    pub fn start(port: u16, conns: usize) -> Load {
        Load::run(port, conns, false)
    }

    /// As [`Load::start`], keeping every answer (any status: an answer is
    /// not a failure here) for [`Load::seen`] and [`Load::finish_recorded`].
    pub fn recording(port: u16, conns: usize) -> Load {
        Load::run(port, conns, true)
    }

    fn run(port: u16, conns: usize, recording: bool) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let answers = recording.then(|| Arc::new(Mutex::new(Vec::new())));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..conns)
            .map(|_| {
                let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
                let (answers, failures) = (answers.clone(), failures.clone());
                let fail = move |why: String| {
                    eprintln!("load: {why}");
                    failed.fetch_add(1, Ordering::Relaxed);
                    failures.lock().unwrap().push(why);
                };
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
                                    fail(format!("connect failed: {e}"));
                                    continue;
                                }
                            }
                        }
                        match one_request(conn.as_mut().unwrap()) {
                            Ok((status, body, close)) => {
                                if let Some(answers) = &answers {
                                    answers.lock().unwrap().push((status, body));
                                } else if status != 200 {
                                    fail(format!("status {status}"));
                                    conn = None;
                                    continue;
                                }
                                ok.fetch_add(1, Ordering::Relaxed);
                                if close {
                                    conn = None;
                                }
                            }
                            Err(e) => {
                                fail(format!("request failed: {e}"));
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
            answers,
            failures,
            threads,
        }
    }

    /// Whether a recorded answer matches `pred` yet.
    pub fn seen(&self, pred: impl Fn(&(u16, String)) -> bool) -> bool {
        let answers = self.answers.as_ref().expect("a recording load");
        answers.lock().unwrap().iter().any(pred)
    }

    fn join(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            t.join().unwrap();
        }
    }

    /// Stop: (requests answered 200, failures).
    pub fn finish(mut self) -> (u64, u64) {
        self.join();
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }

    /// Stop a recording load: every answer, and why each failure failed.
    pub fn finish_recorded(mut self) -> (Vec<(u16, String)>, Vec<String>) {
        self.join();
        let answers = self.answers.take().expect("a recording load");
        let answers = std::mem::take(&mut *answers.lock().unwrap());
        let failures = std::mem::take(&mut *self.failures.lock().unwrap());
        (answers, failures)
    }
}

/// One keep-alive `GET /health`: (status, body, server said
/// `Connection: close`).
pub fn one_request(conn: &mut BufReader<TcpStream>) -> std::io::Result<(u16, String, bool)> {
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
        close |= l == "connection: close";
    }
    let mut body = vec![0; length];
    conn.read_exact(&mut body)?;
    Ok((status, String::from_utf8_lossy(&body).into_owned(), close))
}

pub fn count(hooks: &[String], name: &str) -> usize {
    hooks
        .iter()
        .filter(|l| l.split_whitespace().next() == Some(name))
        .count()
}

/// Kills a process that is not our child (the USR2 master) when dropped.
pub struct KillOnDrop(pub i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if alive(self.0) {
            terminate(self.0, || !alive(self.0));
        }
    }
}

pub fn alive(pid: i32) -> bool {
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

pub fn children(pid: i32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// The test-only app binary (examples/testapp.rs), built by `cargo test`.
pub fn testapp() -> std::path::PathBuf {
    rgunicorn().parent().unwrap().join("examples/testapp")
}

/// The names (`comm`) of a process's threads.
pub fn thread_names(pid: i32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
                .map(|c| c.trim().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// One `GET /metrics` on `port`: the whole response (the exporter closes
/// the connection after it).
pub fn metrics_response(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text
}
