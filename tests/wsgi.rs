//! Serving a Python WSGI app (PEP 3333): APP_MODULE forms and their
//! failure exit statuses (pinned against gunicorn 27.0.1), the environ
//! compared key by key with gunicorn's sync worker for the same request,
//! request and response bodies streamed both ways, `close()`, `write()`,
//! `exc_info`, a 500 on an exception with the worker alive, `threads`, and
//! HUP reloading changed app code. The app is `tests/apps/wsgi_app.py`.

use crate::common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use common::server::Server;
use common::*;

/// The bound of every wait.
const WAIT: Duration = Duration::from_secs(20);

const CONF: &str = r#"
bind = "127.0.0.1:0"
workers = 2
graceful_timeout = 5
timeout = 30
"#;

/// A scratch directory holding the test apps and `wsgi.conf.py`
/// (CONF + `extra`).
fn app_dir(name: &str, extra: &str) -> PathBuf {
    let dir = scratch_dir(name);
    let apps = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/apps");
    for entry in std::fs::read_dir(apps).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "py") {
            std::fs::copy(&p, dir.join(p.file_name().unwrap())).unwrap();
        }
    }
    std::fs::write(dir.join("wsgi.conf.py"), format!("{CONF}\n{extra}\n")).unwrap();
    dir
}

