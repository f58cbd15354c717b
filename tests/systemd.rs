//! systemd and containers: the master's `sd_notify` messages received on
//! a local datagram socket passed as `NOTIFY_SOCKET` (READY once a worker
//! serves, RELOADING then READY around HUP, STOPPING on TERM, WATCHDOG
//! pings, the MAINPID hand-over of a USR2 upgrade), and children that are
//! not workers (spawned by a hook in the master) reaped, as PID 1 must.

use crate::common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

const CONF: &str = r#"
bind = "127.0.0.1:0"
workers = 2
graceful_timeout = 5
timeout = 30
loglevel = "debug"
import os, subprocess, time
def post_worker_init(worker):
    # A worker that takes a while to boot (READY must wait for it).
    time.sleep(float(os.environ.get("BOOT_DELAY", "0")))
    # What a worker, and a process it spawns, see of systemd's variables.
    seen = subprocess.check_output(["sh", "-c", "echo ${NOTIFY_SOCKET-unset}"]).decode().strip()
    with open(os.environ["WORKER_ENV"], "a") as f:
        f.write(f"{os.environ.get('NOTIFY_SOCKET')} {seen}\n")
"#;

/// An rgunicorn master started with the given config and environment.
struct Running {
    child: Child,
    port: u16,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Running {
    fn start(dir: &Path, conf: &str, env: &[(&str, &str)]) -> Running {
        Running::start_wrapped(&[], dir, conf, env)
    }

    /// Started as `wrap... rgunicorn ...` (e.g. under `unshare`).
    fn start_wrapped(wrap: &[&str], dir: &Path, conf: &str, env: &[(&str, &str)]) -> Running {
        std::fs::write(dir.join("conf.py"), conf).unwrap();
        let rgunicorn = rgunicorn();
        let mut argv: Vec<&std::ffi::OsStr> = wrap.iter().map(|a| a.as_ref()).collect();
        argv.push(rgunicorn.as_os_str());
        let mut cmd = Command::new(argv[0]);
        cmd.current_dir(dir)
            .args(&argv[1..])
            .args(["rgunicorn:health", "-c", "conf.py"])
            .env("WORKER_ENV", dir.join("worker_env"))
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let kept = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("server: {line}");
                kept.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        let port = loop {
            assert!(Instant::now() < deadline, "no Listening line");
            if let Ok(line) = rx.recv_timeout(Duration::from_millis(50)) {
                if let Some(rest) = line.split("Listening at: http://127.0.0.1:").nth(1) {
                    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                    break digits.parse::<u16>().unwrap();
                }
            }
        };
        Running { child, port, lines }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn signal(&self, sig: &str) {
        kill(self.pid(), sig);
    }

    fn get(&self, path: &str) -> u16 {
        get(self.port, path)
    }

    fn logged(&self, needle: &str) -> bool {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains(needle))
    }

    fn wait_exit(&mut self) -> i32 {
        common::server::wait_exit(&mut self.child, Duration::from_secs(20))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        common::server::stop_child(&mut self.child);
    }
}

fn kill(pid: i32, sig: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status();
}

/// The status of one `GET` (0 when the connection fails).
fn get(port: u16, path: &str) -> u16 {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return 0;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    );
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// The notify socket the test listens on.
struct NotifySocket {
    sock: UnixDatagram,
    path: PathBuf,
}

impl NotifySocket {
    fn bind(dir: &Path) -> NotifySocket {
        let path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        NotifySocket { sock, path }
    }

    fn env(&self) -> (&'static str, &str) {
        ("NOTIFY_SOCKET", self.path.to_str().unwrap())
    }

