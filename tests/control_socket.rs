//! The control socket (`rgunicornc`, gunicorn's `gunicornc`): the worker
//! table against the real processes, the commands that change them, the
//! socket file's mode and ownership (no stealing from a live master, USR2
//! takes over), a quiet start when the default path cannot be made, and a
//! stalled client that must not hold the master.

use crate::common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

use common::server::*;
use common::*;

fn rgunicornc() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_rgunicornc"))
}

fn ctl_output(socket: &Path, cmd: &str, json: bool) -> Output {
    let mut c = Command::new(rgunicornc());
    c.arg("-s").arg(socket).args(["-c", cmd]);
    if json {
        c.arg("-j");
    }
    c.output().unwrap()
}

/// `rgunicornc -j -c cmd`'s data (the command must succeed).
fn ctl(socket: &Path, cmd: &str) -> Value {
    let out = ctl_output(socket, cmd, true);
    assert!(
        out.status.success(),
        "rgunicornc -c {cmd:?}: {}",
        text(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn workers(socket: &Path) -> Vec<Value> {
    ctl(socket, "show workers")["workers"]
        .as_array()
        .unwrap()
        .clone()
}

fn pids(socket: &Path) -> Vec<i32> {
    let mut p: Vec<i32> = workers(socket)
        .iter()
        .map(|w| w["pid"].as_i64().unwrap() as i32)
        .collect();
    p.sort();
    p
}

fn sorted(mut v: Vec<i32>) -> Vec<i32> {
    v.sort();
    v
}

/// Every worker in the table serving, and the table's pids exactly the
/// master's children, `n` of them.
fn settled(server: &Server, n: usize) -> bool {
    let socket = server.control_socket();
    // The socket is made once the first workers are forked: a worker may
    // answer before it exists.
    if !socket.exists() {
        return false;
    }
    let w = workers(&socket);
    w.len() == n
        && w.iter().all(|w| w["state"] == "serving")
        && pids(&socket) == sorted(server.worker_pids())
}

fn vm_rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn show_workers_is_the_live_worker_table() {
    let dir = scratch_dir("ctl-table");
    let server = Server::start(&dir, &[]);
    let socket = server.control_socket();
    server.wait_until(|| settled(&server, 2));
    assert!(server.logged(&format!(
        "[INFO] Control socket listening at {}",
        socket.display()
    )));
    // The default mode: 0o600.
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    server.wait_until(|| settled(&server, 2));
    let data = ctl(&socket, "show workers");
    assert_eq!(data["count"], 2);
    for w in data["workers"].as_array().unwrap() {
        let pid = w["pid"].as_i64().unwrap() as i32;
        for key in ["age", "booted", "aborted", "last_heartbeat", "uptime"] {
            assert!(!w[key].is_null(), "{key} in {w}");
        }
        let rss = w["rss_kib"].as_u64().unwrap();
        let real = vm_rss_kib(pid);
        assert!(rss > 0);
        assert!(
            rss.abs_diff(real) <= real / 5 + 2048,
            "rss_kib {rss} vs VmRSS {real}"
        );
    }
    let total = |s: &Path| -> u64 {
        workers(s)
            .iter()
            .map(|w| w["requests"].as_u64().unwrap())
            .sum()
    };
    let before = total(&socket);
    for _ in 0..10 {
        assert_eq!(server.get("/health").unwrap().0, 200);
    }
    server.wait_until(|| total(&socket) == before + 10);
    assert!(workers(&socket)
        .iter()
        .all(|w| w["in_flight"] == 0 && w["state"] == "serving"));

    // For people: the table.
    let out = ctl_output(&socket, "show workers", false);
    assert!(out.status.success());
    let table = text(&out.stdout);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "PID",
            "AGE",
            "STATE",
            "REQUESTS",
            "IN_FLIGHT",
            "UPTIME",
            "RSS",
            "LAST_BEAT"
        ]
    );
    for pid in server.worker_pids() {
        assert!(
            table.lines().any(|l| l.starts_with(&format!("{pid} "))),
            "{table}"
        );
    }
    assert!(table.contains("Total: 2 workers"), "{table}");
    // Other commands: key: value.
    let out = ctl_output(&socket, "show stats", false);
    assert!(text(&out.stdout).contains(&format!("pid: {}", server.pid())));
    // Errors: gunicorn's text, exit 1.
    let out = ctl_output(&socket, "frobnicate", false);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr).trim(),
        "Error: Invalid argument: Unknown command: frobnicate"
    );
    let out = ctl_output(&dir.join("nothing.ctl"), "show workers", false);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).starts_with("Error: "));
    assert_eq!(ctl(&socket, "show dirty")["enabled"], false);
    let listeners = ctl(&socket, "show listeners");
    assert_eq!(
        listeners["listeners"][0]["address"],
        format!("http://127.0.0.1:{}", server.port)
    );
    assert_eq!(ctl(&socket, "show config")["workers"], 2);
}

