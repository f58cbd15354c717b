//! gunicorn 27.0.1's request corpus (`../shared/conformance/gunicorn-requests`)
//! against rgunicorn's master and workers, serving `examples/echoapp.rs` and
//! then a WSGI app (`tests/apps/wsgi_corpus.py`): every case is sent with
//! the corpus README's client procedure (connect, send, half-close, read to
//! EOF with a 3 s cap) and the statuses read back are compared with
//! EXPECTED.tsv, with default settings and, for cases that name settings,
//! with those settings in a config file. The CONNECT cases are also sent to
//! gunicorn 27.0.1 serving the same WSGI app (gthread, one worker, as the
//! corpus was measured), and the whole responses are compared.

use crate::common;
use crate::common::server::Server;

use rgunicorn::corpus::{load, Case};
use std::collections::BTreeMap;
use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Cases where rgunicorn deliberately answers otherwise, with why.
const KNOWN: &[(&str, &str, &str)] = &[(
    "valid/022",
    "200,200",
    "gunicorn's measuring app sent no Content-Length, so gunicorn had to close its HTTP/1.0 \
     keep-alive response before the second pipelined request; rgunicorn's responses always \
     carry a length (and the WSGI app sends one), so the connection is kept and the second \
     request answered (200,200)",
)];

/// Cases where rgunicorn serving the WSGI app answers otherwise, not on
/// purpose: open differences, listed so that every other case is checked.
const KNOWN_WSGI: &[(&str, &str, &str)] = &[(
    "valid/099",
    "500",
    "the body ends early (Content-Length: 17914, then 8599 bytes and EOF): gunicorn hands \
     the app the short body; rgunicorn's wsgi.input raises OSError, and the app's \
     unhandled exception is a 500",
)];

fn echoapp() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_rgunicorn"))
        .parent()
        .unwrap()
        .join("examples/echoapp")
}

/// What serves the corpus.
#[derive(Clone, Copy)]
enum App {
    /// rgunicorn serving `examples/echoapp.rs`.
    Echo,
    /// rgunicorn serving `tests/apps/wsgi_corpus.py`.
    Wsgi,
    /// gunicorn 27.0.1 (gthread) serving `tests/apps/wsgi_corpus.py`.
    GunicornWsgi,
}

impl App {
    fn name(self) -> &'static str {
        match self {
            App::Echo => "echoapp",
            App::Wsgi => "wsgi",
            App::GunicornWsgi => "gunicorn-wsgi",
        }
    }

    fn command(self, dir: &Path) -> Command {
        let mut cmd = match self {
            App::Echo => {
                let mut cmd = Command::new(echoapp());
                // APP_MODULE is not loaded.
                cmd.arg("echoapp:app");
                cmd
            }
            App::Wsgi | App::GunicornWsgi => {
                let app = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/apps/wsgi_corpus.py");
                std::fs::copy(app, dir.join("wsgi_corpus.py")).unwrap();
                let mut cmd = match self {
                    App::Wsgi => Command::new(common::rgunicorn()),
                    _ => {
                        let mut cmd = Command::new(common::gunicorn());
                        cmd.args(["--worker-class", "gthread"]);
                        cmd
                    }
                };
                cmd.arg("wsgi_corpus:app")
                    .env("PYTHONDONTWRITEBYTECODE", "1");
                cmd
            }
        };
        cmd.current_dir(dir)
            .args(["-c", "conformance.conf.py", "--no-control-socket"])
            .args(["--bind", "127.0.0.1:0", "--workers", "1"]);
        cmd
    }
}

/// Start `app` with `settings` (`name=value;...`, Python literals) as
/// config file lines; ready once a worker answers.
fn start(app: App, settings: &str, tag: &str) -> Server {
    let dir = common::scratch_dir(&format!("conformance-{}-{tag}", app.name()));
    let mut conf = String::from("bind = '127.0.0.1:0'\nworkers = 1\n");
    if settings != "-" {
        for kv in settings.split(';') {
            let (k, v) = kv.split_once('=').unwrap();
            conf.push_str(&format!("{} = {}\n", k.trim(), v.trim()));
        }
    }
    std::fs::write(dir.join("conformance.conf.py"), conf).unwrap();
    let child = app
        .command(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (examples/echoapp: `cargo test --workspace` builds it, or run \
                 `cargo build --example echoapp`)",
                app.name()
            )
        });
    let server = Server::listening(child, dir.join("hooks.log"), None, false);
    let deadline = Instant::now() + Duration::from_secs(30);
    // Ready once a worker answers a request.
    loop {
        assert!(
            Instant::now() < deadline,
            "{}: no worker answered",
            app.name()
        );
        let r = exchange(
            server.port,
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        if !r.is_empty() {
            break;
        }
        // The listener is bound by the master before a worker accepts:
        // the connect succeeds and waits in the queue, so this is not a
        // busy loop; a refused or reset connection retries at once.
    }
    server
}

/// The README's client procedure; the bytes read back.
fn exchange(port: u16, bytes: &[u8]) -> Vec<u8> {
    let mut got = Vec::new();
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return got;
    };
    let _ = s.write_all(bytes);
    let _ = s.shutdown(Shutdown::Write);
    got.extend(crate::common::read_to_eof(&mut s, Duration::from_secs(3)));
    got
}

/// Status codes of the responses in `raw` (each starts with `HTTP/1.x NNN`).
fn statuses(raw: &[u8]) -> String {
    let mut out = Vec::new();
    let mut i = 0;
    while i + 12 <= raw.len() {
        let r = &raw[i..];
        if (r.starts_with(b"HTTP/1.1 ") || r.starts_with(b"HTTP/1.0 "))
            && r[9..12].iter().all(u8::is_ascii_digit)
        {
            out.push(String::from_utf8_lossy(&r[9..12]).into_owned());
            i += 12;
        } else {
            i += 1;
        }
    }
    if out.is_empty() {
        "EMPTY".into()
    } else {
        out.join(",")
    }
}

