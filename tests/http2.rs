//! HTTP/2 in cleartext with prior knowledge (`http_protocols = "h2,h1"`,
//! `http2_cleartext = "prior-knowledge"`), against gunicorn 27.0.1's gthread
//! worker on the same WSGI app: the environ of an HTTP/2 request, and the
//! 400 for a trusted peer that speaks HTTP/1 instead; untrusted peers get
//! HTTP/1 as if the setting were off; streams multiplexed on one
//! connection; a stream in flight finishes across a graceful stop. The
//! client is curl (nghttp2). TLS + ALPN is in `tests/tls.rs`.

use crate::common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::server::Server;
use common::*;

const H2C: [&str; 4] = [
    "--http-protocols",
    "h2,h1",
    "--http2-cleartext",
    "prior-knowledge",
];

fn app_dir(name: &str) -> PathBuf {
    let dir = scratch_dir(name);
    let app = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/apps/wsgi_app.py");
    std::fs::copy(app, dir.join("wsgi_app.py")).unwrap();
    dir
}

/// `curl -s` with `args`: (exit code, stdout).
fn curl(args: &[&str]) -> (i32, String) {
    let out = Command::new("curl")
        .args(["-s", "-m", "20"])
        .args(args)
        .output()
        .expect("the curl command (Debian package `curl`) is needed by this test");
    (out.status.code().unwrap_or(-1), text(&out.stdout))
}

/// One HTTP/2 request with prior knowledge: (HTTP version, status, body).
fn h2_get(port: u16, path: &str) -> (String, u16, String) {
    let url = format!("http://127.0.0.1:{port}{path}");
    let (code, out) = curl(&[
        "--http2-prior-knowledge",
        "-H",
        "X-Test: 1",
        "-H",
        "x_under: dropped",
        "-w",
        "\n%{http_version} %{http_code}",
        &url,
    ]);
    assert_eq!(code, 0, "curl failed: {out}");
    let (body, tail) = out.rsplit_once('\n').unwrap();
    let (version, status) = tail.split_once(' ').unwrap();
    (
        version.to_string(),
        status.parse().unwrap(),
        body.to_string(),
    )
}

fn environ(body: &str) -> BTreeMap<String, String> {
    body.lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn prior_knowledge_environ_and_refusal_match_gunicorn() {
    let dir = app_dir("h2c-wsgi");
    let mut args = H2C.to_vec();
    args.extend(["-k", "gthread", "-w", "1"]);
    let g = Server::start_program(&gunicorn(), "wsgi_app", &dir, &args);
    let r = Server::start_program(&rgunicorn(), "wsgi_app", &dir, &args);

    let (gv, gs, gbody) = h2_get(g.port, "/env/a%20b?q=1");
    let (rv, rs, rbody) = h2_get(r.port, "/env/a%20b?q=1");
    assert_eq!((gv.as_str(), gs), ("2", 200), "{gbody}");
    assert_eq!((rv.as_str(), rs), ("2", 200), "{rbody}");
    let (ge, re) = (environ(&gbody), environ(&rbody));
    // Differ on purpose: ports, the server's name, and gunicorn-only keys
    // (its raw socket, early hints, HTTP/2 priority).
    let differ = ["REMOTE_PORT", "SERVER_PORT", "SERVER_SOFTWARE", "HTTP_HOST"];
    let only_gunicorn = |k: &str| {
        k == "gunicorn.socket" || k == "wsgi.early_hints" || k.starts_with("gunicorn.http2.")
    };
    let mut mismatches = Vec::new();
    for (k, gv) in &ge {
        if only_gunicorn(k) || differ.contains(&k.as_str()) {
            continue;
        }
        match re.get(k) {
            Some(rv) if rv == gv => {}
            other => mismatches.push(format!("{k}: {other:?} (gunicorn: {gv})")),
        }
    }
    for k in re.keys() {
        if !ge.contains_key(k) {
            mismatches.push(format!("{k}: not in gunicorn's environ"));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    assert_eq!(re["SERVER_PROTOCOL"], "\"HTTP/2.0\"");
    assert_eq!(re["HTTP_HOST"], format!("\"127.0.0.1:{}\"", r.port));
    assert!(!re.contains_key("HTTP_X_UNDER"));

    // A trusted peer (127.0.0.1 is in forwarded_allow_ips) on a
    // prior-knowledge port that speaks HTTP/1: gunicorn's 400, same bytes.
    let http1 = |port| curl(&["-i", "--http1.1", &format!("http://127.0.0.1:{port}/env")]).1;
    let (gr, rr) = (http1(g.port), http1(r.port));
    assert!(rr.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{rr}");
    assert!(
        rr.contains(
            "Expected HTTP/2 connection preface, got b&#x27;GET /env HTTP/1.1\\r\\nHost:&#x27;"
        ),
        "{rr}"
    );
    assert_eq!(rr, gr);
    g.stop();
    r.stop();
}

#[test]
fn untrusted_peers_are_served_http1_as_if_off() {
    let dir = scratch_dir("h2c-untrusted");
    let mut args = H2C.to_vec();
    args.extend(["--forwarded-allow-ips", "192.0.2.1"]);
    let r = Server::start(&dir, &args);
    let url = format!("http://127.0.0.1:{}/health", r.port);
    let (code, out) = curl(&["--http1.1", "-w", " %{http_code}", &url]);
    assert_eq!(code, 0);
    assert!(out.ends_with(" 200"), "{out}");
    // A preface is not HTTP/1: gunicorn's 400 for the request line.
    let (_, out) = curl(&["--http2-prior-knowledge", "-w", " %{http_version}", &url]);
    assert!(!out.ends_with(" 2"), "{out}");
    r.stop();
}

#[test]
fn streams_share_one_connection_and_finish_across_term() {
    let dir = app_dir("h2c-streams");
    let mut args = H2C.to_vec();
    args.extend(["-k", "gthread", "-w", "1", "--threads", "4"]);
    let r = Server::start_program(&rgunicorn(), "wsgi_app", &dir, &args);
    // Three streams on one connection, all inside the app at once: the
    // app's barrier lets them through only together.
    let client = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/apps/h2_client.py");
    let python = gunicorn().with_file_name("python");
    let out = Command::new(python)
        .arg(client)
        .arg(r.port.to_string())
        .args(["/barrier?n=3", "/barrier?n=3", "/barrier?n=3"])
        .output()
        .unwrap();
    let answers = text(&out.stdout);
    assert!(out.status.success(), "{answers}{}", text(&out.stderr));
    assert_eq!(answers.lines().count(), 3, "{answers}");
    assert!(
        answers
            .lines()
            .all(|l| l.starts_with("200 ") && l.contains("\"together\"")),
        "{answers}"
    );

    // TERM while a stream is in the app: the connection is told GOAWAY,
    // the stream still gets its answer, then the server exits cleanly.
    let url = format!("http://127.0.0.1:{}/hold", r.port);
    let held = std::thread::spawn(move || {
        curl(&[
            "--http2-prior-knowledge",
            "-w",
            " %{http_version} %{http_code}",
            &url,
        ])
    });
    r.wait_until(|| dir.join("held").exists());
    r.signal("TERM");
    // The worker is draining (no one accepts any more) before the app is
    // let go.
    r.wait_until(|| std::net::TcpStream::connect(("127.0.0.1", r.port)).is_err());
    std::fs::write(dir.join("go"), "").unwrap();
    let (code, out) = held.join().unwrap();
    assert_eq!(code, 0, "{out}");
    assert_eq!(out, "released 2 200");
    assert_eq!(r.stop(), 0);
}