/// nworkers_changed records whether it ran on the master's main thread.
const MAIN_THREAD_CONF: &str = r#"
exec(open("hooks.conf.py").read())
import threading
def nworkers_changed(server, new_value, old_value):
    _rec("nworkers_changed", os.getpid(), new_value, old_value,
         threading.current_thread() is threading.main_thread())
"#;

#[test]
fn worker_commands_change_the_workers() {
    let dir = scratch_dir("ctl-workers");
    std::fs::write(dir.join("main.conf.py"), MAIN_THREAD_CONF).unwrap();
    let mut server = Server::start(
        &dir,
        &["-c", "main.conf.py", "--metrics-bind", "127.0.0.1:0"],
    );
    let socket = server.control_socket();
    let master = server.pid();
    server.wait_until(|| settled(&server, 2));
    let first = pids(&socket);

    // worker add 1: a third worker, the hook on the main thread.
    let added = ctl(&socket, "worker add 1");
    assert_eq!(
        (added["added"].clone(), added["total"].clone()),
        (1.into(), 3.into())
    );
    server.wait_until(|| settled(&server, 3));
    let three = pids(&socket);
    let new: Vec<i32> = three
        .iter()
        .copied()
        .filter(|p| !first.contains(p))
        .collect();
    assert_eq!(new.len(), 1);
    assert!(server
        .hooks()
        .contains(&format!("nworkers_changed {master} 3 2 True")));
    assert!(server
        .hooks()
        .contains(&format!("post_worker_init {} {}", new[0], new[0])));

    // worker remove 1: back to two (never below one).
    let removed = ctl(&socket, "worker remove 1");
    assert_eq!(removed["total"], 2);
    server.wait_until(|| settled(&server, 2));
    assert!(server
        .hooks()
        .contains(&format!("nworkers_changed {master} 2 3 True")));
    let removed = ctl(&socket, "worker remove 5");
    assert_eq!(
        (removed["removed"].clone(), removed["total"].clone()),
        (1.into(), 1.into())
    );
    server.wait_until(|| settled(&server, 1));
    ctl(&socket, "worker add");
    server.wait_until(|| settled(&server, 2));

    // worker kill PID: that one is replaced.
    let two = pids(&socket);
    let victim = two[0];
    let killed = ctl(&socket, &format!("worker kill {victim}"));
    assert_eq!(killed["killed"], victim);
    server.wait_until(|| settled(&server, 2) && !pids(&socket).contains(&victim));
    assert!(pids(&socket).contains(&two[1]));
    // Counted under its own cause, not as a crash.
    let metrics = server.metrics_response();
    assert!(
        metrics.contains("rgunicorn_worker_restarts_total{cause=\"control\"} 1\n")
            && metrics.contains("rgunicorn_worker_restarts_total{cause=\"crash\"} 0\n"),
        "{metrics}"
    );
    // Not a worker of this master, and the dirty commands (no dirty
    // arbiter): answered, with `success: false`, as gunicorn does.
    assert_eq!(
        ctl(&socket, &format!("worker kill {master}")),
        serde_json::json!({"success": false, "error": format!("Worker {master} not found")})
    );
    for cmd in ["dirty add", "dirty remove 2"] {
        assert_eq!(
            ctl(&socket, cmd),
            serde_json::json!({"success": false, "error": "Dirty arbiter not running"})
        );
    }

    // reload: every worker replaced.
    let before = pids(&socket);
    assert_eq!(ctl(&socket, "reload")["status"], "reloading");
    server.wait_until(|| settled(&server, 2) && pids(&socket).iter().all(|p| !before.contains(p)));
    assert_eq!(ctl(&socket, "show stats")["reloads"], 1);

    // shutdown: the master exits 0 and removes its socket.
    assert_eq!(ctl(&socket, "shutdown")["status"], "shutting_down");
    assert_eq!(wait_exit(&mut server.child, Duration::from_secs(20)), 0);
    assert!(!socket.exists());
}

