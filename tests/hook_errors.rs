//! What happens when a server hook raises, pinned against gunicorn 27.0.1
//! (reference: gunicorn-arbiter.md sections 9 and 10). Each scenario runs
//! rgunicorn and, where the behaviours are meant to match, gunicorn with
//! the same configuration, and checks the exit status, the key log lines,
//! whether `on_exit` ran, and that no process of the server is left behind.
//!
//! Not here: a hook of the wrong arity (exit 1, naming the setting) is
//! compared with gunicorn in `config_vs_gunicorn.rs` (`bad_input_fails_in_both`).

use crate::common;

use std::cell::RefCell;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

/// The bound of every wait.
const WAIT: Duration = Duration::from_secs(20);

/// Every hook records `name pid ...` in $HOOK_LOG; a test's own body
/// (appended) redefines the hook that raises.
const PREAMBLE: &str = r#"
workers = 2
graceful_timeout = 5
timeout = 30
import os
HOOK_LOG = os.environ["HOOK_LOG"]
class HookBoom(Exception):
    pass
def _rec(*parts):
    with open(HOOK_LOG, "a") as f:
        f.write(" ".join(str(p) for p in parts) + "\n")
def nworkers_changed(server, new_value, old_value): _rec("nworkers_changed", os.getpid(), new_value, old_value)
def on_starting(server): _rec("on_starting", os.getpid())
def when_ready(server): _rec("when_ready", os.getpid())
def pre_fork(server, worker): _rec("pre_fork", os.getpid(), worker.age)
def post_fork(server, worker): _rec("post_fork", os.getpid(), worker.age)
def post_worker_init(worker): _rec("post_worker_init", os.getpid(), worker.age)
def on_reload(server): _rec("on_reload", os.getpid())
def worker_int(worker): _rec("worker_int", os.getpid())
def worker_abort(worker): _rec("worker_abort", os.getpid())
def worker_exit(server, worker): _rec("worker_exit", os.getpid())
def child_exit(server, worker): _rec("child_exit", os.getpid(), worker.pid)
def on_exit(server): _rec("on_exit", os.getpid())
def pre_exec(server): _rec("pre_exec", os.getpid())
"#;

/// The WSGI app gunicorn serves (rgunicorn serves its built-in
/// `rgunicorn:health`): 200 on every path.
const APP: &str = r#"
def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
"#;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Prog {
    Rgunicorn,
    Gunicorn,
}

use Prog::{Gunicorn, Rgunicorn};

const BOTH: [Prog; 2] = [Rgunicorn, Gunicorn];

impl Prog {
    fn path(self) -> PathBuf {
        match self {
            Rgunicorn => rgunicorn(),
            Gunicorn => gunicorn(),
        }
    }

    fn app(self) -> &'static str {
        match self {
            Rgunicorn => "rgunicorn:health",
            Gunicorn => "app:application",
        }
    }
}

struct Server {
    prog: Prog,
    /// The scenario, for messages.
    name: String,
    child: Child,
    dir: PathBuf,
    lines: Arc<Mutex<Vec<String>>>,
    /// The stderr pipe reached EOF (every process holding it is gone).
    eof: Arc<AtomicBool>,
    port: Option<u16>,
}

impl Server {
    /// Start `prog` with PREAMBLE + `conf` as its config file, bound to an
    /// ephemeral port, in a fresh directory (also its HOME, so gunicorn's
    /// control socket is private to this run).
    fn start(prog: Prog, name: &str, conf: &str, extra_args: &[&str]) -> Server {
        Server::start_app(prog, name, conf, (APP, prog.app()), extra_args)
    }

