//! TLS (rustls) from gunicorn's SSL settings, against the built binary:
//! `Listening at: https://...`, a GET over TLS, plain HTTP on the TLS port
//! refused, client certificates (`cert_reqs` 1 and 2 with `ca_certs`),
//! `ciphers` mapped with a warning for names without a rustls equivalent,
//! bad certificate/key files and the `ssl_context` hook stopping the start
//! with exit 1, `wsgi.url_scheme` = `https` for a WSGI app, and an ASGI
//! websocket over TLS (`wss`).
//!
//! The certificates (a CA, a server certificate for 127.0.0.1 and a client
//! certificate, both signed by the CA) are made with the `openssl` command.

use crate::common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use common::{rgunicorn, scratch_dir, text};

/// The bound of every wait.
const WAIT: Duration = Duration::from_secs(20);

/// The generated certificates, made once per test binary.
struct Certs {
    dir: PathBuf,
}

impl Certs {
    fn path(&self, name: &str) -> String {
        self.dir.join(name).to_string_lossy().into_owned()
    }
}

fn certs() -> &'static Certs {
    static CERTS: OnceLock<Certs> = OnceLock::new();
    CERTS.get_or_init(|| {
        let dir = scratch_dir("tls-certs");
        crate::common::certs::make(&dir);
        // A certificate and key that don't belong together, and a key
        // file that is not a key.
        let mut other = vec!["req", "-x509"];
        other.extend(crate::common::certs::EC_KEY);
        other.extend([
            "-keyout",
            "other.key",
            "-out",
            "other.pem",
            "-days",
            "2",
            "-subj",
            "/CN=other",
        ]);
        crate::common::certs::openssl(&dir, &other);
        std::fs::write(dir.join("garbage.key"), "this is not a PEM key\n").unwrap();
        Certs { dir }
    })
}

/// A running rgunicorn, killed (TERM, then KILL) on drop.
struct TlsServer {
    child: Child,
    port: u16,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        common::server::stop_child(&mut self.child);
    }
}

impl TlsServer {
    fn stderr(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }
}

fn command(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(rgunicorn());
    cmd.current_dir(dir)
        .args(args)
        .args([
            "--bind",
            "127.0.0.1:0",
            "--workers",
            "1",
            "--graceful-timeout",
            "2",
        ])
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

/// Start `rgunicorn args` in `dir`; returns once the `Listening at:
/// https://127.0.0.1:PORT` line is out and a worker answers over TLS.
fn start(dir: &Path, args: &[&str], client: &Arc<rustls::ClientConfig>) -> TlsServer {
    let mut child = command(dir, args).spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = mpsc::channel();
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("server: {line}");
            sink.lock().unwrap().push(line.clone());
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + WAIT;
    let port = loop {
        assert!(
            Instant::now() < deadline,
            "no `Listening at: https://` line"
        );
        if let Ok(Some(status)) = child.try_wait() {
            panic!("rgunicorn exited at start ({status})");
        }
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(50)) {
            assert!(
                !line.contains("Listening at: http://"),
                "plain http listener shown: {line}"
            );
            if let Some(rest) = line.split("Listening at: https://127.0.0.1:").nth(1) {
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                break digits.parse::<u16>().unwrap();
            }
        }
    };
    let server = TlsServer { child, port, lines };
    // Ready once a worker completes a TLS request.
    let deadline = Instant::now() + WAIT;
    while get(server.port, client, "/health").is_err() {
        assert!(Instant::now() < deadline, "no TLS answer from a worker");
        std::thread::sleep(Duration::from_millis(50));
    }
    server
}