#[test]
fn gunicornc_drives_rgunicorn() {
    let gunicornc = gunicorn().with_file_name("gunicornc");
    assert!(
        gunicornc.exists(),
        "{} (gunicorn 27.0.1 ships it)",
        gunicornc.display()
    );
    let dir = scratch_dir("ctl-gunicornc");
    let server = Server::start(&dir, &[]);
    let socket = server.control_socket();
    server.wait_until(|| settled(&server, 2));
    let out = Command::new(&gunicornc)
        .arg("-s")
        .arg(&socket)
        .args(["-c", "show workers"])
        .output()
        .unwrap();
    let shown = text(&out.stdout);
    assert!(out.status.success(), "{shown}{}", text(&out.stderr));
    for pid in server.worker_pids() {
        assert!(shown.contains(&pid.to_string()), "{shown}");
    }
    assert!(shown.contains("Total: 2 workers"), "{shown}");
    let out = Command::new(&gunicornc)
        .arg("-s")
        .arg(&socket)
        .args(["-j", "-c", "show stats"])
        .output()
        .unwrap();
    let stats: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stats["pid"], server.pid());
}

#[test]
fn rgunicornc_drives_gunicorn() {
    let dir = scratch_dir("ctl-reference");
    let app = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/apps/wsgi_app.py");
    std::fs::copy(app, dir.join("wsgi_app.py")).unwrap();
    let server = Server::start_program(&gunicorn(), "wsgi_app", &dir, &[]);
    let socket = dir.join("gunicorn-ref.ctl");
    server.wait_until(|| socket.exists() && server.worker_pids().len() == 2);
    assert_eq!(ctl(&socket, "show stats")["pid"], server.pid());
    server.wait_until(|| {
        let out = ctl_output(&socket, "show workers", false);
        let table = text(&out.stdout);
        out.status.success()
            && server
                .worker_pids()
                .iter()
                .all(|p| table.lines().any(|l| l.starts_with(&format!("{p} "))))
    });
}

/// The inode of the listening unix socket bound at `path` (/proc/net/unix).
fn socket_inode(path: &Path) -> String {
    let table = std::fs::read_to_string("/proc/net/unix").unwrap();
    let line = table
        .lines()
        .find(|l| l.ends_with(&format!(" {}", path.display())))
        .unwrap_or_else(|| panic!("{} not in /proc/net/unix", path.display()));
    line.split_whitespace().nth(6).unwrap().to_string()
}

fn holds_socket(pid: i32, inode: &str) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .any(|l| l.to_string_lossy() == format!("socket:[{inode}]"))
}

#[test]
fn workers_do_not_hold_the_control_socket() {
    let dir = scratch_dir("ctl-fds");
    let server = Server::start(&dir, &[]);
    let socket = server.control_socket();
    server.wait_until(|| settled(&server, 2));
    let inode = socket_inode(&socket);
    assert!(holds_socket(server.pid(), &inode));
    // Also a worker forked while a client is connected.
    let mut client = UnixStream::connect(&socket).unwrap();
    client.write_all(&[0]).unwrap();
    ctl(&socket, "worker add 1");
    server.wait_until(|| settled(&server, 3));
    for pid in server.worker_pids() {
        assert!(
            !holds_socket(pid, &inode),
            "worker {pid} holds the control socket"
        );
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .count();
        let master_fds = std::fs::read_dir(format!("/proc/{}/fd", server.pid()))
            .unwrap()
            .count();
        assert!(fds < master_fds + 20, "{fds} fds");
    }
}