    /// [`Server::start`] serving `app` (the source of `app.py`, and the
    /// app URI both programs are given).
    fn start_app(
        prog: Prog,
        name: &str,
        conf: &str,
        app: (&str, &str),
        extra_args: &[&str],
    ) -> Server {
        let dir = scratch_dir(&format!("hookerr-{name}-{prog:?}"));
        std::fs::write(dir.join("hooks.conf.py"), format!("{PREAMBLE}\n{conf}")).unwrap();
        std::fs::write(dir.join("app.py"), app.0).unwrap();
        let mut child = Command::new(prog.path())
            .current_dir(&dir)
            .args([app.1, "-c", "hooks.conf.py", "--bind", "127.0.0.1:0"])
            .args(extra_args)
            .env("HOOK_LOG", dir.join("hooks.log"))
            .env("HOME", &dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let eof = Arc::new(AtomicBool::new(false));
        let (l, e) = (lines.clone(), eof.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("{prog:?}: {line}");
                l.lock().unwrap().push(line);
            }
            e.store(true, Ordering::SeqCst);
        });
        Server {
            prog,
            name: name.to_string(),
            child,
            dir,
            lines,
            eof,
            port: None,
        }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn stderr(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    fn hooks(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("hooks.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Hook records named `name`, split into fields.
    fn calls(&self, name: &str) -> Vec<Vec<String>> {
        self.hooks()
            .iter()
            .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
            .filter(|f| f.first().map(String::as_str) == Some(name))
            .collect()
    }

    fn count(&self, name: &str) -> usize {
        self.calls(name).len()
    }

    /// The pids of the processes that ran `name`.
    fn pids_of(&self, name: &str) -> Vec<i32> {
        self.calls(name)
            .iter()
            .filter_map(|f| f.get(1)?.parse().ok())
            .collect()
    }

    /// Every pid that ran a hook: the master, its workers, a USR2 child.
    fn all_pids(&self) -> Vec<i32> {
        let mut pids: Vec<i32> = self
            .hooks()
            .iter()
            .filter_map(|l| l.split_whitespace().nth(1)?.parse().ok())
            .collect();
        pids.sort();
        pids.dedup();
        pids
    }

    fn context(&self) -> String {
        format!(
            "{:?}\nhooks: {:#?}\nstderr:\n{}",
            self.prog,
            self.hooks(),
            self.stderr()
        )
    }

    fn wait_until(&self, what: &str, mut cond: impl FnMut(&Server) -> bool) {
        let deadline = Instant::now() + WAIT;
        while !cond(self) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; {}",
                self.context()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_log(&self, needle: &str) {
        self.wait_until(&format!("{needle:?} on stderr"), |s| {
            s.stderr().contains(needle)
        });
    }

    /// Wait for the `Listening at:` line, `workers` booted workers and a
    /// 200 on /health.
    fn wait_serving(&mut self, workers: usize) {
        const AT: &str = "Listening at: http://127.0.0.1:";
        self.wait_log(AT);
        let port = self
            .stderr()
            .split(AT)
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .expect("port in the Listening line");
        self.port = Some(port);
        self.wait_until("the workers to boot", |s| {
            s.count("post_worker_init") >= workers
        });
        self.wait_until("/health to answer 200", |s| s.get_status("/health") == 200);
    }

    /// Status of a GET, 0 if the request failed.
    fn get_status(&self, path: &str) -> u16 {
        let Some(port) = self.port else { return 0 };
        common::server::get(port, path).map_or(0, |(status, _)| status)
    }

    fn signal(&self, sig: &str) {
        kill(self.pid(), sig);
    }

    /// Wait for the master to exit; its status (negated signal number if
    /// killed). Then give the stderr reader a moment to drain.
    fn wait_exit(&mut self) -> i32 {
        let deadline = Instant::now() + WAIT;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "the master did not exit; {}",
                self.context()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        // EOF comes once every holder of the pipe is gone; a leaked worker
        // keeps it open (assert_nothing_left reports that).
        let drain = Instant::now() + Duration::from_secs(5);
        while !self.eof.load(Ordering::SeqCst) && Instant::now() < drain {
            std::thread::sleep(Duration::from_millis(20));
        }
        use std::os::unix::process::ExitStatusExt;
        status
            .code()
            .unwrap_or_else(|| -status.signal().unwrap_or(0))
    }

    /// After the master exited: no process that ran a hook is still alive.
    fn nothing_left(&self, v: &Verdict) {
        let pids = self.all_pids();
        v.check(self, !pids.is_empty(), "no hook ran".into());
        // The master reaped its workers before exiting; allow a moment for
        // a process that is just dying (and so for a real leak to show).
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let alive: Vec<i32> = pids.iter().copied().filter(|&p| alive(p)).collect();
            if alive.is_empty() {
                return;
            }
            if Instant::now() >= deadline {
                v.check(
                    self,
                    false,
                    format!("processes left behind after the master exited: {alive:?}"),
                );
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn has(&self, v: &Verdict, needle: &str) {
        v.check(
            self,
            self.stderr().contains(needle),
            format!("{needle:?} not logged"),
        );
    }

    fn lacks(&self, v: &Verdict, needle: &str) {
        v.check(
            self,
            !self.stderr().contains(needle),
            format!("{needle:?} logged"),
        );
    }

    fn on_exit_ran(&self, v: &Verdict, ran: bool) {
        let n = self.count("on_exit");
        v.check(
            self,
            n == usize::from(ran),
            format!(
                "on_exit should {}have run (ran {n} times)",
                if ran { "" } else { "not " }
            ),
        );
    }

    fn eq<T: PartialEq + std::fmt::Debug>(&self, v: &Verdict, what: &str, got: T, want: T) {
        v.check(
            self,
            got == want,
            format!("{what}: got {got:?}, expected {want:?}"),
        );
    }
}

/// The failed checks of one test, reported together at its end (so one
/// discrepancy does not hide the next).
#[derive(Default)]
struct Verdict(RefCell<Vec<String>>);

impl Verdict {
    fn check(&self, s: &Server, ok: bool, msg: String) {
        if !ok {
            let line = format!("{:?} [{}]: {msg}", s.prog, s.name);
            eprintln!("CHECK FAILED: {line}\n{}", s.context());
            self.0.borrow_mut().push(line);
        }
    }

    /// Exit statuses against the table, for each program run.
    fn codes(&self, codes: &[(Prog, i32)], expected: i32, what: &str) {
        for (prog, code) in codes {
            if *code != expected {
                self.0.borrow_mut().push(format!(
                    "{prog:?} [{what}]: exit status {code}, expected {expected} (all: {codes:?})"
                ));
            }
        }
    }

    fn done(self) {
        let failed = self.0.into_inner();
        assert!(
            failed.is_empty(),
            "{} check(s) failed:\n- {}",
            failed.len(),
            failed.join("\n- ")
        );
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A failed test must not leave workers behind either.
        for pid in self.all_pids() {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if alive(pid) && String::from_utf8_lossy(&cmdline).contains("gunicorn") {
                kill(pid, "KILL");
            }
        }
    }
}

fn kill(pid: i32, sig: &str) {
    let status = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{sig} {pid}");
}

/// The process exists and is not a zombie.
fn alive(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, Some('Z') | Some('X') | None)
}

/// A hook body that records the call and then raises `HookBoom("boom in
/// <hook>")` when `cond` (a Python expression) holds.
fn raising(hook: &str, params: &str, cond: &str) -> String {
    format!(
        "def {hook}({params}):\n    _rec({hook:?}, os.getpid(), \"raising\")\n    if {cond}:\n        raise HookBoom(\"boom in {hook}\")\n"
    )
}

// ---------------------------------------------------------------------------
// Start-up hooks: traceback, exit 1.

#[test]
fn startup_hook_raising_exits_1_with_a_traceback() {
    let v = Verdict::default();
    let cases = [
        (
            "nworkers_changed",
            raising(
                "nworkers_changed",
                "server, new_value, old_value",
                "old_value is None",
            ),
        ),
        ("on_starting", raising("on_starting", "server", "True")),
        ("when_ready", raising("when_ready", "server", "True")),
    ];
    for (hook, conf) in &cases {
        let mut codes = Vec::new();
        for prog in BOTH {
            let mut s = Server::start(prog, hook, conf, &[]);
            codes.push((prog, s.wait_exit()));
            s.has(&v, "Traceback (most recent call last)");
            s.has(&v, &format!("boom in {hook}"));
            s.lacks(&v, "Unhandled exception in main loop");
            s.eq(&v, &format!("{hook} calls"), s.count(hook), 1);
            s.eq(&v, "pre_fork calls (no worker)", s.count("pre_fork"), 0);
            s.on_exit_ran(&v, false);
            s.nothing_left(&v);
        }
        v.codes(&codes, 1, hook);
    }
    v.done();
}

/// A RuntimeError is what gunicorn prints as "Error: <message>" (no
/// traceback); the exit status is 1 either way.
#[test]
fn startup_hook_raising_runtime_error_exits_1() {
    let v = Verdict::default();
    let conf = "def on_starting(server):\n    _rec('on_starting', os.getpid())\n    raise RuntimeError('boom in on_starting')\n";
    let mut codes = Vec::new();
    for prog in BOTH {
        let mut s = Server::start(prog, "on_starting RuntimeError", conf, &[]);
        codes.push((prog, s.wait_exit()));
        s.has(&v, "Error: boom in on_starting");
        s.on_exit_ran(&v, false);
        s.nothing_left(&v);
    }
    v.codes(&codes, 1, "on_starting raising RuntimeError");
    v.done();
}

/// A real config's guard: `on_starting` checks its secrets and calls
/// `exit(1)`. `SystemExit` from a start-up hook ends the start with its
/// status and no traceback, in gunicorn and here (a message instead of a
/// number goes to stderr, as Python prints it).
#[test]
fn startup_hook_calling_sys_exit_exits_with_its_status_and_no_traceback() {
    let v = Verdict::default();
    let cases = [
        ("on_starting", "exit(1)", 1, None),
        ("on_starting", "sys.exit(3)", 3, None),
        (
            "when_ready",
            "raise SystemExit('the database is not ready')",
            1,
            Some("the database is not ready"),
        ),
        ("when_ready", "sys.exit()", 0, None),
    ];
    for (hook, call, status, message) in cases {
        let conf = format!(
            "import sys\ndef {hook}(server):\n    _rec({hook:?}, os.getpid())\n    {call}\n"
        );
        let name = format!("{hook} {call}");
        let mut codes = Vec::new();
        for prog in BOTH {
            let mut s = Server::start(prog, &name, &conf, &[]);
            codes.push((prog, s.wait_exit()));
            s.lacks(&v, "Traceback");
            if let Some(message) = message {
                s.has(&v, message);
            }
            s.eq(&v, "pre_fork calls (no worker)", s.count("pre_fork"), 0);
            s.on_exit_ran(&v, false);
            s.nothing_left(&v);
        }
        v.codes(&codes, status, &name);
    }
    v.done();
}

// ---------------------------------------------------------------------------
// Main-loop hooks: "Unhandled exception in main loop", stop(False), 255,
// no on_exit.

fn unhandled_in_main_loop(v: &Verdict, s: &Server, hook: &str) {
    s.has(v, "[ERROR] Unhandled exception in main loop");
    s.has(v, "Traceback (most recent call last)");
    s.has(v, &format!("boom in {hook}"));
    s.lacks(v, "Shutting down: Master");
    s.on_exit_ran(v, false);
    s.nothing_left(v);
}

#[test]
fn pre_fork_raising_for_the_first_worker_exits_255() {
    let v = Verdict::default();
    let conf = raising("pre_fork", "server, worker", "True");
    let mut codes = Vec::new();
    for prog in BOTH {
        let mut s = Server::start(prog, "pre_fork first", &conf, &[]);
        codes.push((prog, s.wait_exit()));
        unhandled_in_main_loop(&v, &s, "pre_fork");
        s.eq(&v, "post_fork calls", s.count("post_fork"), 0);
    }
    v.codes(&codes, 255, "pre_fork raising at start-up");
    v.done();
}

/// TTIN asks for a second worker; its pre_fork raises: the serving worker
/// is stopped too (quickly: worker_int runs in it).
#[test]
fn pre_fork_raising_on_ttin_exits_255_and_stops_the_workers() {
    let v = Verdict::default();
    let conf = format!(
        "workers = 1\n{}",
        raising("pre_fork", "server, worker", "worker.age == 2")
    );
    let mut codes = Vec::new();
    for prog in BOTH {
        let mut s = Server::start(prog, "pre_fork on TTIN", &conf, &[]);
        s.wait_serving(1);
        let serving = s.pids_of("post_worker_init");
        s.signal("TTIN");
        codes.push((prog, s.wait_exit()));
        unhandled_in_main_loop(&v, &s, "pre_fork");
        s.eq(&v, "pre_fork calls", s.count("pre_fork"), 2);
        s.eq(
            &v,
            "worker_int in the serving worker (stop(False) sends QUIT)",
            s.pids_of("worker_int"),
            serving,
        );
    }
    v.codes(&codes, 255, "pre_fork raising on TTIN");
    v.done();
}

/// child_exit raises for the first worker that exits (the table's case);
/// the other worker is stopped by stop(False).
#[test]
fn child_exit_raising_exits_255() {
    let v = Verdict::default();
    let conf = "_raised = []\n".to_string()
        + &raising("child_exit", "server, worker", "not _raised")
            .replace("        raise", "        _raised.append(1)\n        raise");
    let mut codes = Vec::new();
    for prog in BOTH {
        let mut s = Server::start(prog, "child_exit once", &conf, &[]);
        s.wait_serving(2);
        let first = s.pids_of("post_worker_init")[0];
        kill(first, "TERM");
        codes.push((prog, s.wait_exit()));
        unhandled_in_main_loop(&v, &s, "child_exit");
    }
    v.codes(&codes, 255, "child_exit raising");
    v.done();
}

/// child_exit raising every time: also for the worker stop(False) reaps.
/// gunicorn 27 exits 1 here (the second exception escapes its `except`
/// block: "Error: boom ..."); rgunicorn logs it and still exits 255, as
/// the table says. rgunicorn only.
#[test]
fn child_exit_raising_every_time_still_exits_255() {
    let v = Verdict::default();
    let conf = raising("child_exit", "server, worker", "True");
    let mut s = Server::start(Rgunicorn, "child_exit always", &conf, &[]);
    s.wait_serving(2);
    let first = s.pids_of("post_worker_init")[0];
    kill(first, "TERM");
    let code = s.wait_exit();
    v.codes(&[(Rgunicorn, code)], 255, "child_exit raising every time");
    unhandled_in_main_loop(&v, &s, "child_exit");
    s.eq(&v, "child_exit calls", s.count("child_exit"), 2);
    v.done();
}

#[test]
fn on_reload_raising_exits_255() {
    let v = Verdict::default();
    let conf = raising("on_reload", "server", "True");
    let mut codes = Vec::new();
    for prog in BOTH {
        let mut s = Server::start(prog, "on_reload", &conf, &[]);
        s.wait_serving(2);
        s.signal("HUP");
        codes.push((prog, s.wait_exit()));
        unhandled_in_main_loop(&v, &s, "on_reload");
        s.eq(&v, "on_reload calls", s.count("on_reload"), 1);
        // Raised before any new worker was spawned.
        s.eq(&v, "pre_fork calls", s.count("pre_fork"), 2);
    }
    v.codes(&codes, 255, "on_reload raising");
    v.done();
}

/// nworkers_changed raising for a change after start-up: TTIN, TTOU, HUP.
#[test]
fn nworkers_changed_raising_after_start_exits_255() {
    let v = Verdict::default();
    let conf = raising(
        "nworkers_changed",
        "server, new_value, old_value",
        "old_value is not None",
    );
    for sig in ["TTIN", "TTOU", "HUP"] {
        let mut codes = Vec::new();
        for prog in BOTH {
            let mut s = Server::start(prog, &format!("nworkers_changed on {sig}"), &conf, &[]);
            s.wait_serving(2);
            s.signal(sig);
            codes.push((prog, s.wait_exit()));
            unhandled_in_main_loop(&v, &s, "nworkers_changed");
            s.eq(&v, "nworkers_changed calls", s.count("nworkers_changed"), 2);
            s.eq(&v, "on_reload calls", s.count("on_reload"), 0);
            s.eq(&v, "pre_fork calls", s.count("pre_fork"), 2);
        }
        v.codes(&codes, 255, &format!("nworkers_changed raising on {sig}"));
    }
    v.done();
}

// ---------------------------------------------------------------------------
// Worker boot failures: worker exit 3, the master halts with 3.

/// gunicorn's halt() logs at error level when the exit status is not 0.
fn boot_failure_halt(v: &Verdict, s: &Server, hook: &str) {
    s.has(v, &format!("boom in {hook}"));
    s.has(v, "[ERROR] Exception in worker process");
    s.has(v, "[ERROR] Shutting down: Master");
    s.has(v, "[ERROR] Reason: Worker failed to boot.");
    s.lacks(v, "Unhandled exception in main loop");
    s.on_exit_ran(v, true);
    s.nothing_left(v);
}

/// One worker, whose post_fork / post_worker_init raises. (With several
/// workers all failing gunicorn 27 exits 1, see
/// `all_workers_failing_to_boot_exit_3`.)
#[test]
fn post_fork_or_post_worker_init_raising_halts_with_3() {
    let v = Verdict::default();
    for (hook, params) in [
        ("post_fork", "server, worker"),
        ("post_worker_init", "worker"),
    ] {
        let conf = format!("workers = 1\n{}", raising(hook, params, "True"));
        let mut codes = Vec::new();
        for prog in BOTH {
            let mut s = Server::start(prog, hook, &conf, &[]);
            codes.push((prog, s.wait_exit()));
            boot_failure_halt(&v, &s, hook);
            let failed = s.pids_of(hook);
            s.eq(&v, &format!("{hook} calls"), failed.len(), 1);
            // gunicorn runs worker_exit in its `finally` even for a worker
            // that failed to boot; child_exit is not called (HaltServer
            // is raised first).
            s.eq(
                &v,
                "worker_exit in the worker that failed to boot",
                s.pids_of("worker_exit"),
                failed.clone(),
            );
            s.eq(&v, "child_exit calls", s.count("child_exit"), 0);
            for pid in &failed {
                s.has(&v, &format!("[{pid}] [INFO] Worker exiting (pid: {pid})"));
            }
        }
        v.codes(&codes, 3, hook);
    }
    v.done();
}

/// An app that fails after the worker booted, as it starts serving (an
/// ASGI lifespan startup that fails, under UvicornWorker): the worker
/// still logs "Worker exiting" and runs `worker_exit`, as gunicorn's
/// `spawn_worker` does in its `finally`; the master halts with 3.
#[test]
fn app_failing_as_it_starts_runs_worker_exit_and_halts_with_3() {
    const FAILING_LIFESPAN: &str = r#"
async def application(scope, receive, send):
    assert scope["type"] == "lifespan"
    await receive()
    await send({"type": "lifespan.startup.failed", "message": "boom in lifespan"})
"#;
    let v = Verdict::default();
    let conf = "workers = 1\nworker_class = \"uvicorn_worker.UvicornWorker\"\n";
    let mut codes = Vec::new();
    for prog in BOTH {
        let app = (FAILING_LIFESPAN, "app:application");
        let mut s = Server::start_app(prog, "lifespan startup failed", conf, app, &[]);
        codes.push((prog, s.wait_exit()));
        s.has(&v, "boom in lifespan");
        s.has(&v, "[ERROR] Reason: Worker failed to boot.");
        let booted = s.pids_of("post_worker_init");
        s.eq(&v, "workers booted", booted.len(), 1);
        s.eq(&v, "worker_exit", s.pids_of("worker_exit"), booted.clone());
        for pid in &booted {
            s.has(&v, &format!("[{pid}] [INFO] Worker exiting (pid: {pid})"));
        }
        s.on_exit_ran(&v, true);
        s.nothing_left(&v);
    }
    v.codes(&codes, 3, "lifespan startup failed");
    v.done();
}

/// A worker spawned later (TTIN) that fails to boot halts the server too,
/// stopping the worker that was serving (gracefully: it runs worker_exit).
#[test]
fn a_later_worker_failing_to_boot_halts_with_3() {
    let v = Verdict::default();
    let conf = format!(
        "workers = 1\n{}",
        raising("post_worker_init", "worker", "worker.age >= 2")
    );
    let mut codes = Vec::new();
    for prog in BOTH {
        let mut s = Server::start(prog, "post_worker_init on TTIN", &conf, &[]);
        s.wait_serving(1);
        let serving = s.pids_of("post_worker_init")[0];
        s.signal("TTIN");
        codes.push((prog, s.wait_exit()));
        boot_failure_halt(&v, &s, "post_worker_init");
        v.check(
            &s,
            s.pids_of("worker_exit").contains(&serving),
            "the serving worker ran worker_exit".into(),
        );
    }
    v.codes(&codes, 3, "post_worker_init raising in a TTIN worker");
    v.done();
}

/// Python for a config: wait (bounded) until the given pids are zombies,
/// i.e. exited and not yet reaped by the master.
const WAIT_ZOMBIES: &str = r#"
import time
def _zombie(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True
def _wait_zombies(pids):
    deadline = time.monotonic() + 10
    while not all(_zombie(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.01)
def _pids(name):
    with open(HOOK_LOG) as f:
        return [int(l.split()[1]) for l in f if l.split()[0] == name]
"#;

/// Two workers fail to boot and both have exited before the master reaps
/// (made certain by the third pre_fork, in the master, waiting until they
/// are zombies): one reaping pass sees both exit statuses 3. rgunicorn
/// must still stop everything and exit 3, as the table says. (gunicorn 27
/// exits 1 here: the second exit 3, reaped inside halt() -> stop(), raises
/// a nested HaltServer; reference section 11.) rgunicorn only.
#[test]
fn workers_failing_to_boot_together_exit_3() {
    let v = Verdict::default();
    let conf = format!(
        "workers = 3\n{WAIT_ZOMBIES}\n{}\n{}",
        raising("post_fork", "server, worker", "worker.age <= 2"),
        r#"
def pre_fork(server, worker):
    _rec("pre_fork", os.getpid(), worker.age)
    if worker.age == 3:
        deadline = time.monotonic() + 10
        while len(_pids("post_fork")) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        _wait_zombies(_pids("post_fork"))
"#
    );
    let mut s = Server::start(Rgunicorn, "two boot failures at once", &conf, &[]);
    let code = s.wait_exit();
    v.codes(
        &[(Rgunicorn, code)],
        3,
        "two workers failing to boot at once",
    );
    boot_failure_halt(&v, &s, "post_fork");
    v.done();
}

/// child_exit raising for one of two workers reaped in the same pass (the
/// first child_exit kills two workers and waits until both are zombies,
/// as when the OOM killer takes several at once): "Unhandled exception in
/// main loop", stop(False), exit 255, and the other worker must not be
/// forgotten. Raises once, so gunicorn exits 255 too.
#[test]
fn child_exit_raising_for_one_of_two_workers_reaped_together_exits_255() {
    let v = Verdict::default();
    let conf = format!(
        "workers = 3\n{WAIT_ZOMBIES}\n{}",
        r#"
import signal
_killed = []
_raised = []
def child_exit(server, worker):
    _rec("child_exit", os.getpid(), worker.pid)
    if not _killed:
        others = [p for p in _pids("post_worker_init") if p != worker.pid][:2]
        _killed.extend(others)
        for p in others:
            os.kill(p, signal.SIGKILL)
        _wait_zombies(others)
    elif worker.pid in _killed and not _raised:
        _raised.append(worker.pid)
        raise HookBoom("boom in child_exit")
"#
    );
    let mut codes = Vec::new();
    for prog in BOTH {
        let mut s = Server::start(prog, "child_exit two at once", &conf, &[]);
        s.wait_serving(3);
        let first = s.pids_of("post_worker_init")[0];
        kill(first, "TERM");
        codes.push((prog, s.wait_exit()));
        unhandled_in_main_loop(&v, &s, "child_exit");
    }
    v.codes(&codes, 255, "child_exit raising for one of two workers");
    v.done();
}

// ---------------------------------------------------------------------------
// Hooks whose exceptions are logged and do not stop the server.

/// worker_exit: logged as a warning "Exception during worker exit:", the
/// worker still exits 0 (no "exited with code"), is replaced, the server
/// serves on and stops cleanly.
#[test]
fn worker_exit_raising_is_logged_and_ignored() {
    let v = Verdict::default();
    let conf = raising("worker_exit", "server, worker", "True");
    let mut codes = Vec::new();
    for prog in BOTH {
        let mut s = Server::start(prog, "worker_exit", &conf, &[]);
        s.wait_serving(2);
        let first = s.pids_of("post_worker_init")[0];
        kill(first, "TERM");
        s.wait_until("the replacement worker", |s| {
            s.count("post_worker_init") == 3 && !alive(first)
        });
        s.wait_until("child_exit of the first worker", |s| {
            s.calls("child_exit")
                .iter()
                .any(|f| f.get(2) == Some(&first.to_string()))
        });
        s.wait_log("boom in worker_exit");
        s.eq(&v, "GET /health", s.get_status("/health"), 200);
        s.has(&v, "[WARNING] Exception during worker exit:");
        s.signal("TERM");
        codes.push((prog, s.wait_exit()));
        // Checked once all of stderr has been read.
        s.lacks(&v, "exited with code");
        s.lacks(&v, "Unhandled exception in main loop");
        s.on_exit_ran(&v, true);
        s.nothing_left(&v);
        // Every worker ran (and raised in) worker_exit.
        s.eq(&v, "worker_exit calls", s.count("worker_exit"), 3);
    }
    v.codes(&codes, 0, "worker_exit raising");
    v.done();
}

/// on_exit: traceback, exit 1; the pidfile was already removed.
#[test]
fn on_exit_raising_exits_1_after_removing_the_pidfile() {
    let v = Verdict::default();
    let conf = raising("on_exit", "server", "True");
    let mut codes = Vec::new();
    for prog in BOTH {
        let mut s = Server::start(prog, "on_exit", &conf, &["--pid", "app.pid"]);
        s.wait_serving(2);
        let pidfile = s.dir.join("app.pid");
        v.check(&s, pidfile.exists(), "no pidfile while serving".into());
        s.signal("TERM");
        codes.push((prog, s.wait_exit()));
        s.has(&v, "Traceback (most recent call last)");
        s.has(&v, "boom in on_exit");
        s.on_exit_ran(&v, true);
        v.check(&s, !pidfile.exists(), "pidfile left behind".into());
        s.eq(&v, "worker_exit calls", s.count("worker_exit"), 2);
        s.nothing_left(&v);
    }
    v.codes(&codes, 1, "on_exit raising");
    v.done();
}

/// worker_int raising (QUIT to one worker, then INT to the master): the
/// exception is logged in the worker, which still exits; the master
/// replaces it, then stops with 0 and runs on_exit. (gunicorn's worker
/// exits 255 here, rgunicorn's 0; both are replaced.)
#[test]
fn worker_int_raising_still_stops_the_worker() {
    let v = Verdict::default();
    let conf = raising("worker_int", "worker", "True");
    let mut codes = Vec::new();
    for prog in BOTH {
        let mut s = Server::start(prog, "worker_int", &conf, &[]);
        s.wait_serving(2);
        let first = s.pids_of("post_worker_init")[0];
        kill(first, "QUIT");
        s.wait_until("the replacement worker", |s| {
            s.count("post_worker_init") == 3 && !alive(first)
        });
        s.wait_log("boom in worker_int");
        s.eq(&v, "worker_int pids", s.pids_of("worker_int"), vec![first]);
        s.eq(&v, "GET /health", s.get_status("/health"), 200);
        s.signal("INT");
        codes.push((prog, s.wait_exit()));
        s.eq(&v, "worker_int calls", s.count("worker_int"), 3);
        s.lacks(&v, "Unhandled exception in main loop");
        s.on_exit_ran(&v, true);
        s.nothing_left(&v);
    }
    v.codes(&codes, 0, "worker_int raising");
    v.done();
}

/// worker_abort raising (ABRT to one worker): logged in the worker, which
/// still exits and is replaced.
#[test]
fn worker_abort_raising_still_stops_the_worker() {
    let v = Verdict::default();
    let conf = raising("worker_abort", "worker", "True");
    let mut codes = Vec::new();
    for prog in BOTH {
        let mut s = Server::start(prog, "worker_abort", &conf, &[]);
        s.wait_serving(2);
        let first = s.pids_of("post_worker_init")[0];
        kill(first, "ABRT");
        s.wait_until("the replacement worker", |s| {
            s.count("post_worker_init") == 3 && !alive(first)
        });
        s.wait_log("boom in worker_abort");
        s.eq(
            &v,
            "worker_abort pids",
            s.pids_of("worker_abort"),
            vec![first],
        );
        s.eq(&v, "GET /health", s.get_status("/health"), 200);
        s.signal("TERM");
        codes.push((prog, s.wait_exit()));
        s.lacks(&v, "Unhandled exception in main loop");
        s.on_exit_ran(&v, true);
        s.nothing_left(&v);
    }
    v.codes(&codes, 0, "worker_abort raising");
    v.done();
}

// ---------------------------------------------------------------------------
// pre_exec: rgunicorn deliberately differs from gunicorn (whose forked
// child runs the arbiter's stop(False): it SIGQUITs the old master's
// workers and unlinks its unix sockets, then exits 255). rgunicorn logs
// the traceback in the child, which exits without exec'ing; the old
// master keeps serving with the same workers. rgunicorn only.

#[test]
fn pre_exec_raising_leaves_the_old_master_serving() {
    let v = Verdict::default();
    let conf = raising("pre_exec", "server", "True");
    let mut s = Server::start(Rgunicorn, "pre_exec", &conf, &[]);
    s.wait_serving(2);
    let master = s.pid();
    let workers = s.pids_of("post_worker_init");
    s.signal("USR2");
    s.wait_until("pre_exec", |s| s.count("pre_exec") == 1);
    s.wait_log("boom in pre_exec");
    let child = s.pids_of("pre_exec")[0];
    v.check(
        &s,
        child != master,
        "pre_exec runs in the forked child".into(),
    );
    s.wait_until("the USR2 child to be reaped", |_| !alive(child));
    s.has(&v, "Traceback (most recent call last)");
    s.has(&v, &format!("[{child}] [ERROR]"));
    // No new master started, the old one stopped nothing.
    s.lacks(&v, "Unhandled exception in main loop");
    s.eq(&v, "on_starting calls", s.count("on_starting"), 1);
    s.eq(&v, "nworkers_changed calls", s.count("nworkers_changed"), 1);
    s.eq(&v, "worker_int calls", s.count("worker_int"), 0);
    s.eq(&v, "worker_exit calls", s.count("worker_exit"), 0);
    s.eq(&v, "child_exit calls", s.count("child_exit"), 0);
    s.on_exit_ran(&v, false);
    let gone: Vec<&i32> = workers.iter().filter(|&&w| !alive(w)).collect();
    v.check(&s, gone.is_empty(), format!("workers gone: {gone:?}"));
    s.eq(&v, "GET /health", s.get_status("/health"), 200);
    s.eq(
        &v,
        "Listening lines",
        s.stderr().matches("Listening at:").count(),
        1,
    );
    s.signal("TERM");
    let code = s.wait_exit();
    v.codes(&[(Rgunicorn, code)], 0, "TERM after a failed pre_exec");
    s.eq(&v, "on_exit pids", s.pids_of("on_exit"), vec![master]);
    s.nothing_left(&v);
    v.done();
}
