//! ASGI apps served by the built binary (src/python/asgi): streaming both
//! ways, `http.disconnect`, lifespan (startup, shutdown on TERM, a failed
//! startup exits 3), the scope key by key against uvicorn's, an exception
//! (500, the worker lives; after the start, the connection is closed), a
//! CONNECT answered whole and the connection closed after it, a blocked
//! asyncio loop killed after `timeout`, and the migration guide's
//! FastAPI example under rgunicorn and under gunicorn 27.0.1 +
//! UvicornWorker with `examples/gunicorn.conf.py`; websockets (echo, close
//! codes both ways, subprotocols, refusals, errors, the size limit, TERM
//! with a websocket open, the scope against uvicorn's).
//!
//! Python packages (fastapi, uvicorn, uvicorn-worker, gunicorn) come from
//! `target/test-venv` (tests/run installs them), or `ASGI_VENV`.

use crate::common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use common::{rgunicorn, scratch_dir};
use tokio_tungstenite::tungstenite::{
    self,
    protocol::{frame::coding::CloseCode, CloseFrame},
    Message,
};

const UVICORN_WORKER: &str = "uvicorn.workers.UvicornWorker";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The venv with fastapi and uvicorn: `ASGI_VENV`, else target/test-venv.
fn venv() -> PathBuf {
    let v = std::env::var("ASGI_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo().join("target/test-venv"));
    assert!(
        v.join("bin/python").exists(),
        "no venv at {}: run tests/run (it installs fastapi, uvicorn and uvicorn-worker into target/test-venv) or set ASGI_VENV",
        v.display()
    );
    v
}

/// The venv's site-packages, for the embedded interpreter's PYTHONPATH.
fn site_packages() -> String {
    let lib = venv().join("lib");
    let dir = std::fs::read_dir(&lib)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path().join("site-packages"))
        .find(|p| p.join("fastapi").exists())
        .unwrap_or_else(|| panic!("fastapi is not installed in {}", lib.display()));
    dir.to_string_lossy().into_owned()
}

/// A server child: killed (with its workers' group) on drop.
struct Proc {
    child: Child,
    port: u16,
    stderr: Arc<Mutex<Vec<String>>>,
    lines: mpsc::Receiver<String>,
}

