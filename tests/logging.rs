//! Python logging idioms side by side with gunicorn 27.0.1 (and its
//! UvicornWorker for ASGI): the same app and config under both servers,
//! one request, TERM; then where each line of interest landed (stdout,
//! stderr, the `errorlog` file, the access log file) and its text, digits
//! masked (timestamps, pids, ports), must be the same.
//!
//! Lines of interest: those the app logs (they carry `marker`), and the
//! access lines (they carry the request line). rgunicorn's own start-up
//! lines name rgunicorn and differ by design.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::server::{free_port, get};
use common::{gunicorn, rgunicorn, scratch_dir};

fn venv() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-venv")
}

/// Where the lines went.
#[derive(Debug, PartialEq)]
struct Landed {
    stdout: Vec<String>,
    stderr: Vec<String>,
    errorlog: Vec<String>,
    accesslog: Vec<String>,
}

/// Digits masked: timestamps, pids and ports differ between runs.
fn mask(line: &str) -> String {
    let mut out = String::new();
    let mut in_digits = false;
    for c in line.chars() {
        if c.is_ascii_digit() {
            if !in_digits {
                out.push('N');
            }
            in_digits = true;
        } else {
            out.push(c);
            in_digits = false;
        }
    }
    out
}

fn of_interest(text: &str, marker: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.contains(marker) || l.contains("GET /log"))
        .map(mask)
        .collect()
}

/// Run `program app args` in a copy of `files`, GET /log once, TERM.
fn run(program: &Path, files: &[(&str, &str)], app: &str, args: &[&str], marker: &str) -> Landed {
    let [stdout, stderr, errorlog, accesslog] = run_raw(program, files, app, args);
    Landed {
        stdout: of_interest(&stdout, marker),
        stderr: of_interest(&stderr, marker),
        errorlog: of_interest(&errorlog, marker),
        accesslog: of_interest(&accesslog, marker),
    }
}

/// [`run`]'s outputs whole: stdout, stderr, error.log, access.log.
fn run_raw(program: &Path, files: &[(&str, &str)], app: &str, args: &[&str]) -> [String; 4] {
    let dir = scratch_dir("logging");
    for (name, body) in files {
        std::fs::write(dir.join(name), body).unwrap();
    }
    let port = free_port();
    let bind = format!("127.0.0.1:{port}");
    let mut cmd = Command::new(program);
    cmd.current_dir(&dir)
        .arg(app)
        .args(["-b", &bind, "-w", "1", "--control-socket", "ctl.sock"])
        .args(args)
        .env("VIRTUAL_ENV", venv())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdout(std::fs::File::create(dir.join("stdout")).unwrap())
        .stderr(std::fs::File::create(dir.join("stderr")).unwrap())
        .stdin(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !get(port, "/health").is_ok_and(|(s, _)| s == 200) {
        assert!(
            child.try_wait().unwrap().is_none(),
            "{program:?} exited: {}",
            std::fs::read_to_string(dir.join("stderr")).unwrap_or_default()
        );
        assert!(Instant::now() < deadline, "{program:?} did not serve");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(get(port, "/log").unwrap().0, 200);
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert_eq!(
        common::server::wait_exit(&mut child, Duration::from_secs(20)),
        0
    );
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
    ["stdout", "stderr", "error.log", "access.log"].map(read)
}

/// Both servers, the same inputs: the same lines in the same places.
fn same_as_gunicorn(files: &[(&str, &str)], app: &str, args: &[&str], marker: &str) -> Landed {
    let ours = run(&rgunicorn(), files, app, args, marker);
    let theirs = run(&gunicorn(), files, app, args, marker);
    assert_eq!(ours, theirs, "rgunicorn (left) vs gunicorn 27.0.1 (right)");
    ours
}

const WSGI_APP: &str = r#"
import logging

app_logger = logging.getLogger("flaskish")
# The Flask idiom: the app's logger takes gunicorn's error handlers.
app_logger.handlers = logging.getLogger("gunicorn.error").handlers
app_logger.setLevel(logging.getLogger("gunicorn.error").level)
module_logger = logging.getLogger(__name__)

def app(environ, start_response):
    if environ["PATH_INFO"] == "/log":
        app_logger.info("marker info from the app logger")
        app_logger.debug("marker debug hidden at loglevel info")
        logging.getLogger("gunicorn.error").warning("marker warning to gunicorn.error")
        module_logger.warning("marker module warning")
        module_logger.info("marker module info, dropped without handlers")
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
"#;

#[test]
fn gunicorn_error_handler_copy_wsgi() {
    let files = [("app.py", WSGI_APP)];
    // errorlog on stderr, access log on stdout.
    let landed = same_as_gunicorn(&files, "app:app", &["--access-logfile", "-"], "marker");
    assert_eq!(landed.stderr.len(), 3, "{landed:?}");
    assert_eq!(landed.stdout.len(), 1, "{landed:?}");
    // Both in files.
    let landed = same_as_gunicorn(
        &files,
        "app:app",
        &[
            "--error-logfile",
            "error.log",
            "--access-logfile",
            "access.log",
        ],
        "marker",
    );
    assert_eq!(landed.errorlog.len(), 2, "{landed:?}");
    assert_eq!(landed.accesslog.len(), 1, "{landed:?}");
}

const ASGI_APP: &str = r#"
import logging

log = logging.getLogger(__name__)

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    if scope["path"] == "/log":
        logging.getLogger("uvicorn.error").info("marker from uvicorn.error")
        logging.getLogger("uvicorn.error").debug("marker debug hidden")
        log.warning("marker module warning")
        log.info("marker module info, dropped")
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})
"#;