/// A whole response made comparable across servers: its status line, its
/// header fields with lower-case names, sorted, without the ones that
/// differ by nature (`Date`, and `Server`, which rgunicorn does not send),
/// then everything after the head, byte for byte.
fn comparable(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let Some((head, rest)) = text.split_once("\r\n\r\n") else {
        return format!("no complete head: {text:?}");
    };
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    let mut fields: Vec<String> = lines
        .map(|l| match l.split_once(':') {
            Some((k, v)) => format!("{}: {}", k.to_ascii_lowercase(), v.trim()),
            None => format!("(not a field) {l}"),
        })
        .filter(|f| !f.starts_with("date: ") && !f.starts_with("server: "))
        .collect();
    fields.sort();
    format!("{status}\n{}\n\n{rest:?}", fields.join("\n"))
}

/// Send every case to `app` (default settings, then each case's settings)
/// and compare the statuses with EXPECTED.tsv; differences other than
/// `known` ones are returned. `each_default` also sees every case's
/// response with default settings.
fn run_corpus<'a>(
    app: App,
    cases: &'a [Case],
    known: &[(&str, &str, &str)],
    mut each_default: impl FnMut(&'a Case, &[u8]),
) -> Vec<String> {
    let mut failures = Vec::new();
    let is_known =
        |name: &str, got: &str| known.iter().any(|(k, ours, _)| *k == name && *ours == got);
    let server = start(app, "-", "default");
    let mut ok_default = 0;
    for c in cases {
        let raw = exchange(server.port, &c.bytes);
        each_default(c, &raw);
        let got = statuses(&raw);
        if got == c.status_default {
            ok_default += 1;
        } else if !is_known(&c.name, &got) {
            failures.push(format!(
                "{} {} default: want {} got {got}",
                app.name(),
                c.name,
                c.status_default
            ));
        }
    }
    drop(server);

    let mut by_settings: BTreeMap<&str, Vec<&Case>> = BTreeMap::new();
    for c in cases.iter().filter(|c| c.settings != "-") {
        by_settings.entry(&c.settings).or_default().push(c);
    }
    let (mut ok_settings, mut n_settings) = (0, 0);
    for (i, (settings, group)) in by_settings.iter().enumerate() {
        let server = start(app, settings, &i.to_string());
        for c in group {
            n_settings += 1;
            let got = statuses(&exchange(server.port, &c.bytes));
            if got == c.status_with_settings {
                ok_settings += 1;
            } else if !is_known(&c.name, &got) {
                failures.push(format!(
                    "{} {} with {settings}: want {} got {got}",
                    app.name(),
                    c.name,
                    c.status_with_settings
                ));
            }
        }
    }
    println!(
        "conformance ({}): {ok_default}/{} default, {ok_settings}/{n_settings} with settings",
        app.name(),
        cases.len()
    );
    for (name, _, why) in known {
        println!("known difference {name}: {why}");
    }
    failures
}

fn assert_none(failures: Vec<String>) {
    assert!(
        failures.is_empty(),
        "{} cases differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn gunicorn_request_corpus() {
    let cases = load();
    assert!(cases.len() >= 140, "corpus not found or short");
    let mut connect = Vec::new();
    let mut failures = run_corpus(App::Echo, &cases, KNOWN, |c, raw| {
        if c.bytes.starts_with(b"CONNECT ") {
            connect.push((c, comparable(raw)));
        }
    });
    assert!(connect.len() >= 2, "the corpus's CONNECT cases are gone");
    // The Rust app's whole answer (`ok N`, N = the body bytes it read:
    // none here), then gunicorn's close after a CONNECT.
    let want = "HTTP/1.1 200 OK\nconnection: close\ncontent-length: 5\n\n\"ok 0\\n\"";
    for (c, got) in connect {
        if got != want {
            failures.push(format!(
                "{} whole response:\n--- got\n{got}\n--- want\n{want}",
                c.name
            ));
        }
    }
    assert_none(failures);
}

/// The corpus against the WSGI app; a CONNECT gets the app's whole
/// response as from gunicorn (hyper alone would answer a 2xx to it as a
/// tunnel: no Content-Length, no body).
#[test]
fn gunicorn_request_corpus_wsgi() {
    let cases = load();
    assert!(cases.len() >= 140, "corpus not found or short");
    let known: Vec<_> = KNOWN.iter().chain(KNOWN_WSGI).copied().collect();
    let mut connect = Vec::new();
    let mut failures = run_corpus(App::Wsgi, &cases, &known, |c, raw| {
        if c.bytes.starts_with(b"CONNECT ") {
            connect.push((c, raw.to_vec()));
        }
    });
    assert!(connect.len() >= 2, "the corpus's CONNECT cases are gone");
    let gunicorn = start(App::GunicornWsgi, "-", "default");
    for (c, ours) in connect {
        let theirs = exchange(gunicorn.port, &c.bytes);
        assert_eq!(
            statuses(&theirs),
            c.status_default,
            "gunicorn on {}",
            c.name
        );
        let (ours, theirs) = (comparable(&ours), comparable(&theirs));
        if ours != theirs {
            failures.push(format!(
                "{} whole response:\n--- rgunicorn\n{ours}\n--- gunicorn\n{theirs}",
                c.name
            ));
        }
    }
    assert_none(failures);
}
