//! Listening sockets as users see them: a port already in use fails as in
//! gunicorn whatever `reuse_port` says; unix and several binds serve;
//! wrk's connections spread over the workers; connections waiting in the
//! accept queue survive the replacement of a worker.

use crate::common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use common::server::*;
use common::*;

/// Run a server that must fail to start; (exit code, stderr).
fn failed_start(program: &std::path::Path, args: &[&str]) -> (i32, String) {
    let dir = scratch_dir("sock-inuse");
    std::fs::write(
        dir.join("app.py"),
        "def application(environ, start_response):\n    start_response('200 OK', [])\n    return [b'']\n",
    )
    .unwrap();
    let out = run_in(program, &dir, args, &[]);
    (out.status.code().unwrap_or(-1), text(&out.stderr))
}

#[test]
fn a_port_in_use_fails_as_in_gunicorn_with_or_without_reuse_port() {
    // A plain listener (no SO_REUSEPORT) holds the port.
    let holder = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    let bind = format!("127.0.0.1:{port}");
    let expected = format!("Connection in use: ('127.0.0.1', {port})");
    // The three runs retry for 5 s each: run them side by side.
    let runs: Vec<_> = [
        (rgunicorn(), "rgunicorn:health", false),
        (rgunicorn(), "rgunicorn:health", true),
        (gunicorn(), "app:application", false),
    ]
    .into_iter()
    .map(|(program, app, reuse)| {
        let bind = bind.clone();
        std::thread::spawn(move || {
            let mut args = vec![app, "--bind", bind.as_str()];
            if reuse {
                args.push("--reuse-port");
            }
            (program.clone(), reuse, failed_start(&program, &args))
        })
    })
    .collect();
    for run in runs {
        let (program, reuse, (code, stderr)) = run.join().unwrap();
        let who = format!("{} reuse_port={reuse}", program.display());
        assert_eq!(code, 1, "{who}: {stderr}");
        assert_eq!(stderr.matches(&expected).count(), 5, "{who}: {stderr}");
        assert!(
            stderr.contains(&format!("Can't connect to ('127.0.0.1', {port})")),
            "{who}: {stderr}"
        );
    }
    drop(holder);
}

#[test]
fn unix_and_tcp_binds_serve_together_and_the_socket_file_goes_on_stop() {
    let dir = scratch_dir("sock-unix");
    let path = dir.join("app.sock");
    let unix_bind = format!("unix:{}", path.display());
    // --bind 127.0.0.1:0 comes from the hooks config; a second bind adds the unix socket.
    let server = Server::start(&dir, &["--bind", "127.0.0.1:0", "--bind", &unix_bind]);
    let lines = server.stderr_lines.lock().unwrap().clone();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("Listening at: http://127.0.0.1:") && l.contains(&unix_bind)),
        "{lines:#?}"
    );
    let mut s = std::os::unix::net::UnixStream::connect(&path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: u\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.ends_with(r#"{"status":"healthy"}"#), "{resp}");
    assert_eq!(server.get("/health").unwrap().0, 200);
    assert_eq!(server.stop(), 0);
    assert!(!path.exists(), "the socket file is removed on stop");
}

/// How many of the sockets `inodes_by_port` process `pid` holds.
fn established(pid: i32, inodes_by_port: &std::collections::HashSet<u64>) -> usize {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    fds.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            l.to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse::<u64>()
                .ok()
        })
        .filter(|inode| inodes_by_port.contains(inode))
        .count()
}

/// Inodes of the ESTABLISHED server-side sockets on local port `port`.
fn server_side_inodes(port: u16) -> std::collections::HashSet<u64> {
    let mut out = std::collections::HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        for line in std::fs::read_to_string(table)
            .unwrap_or_default()
            .lines()
            .skip(1)
        {
            let f: Vec<&str> = line.split_whitespace().collect();
            let local_port = f[1]
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port) && f[3] == "01" {
                out.insert(f[9].parse().unwrap_or(0));
            }
        }
    }
    out
}