#[test]
fn uvicorn_error_and_module_loggers_asgi() {
    let files = [("app.py", ASGI_APP)];
    let args = [
        "-k",
        "uvicorn.workers.UvicornWorker",
        "--error-logfile",
        "error.log",
    ];
    let landed = same_as_gunicorn(&files, "app:app", &args, "marker");
    assert_eq!(landed.errorlog.len(), 1, "{landed:?}");
    assert_eq!(landed.stderr.len(), 1, "{landed:?}");
}

const DICT_CONFIG: &str = r#"
logconfig_dict = {
    "version": 1,
    "formatters": {
        "json": {"format": '{"level": "%(levelname)s", "logger": "%(name)s", "message": "%(message)s"}'},
    },
    "handlers": {
        "out": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stdout"},
        "file": {"class": "logging.FileHandler", "formatter": "json", "filename": "error.log"},
    },
    "root": {"level": "INFO", "handlers": ["out"]},
    "loggers": {
        "gunicorn.error": {"level": "INFO", "handlers": ["file"], "propagate": False},
        "gunicorn.access": {"level": "INFO", "handlers": ["out"], "propagate": False},
    },
}
"#;

#[test]
fn logconfig_dict_with_a_json_formatter() {
    let files = [("app.py", WSGI_APP), ("conf.py", DICT_CONFIG)];
    // rgunicorn's own lines go through the JSON formatter too: worker exit.
    let landed = same_as_gunicorn(&files, "app:app", &["-c", "conf.py"], "marker");
    assert!(landed
        .stdout
        .iter()
        .any(|l| l.contains(r#""logger": "gunicorn.access""#)));
    assert!(landed
        .stdout
        .iter()
        .any(|l| l.contains(r#""logger": "app""#)));
    let landed = same_as_gunicorn(&files, "app:app", &["-c", "conf.py"], "Worker exiting");
    assert_eq!(landed.errorlog.len(), 1, "{landed:?}");
    assert!(landed.errorlog[0].starts_with(r#"{"level": "INFO", "logger": "gunicorn.error""#));
}

const INI: &str = r#"
[loggers]
keys=root, gunicorn.error, gunicorn.access

[handlers]
keys=console, errfile

[formatters]
keys=plain

[logger_root]
level=INFO
handlers=console

[logger_gunicorn.error]
level=INFO
handlers=errfile
propagate=0
qualname=gunicorn.error

[logger_gunicorn.access]
level=INFO
handlers=console
propagate=0
qualname=gunicorn.access

[handler_console]
class=StreamHandler
formatter=plain
args=(sys.stdout, )

[handler_errfile]
class=FileHandler
formatter=plain
args=('error.log', 'a')

[formatter_plain]
format=INI %(levelname)s %(name)s: %(message)s
"#;

#[test]
fn logconfig_ini_and_logconfig_json() {
    let files = [("app.py", WSGI_APP), ("logging.ini", INI)];
    let landed = same_as_gunicorn(
        &files,
        "app:app",
        &["--log-config", "logging.ini"],
        "marker",
    );
    assert!(
        landed.errorlog.iter().all(|l| l.starts_with("INI ")),
        "{landed:?}"
    );
    assert!(
        !landed.errorlog.is_empty() && !landed.stdout.is_empty(),
        "{landed:?}"
    );
    let json = r#"{"version": 1,
        "formatters": {"j": {"format": "JSONCONF %(levelname)s %(name)s %(message)s"}},
        "handlers": {"e": {"class": "logging.StreamHandler", "formatter": "j", "stream": "ext://sys.stderr"}},
        "root": {"level": "WARNING", "handlers": ["e"]},
        "loggers": {"gunicorn.error": {"level": "INFO", "handlers": ["e"], "propagate": false},
                    "gunicorn.access": {"level": "INFO", "handlers": ["e"], "propagate": false}}}"#;
    let files = [("app.py", WSGI_APP), ("logging.json", json)];
    let landed = same_as_gunicorn(
        &files,
        "app:app",
        &["--log-config-json", "logging.json"],
        "marker",
    );
    assert!(landed
        .stderr
        .iter()
        .any(|l| l.starts_with("JSONCONF INFO gunicorn.access")));
}

/// A syslog socket read by a thread while the server runs (a unix
/// datagram socket's queue is short: an unread one blocks the sender).
struct SyslogReader {
    got: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SyslogReader {
    fn start(recv: impl Fn(&mut [u8]) -> std::io::Result<usize> + Send + 'static) -> SyslogReader {
        let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (g, s) = (got.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !s.load(std::sync::atomic::Ordering::Acquire) {
                if let Ok(n) = recv(&mut buf) {
                    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                    g.lock()
                        .unwrap()
                        .push(text.trim_end_matches('\0').to_string());
                }
            }
        });
        SyslogReader {
            got,
            stop,
            thread: Some(thread),
        }
    }

    /// Stop reading; the datagrams of interest, digits masked.
    fn finish(mut self, marker: &str) -> Vec<String> {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        self.thread.take().unwrap().join().unwrap();
        let got = self.got.lock().unwrap();
        got.iter()
            .filter(|t| t.contains(marker) || t.contains("GET /log"))
            .map(|t| mask(t))
            .collect()
    }
}

#[test]
fn syslog_over_udp_and_a_unix_socket() {
    let files = [("app.py", WSGI_APP)];
    let tick = Some(Duration::from_millis(50));
    let mut seen = Vec::new();
    for program in [rgunicorn(), gunicorn()] {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(tick).unwrap();
        let to = format!("udp://127.0.0.1:{}", sock.local_addr().unwrap().port());
        let reader = SyslogReader::start(move |buf| sock.recv(buf));
        let args = [
            "--log-syslog",
            "--log-syslog-to",
            &to,
            "--log-syslog-prefix",
            "svc",
        ];
        let landed = run(&program, &files, "app:app", &args, "marker");
        seen.push((landed, reader.finish("marker")));
    }
    assert_eq!(seen[0], seen[1], "rgunicorn (left) vs gunicorn (right)");
    let syslog = &seen[0].1;
    assert!(
        syslog
            .iter()
            .any(|l| l.starts_with("<N>gunicorn.svc.error: [N] marker")),
        "{syslog:?}"
    );
    assert!(syslog
        .iter()
        .any(|l| l.contains("gunicorn.svc.access: [N] N.N.N.N - -")));

    // A unix datagram socket, the facility named.
    let mut seen = Vec::new();
    for program in [rgunicorn(), gunicorn()] {
        let dir = scratch_dir("syslog-unix");
        let path = dir.join("log.sock");
        let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(tick).unwrap();
        let reader = SyslogReader::start(move |buf| sock.recv(buf));
        let to = format!("unix://{}#dgram", path.display());
        let args = [
            "--log-syslog",
            "--log-syslog-to",
            &to,
            "--log-syslog-facility",
            "local3",
        ];
        let landed = run(&program, &files, "app:app", &args, "marker");
        seen.push((landed, reader.finish("marker")));
    }
    assert_eq!(seen[0], seen[1], "rgunicorn (left) vs gunicorn (right)");
    assert!(!seen[0].1.is_empty());
}

const PRINTING_APP: &str = r#"
import sys

def app(environ, start_response):
    if environ["PATH_INFO"] == "/log":
        print("marker printed to stdout", flush=True)
        print("marker printed to stderr", file=sys.stderr, flush=True)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
"#;

#[test]
fn print_under_capture_output() {
    let files = [("app.py", PRINTING_APP)];
    let args = ["--capture-output", "--error-logfile", "error.log"];
    let landed = same_as_gunicorn(&files, "app:app", &args, "marker");
    assert_eq!(landed.errorlog.len(), 2, "{landed:?}");
    assert!(
        landed.stdout.is_empty() && landed.stderr.is_empty(),
        "{landed:?}"
    );
}

const CUSTOM_LOGGER: &str = r#"
from gunicorn.glogging import Logger

class MarkedLogger(Logger):
    def info(self, msg, *args, **kwargs):
        super().info("marker-custom " + msg, *args, **kwargs)

    def access(self, resp, req, environ, request_time):
        self.access_log.info(
            "marker-access %s %s %s %s %s",
            environ["REQUEST_METHOD"], environ["RAW_URI"], resp.status,
            dict(req.headers).get("USER-AGENT"), request_time.seconds,
        )
"#;

#[test]
fn custom_logger_class_overriding_access() {
    let files = [("app.py", WSGI_APP), ("mylogger.py", CUSTOM_LOGGER)];
    let args = [
        "--logger-class",
        "mylogger.MarkedLogger",
        "--access-logfile",
        "-",
    ];
    let landed = same_as_gunicorn(&files, "app:app", &args, "marker-access");
    assert!(
        landed
            .stdout
            .iter()
            .any(|l| l == "marker-access GET /log N OK rgunicorn-tests/N N"),
        "{landed:?}"
    );
    // The custom info() gets rgunicorn's own lines too (start-up lines
    // name each server, so a worker's exit is compared).
    let landed = same_as_gunicorn(&files, "app:app", &args, "marker-custom Worker exiting");
    assert_eq!(landed.stderr.len(), 1, "{landed:?}");
}

/// At `loglevel = debug`, gunicorn's "Current configuration:" dump, line
/// for line (rgunicorn's own settings aside; hooks' addresses masked).
#[test]
fn debug_level_at_start_dumps_the_configuration() {
    let files = [("app.py", WSGI_APP)];
    let ours_only = [
        "header_read_timeout",
        "runtime_threads",
        "max_worker_memory",
        "max_worker_lifetime",
        "max_worker_lifetime_jitter",
        "metrics_bind",
    ];
    let dump = |program: &Path| -> Vec<String> {
        let [_, stderr, ..] = run_raw(program, &files, "app:app", &["--log-level", "debug"]);
        let mut lines = stderr
            .lines()
            .skip_while(|l| !l.ends_with("[DEBUG] Current configuration:"));
        assert!(lines.next().is_some(), "{program:?}: no dump in\n{stderr}");
        lines
            .take_while(|l| l.starts_with("  "))
            .filter(|l| {
                !ours_only
                    .iter()
                    .any(|name| l.starts_with(&format!("  {name}:")))
            })
            .map(|l| match l.find(" at 0x") {
                Some(i) => mask(&l[..i]),
                // The bind's port and the scratch directory differ.
                None => mask(l),
            })
            .collect()
    };
    let (ours, theirs) = (dump(&rgunicorn()), dump(&gunicorn()));
    assert!(theirs.len() > 100, "{theirs:?}");
    assert_eq!(ours, theirs);
}

/// What h2 reports (through `tracing`) reaches the error log in gunicorn's
/// line format at `loglevel = debug`, and not at info.
#[test]
fn dependencies_events_at_debug_level() {
    for (level, expected) in [("debug", true), ("info", false)] {
        let dir = scratch_dir("logging-deps");
        std::fs::write(dir.join("app.py"), WSGI_APP).unwrap();
        let port = free_port();
        let bind = format!("127.0.0.1:{port}");
        let child = Command::new(rgunicorn())
            .current_dir(&dir)
            .args(["app:app", "-b", &bind, "--control-socket", "ctl.sock"])
            .args([
                "--http-protocols",
                "h2",
                "--http2-cleartext",
                "prior-knowledge",
            ])
            .args(["--log-level", level, "--error-logfile", "error.log"])
            .env("VIRTUAL_ENV", venv())
            .spawn()
            .unwrap();
        // Stopped (TERM, then KILL) however the test ends.
        let mut child = scopeguard(child);
        let h2_get = || {
            Command::new("curl")
                .args(["-s", "--max-time", "5", "--http2-prior-knowledge"])
                .arg(format!("http://{bind}/x"))
                .output()
                .map(|o| common::text(&o.stdout))
                .unwrap_or_default()
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while h2_get() != "ok" {
            assert!(Instant::now() < deadline, "did not serve h2c");
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = Command::new("kill")
            .args(["-TERM", &child.0.id().to_string()])
            .status();
        assert_eq!(
            common::server::wait_exit(&mut child.0, Duration::from_secs(20)),
            0
        );
        let log = std::fs::read_to_string(dir.join("error.log")).unwrap();
        let h2 = log.lines().filter(|l| l.contains("] [DEBUG] h2::")).count();
        assert_eq!(h2 > 0, expected, "{level}:\n{log}");
    }
}

/// A child stopped when dropped.
struct Stopped(std::process::Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        common::server::stop_child(&mut self.0);
    }
}

fn scopeguard(child: std::process::Child) -> Stopped {
    Stopped(child)
}

#[test]
fn lines_dropped_on_a_full_disk_are_counted_and_reported() {
    // The error log is first a full device (every write fails with
    // ENOSPC, as on a full disk), then, after USR1 reopens it, a file.
    let dir = scratch_dir("logging-full");
    let log = dir.join("error.log");
    std::os::unix::fs::symlink("/dev/full", &log).unwrap();
    let port = free_port();
    let bind = format!("127.0.0.1:{port}");
    let child = Command::new(rgunicorn())
        .current_dir(&dir)
        .args(["rgunicorn:health", "-b", &bind, "-w", "1"])
        .args([
            "--control-socket",
            "ctl.sock",
            "--error-logfile",
            "error.log",
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("stderr")).unwrap())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = scopeguard(child);
    let pid = child.0.id();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !get(port, "/health").is_ok_and(|(s, _)| s == 200) {
        assert!(child.0.try_wait().unwrap().is_none(), "exited");
        assert!(Instant::now() < deadline, "did not serve");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Space again: the path names a new file once USR1 reopens it.
    std::fs::remove_file(&log).unwrap();
    let signal = |sig: &str| {
        let _ = Command::new("kill").args([sig, &pid.to_string()]).status();
    };
    signal("-USR1");
    while !log.exists() {
        assert!(Instant::now() < deadline, "not reopened");
        std::thread::sleep(Duration::from_millis(20));
    }
    signal("-TERM");
    assert_eq!(
        common::server::wait_exit(&mut child.0, Duration::from_secs(20)),
        0
    );
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    // The master's first line written is the count of what it dropped
    // (its start-up lines, the USR1 line), then the lines after it.
    let master = format!("] [{pid}] ");
    let ours: Vec<&&str> = lines.iter().filter(|l| l.contains(&master)).collect();
    let notice = ours.first().unwrap_or_else(|| panic!("{text}"));
    let n: u64 = notice
        .split("[WARNING] ")
        .nth(1)
        .and_then(|r| {
            r.strip_suffix(" log lines could not be written (disk full?) and were dropped")
        })
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a count: {notice}\n{text}"));
    assert!(n >= 3, "{text}");
    assert!(
        ours[1..]
            .iter()
            .any(|l| l.contains("Handling signal: term")),
        "{text}"
    );
    assert_eq!(
        ours.iter()
            .filter(|l| l.contains("could not be written"))
            .count(),
        1,
        "{text}"
    );
}