impl Proc {
    /// Start `program args` in `dir`; wait for the `Listening at:` line
    /// (rgunicorn, gunicorn) or uvicorn's `running on`, or for an exit.
    fn spawn(program: &Path, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Proc {
        let mut cmd = Command::new(program);
        cmd.current_dir(dir)
            .args(args)
            .env("PYTHONPATH", site_packages())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let err = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let keep = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                eprintln!("server: {line}");
                keep.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        let mut p = Proc {
            child,
            port: 0,
            stderr,
            lines: rx,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while p.port == 0 {
            assert!(Instant::now() < deadline, "no Listening line");
            if let Ok(line) = p.lines.recv_timeout(Duration::from_millis(50)) {
                if let Some(port) = port_in(&line) {
                    p.port = port;
                }
            } else if p.child.try_wait().unwrap().is_some() {
                break;
            }
        }
        p
    }

    /// Wait until a worker answers.
    fn wait_ready(&self) {
        wait_for("a worker to answer", Duration::from_secs(30), || {
            get(self.port, "/pid").is_ok()
        });
    }

    fn log_has(&self, text: &str) -> bool {
        self.stderr.lock().unwrap().iter().any(|l| l.contains(text))
    }

    fn wait_exit(&mut self, within: Duration) -> i32 {
        common::server::wait_exit(&mut self.child, within)
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }
}

impl Drop for Proc {
    /// TERM first, so that a master (ours or gunicorn's) stops its workers
    /// too; SIGKILL only if it is still there after a bounded wait (a
    /// killed master would leave its workers behind).
    fn drop(&mut self) {
        common::server::stop_child(&mut self.child);
    }
}

fn port_in(line: &str) -> Option<u16> {
    let rest = line
        .split("Listening at: http://")
        .nth(1)
        .or_else(|| line.split("running on http://").nth(1))?;
    let rest = rest.split_once(':')?.1;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Run a worker of `tests/apps/asgi_raw.py` in a fresh directory.
fn raw_app(name: &str, args: &[&str], env: &[(&str, &str)]) -> (Proc, PathBuf) {
    let dir = scratch_dir(name);
    std::fs::copy(
        repo().join("tests/apps/asgi_raw.py"),
        dir.join("asgi_raw.py"),
    )
    .unwrap();
    let log = dir.join("asgi.log");
    let mut all_env = vec![("ASGI_LOG", log.to_str().unwrap())];
    all_env.extend_from_slice(env);
    let mut all_args = vec!["asgi_raw:app", "-b", "127.0.0.1:0", "-k", UVICORN_WORKER];
    all_args.extend_from_slice(args);
    let p = Proc::spawn(&rgunicorn(), &dir, &all_args, &all_env);
    (p, log)
}

/// One request, `Connection: close`: (status, head, body).
fn request(port: u16, raw: &str) -> std::io::Result<(u16, String, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(raw.as_bytes())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((status, head.to_string(), body.to_string()))
}

fn get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    request(
        port,
        &format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"),
    )
    .map(|(s, _, b)| (s, b))
}

fn wait_for(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn read_log(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Read a chunked body's next chunk (its data), `None` at the last one.
fn next_chunk(r: &mut BufReader<TcpStream>) -> Option<Vec<u8>> {
    let mut size = String::new();
    r.read_line(&mut size).unwrap();
    let n = usize::from_str_radix(size.trim(), 16).unwrap();
    let mut data = vec![0; n + 2];
    r.read_exact(&mut data).unwrap();
    data.truncate(n);
    (n > 0).then_some(data)
}

#[test]
fn streams_both_ways_and_the_app_sees_the_disconnect() {
    let (p, log) = raw_app("asgi-stream", &["-w", "1"], &[]);
    p.wait_ready();

    // The first chunk of the response comes back before the request body
    // is complete: both directions stream.
    let s = TcpStream::connect(("127.0.0.1", p.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    // (Content-Length: rgunicorn's gate holds a small chunked body back
    // until it is complete, as gunicorn reads it before the app.)
    w.write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\nhello")
        .unwrap();
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
    }
    assert_eq!(next_chunk(&mut r).unwrap(), b"hello");
    w.write_all(b" world").unwrap();
    assert_eq!(next_chunk(&mut r).unwrap(), b" world");
    assert_eq!(next_chunk(&mut r), None);

    // A big body through the pump, back intact.
    let big: String = (0..200_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let (status, _, body) = request(
        p.port,
        &format!(
            "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{big}",
            big.len()
        ),
    )
    .unwrap();
    assert_eq!(status, 200);
    let mut data = BufReader::new(body.as_bytes());
    let mut echoed = String::new();
    loop {
        let mut size = String::new();
        data.read_line(&mut size).unwrap();
        let n = usize::from_str_radix(size.trim(), 16).unwrap();
        let mut chunk = vec![0; n + 2];
        data.read_exact(&mut chunk).unwrap();
        echoed.push_str(std::str::from_utf8(&chunk[..n]).unwrap());
        if n == 0 {
            break;
        }
    }
    assert_eq!(echoed.len(), big.len());
    assert!(echoed == big);

    // A streamed response whose client goes away: the app's receive()
    // returns http.disconnect.
    let mut s = TcpStream::connect(("127.0.0.1", p.port)).unwrap();
    s.write_all(b"GET /stream HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 4096];
    let mut got = 0;
    while got < 4096 {
        got += s.read(&mut buf).unwrap();
    }
    drop(s);
    wait_for(
        "http.disconnect in the app",
        Duration::from_secs(10),
        || read_log(&log).iter().any(|l| l == "disconnect /stream"),
    );
}

#[test]
fn lifespan_runs_in_each_worker_and_shutdown_on_term() {
    let (mut p, log) = raw_app("asgi-lifespan", &["-w", "2"], &[]);
    let port = p.port;
    wait_for("two startups", Duration::from_secs(20), || {
        read_log(&log)
            .iter()
            .filter(|l| l.starts_with("startup"))
            .count()
            == 2
    });
    p.wait_ready();
    // The lifespan state reaches each request's scope (a copy).
    let (status, body) = get(port, "/state").unwrap();
    assert_eq!(status, 200);
    let (_, pid) = get(port, "/pid").unwrap();
    let started_by: Vec<String> = read_log(&log)
        .iter()
        .filter_map(|l| l.strip_prefix("startup ").map(str::to_string))
        .collect();
    assert!(started_by.contains(&body), "{body} not in {started_by:?}");
    assert!(started_by.contains(&pid));
    p.signal("TERM");
    assert_eq!(p.wait_exit(Duration::from_secs(20)), 0);
    let mut shut: Vec<String> = read_log(&log)
        .iter()
        .filter_map(|l| l.strip_prefix("shutdown ").map(str::to_string))
        .collect();
    let mut started = started_by.clone();
    shut.sort();
    started.sort();
    assert_eq!(shut, started, "every worker ran its lifespan shutdown");
    assert!(p.log_has("Application shutdown complete."));
}

#[test]
fn lifespan_startup_failure_exits_3_with_the_traceback() {
    let (mut p, log) = raw_app("asgi-fail", &["-w", "1"], &[("ASGI_FAIL_STARTUP", "1")]);
    assert_eq!(p.wait_exit(Duration::from_secs(20)), 3);
    assert!(p.log_has("RuntimeError: the database is down"));
    assert!(p.log_has("Traceback (most recent call last):"));
    assert!(p.log_has("Application startup failed. Exiting."));
    assert!(read_log(&log).is_empty());
}

/// uvicorn serving tests/apps/asgi_raw.py: the reference scopes.
fn uvicorn_raw_app(name: &str) -> Proc {
    let dir = scratch_dir(name);
    std::fs::copy(
        repo().join("tests/apps/asgi_raw.py"),
        dir.join("asgi_raw.py"),
    )
    .unwrap();
    let args = [
        "-m",
        "uvicorn",
        "asgi_raw:app",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
    ];
    let uv = Proc::spawn(&venv().join("bin/python"), &dir, &args, &[]);
    assert!(uv.port != 0, "uvicorn did not start");
    uv
}

/// A scope as the app prints it: one `key<TAB>json` line per key.
fn scope_map(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(|l| {
            let (k, v) = l.split_once('\t').unwrap();
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// Ours and uvicorn's scope for the same request, key by key: the same
/// keys; `client`/`server` on the same host (the ports differ); `state` as
/// the lifespan left it (it records the worker's pid); `special` checks the
/// keys it knows (returns true), everything else must be equal.
fn assert_same_scope(
    ours: &BTreeMap<String, String>,
    theirs: &BTreeMap<String, String>,
    special: impl Fn(&str, &str, &str) -> bool,
) {
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        theirs.keys().collect::<Vec<_>>()
    );
    for (k, v) in theirs {
        let o = &ours[k];
        match k.as_str() {
            "client" | "server" => {
                assert_eq!(o.split(',').next(), v.split(',').next(), "{k}: {o} vs {v}")
            }
            "state" => assert!(o.contains("started_by") && v.contains("started_by")),
            _ if special(k, o, v) => {}
            _ => assert_eq!(o, v, "scope[{k:?}]"),
        }
    }
}

#[test]
fn scope_matches_uvicorn_key_by_key() {
    let (p, _log) = raw_app("asgi-scope", &["-w", "1"], &[]);
    p.wait_ready();
    let uv = uvicorn_raw_app("asgi-scope-uvicorn");
    let requests = [
        "GET /scope/caf%C3%A9%20x?q=a%20b&r=1 HTTP/1.1\r\nHost: example.test\r\n\
         User-Agent: t/1\r\nX-Custom: Value One\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        // A fragment is no part of path or query; Content-Length as sent.
        "POST /scope/p?q=1#frag HTTP/1.1\r\nHost: h\r\nContent-Length: 003\r\n\
         Connection: close\r\n\r\nabc",
    ];
    for raw in requests {
        let scope = |port| {
            let (status, _, body) = request(port, raw).unwrap();
            assert_eq!(status, 200, "{body}");
            scope_map(&body)
        };
        let ours = scope(p.port);
        assert_same_scope(&ours, &scope(uv.port), |_, _, _| false);
        if raw.contains("003") {
            assert!(
                ours["headers"].contains(r#"["content-length", "003"]"#),
                "{ours:?}"
            );
        }
    }
}

#[test]
fn root_path_is_in_the_scope_and_prefixes_path() {
    let (p, _log) = raw_app("asgi-root", &["-w", "1", "--root-path", "/api"], &[]);
    p.wait_ready();
    let (status, body) = get(p.port, "/scope%20x?a=1").unwrap();
    assert_eq!(status, 200, "{body}");
    let line = |k: &str| {
        body.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}\t")))
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(line("root_path"), r#""/api""#);
    assert_eq!(line("path"), r#""/api/scope x""#);
    assert_eq!(line("raw_path"), r#""/api/scope%20x""#);
    assert_eq!(line("query_string"), r#""a=1""#);
}

#[test]
fn a_proxy_protocol_header_names_the_scope_client() {
    // As gunicorn's own asgi worker: the client a trusted PROXY header
    // names (uvicorn's worker has no proxy_protocol).
    let (p, _log) = raw_app("asgi-proxy", &["-w", "1", "--proxy-protocol=v1"], &[]);
    p.wait_ready();
    let (status, _, body) = request(
        p.port,
        "PROXY TCP4 198.51.100.7 203.0.113.9 4711 8443\r\n\
         GET /scope HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let client = body
        .lines()
        .find_map(|l| l.strip_prefix("client\t"))
        .unwrap_or_default()
        .replace(char::is_whitespace, "");
    assert_eq!(client, r#"["198.51.100.7",4711]"#);
}

/// A 2xx to CONNECT is sent whole, as gunicorn sends it (hyper alone
/// would make it a tunnel: no Content-Length, no body), and the connection
/// is closed after it, as gunicorn closes it.
#[test]
fn a_connect_is_answered_as_any_request_then_closed() {
    let (p, _log) = raw_app("asgi-connect", &["-w", "1"], &[]);
    p.wait_ready();
    // No `Connection: close` and no half-close: the server ends it.
    let (status, head, body) = request(
        p.port,
        "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
    )
    .unwrap();
    assert_eq!((status, body.as_str()), (200, "CONNECT answered"), "{head}");
    let fields: Vec<String> = head.lines().skip(1).map(str::to_ascii_lowercase).collect();
    assert!(fields.iter().any(|f| f == "content-length: 16"), "{head}");
    assert!(fields.iter().any(|f| f == "connection: close"), "{head}");
}

#[test]
fn an_asgi2_app_is_served() {
    let dir = scratch_dir("asgi2");
    std::fs::copy(
        repo().join("tests/apps/asgi_raw.py"),
        dir.join("asgi_raw.py"),
    )
    .unwrap();
    let p = Proc::spawn(
        &rgunicorn(),
        &dir,
        &["asgi_raw:Asgi2", "-b", "127.0.0.1:0", "-k", UVICORN_WORKER],
        &[],
    );
    p.wait_ready();
    assert_eq!(get(p.port, "/x").unwrap(), (200, "asgi2 /x".to_string()));
}

#[test]
fn an_exception_is_a_500_and_the_worker_keeps_serving() {
    let (p, _log) = raw_app("asgi-error", &["-w", "1"], &[]);
    p.wait_ready();
    let (_, pid) = get(p.port, "/pid").unwrap();
    let (status, body) = get(p.port, "/error").unwrap();
    assert_eq!(status, 500);
    assert!(body.contains("Internal Server Error"), "{body}");
    wait_for("the traceback", Duration::from_secs(10), || {
        p.log_has("ValueError: boom in the app")
    });
    assert!(p.log_has("Exception in ASGI application"));
    // Failing after the response started: the connection is closed without
    // the chunked terminator.
    let (status, _, body) =
        request(p.port, "GET /error-after-start HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("partial"), "{body}");
    assert!(!body.ends_with("0\r\n\r\n"), "{body:?}");
    let (status, again) = get(p.port, "/pid").unwrap();
    assert_eq!((status, again), (200, pid), "the same worker serves on");
}

#[test]
fn a_blocked_event_loop_is_killed_after_timeout() {
    let (p, _log) = raw_app("asgi-block", &["-w", "1", "--timeout", "2"], &[]);
    p.wait_ready();
    let (_, pid) = get(p.port, "/pid").unwrap();
    let started = Instant::now();
    let port = p.port;
    let blocked = std::thread::spawn(move || get(port, "/block?60"));
    wait_for("WORKER TIMEOUT", Duration::from_secs(15), || {
        p.log_has("WORKER TIMEOUT")
    });
    assert!(started.elapsed() < Duration::from_secs(10));
    // The stuck request gets gunicorn's 500 or a closed connection.
    let r = blocked.join().unwrap();
    assert!(
        r.as_ref().map_or(true, |(s, _)| *s == 500 || *s == 0),
        "{r:?}"
    );
    wait_for("a new worker", Duration::from_secs(20), || {
        get(p.port, "/pid").is_ok_and(|(s, b)| s == 200 && b != pid)
    });
}

#[test]
fn asyncio_and_anyio_task_semantics_as_under_uvicorn() {
    // The request's task is asyncio's Task around rgunicorn's own stepping
    // object (no wrapper coroutine): cancel scopes, task groups, the
    // current task, context variables and a response sent by a child task
    // must behave as under gunicorn + UvicornWorker.
    let dir = scratch_dir("asgi-tasks");
    std::fs::copy(
        repo().join("tests/apps/asgi_tasks.py"),
        dir.join("asgi_tasks.py"),
    )
    .unwrap();
    let args = [
        "asgi_tasks:app",
        "-b",
        "127.0.0.1:0",
        "-w",
        "1",
        "-k",
        UVICORN_WORKER,
    ];
    let ours = Proc::spawn(&rgunicorn(), &dir, &args, &[]);
    let theirs = Proc::spawn(&venv().join("bin/gunicorn"), &dir, &args, &[]);
    ours.wait_ready();
    theirs.wait_ready();
    let expected = [
        ("/timeout", r#"{"timed_out": true}"#),
        ("/shield", r#"{"cancelled_caught": true}"#),
        ("/group", r#"{"done": [0, 1, 2]}"#),
        ("/cancel-group", r#"{"cancel_called": true}"#),
        (
            "/own-task",
            r#"{"anyio_id": true, "cancelling": 0, "same_task": true, "var": "this request"}"#,
        ),
        ("/self-cancel", r#"{"caught": true}"#),
        ("/child-sends", r#"{"from": "child"}"#),
    ];
    for (path, body) in expected {
        let a = get(ours.port, path).unwrap();
        let b = get(theirs.port, path).unwrap();
        assert_eq!(a, (200, body.to_string()), "{path} under rgunicorn");
        assert_eq!(a, b, "{path}: rgunicorn vs gunicorn + UvicornWorker");
    }
    assert!(!ours.log_has("Traceback"), "no error logged");
}

/// The three health routes: (status, body) each.
fn health_routes(port: u16) -> Vec<(u16, String)> {
    ["/health", "/health/worker", "/health/ready"]
        .iter()
        .map(|path| get(port, path).unwrap())
        .collect()
}

#[test]
fn fastapi_example_with_the_production_config_as_under_gunicorn() {
    let conf = "examples/gunicorn.conf.py";
    let app = "examples.fastapi_app.main:create_app()";
    let env = [("PORT", "0"), ("WORKERS", "2")];
    let ours = Proc::spawn(&rgunicorn(), &repo(), &[app, "-c", conf], &env);
    let wait_200 = |port: u16| {
        wait_for("the app", Duration::from_secs(30), || {
            get(port, "/health").is_ok_and(|(s, _)| s == 200)
        })
    };
    wait_200(ours.port);
    let theirs = Proc::spawn(
        &venv().join("bin/gunicorn"),
        &repo(),
        &[app, "-c", conf],
        &env,
    );
    wait_200(theirs.port);
    let a = health_routes(ours.port);
    let b = health_routes(theirs.port);
    assert_eq!(a[0], (200, r#"{"status":"healthy"}"#.to_string()));
    assert_eq!(a[2], (200, r#"{"status":"ready"}"#.to_string()));
    let prefix = r#"{"status":"healthy","worker_id":"#;
    assert_eq!(a[1].0, 200);
    assert!(
        a[1].1.starts_with(prefix) && a[1].1.contains(r#","uptime_seconds":"#),
        "{}",
        a[1].1
    );
    // The same statuses and bodies as gunicorn + UvicornWorker (pid and
    // uptime aside).
    let shape = |(s, body): &(u16, String)| {
        let cut = body.find(r#""worker_id":"#).map_or(body.len(), |i| i);
        (*s, body[..cut].to_string())
    };
    assert_eq!(
        a.iter().map(shape).collect::<Vec<_>>(),
        b.iter().map(shape).collect::<Vec<_>>()
    );
    assert_eq!(
        get(ours.port, "/nope").unwrap(),
        get(theirs.port, "/nope").unwrap()
    );
}

#[test]
fn new_connections_avoid_a_worker_whose_loop_is_blocked() {
    // gunicorn + UvicornWorker: a worker whose loop blocks stops accepting,
    // so new connections go to its sibling. rgunicorn's worker keeps its
    // own runtime turning, so it must step back itself (after about a
    // second without a loop turn) instead of taking connections that would
    // wait for the master's timeout and its 500.
    let (p, log) = raw_app("asgi-block-accept", &["-w", "2", "--timeout", "30"], &[]);
    p.wait_ready();
    let port = p.port;
    let blocked = std::thread::spawn(move || get(port, "/block?8"));
    wait_for("the block", Duration::from_secs(10), || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("block "))
    });
    let blocked_pid = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("block ").map(str::to_string))
        .unwrap();
    // Fresh connections, one after another, each bounded: once the blocked
    // worker has stepped back, every one is answered by the other worker.
    let quick_pid = || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        s.write_all(b"GET /pid HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).ok()?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        text.starts_with("HTTP/1.1 200")
            .then(|| text.rsplit("\r\n\r\n").next().unwrap_or("").to_string())
    };
    wait_for("20 answers in a row", Duration::from_secs(6), || {
        (0..20).all(|_| quick_pid().is_some_and(|pid| pid != blocked_pid))
    });
    let (status, body) = blocked.join().unwrap().unwrap();
    assert_eq!((status, body.as_str()), (200, "unblocked"));
}

// ---------------------------------------------------------------------------
// Websockets (src/asgi/websocket.rs), driven by tungstenite's blocking client.

type Ws = tungstenite::WebSocket<TcpStream>;

/// Open a websocket on `path`, offering `protocols`: the socket and the
/// handshake's response, or the handshake's error (an HTTP refusal is
/// `tungstenite::Error::Http`).
fn ws_connect(
    port: u16,
    path: &str,
    protocols: &[&str],
    headers: &[(&str, &str)],
) -> Result<(Ws, tungstenite::handshake::client::Response), tungstenite::Error> {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let uri = format!("ws://127.0.0.1:{port}{path}").parse().unwrap();
    let mut req = tungstenite::ClientRequestBuilder::new(uri);
    for p in protocols {
        req = req.with_sub_protocol(*p);
    }
    for (k, v) in headers {
        req = req.with_header(*k, *v);
    }
    tungstenite::client(req, stream).map_err(|e| match e {
        tungstenite::HandshakeError::Failure(e) => e,
        tungstenite::HandshakeError::Interrupted(_) => panic!("blocking handshake interrupted"),
    })
}

fn ws_open(port: u16, path: &str) -> Ws {
    ws_connect(port, path, &[], &[]).unwrap().0
}

/// The next data or close message (pings and pongs skipped).
fn ws_next(ws: &mut Ws) -> Message {
    loop {
        match ws.read().unwrap() {
            Message::Ping(_) | Message::Pong(_) => continue,
            m => return m,
        }
    }
}

/// The close frame the server sent: (code, reason).
fn ws_closed_with(ws: &mut Ws) -> (u16, String) {
    match ws_next(ws) {
        Message::Close(Some(f)) => (u16::from(f.code), f.reason.to_string()),
        m => panic!("expected a close frame, got {m:?}"),
    }
}

/// The HTTP status a refused handshake got, and its response.
fn ws_refused(port: u16, path: &str) -> (u16, tungstenite::http::Response<Option<Vec<u8>>>) {
    match ws_connect(port, path, &[], &[]) {
        Err(tungstenite::Error::Http(resp)) => (resp.status().as_u16(), *resp),
        Ok((_, resp)) => panic!("{path} accepted: {resp:?}"),
        Err(e) => panic!("{path}: {e}"),
    }
}

fn wait_log_line(log: &Path, line: &str) {
    wait_for(line, Duration::from_secs(10), || {
        read_log(log).iter().any(|l| l == line)
    });
}

#[test]
fn websocket_echo_close_codes_and_subprotocols() {
    let (p, log) = raw_app("ws-echo", &["-w", "1"], &[]);
    p.wait_ready();

    // The app picks chat.v2 among the offered subprotocols; its extra
    // accept header is in the 101.
    let (mut ws, resp) = ws_connect(p.port, "/ws/echo", &["chat.v1", "chat.v2"], &[]).unwrap();
    assert_eq!(resp.status().as_u16(), 101);
    assert_eq!(resp.headers()["sec-websocket-protocol"], "chat.v2");
    assert_eq!(resp.headers()["x-accepted"], "yes");
    ws.send(Message::text("hello")).unwrap();
    assert_eq!(ws_next(&mut ws), Message::text("hello"));
    ws.send(Message::binary(vec![0u8, 1, 2, 255])).unwrap();
    assert_eq!(ws_next(&mut ws), Message::binary(vec![0u8, 1, 2, 255]));
    // Pings are answered by the server.
    ws.send(Message::Ping("are you there".into())).unwrap();
    match ws.read().unwrap() {
        Message::Pong(p) => assert_eq!(&p[..], b"are you there"),
        m => panic!("expected a pong, got {m:?}"),
    }
    // The client closes: the app gets its code and reason, the server
    // answers the close.
    ws.close(Some(CloseFrame {
        code: CloseCode::from(4000),
        reason: "bye".into(),
    }))
    .unwrap();
    assert_eq!(ws_closed_with(&mut ws), (4000, "bye".to_string()));
    wait_log_line(&log, "ws-disconnect /ws/echo 4000 bye");

    // Not offering the app's subprotocol: none is chosen.
    match ws_connect(p.port, "/ws/echo", &["chat.v1"], &[]) {
        Err(tungstenite::Error::Protocol(
            tungstenite::error::ProtocolError::SecWebSocketSubProtocolError(
                tungstenite::error::SubProtocolError::NoSubProtocol,
            ),
        )) => {}
        r => panic!(
            "expected a 101 without a subprotocol: {:?}",
            r.map(|(_, r)| r)
        ),
    }

    // The app closes with its code and reason; its receive then gives that
    // code, and a send after the close raises.
    let (mut ws, resp) = ws_connect(p.port, "/ws/echo", &[], &[]).unwrap();
    assert!(resp.headers().get("sec-websocket-protocol").is_none());
    ws.send(Message::text("close 4001 done")).unwrap();
    assert_eq!(ws_closed_with(&mut ws), (4001, "done".to_string()));
    wait_log_line(&log, "ws-closed /ws/echo 4001 done");
    wait_for("the send after close", Duration::from_secs(10), || {
        read_log(&log)
            .iter()
            .any(|l| l.starts_with("ws-send-after-close "))
    });

    // A reason longer than a close frame holds is cut (at a character).
    let mut ws = ws_open(p.port, "/ws/echo");
    ws.send(Message::text(format!("close 4002 {}", "é".repeat(100))))
        .unwrap();
    let (code, reason) = ws_closed_with(&mut ws);
    assert_eq!((code, reason.len()), (4002, 122), "{reason}");

    // An app that returns without closing: close 1000.
    let mut ws = ws_open(p.port, "/ws/echo");
    ws.send(Message::text("return")).unwrap();
    assert_eq!(ws_closed_with(&mut ws).0, 1000);

    // A client that goes away without a close: 1006 for the app.
    let mut ws = ws_open(p.port, "/ws/gone");
    ws.send(Message::text("hi")).unwrap();
    assert_eq!(ws_next(&mut ws), Message::text("hi"));
    ws.get_mut().shutdown(std::net::Shutdown::Both).unwrap();
    drop(ws);
    wait_log_line(&log, "ws-disconnect /ws/gone 1006 None");
}

#[test]
fn websocket_refusals_and_errors_leave_the_worker_serving() {
    let (p, _log) = raw_app("ws-refuse", &["-w", "1"], &[]);
    p.wait_ready();
    let (_, pid) = get(p.port, "/pid").unwrap();

    // websocket.close before accept: 403, as uvicorn.
    assert_eq!(ws_refused(p.port, "/ws/reject").0, 403);
    // An exception, or returning, before accept: gunicorn's 500.
    let (status, resp) = ws_refused(p.port, "/ws/error");
    assert_eq!(status, 500);
    let body = String::from_utf8(resp.body().clone().unwrap_or_default()).unwrap();
    assert!(body.contains("Internal Server Error"), "{body}");
    wait_for("the traceback", Duration::from_secs(10), || {
        p.log_has("ValueError: boom before accept")
    });
    assert_eq!(ws_refused(p.port, "/ws/return").0, 500);
    wait_for("the error", Duration::from_secs(10), || {
        p.log_has("ASGI callable returned without completing handshake.")
    });
    // The websocket.http.response extension: the app's own answer.
    let (status, resp) = ws_refused(p.port, "/ws/response");
    assert_eq!(status, 418);
    assert_eq!(resp.headers()["x-teapot"], "yes");
    assert_eq!(resp.body().as_deref(), Some(&b"short and stout"[..]));

    // Handshakes the server refuses itself (gunicorn's checks).
    let handshake = |version: &str, key: &str| {
        request(
            p.port,
            &format!(
                "GET /ws/echo HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Version: {version}\r\nSec-WebSocket-Key: {key}\r\n\r\n"
            ),
        )
        .unwrap()
    };
    let (status, head, _) = handshake("12", "dGhlIHNhbXBsZSBub25jZQ==");
    assert_eq!(status, 426);
    assert!(
        head.to_ascii_lowercase()
            .contains("sec-websocket-version: 13"),
        "{head}"
    );
    assert_eq!(handshake("13", "not a key").0, 400);

    // An exception after accept: close 1011, the traceback logged.
    let mut ws = ws_open(p.port, "/ws/echo");
    ws.send(Message::text("raise")).unwrap();
    assert_eq!(ws_closed_with(&mut ws).0, 1011);
    wait_for("the traceback", Duration::from_secs(10), || {
        p.log_has("RuntimeError: boom after accept")
    });

    // The same worker serves on, websockets and HTTP.
    let mut ws = ws_open(p.port, "/ws/echo");
    ws.send(Message::text("pid")).unwrap();
    assert_eq!(ws_next(&mut ws), Message::text(pid.clone()));
    assert_eq!(get(p.port, "/pid").unwrap(), (200, pid));
}

#[test]
fn a_message_over_websocket_max_message_size_closes_with_1009() {
    let (p, log) = raw_app(
        "ws-size",
        &["-w", "1", "--websocket-max-message-size", "1024"],
        &[],
    );
    p.wait_ready();
    assert!(
        !p.log_has("websocket_max_message_size"),
        "warned as not implemented"
    );
    let mut ws = ws_open(p.port, "/ws/echo");
    let fits = "x".repeat(1024);
    ws.send(Message::text(fits.clone())).unwrap();
    assert_eq!(ws_next(&mut ws), Message::text(fits));
    ws.send(Message::binary(vec![7u8; 1025])).unwrap();
    assert_eq!(ws_closed_with(&mut ws).0, 1009);
    wait_log_line(&log, "ws-disconnect /ws/echo 1009 Message too big");
    // The worker serves on.
    let mut ws = ws_open(p.port, "/ws/echo");
    ws.send(Message::text("again")).unwrap();
    assert_eq!(ws_next(&mut ws), Message::text("again"));
}

#[test]
fn an_open_websocket_is_closed_with_1012_on_term_and_the_worker_exits() {
    let (mut p, log) = raw_app("ws-term", &["-w", "1", "--graceful-timeout", "30"], &[]);
    p.wait_ready();
    let mut ws = ws_open(p.port, "/ws/term");
    ws.send(Message::text("hi")).unwrap();
    assert_eq!(ws_next(&mut ws), Message::text("hi"));
    let started = Instant::now();
    p.signal("TERM");
    // As uvicorn's shutdown: 1012 (service restart) to client and app, at
    // once rather than at graceful_timeout.
    assert_eq!(ws_closed_with(&mut ws).0, 1012);
    assert_eq!(p.wait_exit(Duration::from_secs(20)), 0);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let lines = read_log(&log);
    assert!(
        lines
            .iter()
            .any(|l| l == "ws-disconnect /ws/term 1012 None"),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("shutdown ")),
        "{lines:?}"
    );
}

#[test]
fn websocket_scope_matches_uvicorn_key_by_key() {
    let (p, _log) = raw_app("ws-scope", &["-w", "1"], &[]);
    p.wait_ready();
    let uv = uvicorn_raw_app("ws-scope-uvicorn");
    let scope = |port| {
        let (mut ws, _) = ws_connect(
            port,
            "/ws/scope/caf%C3%A9%20x?q=a%20b&r=1",
            &["chat.v1", "chat.v2"],
            &[("X-Custom", "Value One")],
        )
        .unwrap();
        let Message::Text(text) = ws_next(&mut ws) else {
            panic!("no scope")
        };
        let _ = ws.close(None);
        scope_map(&text)
    };
    // The client's key is new on each connection; the host has the port.
    assert_same_scope(&scope(p.port), &scope(uv.port), |k, ours, theirs| {
        if k != "headers" {
            return false;
        }

        // [["name", "value"], ...] (no quotes or brackets inside here).
        let strip = |h: &str| {
            h.trim_start_matches("[[\"")
                .trim_end_matches("\"]]")
                .split("\"], [\"")
                .filter(|pair| {
                    !pair.starts_with("sec-websocket-key\"") && !pair.starts_with("host\"")
                })
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        assert_eq!(strip(ours), strip(theirs));
        true
    });
}

#[test]
fn the_server_pings_an_open_websocket_as_uvicorn_does() {
    let (p, _log) = raw_app("ws-ping", &["-w", "1"], &[]);
    p.wait_ready();
    let mut ws = ws_open(p.port, "/ws/echo");
    ws.get_mut()
        .set_read_timeout(Some(Duration::from_secs(40)))
        .unwrap();
    // uvicorn's keepalive: a ping after 20 s (tungstenite's client answers
    // it), and the connection stays open.
    let started = Instant::now();
    match ws.read().unwrap() {
        Message::Ping(_) => {}
        m => panic!("expected a ping, got {m:?}"),
    }
    let after = started.elapsed();
    assert!(after >= Duration::from_secs(19), "{after:?}");
    ws.send(Message::text("still here")).unwrap();
    assert_eq!(ws_next(&mut ws), Message::text("still here"));
}

/// uvloop with an app module that imports nothing, in a venv whose
/// start-up does not import `threading` (no .pth file does): CPython
/// 3.10-3.12 take the first thread to import `threading` for the main
/// thread, so before the master imported it, the worker's asyncio thread
/// became "main" and uvloop's set_wakeup_fd failed every worker.
#[test]
fn uvloop_serves_an_app_that_imports_nothing() {
    let dir = scratch_dir("asgi-uvloop-bare");
    let isolated = dir.join("venv");
    let made = Command::new(venv().join("bin/python"))
        .args(["-m", "venv", "--without-pip"])
        .arg(&isolated)
        .status()
        .unwrap();
    assert!(made.success());
    // The scenario needs an interpreter that starts without `threading`.
    let preloaded = Command::new(isolated.join("bin/python"))
        .args(["-c", "import sys; print('threading' in sys.modules)"])
        .output()
        .unwrap();
    assert_eq!(common::text(&preloaded.stdout).trim(), "False");
    // A binary in a venv's bin/ runs with that venv, as its python would.
    let binary = isolated.join("bin/rgunicorn");
    std::fs::copy(rgunicorn(), &binary).unwrap();
    std::fs::write(
        dir.join("bare.py"),
        "async def app(scope, receive, send):\n\
         \x20   if scope['type'] != 'http':\n\
         \x20       return\n\
         \x20   await send({'type': 'http.response.start', 'status': 200, 'headers': []})\n\
         \x20   await send({'type': 'http.response.body', 'body': b'bare'})\n",
    )
    .unwrap();
    for class in [None, Some(UVICORN_WORKER)] {
        let mut args = vec!["bare:app", "-b", "127.0.0.1:0", "--log-level", "debug"];
        if let Some(class) = class {
            args.extend(["-k", class]);
        }
        let mut p = Proc::spawn(&binary, &dir, &args, &[]);
        wait_for("a worker to answer", Duration::from_secs(30), || {
            get(p.port, "/").is_ok_and(|(s, _)| s == 200) || p.log_has("Worker failed to boot")
        });
        assert_eq!(get(p.port, "/").unwrap(), (200, "bare".to_string()));
        assert!(p.log_has("Using uvloop event loop"), "{class:?}");
        p.signal("TERM");
        assert_eq!(p.wait_exit(Duration::from_secs(20)), 0);
    }
}

/// A project's own `UvicornWorker` subclass, as uvicorn's deployment docs
/// suggest: its CONFIG_KWARGS reach the scope (`root_path`), the proxy
/// handling (`forwarded_allow_ips`, `proxy_headers`) and the responses
/// (`headers`), the same as under gunicorn 27.0.1 with the same class; what
/// rgunicorn cannot honour (another key, an overridden method) is named in
/// one warning.
#[test]
fn a_uvicorn_worker_subclass_brings_its_config_kwargs() {
    let dir = scratch_dir("asgi-worker-subclass");
    std::fs::copy(
        repo().join("tests/apps/asgi_raw.py"),
        dir.join("asgi_raw.py"),
    )
    .unwrap();
    std::fs::write(
        dir.join("project_workers.py"),
        "from uvicorn.workers import UvicornWorker\n\
         \n\
         class ProxiedWorker(UvicornWorker):\n\
         \x20   CONFIG_KWARGS = {'loop': 'asyncio', 'http': 'h11', 'root_path': '/api',\n\
         \x20                    'forwarded_allow_ips': '10.9.8.7', 'server_header': False,\n\
         \x20                    'headers': [['x-served-by', 'edge']]}\n\
         \n\
         \x20   def init_process(self):\n\
         \x20       super().init_process()\n\
         \n\
         class NoProxyWorker(UvicornWorker):\n\
         \x20   CONFIG_KWARGS = {'proxy_headers': False}\n",
    )
    .unwrap();
    let forwarded = "GET /scope HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 1.2.3.4\r\n\
                     X-Forwarded-Proto: https\r\nConnection: close\r\n\r\n";
    let line = |body: &str, k: &str| {
        body.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}\t")))
            .unwrap_or_default()
            .to_string()
    };
    let gunicorn = common::gunicorn();
    let mut seen = Vec::new();
    for class in [
        "project_workers.ProxiedWorker",
        "project_workers.NoProxyWorker",
    ] {
        let mut answers = Vec::new();
        for program in [rgunicorn(), gunicorn.clone()] {
            let args = ["asgi_raw:app", "-b", "127.0.0.1:0", "-k", class];
            let mut p = Proc::spawn(&program, &dir, &args, &[]);
            p.wait_ready();
            let (status, head, body) = request(p.port, forwarded).unwrap();
            assert_eq!(status, 200, "{body}");
            let served_by = head
                .lines()
                .find_map(|l| l.strip_prefix("x-served-by: "))
                .map(str::to_string);
            answers.push((
                line(&body, "root_path"),
                line(&body, "path"),
                line(&body, "client").split(',').next().unwrap().to_string(),
                line(&body, "scheme"),
                served_by,
            ));
            if program == rgunicorn() {
                let warned: Vec<String> = p
                    .stderr
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|l| l.contains("[WARNING]") && l.contains(class))
                    .cloned()
                    .collect();
                seen.push(warned);
            }
            p.signal("TERM");
            assert_eq!(p.wait_exit(Duration::from_secs(20)), 0);
        }
        assert_eq!(answers[0], answers[1], "{class}: rgunicorn vs gunicorn");
        // The settings took effect, not only agree: no proxy trusted here.
        assert_eq!(answers[0].2, "[\"127.0.0.1\"", "{class}");
        assert_eq!(answers[0].3, "\"http\"", "{class}");
        if class.ends_with("ProxiedWorker") {
            assert_eq!(answers[0].0, "\"/api\"");
            assert_eq!(answers[0].4.as_deref(), Some("edge"));
        } else {
            assert_eq!((answers[0].0.as_str(), &answers[0].4), ("\"\"", &None));
        }
    }
    let proxied = &seen[0];
    assert_eq!(proxied.len(), 1, "{proxied:?}");
    assert!(
        proxied[0].contains("CONFIG_KWARGS[\"server_header\"]")
            && proxied[0].contains("init_process()")
            && !proxied[0].contains("http"),
        "{proxied:?}"
    );
    assert!(seen[1].is_empty(), "{:?}", seen[1]);
}

/// `limit_concurrency` from a UvicornWorker class: above that many
/// requests in progress in a worker, uvicorn's 503.
#[test]
fn limit_concurrency_answers_503_above_it() {
    let dir = scratch_dir("asgi-limit-concurrency");
    std::fs::write(
        dir.join("held.py"),
        "import asyncio, os, uuid\n\
         from uvicorn.workers import UvicornWorker\n\
         \n\
         class Limited(UvicornWorker):\n\
         \x20   CONFIG_KWARGS = {'limit_concurrency': 2}\n\
         \n\
         async def app(scope, receive, send):\n\
         \x20   if scope['type'] != 'http':\n\
         \x20       return\n\
         \x20   if scope['path'] == '/hold':\n\
         \x20       open(f'held-{uuid.uuid4()}', 'w').close()\n\
         \x20       while not os.path.exists('release'):\n\
         \x20           await asyncio.sleep(0.01)\n\
         \x20   await send({'type': 'http.response.start', 'status': 200, 'headers': []})\n\
         \x20   await send({'type': 'http.response.body', 'body': b'done'})\n",
    )
    .unwrap();
    let args = [
        "held:app",
        "-b",
        "127.0.0.1:0",
        "-w",
        "1",
        "-k",
        "held.Limited",
    ];
    let p = Proc::spawn(&rgunicorn(), &dir, &args, &[]);
    wait_for("a worker to answer", Duration::from_secs(30), || {
        get(p.port, "/").is_ok()
    });
    let port = p.port;
    let holders: Vec<_> = (0..2)
        .map(|_| std::thread::spawn(move || get(port, "/hold").unwrap()))
        .collect();
    let held = || {
        std::fs::read_dir(&dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with("held-")
            })
            .count()
    };
    wait_for("two requests in the app", Duration::from_secs(10), || {
        held() == 2
    });
    let (status, head, body) = request(
        port,
        "GET /third HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!((status, body.as_str()), (503, "Service Unavailable"));
    assert!(head.contains("text/plain; charset=utf-8"), "{head}");
    // The worker logs before it answers, but the line reaches this test
    // through its stderr reader thread, maybe after the answer.
    wait_for("the warning", Duration::from_secs(5), || {
        p.log_has("Exceeded concurrency limit.")
    });
    std::fs::write(dir.join("release"), "").unwrap();
    for h in holders {
        assert_eq!(h.join().unwrap(), (200, "done".to_string()));
    }
    assert_eq!(get(port, "/after").unwrap(), (200, "done".to_string()));
}