#[test]
fn wrk_connections_spread_over_two_workers() {
    let wrk = ["/usr/bin/wrk", "/usr/local/bin/wrk"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("wrk is needed (Debian package wrk; .ci/run installs it)");
    let dir = scratch_dir("sock-spread");
    let server = Server::start(&dir, &[]);
    server.wait_until(|| count(&server.hooks(), "post_worker_init") == 2);
    let workers = server.worker_pids();
    assert_eq!(workers.len(), 2);
    let url = format!("http://127.0.0.1:{}/health", server.port);
    for run in 1..=3 {
        let child = Command::new(wrk)
            .args(["-t1", "-c64", "-d5s", &url])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Once wrk has its 64 connections open, count each worker's share.
        // Bounded well inside wrk's 5 s, however loaded the machine is.
        let deadline = Instant::now() + Duration::from_millis(4500);
        let per_worker = loop {
            let inodes = server_side_inodes(server.port);
            let counts: Vec<usize> = workers.iter().map(|&w| established(w, &inodes)).collect();
            if counts.iter().sum::<usize>() >= 64 || Instant::now() > deadline {
                break counts;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let out = child.wait_with_output().unwrap();
        let report = text(&out.stdout);
        let total: usize = per_worker.iter().sum();
        let busiest = *per_worker.iter().max().unwrap();
        eprintln!("run {run}: connections per worker {per_worker:?}");
        assert_eq!(
            total, 64,
            "all of wrk's connections counted: {per_worker:?}"
        );
        assert!(
            busiest * 100 <= total * 70,
            "run {run}: the busiest worker holds {busiest} of {total}: {per_worker:?}"
        );
        assert!(!report.contains("Socket errors"), "{report}");
        assert!(!report.contains("Non-2xx"), "{report}");
    }
    assert_eq!(server.stop(), 0);
}

/// Send a request on a new connection; its status (0 = no response).
fn request_on_new_connection(port: u16, path: &'static str) -> std::thread::JoinHandle<u16> {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    std::thread::spawn(move || {
        let mut s = stream;
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let _ = write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: q\r\nConnection: close\r\n\r\n"
        );
        let mut buf = String::new();
        let _ = s.read_to_string(&mut buf);
        buf.split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0)
    })
}

/// One worker that holds one connection at a time (`worker_connections`
/// set to 1) is busy with a slow request while 5 more connections wait in
/// the accept queue; then the worker is replaced. Every queued connection must
/// be served by the replacement.
fn queued_connections_survive(replace: impl FnOnce(&Server, i32), in_flight_expected: u16) {
    let dir = scratch_dir("sock-queue");
    let server = Server::start_program(
        &testapp(),
        "tests:app",
        &dir,
        &["--workers", "1", "--worker-connections", "1"],
    );
    server.wait_until(|| count(&server.hooks(), "post_worker_init") == 1);
    let worker = server.worker_pids()[0];
    let slow = request_on_new_connection(server.port, "/sleep?s=2");
    // The slow request is being served once the worker has its connection.
    let inodes_wait = Instant::now() + Duration::from_secs(10);
    while established(worker, &server_side_inodes(server.port)) < 1 {
        assert!(Instant::now() < inodes_wait, "slow request not accepted");
        std::thread::sleep(Duration::from_millis(10));
    }
    let queued: Vec<_> = (0..5)
        .map(|_| request_on_new_connection(server.port, "/health"))
        .collect();
    replace(&server, worker);
    let statuses: Vec<u16> = queued.into_iter().map(|q| q.join().unwrap()).collect();
    assert_eq!(statuses, vec![200; 5], "queued connections");
    let slow = slow.join().unwrap();
    assert_eq!(slow, in_flight_expected, "the in-flight request");
    server.wait_until(|| !server.worker_pids().contains(&worker));
    assert_eq!(server.stop(), 0);
}

#[test]
fn queued_connections_survive_a_reload() {
    // HUP: the old worker finishes its slow request, nothing is reset.
    queued_connections_survive(|server, _| server.signal("HUP"), 200);
}

#[test]
fn queued_connections_survive_a_killed_worker() {
    // kill -9: the killed worker's own connection is lost (unavoidable),
    // the ones still in the shared queue are not.
    queued_connections_survive(
        |server, worker| {
            let status = Command::new("kill")
                .args(["-KILL", &worker.to_string()])
                .status()
                .unwrap();
            assert!(status.success());
            server.wait_until(|| count(&server.hooks(), "child_exit") == 1);
        },
        0,
    );
}