    /// The next message, within `timeout`.
    fn recv(&self, timeout: Duration) -> Option<String> {
        self.sock.set_read_timeout(Some(timeout)).unwrap();
        let mut buf = [0u8; 4096];
        let n = self.sock.recv(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// Messages until one has the line `line` (returned last), within
    /// `timeout`; watchdog pings are left out unless asked for.
    fn until(&self, line: &str, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no {line:?} within {timeout:?}; got {seen:#?}"
            );
            let Some(msg) = self.recv(left) else {
                continue;
            };
            let found = msg.lines().any(|l| l == line);
            if msg != "WATCHDOG=1" || line == "WATCHDOG=1" {
                seen.push(msg);
            }
            if found {
                return seen;
            }
        }
    }
}

fn field<'a>(msg: &'a str, key: &str) -> Option<&'a str> {
    msg.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

#[test]
fn ready_reloading_stopping() {
    let dir = scratch_dir("systemd-notify");
    let notify = NotifySocket::bind(&dir);
    // Workers take 0.7 s to boot (post_worker_init).
    let mut server = Running::start(&dir, CONF, &[notify.env(), ("BOOT_DELAY", "0.7")]);
    let listening = Instant::now();

    // READY=1 once a worker serves, not before: /health answers at once
    // (a request sent earlier would wait in the listen queue).
    let msgs = notify.until("READY=1", Duration::from_secs(20));
    assert!(listening.elapsed() >= Duration::from_millis(600));
    assert_eq!(msgs.len(), 1, "READY is the first message: {msgs:#?}");
    let ready = &msgs[0];
    let asked = Instant::now();
    assert_eq!(server.get("/health"), 200);
    assert!(
        asked.elapsed() < Duration::from_millis(400),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(
        field(ready, "MAINPID"),
        Some(server.pid().to_string().as_str())
    );
    assert!(field(ready, "STATUS").is_some_and(|s| s.starts_with("Serving with")));

    // HUP: RELOADING=1 (with the monotonic clock), then READY=1 once the
    // new workers serve.
    server.signal("HUP");
    let msgs = notify.until("RELOADING=1", Duration::from_secs(10));
    assert_eq!(msgs.len(), 1, "{msgs:#?}");
    let reloading = Instant::now();
    let usec: u64 = field(&msgs[0], "MONOTONIC_USEC").unwrap().parse().unwrap();
    assert!(usec > 0);
    let msgs = notify.until("READY=1", Duration::from_secs(20));
    assert!(reloading.elapsed() >= Duration::from_millis(600));
    assert_eq!(msgs.len(), 1, "{msgs:#?}");
    assert_eq!(server.get("/health"), 200);

    // Only the master notifies: workers (and what they spawn) don't see
    // NOTIFY_SOCKET.
    let seen = std::fs::read_to_string(dir.join("worker_env")).unwrap();
    assert!(seen.lines().count() >= 4, "{seen}");
    assert!(seen.lines().all(|l| l == "None unset"), "{seen}");

    // TERM: STOPPING=1, then a clean exit.
    server.signal("TERM");
    let msgs = notify.until("STOPPING=1", Duration::from_secs(10));
    assert_eq!(msgs.len(), 1, "{msgs:#?}");
    assert_eq!(server.wait_exit(), 0);
    assert!(notify.recv(Duration::from_millis(100)).is_none());
}

#[test]
fn watchdog_pings() {
    let dir = scratch_dir("systemd-watchdog");
    let notify = NotifySocket::bind(&dir);
    let server = Running::start(&dir, CONF, &[notify.env(), ("WATCHDOG_USEC", "400000")]);
    let pid = server.pid().to_string();
    notify.until("READY=1", Duration::from_secs(20));
    // Every 0.2 s (WATCHDOG_USEC / 2): two pings well within 2 s.
    let start = Instant::now();
    notify.until("WATCHDOG=1", Duration::from_secs(2));
    notify.until("WATCHDOG=1", Duration::from_secs(2));
    assert!(start.elapsed() < Duration::from_secs(2));
    drop(server);

    // WATCHDOG_PID naming another process: no pings.
    let dir = scratch_dir("systemd-watchdog-pid");
    let notify = NotifySocket::bind(&dir);
    let _server = Running::start(
        &dir,
        CONF,
        &[
            notify.env(),
            ("WATCHDOG_USEC", "400000"),
            ("WATCHDOG_PID", "1"),
        ],
    );
    notify.until("READY=1", Duration::from_secs(20));
    let deadline = Instant::now() + Duration::from_millis(800);
    while let Some(msg) = notify.recv(deadline.saturating_duration_since(Instant::now())) {
        assert_ne!(msg, "WATCHDOG=1", "pings for WATCHDOG_PID=1 (master {pid})");
        if Instant::now() >= deadline {
            break;
        }
    }
}

#[test]
fn usr2_hands_the_service_over() {
    let dir = scratch_dir("systemd-usr2");
    let notify = NotifySocket::bind(&dir);
    let mut server = Running::start(
        &dir,
        &format!("{CONF}\npidfile = 'app.pid'\n"),
        &[notify.env()],
    );
    notify.until("READY=1", Duration::from_secs(20));
    server.signal("USR2");
    let pid2 = dir.join("app.pid.2");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !pid2.exists() {
        assert!(Instant::now() < deadline, "no new master");
        std::thread::sleep(Duration::from_millis(20));
    }
    let new: i32 = std::fs::read_to_string(&pid2)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    struct Kill(i32);
    impl Drop for Kill {
        fn drop(&mut self) {
            kill(self.0, "KILL");
        }
    }
    let _guard = Kill(new);
    let deadline = Instant::now() + Duration::from_secs(20);
    while children_states(new).len() < 2 {
        assert!(Instant::now() < deadline, "the new master's workers");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The new master is not the service's main process yet: it says nothing.
    assert!(
        notify.recv(Duration::from_millis(500)).is_none(),
        "an unpromoted master notified"
    );

    // TERM the old master: it hands the service over (MAINPID=new, no
    // STOPPING), and the new one, promoted, confirms.
    server.signal("TERM");
    let msgs = notify.until(&format!("MAINPID={new}"), Duration::from_secs(10));
    assert_eq!(msgs.len(), 1, "{msgs:#?}");
    assert!(!msgs[0].contains("STOPPING"), "{msgs:#?}");
    assert_eq!(server.wait_exit(), 0);
    let msgs = notify.until("READY=1", Duration::from_secs(10));
    assert!(msgs.iter().all(|m| !m.contains("STOPPING")), "{msgs:#?}");
    assert_eq!(
        field(msgs.last().unwrap(), "MAINPID"),
        Some(new.to_string().as_str())
    );
    // The promoted master stops like any: STOPPING=1.
    kill(new, "TERM");
    notify.until("STOPPING=1", Duration::from_secs(10));
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(format!("/proc/{new}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .is_some_and(|(_, r)| !r.trim_start().starts_with('Z'))
    }) {
        assert!(Instant::now() < deadline, "the new master did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Children of `pid` and their states (`/proc/PID/stat` field 3).
fn children_states(pid: i32) -> Vec<(i32, char)> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|c| c.parse::<i32>().ok())
        .filter_map(|c| {
            let stat = std::fs::read_to_string(format!("/proc/{c}/stat")).ok()?;
            let state = stat.rsplit_once(')')?.1.trim_start().chars().next()?;
            Some((c, state))
        })
        .collect()
}

#[test]
fn children_a_hook_spawned_are_reaped() {
    let dir = scratch_dir("systemd-zombies");
    let conf = r#"
bind = "127.0.0.1:0"
workers = 2
graceful_timeout = 5
loglevel = "debug"
import os, subprocess
SPAWNED = os.path.join(os.getcwd(), "spawned")
EXITS = os.path.join(os.getcwd(), "child_exit")
KEEP = []  # the Popen objects stay alive: Python never waits for them
def spawn():
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    p = subprocess.Popen(["true"])
    KEEP.append(p)
    with open(SPAWNED, "a") as f:
        f.write(f"{pid}\n{p.pid}\n")
def on_starting(server):
    spawn()
def when_ready(server):
    spawn()
def child_exit(server, worker):
    with open(EXITS, "a") as f:
        f.write(f"{worker.pid}\n")
"#;
    let server = Running::start(&dir, conf, &[]);
    let master = server.pid();
    // when_ready runs after the Listening line: wait for its two children.
    let read_spawned = || -> Vec<i32> {
        std::fs::read_to_string(dir.join("spawned"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.parse().ok())
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while read_spawned().len() < 4 {
        assert!(Instant::now() < deadline, "when_ready did not spawn");
        std::thread::sleep(Duration::from_millis(20));
    }
    let spawned = read_spawned();
    assert_eq!(spawned.len(), 4);
    // Within a bounded wait, none of them is a child of the master (a
    // zombie stays one until reaped), and the master has no zombie.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let states = children_states(master);
        let left: Vec<&(i32, char)> = states
            .iter()
            .filter(|(c, s)| spawned.contains(c) || *s == 'Z')
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not reaped by the master: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    for pid in &spawned {
        assert!(
            server.logged(&format!("Reaped a child that is not a worker (pid:{pid})")),
            "{pid}"
        );
    }
    // Not workers: no child_exit for them, and the two workers serve on.
    let deadline = Instant::now() + Duration::from_secs(20);
    while children_states(master).len() != 2 || server.get("/health") != 200 {
        assert!(Instant::now() < deadline, "workers serving");
        std::thread::sleep(Duration::from_millis(20));
    }
    for _ in 0..4 {
        assert_eq!(server.get("/health"), 200);
    }
    assert!(!dir.join("child_exit").exists());
    assert!(children_states(master)
        .iter()
        .all(|(c, s)| !spawned.contains(c) && *s != 'Z'));
}

/// As PID 1 (in a new PID namespace, as in a container), orphans
/// reparented to the master are reaped too. Skipped where user and PID
/// namespaces are not available.
#[test]
fn orphans_are_reaped_as_pid_1() {
    let wrap = ["unshare", "-Urpf", "--kill-child=SIGTERM"];
    let usable = Command::new(wrap[0])
        .args(&wrap[1..])
        .arg("true")
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !usable {
        eprintln!("skipped: `unshare -Urpf` is not available here");
        return;
    }
    let dir = scratch_dir("systemd-pid1");
    // The shell exits at once (and is waited for); its `sleep` is orphaned
    // and reparented to PID 1: the master.
    let conf = r#"
bind = "127.0.0.1:0"
workers = 2
graceful_timeout = 5
loglevel = "debug"
import os, subprocess
def when_ready(server):
    assert os.getpid() == 1, os.getpid()
    out = subprocess.check_output(["sh", "-c", "sleep 0.3 >/dev/null 2>&1 & echo $!"]).decode().strip()
    with open(os.path.join(os.getcwd(), "orphan"), "w") as f:
        f.write(out)
"#;
    let server = Running::start_wrapped(&wrap, &dir, conf, &[]);
    // The master's pid outside the namespace: unshare's only child.
    let master = children_states(server.pid())
        .first()
        .map(|(p, _)| *p)
        .expect("the master under unshare");
    let deadline = Instant::now() + Duration::from_secs(20);
    let orphan = loop {
        if let Some(p) = std::fs::read_to_string(dir.join("orphan"))
            .ok()
            .and_then(|t| t.trim().parse::<i32>().ok())
        {
            break p;
        }
        assert!(Instant::now() < deadline, "when_ready did not run");
        std::thread::sleep(Duration::from_millis(20));
    };
    // Reaped (pid as seen in the namespace), not taken for a worker.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !server.logged(&format!(
        "[1] [DEBUG] Reaped a child that is not a worker (pid:{orphan})"
    )) {
        assert!(Instant::now() < deadline, "the orphan was not reaped");
        std::thread::sleep(Duration::from_millis(20));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let states = children_states(master);
        if states.len() == 2
            && states.iter().all(|(_, s)| *s != 'Z')
            && server.get("/health") == 200
        {
            break;
        }
        assert!(Instant::now() < deadline, "workers of PID 1: {states:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    // TERM reaches PID 1 (a handler is installed): a graceful stop.
    kill(master, "TERM");
    let mut server = server;
    assert_eq!(server.wait_exit(), 0);
    assert!(server.logged("[1] [INFO] Shutting down: Master"));
}