/// Run rgunicorn to its exit (bounded): (status, stderr).
fn run_to_exit(dir: &Path, args: &[&str]) -> (Option<i32>, String) {
    let mut child = command(dir, args).spawn().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("rgunicorn did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status.code(), reader.join().unwrap())
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client trusting the test CA, with the client certificate if asked.
fn client(with_cert: bool) -> Arc<rustls::ClientConfig> {
    let c = certs();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(c.path("ca.pem")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = if with_cert {
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(c.path("client.pem"))
                .unwrap()
                .map(Result::unwrap)
                .collect();
        let key = PrivateKeyDer::from_pem_file(c.path("client.key")).unwrap();
        builder.with_client_auth_cert(chain, key).unwrap()
    } else {
        builder.with_no_client_auth()
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

/// What a TLS GET saw.
struct Answer {
    status: u16,
    body: String,
    alpn: Option<Vec<u8>>,
    suite: Option<rustls::CipherSuite>,
}

/// `GET path` over TLS with `Connection: close`.
fn get(port: u16, client: &Arc<rustls::ClientConfig>, path: &str) -> std::io::Result<Answer> {
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let conn =
        rustls::ClientConnection::new(client.clone(), name).map_err(std::io::Error::other)?;
    let sock = TcpStream::connect(("127.0.0.1", port))?;
    sock.set_read_timeout(Some(Duration::from_secs(5)))?;
    sock.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut tls = rustls::StreamOwned::new(conn, sock);
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    match tls.read_to_end(&mut buf) {
        Ok(_) => {}
        // A close without close_notify after a whole answer.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !buf.is_empty() => {}
        Err(e) => return Err(e),
    }
    let resp = text(&buf);
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status line in {resp:?}")))?;
    Ok(Answer {
        status,
        body: resp.split("\r\n\r\n").nth(1).unwrap_or("").to_string(),
        alpn: tls.conn.alpn_protocol().map(<[u8]>::to_vec),
        suite: tls.conn.negotiated_cipher_suite().map(|s| s.suite()),
    })
}

fn tls_args<'a>(c: &'a Certs, cert: &'a str, key: &'a str) -> Vec<String> {
    vec![
        "--certfile".into(),
        c.path(cert),
        "--keyfile".into(),
        c.path(key),
    ]
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn https_get_and_plain_http_refused() {
    let c = certs();
    let dir = scratch_dir("tls-get");
    let mut args = vec!["rgunicorn:health".to_string()];
    args.extend(tls_args(c, "server.pem", "server.key"));
    let client = client(false);
    let server = start(&dir, &strs(&args), &client);

    let answer = get(server.port, &client, "/health").unwrap();
    assert_eq!(answer.status, 200);
    assert!(answer.body.contains("healthy"), "{}", answer.body);
    // ALPN: http/1.1 chosen though the client offers h2 first.
    assert_eq!(answer.alpn.as_deref(), Some(&b"http/1.1"[..]));

    // Plain HTTP to the TLS port: no HTTP answer, a warning naming the client.
    let mut sock = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    sock.write_all(b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut buf = Vec::new();
    let _ = sock.read_to_end(&mut buf);
    assert!(!buf.starts_with(b"HTTP/"), "plain answer: {:?}", text(&buf));
    let deadline = Instant::now() + WAIT;
    while !server
        .stderr()
        .contains("[WARNING] Invalid request from ip=127.0.0.1:")
    {
        assert!(
            Instant::now() < deadline,
            "no warning for the plain request"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The worker goes on serving TLS.
    assert_eq!(get(server.port, &client, "/health").unwrap().status, 200);
}

#[test]
fn client_certificates() {
    let c = certs();
    let dir = scratch_dir("tls-client-certs");
    let mut args = vec!["rgunicorn:health".to_string()];
    args.extend(tls_args(c, "server.pem", "server.key"));
    args.extend([
        "--ca-certs".into(),
        c.path("ca.pem"),
        "--cert-reqs".into(),
        "2".into(),
    ]);
    let with_cert = client(true);
    let without = client(false);
    {
        let server = start(&dir, &strs(&args), &with_cert);
        assert_eq!(get(server.port, &with_cert, "/health").unwrap().status, 200);
        let refused = get(server.port, &without, "/health");
        assert!(refused.is_err(), "served without a client certificate");
    }
    // cert_reqs = 1: a certificate is asked for, not required.
    *args.last_mut().unwrap() = "1".into();
    let server = start(&dir, &strs(&args), &without);
    assert_eq!(get(server.port, &without, "/health").unwrap().status, 200);
    assert_eq!(get(server.port, &with_cert, "/health").unwrap().status, 200);
}

#[test]
fn ciphers_mapped_with_a_warning_for_the_rest() {
    let c = certs();
    let dir = scratch_dir("tls-ciphers");
    let mut args = vec!["rgunicorn:health".to_string()];
    args.extend(tls_args(c, "server.pem", "server.key"));
    args.extend([
        "--ciphers".into(),
        "TLS_CHACHA20_POLY1305_SHA256:ECDHE-ECDSA-AES128-GCM-SHA256:DHE-RSA-AES256-SHA".into(),
    ]);
    let client = client(false);
    let server = start(&dir, &strs(&args), &client);
    let answer = get(server.port, &client, "/health").unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.suite,
        Some(rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256)
    );
    let log = server.stderr();
    assert!(
        log.contains("[WARNING] ciphers: no rustls equivalent for DHE-RSA-AES256-SHA;"),
        "{log}"
    );
    // No "not implemented" warning for the settings acted on.
    assert!(
        !log.contains("`ciphers`") && !log.contains("`certfile`"),
        "{log}"
    );
}

#[test]
fn wsgi_url_scheme_is_https() {
    let c = certs();
    let dir = scratch_dir("tls-wsgi");
    let apps = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/apps");
    std::fs::copy(apps.join("wsgi_app.py"), dir.join("wsgi_app.py")).unwrap();
    let mut args = vec!["wsgi_app:app".to_string()];
    args.extend(tls_args(c, "server.pem", "server.key"));
    let client = client(false);
    let server = start(&dir, &strs(&args), &client);
    let answer = get(server.port, &client, "/env").unwrap();
    assert_eq!(answer.status, 200);
    let scheme = answer
        .body
        .lines()
        .find_map(|l| l.strip_prefix("wsgi.url_scheme\t"))
        .unwrap_or_else(|| panic!("no wsgi.url_scheme in {}", answer.body));
    assert_eq!(scheme, "\"https\"");
    assert!(!answer.body.lines().any(|l| l.starts_with("HTTPS\t")));
}

/// An ASGI websocket over TLS: the 101, frames both ways through the TLS
/// stream, and `wss` as the scope's scheme.
#[test]
fn asgi_websocket_over_tls() {
    use tokio_tungstenite::tungstenite::{self, Message};
    let c = certs();
    let dir = scratch_dir("tls-wss");
    let apps = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/apps");
    std::fs::copy(apps.join("asgi_raw.py"), dir.join("asgi_raw.py")).unwrap();
    let mut args = vec!["asgi_raw:app".to_string(), "-k".into(), "asgi".into()];
    args.extend(tls_args(c, "server.pem", "server.key"));
    let client = client(false);
    let server = start(&dir, &strs(&args), &client);
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(client.clone(), name).unwrap();
    let sock = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let tls = rustls::StreamOwned::new(conn, sock);
    let url = format!("wss://127.0.0.1:{}/ws/scope", server.port);
    let (mut ws, resp) = tungstenite::client(url, tls).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status().as_u16(), 101);
    let Message::Text(scope) = ws.read().unwrap() else {
        panic!("no scope")
    };
    assert!(scope.lines().any(|l| l == "scheme\t\"wss\""), "{scope}");
    ws.send(Message::text("over tls")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("over tls"));
    ws.close(None).unwrap();
    match ws.read() {
        Ok(Message::Close(_)) => {}
        r => panic!("expected the close, got {r:?}"),
    }
}

#[test]
fn bad_files_stop_the_start_with_exit_1() {
    let c = certs();
    let dir = scratch_dir("tls-bad-files");
    let cases: [(&str, &str, &str); 5] = [
        ("server.pem", "garbage.key", "no private key found"),
        ("server.pem", "other.key", "does not match the certificate"),
        ("server.pem", "missing.key", "does not exist"),
        ("missing.pem", "server.key", "does not exist"),
        ("garbage.key", "server.key", "no certificate found"),
    ];
    for (cert, key, want) in cases {
        let mut args = vec!["rgunicorn:health".to_string()];
        args.extend(tls_args(c, cert, key));
        let (code, stderr) = run_to_exit(&dir, &strs(&args));
        assert_eq!(code, Some(1), "{cert} {key}: {stderr}");
        assert!(
            stderr.contains(want),
            "{cert} {key}: want {want:?} in {stderr}"
        );
        assert!(stderr.contains("Error: "), "{stderr}");
        assert!(!stderr.contains("Listening at"), "{stderr}");
        assert!(!stderr.contains("Booting worker"), "{stderr}");
    }
    // gunicorn's own wording for a missing file.
    let mut args = vec!["rgunicorn:health".to_string()];
    args.extend(tls_args(c, "missing.pem", "server.key"));
    let (_, stderr) = run_to_exit(&dir, &strs(&args));
    assert!(
        stderr.contains(&format!(
            "certfile \"{}\" does not exist",
            c.path("missing.pem")
        )),
        "{stderr}"
    );
}

#[test]
fn ssl_context_hook_is_refused() {
    let c = certs();
    let dir = scratch_dir("tls-ssl-context");
    std::fs::write(
        dir.join("tls.conf.py"),
        "def ssl_context(conf, default_ssl_context_factory):\n    return default_ssl_context_factory()\n",
    )
    .unwrap();
    let mut args = vec![
        "rgunicorn:health".to_string(),
        "-c".into(),
        "tls.conf.py".into(),
    ];
    args.extend(tls_args(c, "server.pem", "server.key"));
    let (code, stderr) = run_to_exit(&dir, &strs(&args));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("ssl_context hook is set, but rgunicorn can't use a Python ssl.SSLContext"),
        "{stderr}"
    );
}

/// The test client offering `http/1.1` alone over ALPN.
fn http1_client() -> Arc<rustls::ClientConfig> {
    let mut config = (*client(false)).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// `curl --http2` trusting the test CA: `HTTP-version status`.
fn curl_h2(port: u16, path: &str) -> String {
    let out = Command::new("curl")
        .args([
            "-s",
            "-m",
            "10",
            "--http2",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version} %{http_code}",
        ])
        .args(["--cacert", &certs().path("ca.pem")])
        .arg(format!("https://127.0.0.1:{port}{path}"))
        .output()
        .expect("the curl command (Debian package `curl`) is needed by this test");
    text(&out.stdout)
}

#[test]
fn http2_by_alpn_when_http_protocols_lists_h2() {
    let c = certs();
    let dir = scratch_dir("tls-h2");
    let mut args = vec![
        "rgunicorn:health".to_string(),
        "--http-protocols".into(),
        "h2,h1".into(),
    ];
    args.extend(tls_args(c, "server.pem", "server.key"));
    let h1 = http1_client();
    let server = start(&dir, &strs(&args), &h1);
    // A client that offers h2 gets it; one that offers http/1.1 alone
    // still gets HTTP/1.1 (h1 is listed too).
    assert_eq!(curl_h2(server.port, "/health"), "2 200");
    let answer = get(server.port, &h1, "/health").unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(answer.alpn.as_deref(), Some(&b"http/1.1"[..]));
    drop(server);

    // h2 alone: a client offering only http/1.1 fails the handshake
    // (gunicorn: "HTTP/2 only (reject HTTP/1.1 clients)").
    let dir = scratch_dir("tls-h2-only");
    let mut args = vec![
        "rgunicorn:health".to_string(),
        "--http-protocols".into(),
        "h2".into(),
    ];
    args.extend(tls_args(c, "server.pem", "server.key"));
    let mut child = command(&dir, &strs(&args)).spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + WAIT;
    let port = loop {
        assert!(Instant::now() < deadline, "no Listening line");
        let line = rx
            .recv_timeout(Duration::from_millis(50))
            .unwrap_or_default();
        if let Some(rest) = line.split("Listening at: https://127.0.0.1:").nth(1) {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            break digits.parse::<u16>().unwrap();
        }
    };
    let server = TlsServer {
        child,
        port,
        lines: Default::default(),
    };
    let deadline = Instant::now() + WAIT;
    while curl_h2(port, "/health") != "2 200" {
        assert!(Instant::now() < deadline, "no HTTP/2 answer");
        std::thread::sleep(Duration::from_millis(50));
    }
    let err = get(port, &h1, "/health")
        .err()
        .expect("an http/1.1-only client is refused");
    assert!(err.to_string().contains("NoApplicationProtocol"), "{err}");
    drop(server);
}