#[test]
fn socket_mode_and_disabling() {
    let dir = scratch_dir("ctl-mode");
    let server = Server::start(&dir, &["--control-socket-mode", "0o660"]);
    server.wait_until(|| server.control_socket().exists());
    let mode = std::fs::metadata(server.control_socket())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o660);
    drop(server);

    // A relative path is taken from the working directory; missing
    // parents are made, mode 0700.
    let dir = scratch_dir("ctl-relative");
    let server = Server::start(&dir, &["--control-socket", "run/ctl/app.ctl"]);
    let socket = dir.join("run/ctl/app.ctl");
    server.wait_until(|| socket.exists());
    for parent in ["run", "run/ctl"] {
        let mode = std::fs::metadata(dir.join(parent))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700, "{parent}");
    }
    let out = Command::new(rgunicornc())
        .current_dir(&dir)
        .args(["-s", "run/ctl/app.ctl", "-j", "-c", "show stats"])
        .output()
        .unwrap();
    let stats: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stats["pid"], server.pid());
    drop(server);

    let dir = scratch_dir("ctl-none");
    let server = Server::start(&dir, &["--no-control-socket", "--log-level", "debug"]);
    server.wait_until(|| server.logged("[DEBUG] Control socket disabled"));
    assert!(!server.control_socket().exists());
}

#[test]
fn a_second_master_does_not_steal_the_socket() {
    let dir = scratch_dir("ctl-first");
    let first = Server::start(&dir, &[]);
    let socket = first.control_socket();
    let path = socket.to_str().unwrap();
    first.wait_until(|| socket.exists());
    let other = scratch_dir("ctl-second");
    let second = Server::start(&other, &["--control-socket", path]);
    let warning = format!("[WARNING] Control socket {path} is in use by another running server");
    second.wait_until(|| second.logged(&warning));
    assert!(second.logged("--control-socket"));
    assert_eq!(ctl(&socket, "show stats")["pid"], first.pid());
    assert_eq!(second.stop(), 0);
    // The second master never owned it: still there, still the first's.
    assert_eq!(ctl(&socket, "show stats")["pid"], first.pid());
}

#[test]
fn an_unusable_default_path_is_one_quiet_line() {
    let dir = scratch_dir("ctl-default");
    // HOME is a regular file: ~/.gunicorn cannot be made (even by root).
    let home = dir.join("home-is-a-file");
    std::fs::write(&home, "").unwrap();
    let server = Server::start_env(
        &dir,
        &[],
        &[("HOME", home.to_str()), ("XDG_RUNTIME_DIR", None)],
    );
    let expected = format!(
        "[INFO] Control socket not started: {}/.gunicorn/gunicorn.ctl:",
        home.display()
    );
    server.wait_until(|| server.logged(&expected));
    assert_eq!(server.get("/health").unwrap().0, 200);
    let lines = server.stderr_lines.lock().unwrap().clone();
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains("Control socket"))
            .count(),
        1,
        "{lines:#?}"
    );
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("[WARNING]") || l.contains("[ERROR]")),
        "{lines:#?}"
    );
}

#[test]
fn a_configured_path_that_fails_is_a_warning() {
    let dir = scratch_dir("ctl-bad");
    std::fs::write(dir.join("file"), "").unwrap();
    let bad = dir.join("file/ctl.sock");
    let server = Server::start(&dir, &["--control-socket", bad.to_str().unwrap()]);
    let expected = format!(
        "[WARNING] Failed to start control socket: {}:",
        bad.display()
    );
    server.wait_until(|| server.logged(&expected));
    assert_eq!(server.get("/health").unwrap().0, 200);
}

