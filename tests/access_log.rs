//! The access log as gunicorn writes it: every atom of `access_log_format`
//! in one format, a file reopened on USR1, stdout with `-`, and nothing at
//! all when `accesslog` is not set.

use crate::common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::server::*;
use common::*;

const EVERY_ATOM: &str = r#"%(h)s|%(l)s|%(u)s|%(t)s|%(r)s|%(s)s|%(m)s|%(U)s|%(q)s|%(H)s|%(b)s|%(B)s|%(f)s|%(a)s|%(T)s|%(D)s|%(M)s|%(L)s|%(p)s|%({x-trace}i)s|%({content-type}o)s|%({raw_uri}e)s|%({http_x_trace}e)s|%({missing}i)s"#;

fn raw_request(port: u16, head: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn every_atom_to_a_file_reopened_on_usr1() {
    let dir = scratch_dir("access-atoms");
    let log = dir.join("access.log");
    let server = Server::start(
        &dir,
        &[
            "--access-logfile",
            "access.log",
            "--access-logformat",
            EVERY_ATOM,
        ],
    );
    let resp = raw_request(
        server.port,
        "GET /health/worker?x=1&y=%22 HTTP/1.1\r\nHost: t\r\nUser-Agent: ua \"quoted\"\r\nReferer: http://ref/\r\nAuthorization: Basic YWxpY2U6c2VjcmV0\r\nX-Trace: abc\r\nConnection: close\r\n\r\n",
    );
    let body_len = resp.split("\r\n\r\n").nth(1).unwrap().len();
    server.wait_until(|| {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("/health/worker")
    });
    let text = std::fs::read_to_string(&log).unwrap();
    let line = text.lines().find(|l| l.contains("/health/worker")).unwrap();
    let f: Vec<&str> = line.split('|').collect();
    assert_eq!(f.len(), 24, "{line}");
    assert_eq!(f[0], "127.0.0.1");
    assert_eq!(f[1], "-");
    assert_eq!(f[2], "alice");
    assert!(
        f[3].starts_with('[') && f[3].ends_with(']') && f[3].contains('/'),
        "{line}"
    );
    assert_eq!(f[4], "GET /health/worker?x=1&y=%22 HTTP/1.1");
    assert_eq!(f[5], "200");
    assert_eq!(f[6], "GET");
    assert_eq!(f[7], "/health/worker");
    assert_eq!(f[8], "x=1&y=%22");
    assert_eq!(f[9], "HTTP/1.1");
    assert_eq!(f[10], body_len.to_string());
    assert_eq!(f[11], body_len.to_string());
    assert_eq!(f[12], "http://ref/");
    assert_eq!(f[13], r#"ua \"quoted\""#, "quotes escaped as gunicorn does");
    let micros: u64 = f[15].parse().unwrap();
    assert_eq!(f[14], (micros / 1_000_000).to_string());
    assert_eq!(f[16], (micros / 1000).to_string());
    assert_eq!(
        f[17],
        format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000)
    );
    assert!(f[18].starts_with('<') && f[18].ends_with('>'), "{line}");
    let worker: i32 = f[18].trim_matches(['<', '>']).parse().unwrap();
    assert!(server.worker_pids().contains(&worker));
    assert_eq!(f[19], "abc");
    assert_eq!(f[20], "application/json");
    assert_eq!(f[21], "/health/worker?x=1&y=%22");
    assert_eq!(f[22], "abc");
    assert_eq!(f[23], "-");

    // Rotation: move the file, USR1, and the next lines go to a new file.
    std::fs::rename(&log, dir.join("access.log.1")).unwrap();
    server.signal("USR1");
    server.wait_until(|| {
        // Either worker may answer: ask until a line lands in the new file.
        let _ = server.get("/health/ready");
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("/health/ready")
    });
    assert_eq!(server.stop(), 0);
}

#[test]
fn dash_is_stdout_and_the_log_is_off_unless_configured() {
    let dir = scratch_dir("access-stdout");
    let out = run_in(
        &rgunicorn(),
        &dir,
        &[
            "rgunicorn:health",
            "--check-config",
            "--access-logfile",
            "-",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(0));
    // Served: the line goes to stdout in gunicorn's default format.
    let mut child = std::process::Command::new(rgunicorn())
        .current_dir(&dir)
        .args([
            "rgunicorn:health",
            "--bind",
            "127.0.0.1:0",
            "--workers",
            "1",
            "--access-logfile",
            "-",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let _guard = KillOnDrop(child.id() as i32);
    let stderr = child.stderr.take().unwrap();
    let port = {
        use std::io::BufRead;
        let mut port = None;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(rest) = line.split("Listening at: http://127.0.0.1:").nth(1) {
                port = rest
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect::<String>()
                    .parse::<u16>()
                    .ok();
                break;
            }
        }
        port.unwrap()
    };
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let line = loop {
        assert!(std::time::Instant::now() < deadline, "no access line");
        // Connection refused until the worker listens; then one request.
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.write_all(b"GET /health HTTP/1.0\r\nUser-Agent: t\r\n\r\n");
            let mut sink = String::new();
            let _ = s.read_to_string(&mut sink);
            if sink.starts_with("HTTP/1.") {
                let mut line = String::new();
                use std::io::BufRead;
                stdout.read_line(&mut line).unwrap();
                break line;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let re_end = "\"GET /health HTTP/1.0\" 200 20 \"-\" \"t\"\n";
    assert!(
        line.starts_with("127.0.0.1 - - [") && line.ends_with(re_end),
        "{line:?}"
    );
    let _ = child.kill();
    let _ = child.wait();

    // Without accesslog the workers start no access-log writer thread
    // (and with it they do).
    for (args, expected) in [(&[][..], false), (&["--access-logfile", "a.log"][..], true)] {
        let dir = scratch_dir("access-off");
        let server = Server::start(&dir, args);
        assert_eq!(server.get("/health").unwrap().0, 200);
        // Every worker has answered (so its threads exist) before they
        // are counted: /health/worker names the worker that answered.
        let mut seen = std::collections::HashSet::new();
        server.wait_until(|| {
            if let Ok((200, body)) = server.get("/health/worker") {
                let pid = body
                    .split("\"worker_id\":")
                    .nth(1)
                    .and_then(|r| r.split(',').next().and_then(|p| p.parse::<i32>().ok()));
                seen.extend(pid);
            }
            server.worker_pids().iter().all(|w| seen.contains(w))
        });
        for w in server.worker_pids() {
            let names = thread_names(w);
            assert_eq!(
                names.iter().any(|n| n == "rgunicorn-acces"),
                expected,
                "{args:?}: {names:?}"
            );
        }
        assert_eq!(server.stop(), 0);
    }
}
