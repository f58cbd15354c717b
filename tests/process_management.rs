//! Process management as gunicorn's: `daemon` (detached, pidfile, WINCH
//! stops the workers, HUP brings them back), `proc_name` process titles,
//! `user`/`group` for workers only, and a missing `worker_tmp_dir`.

use crate::common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::server::*;
use common::*;

fn wait(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn kill(sig: &str, pid: i32) {
    let status = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{sig} {pid}");
}

fn cmdline(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            String::from_utf8_lossy(&b)
                .replace('\0', " ")
                .trim()
                .to_string()
        })
        .unwrap_or_default()
}

/// The `Uid:`/`Gid:` effective ids of a process.
fn ids(pid: i32) -> (u32, u32) {
    // A process that is gone has no ids (u32::MAX).
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| -> u32 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(u32::MAX)
    };
    (field("Uid:"), field("Gid:"))
}

fn session(pid: i32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after "pid (comm)": state ppid pgrp session ...
    stat.rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .nth(3)
        .unwrap()
        .parse()
        .unwrap()
}

/// The port from the error log's `Listening at:` line.
fn listening_port(log: &std::path::Path) -> Option<u16> {
    let text = std::fs::read_to_string(log).ok()?;
    let rest = text.split("Listening at: http://127.0.0.1:").nth(1)?;
    rest.chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .ok()
}

fn get(port: u16, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    buf.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn daemon_detaches_titles_its_processes_and_winch_stops_the_workers() {
    let dir = scratch_dir("pm-daemon");
    let args = [
        "rgunicorn:health",
        "--daemon",
        "--pid",
        "app.pid",
        "--error-logfile",
        "err.log",
        "--bind",
        "127.0.0.1:0",
        "--workers",
        "2",
        "--name",
        "mysite",
    ];
    // The command itself returns at once, with 0, as gunicorn's does.
    let out = run_in(&rgunicorn(), &dir, &args, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let (pidfile, log) = (dir.join("app.pid"), dir.join("err.log"));
    wait("pidfile", || pidfile.exists());
    let master: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let _guard = KillOnDrop(master);
    wait("Listening at", || listening_port(&log).is_some());
    let port = listening_port(&log).unwrap();
    wait("first 200", || get(port, "/health") == Some(200));

    // Detached: a new session of its own, not a child of the test.
    assert_ne!(session(master), session(std::process::id() as i32));
    assert_ne!(
        session(master),
        master,
        "the daemon is not a session leader"
    );
    assert_eq!(cmdline(master), "rgunicorn: master [mysite]");
    // A worker sets its title first thing after fork.
    wait("2 titled workers", || {
        let workers = children(master);
        workers.len() == 2
            && workers
                .iter()
                .all(|&w| cmdline(w) == "rgunicorn: worker [mysite]")
    });

    kill("WINCH", master);
    wait("workers stopped by WINCH", || children(master).is_empty());
    assert!(std::fs::read_to_string(&log)
        .unwrap()
        .contains("graceful stop of workers"));
    kill("HUP", master);
    wait("workers back after HUP", || {
        children(master).len() == 2 && get(port, "/health") == Some(200)
    });

    kill("TERM", master);
    wait("master gone", || !alive(master));
    assert!(!pidfile.exists(), "pidfile removed on exit");
    assert!(std::fs::read_to_string(&log)
        .unwrap()
        .contains("Shutting down: Master"));
}

#[test]
fn workers_switch_user_and_group_the_master_does_not() {
    if !nix_is_root() {
        eprintln!("NOT RUN: switching users needs root (CI runs as root)");
        return;
    }
    let dir = scratch_dir("pm-user");
    // The scratch directory must be reachable by the workers' user.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let sock = dir.join("app.sock");
    std::fs::write(dir.join("conf.py"), "workers = 2\n").unwrap();
    let unix = format!("unix:{}", sock.display());
    let mut child = Command::new(rgunicorn())
        .current_dir(&dir)
        .args([
            "rgunicorn:health",
            "-c",
            "conf.py",
            "--bind",
            "127.0.0.1:0",
            "--bind",
            &unix,
            "--user",
            "65534",
            "--group",
            "65534",
            "--error-logfile",
            "err.log",
        ])
        .spawn()
        .unwrap();
    let master = child.id() as i32;
    let _guard = KillOnDrop(master);
    let log = dir.join("err.log");
    wait("Listening at", || listening_port(&log).is_some());
    let port = listening_port(&log).unwrap();
    wait("first 200", || get(port, "/health") == Some(200));
    assert_eq!(ids(master), (0, 0), "the master keeps its privileges");
    // Each worker switches right after post_fork; wait for both to boot.
    wait("2 workers as 65534:65534", || {
        let workers = children(master);
        workers.len() == 2 && workers.iter().all(|&w| ids(w) == (65534, 65534))
    });
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(&sock).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid()),
        (65534, 65534),
        "unix socket owner"
    );
    let meta = std::fs::metadata(&log).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (65534, 65534), "error log owner");
    kill("TERM", master);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().nth(1))
        == Some("0")
}

#[test]
fn a_missing_worker_tmp_dir_fails_as_in_gunicorn() {
    let dir = scratch_dir("pm-tmpdir");
    std::fs::write(
        dir.join("app.py"),
        "def application(environ, start_response):\n    start_response('200 OK', [])\n    return [b'']\n",
    )
    .unwrap();
    let flags = [
        "--bind",
        "127.0.0.1:0",
        "--worker-tmp-dir",
        "/nonexistent/dir",
    ];
    let ours = run_in(
        &rgunicorn(),
        &dir,
        &[&["rgunicorn:health"], &flags[..]].concat(),
        &[],
    );
    let theirs = run_in(
        &gunicorn(),
        &dir,
        &[&["app:application"], &flags[..]].concat(),
        &[],
    );
    let expected = "/nonexistent/dir doesn't exist. Can't create workertmp.";
    for (who, out) in [("rgunicorn", &ours), ("gunicorn", &theirs)] {
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(255), "{who}: {err}");
        assert!(
            err.contains("Unhandled exception in main loop"),
            "{who}: {err}"
        );
        assert!(err.contains(expected), "{who}: {err}");
    }
}