#[test]
fn a_stalled_client_does_not_hold_the_master() {
    let dir = scratch_dir("ctl-stall");
    let server = Server::start(&dir, &[]);
    let socket = server.control_socket();
    server.wait_until(|| settled(&server, 2));
    // Two bytes of a length prefix, then nothing.
    let mut stalled = UnixStream::connect(&socket).unwrap();
    stalled.write_all(&[0, 0]).unwrap();
    // Half a frame: a length and part of the payload.
    let mut trickle = UnixStream::connect(&socket).unwrap();
    trickle.write_all(&[0, 0, 0, 100, b'{']).unwrap();
    let started = Instant::now();
    assert_eq!(ctl(&socket, "show stats")["pid"], server.pid());
    assert!(started.elapsed() < Duration::from_secs(5));
    server.signal("TTIN");
    server.wait_until(|| settled(&server, 3));
    assert_eq!(ctl(&socket, "show stats")["workers_target"], 3);
    // Many requests on one connection, answered in order.
    let mut conn = UnixStream::connect(&socket).unwrap();
    for id in 1..=3 {
        let req = serde_json::json!({"id": id, "command": "show", "args": ["stats"]});
        let payload = serde_json::to_vec(&req).unwrap();
        conn.write_all(&(payload.len() as u32).to_be_bytes())
            .unwrap();
        conn.write_all(&payload).unwrap();
    }
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    for id in 1..=3 {
        let mut len = [0u8; 4];
        std::io::Read::read_exact(&mut conn, &mut len).unwrap();
        let mut body = vec![0; u32::from_be_bytes(len) as usize];
        std::io::Read::read_exact(&mut conn, &mut body).unwrap();
        let resp: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            (resp["id"].clone(), resp["status"].clone()),
            (id.into(), "ok".into())
        );
    }
    // More clients than the master holds (16): the one idle longest goes,
    // a new one is still answered.
    let idle: Vec<UnixStream> = (0..20)
        .map(|_| UnixStream::connect(&socket).unwrap())
        .collect();
    assert_eq!(ctl(&socket, "show stats")["pid"], server.pid());
    drop(idle);
    // The half-sent frame is dropped after 10 s.
    let mut stalled = UnixStream::connect(&socket).unwrap();
    stalled.write_all(&[0, 0]).unwrap();
    stalled
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 1];
    let read = std::io::Read::read(&mut stalled, &mut buf);
    assert!(matches!(read, Ok(0)), "{read:?}");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(9) && waited < Duration::from_secs(15),
        "{waited:?}"
    );
    drop((trickle, conn));
}

#[test]
fn usr2_master_takes_the_socket_over() {
    let dir = scratch_dir("ctl-usr2");
    let mut server = Server::start(&dir, &[]);
    let socket = server.control_socket();
    let old = server.pid();
    server.wait_until(|| settled(&server, 2));
    server.signal("USR2");
    let mut new = 0;
    // The socket is replaced under the client's feet: a failed connect
    // is retried.
    server.wait_until(|| {
        let out = ctl_output(&socket, "show stats", true);
        if let Ok(stats) = serde_json::from_slice::<Value>(&out.stdout) {
            new = stats["pid"].as_i64().unwrap_or(0) as i32;
        }
        new != 0 && new != old
    });
    let _guard = KillOnDrop(new);
    assert!(
        children(old).contains(&new),
        "the new master is the old one's child"
    );
    // TERM the old master: the socket stays, the new master answers.
    server.signal("TERM");
    assert_eq!(wait_exit(&mut server.child, Duration::from_secs(20)), 0);
    assert!(socket.exists());
    assert_eq!(ctl(&socket, "show stats")["pid"], new);
    assert_eq!(ctl(&socket, "show workers")["count"], 2);
    // The promoted master removes it at its own exit.
    let _ = Command::new("kill")
        .args(["-TERM", &new.to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(20);
    while alive(new) {
        assert!(Instant::now() < deadline, "new master did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!socket.exists());
}