fn command(program: &Path, dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(program);
    cmd.current_dir(dir)
        .args(args)
        .args(["-c", "wsgi.conf.py"])
        .env("MARKER_DIR", dir)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

/// Start `program args -c wsgi.conf.py` in `dir`; ready once a worker answers.
fn start(program: &Path, dir: &Path, args: &[&str]) -> Server {
    start_env(program, dir, args, &[])
}

/// [`start`] with more environment variables.
fn start_env(program: &Path, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Server {
    let mut child = command(program, dir, args)
        .envs(env.iter().copied())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let stderr_lines = Arc::new(Mutex::new(Vec::new()));
    let lines = stderr_lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("server: {line}");
            lines.lock().unwrap().push(line.clone());
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + WAIT;
    let port = loop {
        assert!(Instant::now() < deadline, "no Listening line");
        if let Some(status) = child.try_wait().unwrap() {
            panic!("{program:?} {args:?} exited ({status}) before listening");
        }
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(50)) {
            if let Some(rest) = line.split("Listening at: http://127.0.0.1:").nth(1) {
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                break digits.parse::<u16>().unwrap();
            }
        }
    };
    let server = Server {
        child,
        port,
        hook_log: dir.join("hooks.log"),
        stderr_lines,
    };
    // With SCRIPT_NAME set, /health is outside it: any answer will do.
    let ready = |s: u16| s == 200 || (s != 0 && !env.is_empty());
    server.wait_until(|| server.get("/health").is_ok_and(|(s, _)| ready(s)));
    server
}

/// Run until exit (bounded): (status, stderr).
fn run_to_exit(program: &Path, dir: &Path, args: &[&str]) -> (i32, String) {
    let mut child = KillChild(command(program, dir, args).spawn().unwrap());
    let mut stderr = child.0.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status.code().unwrap_or(-1);
        }
        assert!(
            Instant::now() < deadline,
            "{program:?} {args:?} did not exit"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    (status, reader.join().unwrap())
}

/// Kills the child (and reaps it) when dropped.
struct KillChild(Child);

impl Drop for KillChild {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A response: status, reason, lower-case headers, body (de-chunked).
struct Resp {
    status: u16,
    reason: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

fn connect(port: u16) -> BufReader<TcpStream> {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    BufReader::new(s)
}

/// Read the status line and headers.
fn read_head(r: &mut BufReader<TcpStream>) -> std::io::Result<Resp> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let mut words = line.trim_end().splitn(3, ' ');
    words.next();
    let status = words.next().and_then(|c| c.parse().ok()).unwrap_or(0);
    let reason = words.next().unwrap_or("").to_string();
    let mut headers = Vec::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            break;
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    Ok(Resp {
        status,
        reason,
        headers,
        body: Vec::new(),
    })
}

/// One chunk of a chunked body; None at the last chunk.
fn read_chunk(r: &mut BufReader<TcpStream>) -> std::io::Result<Option<Vec<u8>>> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let size = usize::from_str_radix(line.trim(), 16)
        .map_err(|_| std::io::Error::other(format!("bad chunk size {line:?}")))?;
    let mut data = vec![0; size + 2];
    r.read_exact(&mut data)?;
    data.truncate(size);
    Ok((size > 0).then_some(data))
}

fn read_response(r: &mut BufReader<TcpStream>) -> std::io::Result<Resp> {
    let mut resp = read_head(r)?;
    if resp.header("transfer-encoding") == Some("chunked") {
        while let Some(chunk) = read_chunk(r)? {
            resp.body.extend(chunk);
        }
    } else if let Some(n) = resp.header("content-length") {
        let mut body = vec![0; n.parse().unwrap()];
        r.read_exact(&mut body)?;
        resp.body = body;
    } else {
        r.read_to_end(&mut resp.body)?;
    }
    Ok(resp)
}

/// Send raw bytes, read one response.
fn raw(port: u16, request: &[u8]) -> Resp {
    let mut r = connect(port);
    r.get_mut().write_all(request).unwrap();
    read_response(&mut r).unwrap()
}

fn get(port: u16, path: &str) -> Resp {
    raw(
        port,
        format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

fn post(port: u16, path: &str, body: &[u8]) -> Resp {
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    raw(port, &req)
}

fn wait_for_file(path: &Path) {
    let deadline = Instant::now() + WAIT;
    while !path.exists() {
        assert!(Instant::now() < deadline, "{path:?} never appeared");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn log_text(server: &Server) -> String {
    server.stderr_lines.lock().unwrap().join("\n")
}

/// A JSON number or string field of a flat JSON answer.
fn field(body: &str, name: &str) -> String {
    let at = body
        .find(&format!("\"{name}\": "))
        .unwrap_or_else(|| panic!("{name} not in {body}"));
    let rest = &body[at + name.len() + 4..];
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    rest[..end].trim_matches('"').to_string()
}

#[test]
fn app_module_forms() {
    let dir = app_dir("wsgi-forms", "");
    for spec in [
        "wsgi_app",
        "wsgi_app:app",
        "wsgi_app:create_app()",
        "wsgi_app:make_app('hi', punct='?')",
    ] {
        let server = start(&rgunicorn(), &dir, &[spec, "-w", "1"]);
        assert_eq!(get(server.port, "/version").text(), "one", "{spec}");
        if spec.contains("make_app") {
            assert_eq!(get(server.port, "/greet").text(), "hi?");
        }
        // The line is written before serving; the reader thread may lag.
        server.wait_until(|| log_text(&server).contains("is a WSGI application (detected"));
        assert_eq!(server.stop(), 0, "{spec}");
    }
    // The wsgi_app setting, no APP_MODULE on the command line; an explicit
    // worker_class skips the detection.
    let dir = app_dir(
        "wsgi-setting",
        "wsgi_app = \"wsgi_app:make_app('cfg')\"\nworker_class = 'gthread'",
    );
    let server = start(&rgunicorn(), &dir, &[]);
    assert_eq!(get(server.port, "/greet").text(), "cfg!");
    // Checked once the server is gone and all its output has been read.
    let lines = server.stderr_lines.clone();
    assert_eq!(server.stop(), 0);
    assert!(!lines.lock().unwrap().join("\n").contains("detected"));
}

#[test]
fn load_failures_exit_like_gunicorn() {
    let dir = app_dir("wsgi-fail", "");
    let cases: [(&str, i32, &[&str]); 5] = [
        (
            "wsgi_app:nope",
            4,
            &[
                "Failed to find attribute 'nope' in 'wsgi_app'.",
                "Reason: App failed to load.",
            ],
        ),
        (
            "wsgi_app:make_app()",
            4,
            &["TypeError", "Reason: App failed to load."],
        ),
        (
            "wsgi_app:make_app(os)",
            4,
            &["Failed to parse arguments as literal values"],
        ),
        (
            "wsgi_broken",
            3,
            &[
                "Exception in worker process",
                "Traceback (most recent call last)",
                "RuntimeError: boom at import",
                "Reason: Worker failed to boot.",
            ],
        ),
        (
            "no_such_module_here",
            3,
            &["Exception in worker process", "ModuleNotFoundError"],
        ),
    ];
    for (spec, code, needles) in cases {
        let (g, g_err) = run_to_exit(&gunicorn(), &dir, &[spec, "-w", "1"]);
        let (r, r_err) = run_to_exit(&rgunicorn(), &dir, &[spec, "-w", "1"]);
        assert_eq!(g, code, "gunicorn {spec}: {g_err}");
        assert_eq!(r, code, "rgunicorn {spec}: {r_err}");
        for needle in needles {
            assert!(r_err.contains(needle), "{spec}: {needle:?} not in\n{r_err}");
        }
    }
}

#[test]
fn interface_by_worker_class() {
    let dir = app_dir("wsgi-class", "");
    // Not set: detected from the app and served as ASGI, the choice logged.
    for spec in ["asgi_app:app", "asgi_app:wrapped"] {
        let server = start(&rgunicorn(), &dir, &[spec, "-w", "1"]);
        assert_eq!(get(server.port, "/").text(), "asgi", "{spec}");
        server.wait_until(|| log_text(&server).contains("is an ASGI application (detected"));
        assert_eq!(server.stop(), 0, "{spec}");
    }
    // An ASGI class: served as ASGI without detection.
    let server = start(
        &rgunicorn(),
        &dir,
        &[
            "asgi_app:app",
            "-k",
            "uvicorn.workers.UvicornWorker",
            "-w",
            "1",
        ],
    );
    assert_eq!(get(server.port, "/").text(), "asgi");
    let lines = server.stderr_lines.clone();
    assert_eq!(server.stop(), 0);
    assert!(!lines.lock().unwrap().join("\n").contains("detected"));
    // Another class: an error naming the supported ones.
    let (code, err) = run_to_exit(&rgunicorn(), &dir, &["wsgi_app", "-k", "tornado"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("\"tornado\" (gunicorn.workers.gtornado.TornadoWorker) is not supported")
            && err.contains("sync or gthread"),
        "{err}"
    );
}

/// One request's environ as `key -> json description`.
fn environ(port: u16, request: &str) -> BTreeMap<String, String> {
    raw(port, request.as_bytes())
        .text()
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn environ_matches_gunicorn() {
    let dir = app_dir("wsgi-environ", "");
    let requests = [
        // Repeated headers, a body, percent-encoded path bytes (latin-1),
        // a query, a scheme header from a trusted peer.
        "POST /env/p%20a/th%2Fx%E9?q=1&r=%20s HTTP/1.1\r\nHost: example.test:8080\r\n\
         X-Repeated: one\r\nX-Repeated: two\r\nContent-Type: text/plain\r\n\
         Content-Length: 5\r\nX-Forwarded-Proto: https\r\nUser-Agent: t/1\r\n\
         Connection: close\r\n\r\nhello",
        // HTTP/1.0, no Host, a header with an underscore (dropped).
        "GET /env HTTP/1.0\r\nX_Under: dropped\r\nAccept: */*\r\n\r\n",
        // Chunked body.
        "PUT /env?x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
         3\r\nabc\r\n0\r\n\r\n",
    ];
    let g = start(&gunicorn(), &dir, &["wsgi_app"]);
    let r = start(&rgunicorn(), &dir, &["wsgi_app"]);
    for request in requests {
        let ge = environ(g.port, request);
        let re = environ(r.port, request);
        assert!(ge.contains_key("REQUEST_METHOD"), "{ge:?}");
        // Values that differ on purpose.
        let differ = [
            "SERVER_SOFTWARE",
            "REMOTE_PORT",
            "SERVER_PORT",
            "REMOTE_ADDR",
            "SERVER_NAME",
        ];
        // gunicorn-only keys: the raw socket and 103 Early Hints.
        let only_gunicorn = ["gunicorn.socket", "wsgi.early_hints"];
        let mut mismatches = Vec::new();
        for (k, gv) in &ge {
            if only_gunicorn.contains(&k.as_str()) {
                assert!(!re.contains_key(k), "{k}");
                continue;
            }
            match re.get(k) {
                None => mismatches.push(format!("{k}: missing (gunicorn: {gv})")),
                Some(rv) if rv != gv && !differ.contains(&k.as_str()) => {
                    mismatches.push(format!("{k}: {rv} (gunicorn: {gv})"))
                }
                Some(_) => {}
            }
        }
        for (k, rv) in &re {
            if !ge.contains_key(k) {
                mismatches.push(format!("{k}: {rv} (not in gunicorn's environ)"));
            }
        }
        assert!(
            mismatches.is_empty(),
            "environ differs for {request:?}:\n{}",
            mismatches.join("\n")
        );
        assert_eq!(re["SERVER_PORT"], format!("\"{}\"", r.port));
        assert_eq!(ge["SERVER_PORT"], format!("\"{}\"", g.port));
        assert!(re["SERVER_SOFTWARE"].starts_with("\"rgunicorn/"));
        assert!(re["REMOTE_PORT"].trim_matches('"').parse::<u16>().is_ok());
    }
    g.stop();
    r.stop();
}

/// The environ keys that come from the request line, the framing headers
/// and SCRIPT_NAME, for each response to `request` (pipelined requests get
/// one each); the app dumps its environ for any request with `X-Dump-Env`.
fn request_keys(port: u16, request: &[u8], responses: usize) -> Vec<String> {
    let keys = [
        "REQUEST_METHOD",
        "RAW_URI",
        "SCRIPT_NAME",
        "PATH_INFO",
        "QUERY_STRING",
        "SERVER_PROTOCOL",
        "CONTENT_LENGTH",
    ];
    let mut r = connect(port);
    r.get_mut().write_all(request).unwrap();
    (0..responses)
        .map(|_| {
            let resp = read_response(&mut r).unwrap();
            let env: BTreeMap<String, String> = resp
                .text()
                .lines()
                .filter_map(|l| l.split_once('\t'))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let vals: Vec<String> = keys
                .iter()
                .map(|k| format!("{k}={}", env.get(*k).map_or("-", String::as_str)))
                .collect();
            format!("{} {}", resp.status, vals.join(" "))
        })
        .collect()
}

#[test]
fn request_line_and_script_name_reach_the_environ_as_in_gunicorn() {
    // root_path is for ASGI apps only in gunicorn 27: no effect here.
    let dir = app_dir("wsgi-request-line", "root_path = \"/a\"\n");
    // gthread: gunicorn answers pipelined requests (sync closes after one).
    let g = start(&gunicorn(), &dir, &["wsgi_app", "--threads", "2"]);
    let r = start(&rgunicorn(), &dir, &["wsgi_app", "--threads", "2"]);
    let cases: &[(&[u8], usize, &[&str])] = &[
        // A repeated SCRIPT_NAME header (from a trusted peer): the last.
        (
            b"GET /a/b/x HTTP/1.1\r\nHost: h\r\nX-Dump-Env: 1\r\nSCRIPT_NAME: /a\r\n\
              SCRIPT_NAME: /a/b\r\nConnection: close\r\n\r\n",
            1,
            &[r#"SCRIPT_NAME="/a/b""#, r#"PATH_INFO="/x""#],
        ),
        // No SCRIPT_NAME: root_path does not apply to WSGI.
        (
            b"GET /a/x HTTP/1.1\r\nHost: h\r\nX-Dump-Env: 1\r\nConnection: close\r\n\r\n",
            1,
            &[r#"SCRIPT_NAME="""#, r#"PATH_INFO="/a/x""#],
        ),
        // Absolute-form with no path: PATH_INFO is empty.
        (
            b"GET http://h?q=1 HTTP/1.1\r\nHost: h\r\nX-Dump-Env: 1\r\nConnection: close\r\n\r\n",
            1,
            &[
                r#"RAW_URI="http://h?q=1""#,
                r#"PATH_INFO="""#,
                r#"QUERY_STRING="q=1""#,
            ],
        ),
        // RAW_URI keeps the fragment.
        (
            b"GET /p?q=1#frag HTTP/1.1\r\nHost: h\r\nX-Dump-Env: 1\r\nConnection: close\r\n\r\n",
            1,
            &[r#"RAW_URI="/p?q=1#frag""#, r#"QUERY_STRING="q=1""#],
        ),
        // Any HTTP/1.x gunicorn takes is the protocol.
        (
            b"GET /p HTTP/1.2\r\nHost: h\r\nX-Dump-Env: 1\r\nConnection: close\r\n\r\n",
            1,
            &[r#"SERVER_PROTOCOL="HTTP/1.2""#],
        ),
        // The client's digits.
        (
            b"POST /p HTTP/1.1\r\nHost: h\r\nX-Dump-Env: 1\r\nContent-Length: 007\r\n\
              Connection: close\r\n\r\nabcdefg",
            1,
            &[r#"CONTENT_LENGTH="007""#],
        ),
        // An empty authority: served, the path after it.
        (
            b"GET http:///x HTTP/1.1\r\nHost: h\r\nX-Dump-Env: 1\r\nConnection: close\r\n\r\n",
            1,
            &["200 ", r#"PATH_INFO="/x""#],
        ),
        // Pipelined after another request: the path as urlsplit gives it.
        (
            b"GET /p HTTP/1.1\r\nHost: h\r\nX-Dump-Env: 1\r\n\r\n\
              GET ://a/x HTTP/1.1\r\nHost: h\r\nX-Dump-Env: 1\r\nConnection: close\r\n\r\n",
            2,
            &[r#"PATH_INFO="://a/x""#],
        ),
        // CONNECT: the authority as urlsplit splits it.
        (
            b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nX-Dump-Env: 1\r\n\r\n",
            1,
            &[r#"RAW_URI="example.com:443""#, r#"PATH_INFO="443""#],
        ),
    ];
    for (request, responses, want) in cases {
        let ours = request_keys(r.port, request, *responses);
        let theirs = request_keys(g.port, request, *responses);
        let text = String::from_utf8_lossy(request);
        assert_eq!(ours, theirs, "{text}");
        let last = ours.last().unwrap();
        for w in *want {
            assert!(last.contains(w), "{w} in {last} for {text}");
        }
    }
    g.stop();
    r.stop();

    // The SCRIPT_NAME environment variable, as gunicorn reads it.
    let request = b"GET /s/x HTTP/1.1\r\nHost: h\r\nX-Dump-Env: 1\r\nConnection: close\r\n\r\n";
    let env = [("SCRIPT_NAME", "/s")];
    let g = start_env(&gunicorn(), &dir, &["wsgi_app"], &env);
    let r = start_env(&rgunicorn(), &dir, &["wsgi_app"], &env);
    let ours = request_keys(r.port, request, 1);
    assert_eq!(ours, request_keys(g.port, request, 1));
    assert!(
        ours[0].contains(r#"SCRIPT_NAME="/s" PATH_INFO="/x""#),
        "{ours:?}"
    );
    g.stop();
    r.stop();
}

#[test]
fn proxy_protocol_addresses_reach_the_environ_as_in_gunicorn() {
    // The PROXY header from a trusted peer (127.0.0.1 is in the default
    // proxy_allow_ips) names the client: REMOTE_ADDR/PORT and gunicorn's
    // PROXY_* keys, the same in both servers; v1 and v2 headers.
    let dir = app_dir("wsgi-proxy", "proxy_protocol = \"auto\"\n");
    let g = start(&gunicorn(), &dir, &["wsgi_app"]);
    let r = start(&rgunicorn(), &dir, &["wsgi_app"]);
    let head = b"GET /env HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n";
    let v1 = [
        b"PROXY TCP4 198.51.100.7 203.0.113.9 4711 8443\r\n".as_slice(),
        head,
    ]
    .concat();
    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
    v2.extend_from_slice(&[198, 51, 100, 7, 203, 0, 113, 9]);
    v2.extend_from_slice(&4711u16.to_be_bytes());
    v2.extend_from_slice(&8443u16.to_be_bytes());
    v2.extend_from_slice(head);
    let keys = [
        "REMOTE_ADDR",
        "REMOTE_PORT",
        "PROXY_PROTOCOL",
        "PROXY_ADDR",
        "PROXY_PORT",
    ];
    for request in [v1, v2] {
        let env = |port| {
            let e: BTreeMap<String, String> = raw(port, &request)
                .text()
                .lines()
                .filter_map(|l| l.split_once('\t'))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            keys.map(|k| e.get(k).cloned().unwrap_or_default())
        };
        let ours = env(r.port);
        assert_eq!(ours, env(g.port));
        assert_eq!(ours[0], "\"198.51.100.7\"");
        assert_eq!(ours[1], "\"4711\"");
        assert_eq!(ours[2], "\"TCP4\"");
    }
    // Ports are read on the bytes as sent: UTF-8's NBSP before a port is
    // refused by both (gunicorn's latin-1 decode makes it "Â\xa0", which
    // int() refuses); what int() takes beyond ASCII digits (a lone latin-1
    // NBSP, a tab, a sign, `_`) gunicorn serves and rgunicorn refuses.
    let status = |port, bad: &[u8]| {
        let mut line = b"PROXY TCP4 1.2.3.4 5.6.7.8 ".to_vec();
        line.extend_from_slice(bad);
        line.extend_from_slice(b" 2\r\n");
        raw(port, &[line.as_slice(), head].concat()).status
    };
    assert_eq!(status(g.port, b"\xc2\xa01"), 400);
    assert_eq!(status(r.port, b"\xc2\xa01"), 400);
    for looser in [&b"\xa01"[..], b"\t1", b"+1", b"1_0"] {
        assert_eq!(status(g.port, looser), 200, "{looser:?}");
        assert_eq!(status(r.port, looser), 400, "{looser:?}");
    }
    // Without a header the socket's peer stays, and no PROXY_* keys.
    let plain = environ(r.port, std::str::from_utf8(head).unwrap());
    assert_eq!(plain["REMOTE_ADDR"], "\"127.0.0.1\"");
    assert!(!plain.contains_key("PROXY_PROTOCOL"));
    g.stop();
    r.stop();
}

#[test]
fn request_body_streams_to_the_app() {
    let dir = app_dir("wsgi-input", "");
    let server = start(&rgunicorn(), &dir, &["wsgi_app", "-w", "1"]);
    // The app reads the first 5 bytes before the client sends the rest.
    // (The request gate holds a chunked body back until it is complete or
    // past its 64 KiB hold limit, so the first chunk is larger than that.)
    let mut conn = connect(server.port);
    let first = format!("first{}", "x".repeat(70_000));
    write!(
        conn.get_mut(),
        "POST /echo_stream HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\
         Connection: close\r\n\r\n{:x}\r\n{first}\r\n",
        first.len()
    )
    .unwrap();
    wait_for_file(&dir.join("first_read"));
    conn.get_mut()
        .write_all(b"4\r\n-and\r\n5\r\n-rest\r\n0\r\n\r\n")
        .unwrap();
    let resp = read_response(&mut conn).unwrap();
    assert_eq!(
        resp.text(),
        r#"{"first": "first", "rest": 70009, "tail": "-and-rest"}"#
    );

    // A 3 MB chunked upload read with read(n).
    let body: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let mut conn = connect(server.port);
    conn.get_mut()
        .write_all(
            b"POST /echo?n=65536 HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\
              Connection: close\r\n\r\n",
        )
        .unwrap();
    for chunk in body.chunks(100_000) {
        write!(conn.get_mut(), "{:x}\r\n", chunk.len()).unwrap();
        conn.get_mut().write_all(chunk).unwrap();
        conn.get_mut().write_all(b"\r\n").unwrap();
    }
    conn.get_mut().write_all(b"0\r\n\r\n").unwrap();
    let resp = read_response(&mut conn).unwrap();
    let text = resp.text();
    assert_eq!(field(&text, "len"), body.len().to_string(), "{text}");
    let reads: usize = field(&text, "reads").parse().unwrap();
    assert_eq!(
        reads,
        body.len().div_ceil(65536),
        "read(n) returns n bytes until the end"
    );

    // readline, readline(size), readlines, iteration.
    let resp = post(server.port, "/lines", b"l1\nline2\nl3\nl4");
    assert_eq!(
        resp.text(),
        r#"{"first": "l1\n", "limited": "lin", "rest": ["e2\n", "l3\n", "l4"]}"#
    );
    let resp = post(server.port, "/iter", b"a\nb\n\nc");
    assert_eq!(resp.text(), r#"{"lines": ["a\n", "b\n", "\n", "c"]}"#);
    assert_eq!(server.stop(), 0);
}

#[test]
fn response_streams_close_write_excinfo() {
    let dir = app_dir("wsgi-response", "");
    let server = start(&rgunicorn(), &dir, &["wsgi_app", "-w", "1"]);
    let port = server.port;

    // The first chunk reaches the client while the generator still waits.
    let mut conn = connect(port);
    conn.get_mut()
        .write_all(b"GET /stream HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let head = read_head(&mut conn).unwrap();
    assert_eq!(head.status, 200);
    assert_eq!(head.header("transfer-encoding"), Some("chunked"));
    assert_eq!(read_chunk(&mut conn).unwrap().unwrap(), b"first;");
    std::fs::write(dir.join("go"), "").unwrap();
    assert_eq!(read_chunk(&mut conn).unwrap().unwrap(), b"second");
    assert_eq!(read_chunk(&mut conn).unwrap(), None);

    // A large generated body arrives whole.
    let resp = get(port, "/big?n=160");
    assert_eq!(resp.body.len(), 160 * 65536);

    // close() is called.
    let resp = get(port, "/close");
    assert_eq!(resp.text(), "abc");
    wait_for_file(&dir.join("closed"));

    // write() before the returned iterable.
    assert_eq!(get(port, "/write").text(), "written;returned");

    // exc_info before anything was sent replaces the status.
    let resp = get(port, "/excinfo");
    assert_eq!((resp.status, resp.reason.as_str()), (503, "Handled"));
    assert_eq!(resp.text(), "handled");

    // exc_info after the head went out: re-raised, the response is cut.
    let mut conn = connect(port);
    conn.get_mut()
        .write_all(b"GET /excinfo_late HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let head = read_head(&mut conn).unwrap();
    assert_eq!(head.status, 200);
    assert_eq!(read_chunk(&mut conn).unwrap().unwrap(), b"partial");
    assert!(
        read_chunk(&mut conn).is_err(),
        "no last chunk after the error"
    );

    // Status with its own reason, file_wrapper, wsgi.errors, Python threads.
    let resp = get(port, "/status");
    assert_eq!((resp.status, resp.reason.as_str()), (299, "Custom Thing"));
    let resp = get(port, "/filewrapper");
    assert_eq!(
        resp.body,
        std::fs::read(dir.join("wsgi_app.py")).unwrap(),
        "file_wrapper"
    );
    assert_eq!(get(port, "/errors").text(), "logged");
    server.wait_until(|| log_text(&server).contains("to wsgi.errors"));
    assert_eq!(get(port, "/pythread").text(), r#"{"sum": 499500}"#);
    assert_eq!(server.stop(), 0);
}

#[test]
fn exception_is_500_and_worker_lives() {
    let dir = app_dir("wsgi-error", "");
    let server = start(&rgunicorn(), &dir, &["wsgi_app", "-w", "1"]);
    let pid_before = field(&get(server.port, "/barrier?n=1").text(), "pid");
    let resp = get(server.port, "/error?x=1");
    assert_eq!(resp.status, 500);
    assert!(resp
        .text()
        .contains("<h1><p>Internal Server Error</p></h1>"));
    server.wait_until(|| {
        let log = log_text(&server);
        log.contains("[ERROR] Error handling request GET /error?x=1")
            && log.contains("RuntimeError: boom in the app")
    });
    // An invalid response header is the app's fault too.
    assert_eq!(get(server.port, "/bad_header").status, 500);
    let pid_after = field(&get(server.port, "/barrier?n=1").text(), "pid");
    assert_eq!(pid_before, pid_after, "the same worker serves on");
    assert_eq!(server.stop(), 0);
}

#[test]
fn a_request_stuck_in_a_sync_worker_is_timed_out_as_in_gunicorn() {
    // One app thread (gunicorn's sync worker): a request stuck in the app
    // stops the heartbeat; the master aborts the worker after `timeout`,
    // the client gets gunicorn's 500 and a new worker serves.
    let dir = app_dir("wsgi-timeout", "");
    let server = start(
        &rgunicorn(),
        &dir,
        &["wsgi_app", "-w", "1", "--timeout", "2"],
    );
    let before = field(&get(server.port, "/barrier?n=1").text(), "pid");
    let started = Instant::now();
    let stuck = get(server.port, "/sleep?s=30");
    assert_eq!(stuck.status, 500, "{}", stuck.text());
    assert!(
        started.elapsed() < Duration::from_secs(2 + 3),
        "{:?}",
        started.elapsed()
    );
    server.wait_until(|| {
        log_text(&server).contains(&format!("[CRITICAL] WORKER TIMEOUT (pid:{before})"))
    });
    let after = field(&get(server.port, "/barrier?n=1").text(), "pid");
    assert_ne!(before, after, "a new worker serves");
    assert_eq!(server.stop(), 0);
}

#[test]
fn threads_run_requests_at_once() {
    let dir = app_dir("wsgi-threads", "");
    // threads = 4: four requests meet inside the app of one worker.
    let server = start(
        &rgunicorn(),
        &dir,
        &["wsgi_app", "-w", "1", "--threads", "4"],
    );
    let port = server.port;
    let clients: Vec<_> = (0..4)
        .map(|_| std::thread::spawn(move || get(port, "/barrier?n=4").text()))
        .collect();
    let answers: Vec<String> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    for a in &answers {
        assert_eq!(field(a, "result"), "together", "{answers:?}");
    }
    let pids: std::collections::HashSet<String> = answers.iter().map(|a| field(a, "pid")).collect();
    assert_eq!(pids.len(), 1, "one worker: {answers:?}");
    let env = environ(
        port,
        "GET /env HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(
        env["wsgi.multithread"],
        r#"{"type": "bool", "value": true}"#
    );
    assert_eq!(server.stop(), 0);

    // threads = 1 (the default): one request in the app at a time.
    let server = start(&rgunicorn(), &dir, &["wsgi_app", "-w", "1"]);
    let port = server.port;
    let clients: Vec<_> = (0..3)
        .map(|_| std::thread::spawn(move || get(port, "/concurrency").text()))
        .collect();
    for c in clients {
        let a = c.join().unwrap();
        assert_eq!(field(&a, "max"), "1", "{a}");
    }
    assert_eq!(server.stop(), 0);
}

#[test]
fn hup_reloads_app_code() {
    let dir = app_dir("wsgi-hup", "");
    let server = start(&rgunicorn(), &dir, &["wsgi_app"]);
    assert_eq!(get(server.port, "/version").text(), "one");
    let path = dir.join("wsgi_app.py");
    let code = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        code.replace("VERSION = \"one\"", "VERSION = \"two\""),
    )
    .unwrap();
    server.signal("HUP");
    // Once the new workers serve and the old ones are gone, every answer is new.
    server.wait_until(|| (0..4).all(|_| get(server.port, "/version").text() == "two"));
    assert_eq!(server.stop(), 0);
}

#[test]
fn preload_app_imports_in_the_master_and_hup_keeps_the_code() {
    let dir = app_dir("wsgi-preload", "");
    let server = start(&rgunicorn(), &dir, &["wsgi_app", "--preload"]);
    let master = server.pid().to_string();
    assert_eq!(get(server.port, "/imported_in").text(), master);
    let workers = server.worker_pids();
    // HUP: new workers, the same preloaded code (gunicorn's behaviour).
    let path = dir.join("wsgi_app.py");
    let code = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        code.replace("VERSION = \"one\"", "VERSION = \"two\""),
    )
    .unwrap();
    server.signal("HUP");
    server.wait_until(|| {
        let now = server.worker_pids();
        now.len() == 2 && now.iter().all(|p| !workers.contains(p))
    });
    assert!((0..4).all(|_| get(server.port, "/version").text() == "one"));
    assert_eq!(server.stop(), 0);

    // Without preload each worker imports after fork.
    let server = start(&rgunicorn(), &dir, &["wsgi_app"]);
    let imported_in: i32 = get(server.port, "/imported_in").text().parse().unwrap();
    assert!(server.worker_pids().contains(&imported_in));
    assert_eq!(server.stop(), 0);

    // A preloaded import that fails ends the start: traceback, exit 1.
    let (code, err) = run_to_exit(&rgunicorn(), &dir, &["wsgi_broken", "--preload"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("Traceback") && err.contains("boom at import"),
        "{err}"
    );
    assert!(!err.contains("Booting worker"), "{err}");
}

/// A websocket handshake to a WSGI or Rust app is a plain HTTP request:
/// answered by the app, and the connection is kept alive as HTTP.
#[test]
fn an_upgrade_request_is_plain_http_for_wsgi_and_rust_apps() {
    let dir = app_dir("wsgi-upgrade", "");
    let handshake = |path: &str| {
        format!(
            "GET {path} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
    };
    for (app, path) in [("wsgi_app", "/env"), ("rgunicorn:health", "/health")] {
        let server = start(&rgunicorn(), &dir, &[app, "-w", "1"]);
        let mut conn = connect(server.port);
        conn.get_mut()
            .write_all(handshake(path).as_bytes())
            .unwrap();
        let resp = read_response(&mut conn).unwrap();
        assert_eq!(resp.status, 200, "{app}: {}", resp.text());
        if app == "wsgi_app" {
            assert!(resp.text().contains("HTTP_UPGRADE"), "{}", resp.text());
        }
        // The same connection serves the next request as HTTP.
        conn.get_mut()
            .write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
            .unwrap();
        assert_eq!(read_response(&mut conn).unwrap().status, 200, "{app}");
        assert_eq!(server.stop(), 0);
    }
}

/// target/test-venv's site-packages: gunicorn itself, whose worker
/// classes user code derives from (put on both servers' `sys.path` by the
/// config, as a venv would have it).
fn venv_site_packages() -> String {
    let lib = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-venv/lib");
    std::fs::read_dir(&lib)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path().join("site-packages"))
        .find(|p| p.join("gunicorn").exists())
        .expect("gunicorn in target/test-venv (tests/run installs it)")
        .to_string_lossy()
        .into_owned()
}

/// Subclasses of gunicorn's SyncWorker and ThreadWorker (a class object in
/// the config, a dotted path on the command line) serve WSGI; what the
/// class overrides is named in one warning, since the Rust workers don't
/// run it.
#[test]
fn worker_class_subclasses_of_gunicorns_wsgi_workers_serve_wsgi() {
    let extra = format!(
        "import sys\n\
         sys.path.insert(0, {site:?})\n\
         from gunicorn.workers.sync import SyncWorker\n\
         class AuditedWorker(SyncWorker):\n\
         \x20   def handle_request(self, listener, req, client, addr):\n\
         \x20       return super().handle_request(listener, req, client, addr)\n\
         worker_class = AuditedWorker\n",
        site = venv_site_packages()
    );
    let dir = app_dir("wsgi-worker-subclass", &extra);
    std::fs::write(
        dir.join("project_workers.py"),
        "from gunicorn.workers.gthread import ThreadWorker\n\
         class Pooled(ThreadWorker):\n\
         \x20   pass\n",
    )
    .unwrap();
    for args in [
        vec!["wsgi_app:application"],
        vec!["wsgi_app:application", "-k", "project_workers.Pooled"],
    ] {
        let server = start(&rgunicorn(), &dir, &args);
        let resp = get(server.port, "/health");
        assert_eq!((resp.status, resp.text()), (200, "ok".to_string()));
        let warnings: Vec<String> =
            server.log_lines(|l| l.contains("[WARNING]") && l.contains("worker_class"));
        if args.len() == 1 {
            assert_eq!(warnings.len(), 1, "{warnings:?}");
            assert!(warnings[0].contains("handle_request()"), "{warnings:?}");
        } else {
            assert!(warnings.is_empty(), "{warnings:?}");
        }
        assert_eq!(server.stop(), 0);
    }
}

/// A worker class that cannot be loaded stops the start as gunicorn 27.0.1
/// stops it: exit 1, gunicorn's `class uri ... invalid or not found`
/// message with the cause. gunicorn 27 declares no worker entry points, so
/// `egg:gunicorn#sync` and unknown short names fail too.
#[test]
fn worker_class_that_cannot_be_loaded_fails_as_in_gunicorn() {
    let dir = app_dir("wsgi-worker-class-errors", "");
    for class in ["nosuch.Worker", "egg:gunicorn#sync", "eventlet"] {
        let args = ["wsgi_app:application", "-k", class];
        let (ours, our_err) = run_to_exit(&rgunicorn(), &dir, &args);
        let (theirs, their_err) = run_to_exit(&gunicorn(), &dir, &args);
        assert_eq!((ours, theirs), (1, 1), "{class}: {our_err}");
        let first = |s: &str| s.lines().find(|l| !l.is_empty()).unwrap_or("").to_string();
        // The exception's last line: what went wrong.
        let cause = |s: &str| {
            s.lines()
                .rfind(|l| l.contains("Error: ") && !l.starts_with("Error: "))
                .unwrap_or("")
                .to_string()
        };
        assert_eq!(first(&our_err), first(&their_err), "{class}");
        assert_eq!(cause(&our_err), cause(&their_err), "{class}");
        assert!(!cause(&our_err).is_empty(), "{our_err}");
    }
}
