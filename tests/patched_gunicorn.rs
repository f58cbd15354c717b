//! Configs and apps that replace parts of gunicorn to change what it
//! serves, against gunicorn 27.0.1. A real config subclasses
//! `gunicorn.http.wsgi.Response` to add security headers to every
//! response (another app patches `Response.default_headers` when it is
//! imported): gunicorn sends them; rgunicorn, whose responses are written
//! in Rust, refuses to start rather than serve without them, and names
//! the replacement. A replaced `Arbiter` or `gunicorn.SERVER` serves the
//! same either way: rgunicorn warns.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::server::{wait_exit, Server};
use common::{gunicorn, rgunicorn, scratch_dir};

/// gunicorn is importable from the config (the test venv's packages).
fn venv() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-venv")
}

/// The config's pattern: a subclass adding a header, put in gunicorn's
/// module.
const RESPONSE_CONF: &str = r#"
from gunicorn.http import wsgi
class Response(wsgi.Response):
    def default_headers(self, *args, **kwargs):
        headers = super().default_headers(*args, **kwargs)
        headers.append("X-Frame-Options: DENY\r\n")
        return headers
wsgi.Response = Response
"#;

/// The app's pattern: its module wraps `default_headers` when imported.
const PATCHING_APP: &str = r#"
from gunicorn.http import wsgi
_default_headers = wsgi.Response.default_headers
def default_headers(self, *args, **kwargs):
    return _default_headers(self, *args, **kwargs) + ["X-Frame-Options: DENY\r\n"]
wsgi.Response.default_headers = default_headers
def application(environ, start_response):
    start_response('200 OK', [('Content-Length', '2')])
    return [b'ok']
"#;

/// A metrics exporter's pattern: its Arbiter subclass put in gunicorn's
/// modules, and a config that hides the server's name.
const ARBITER_CONF: &str = r#"
import gunicorn
import gunicorn.arbiter, gunicorn.app.base
class CountingArbiter(gunicorn.arbiter.Arbiter):
    def handle_hup(self):
        super().handle_hup()
gunicorn.arbiter.Arbiter = CountingArbiter
gunicorn.app.base.Arbiter = CountingArbiter
gunicorn.SERVER = "hidden"
"#;

fn setup(name: &str) -> PathBuf {
    let dir = scratch_dir(name);
    common::copy_test_apps(&dir);
    std::fs::write(dir.join("patching_app.py"), PATCHING_APP).unwrap();
    std::fs::write(dir.join("response.conf.py"), RESPONSE_CONF).unwrap();
    std::fs::write(dir.join("arbiter.conf.py"), ARBITER_CONF).unwrap();
    dir
}

/// `GET /` through gunicorn: the raw response.
fn gunicorn_response(dir: &Path, app: &str, conf: &str) -> String {
    let venv = venv();
    let server = Server::start_program_env(
        &gunicorn(),
        app,
        dir,
        &["-c", conf],
        &[("VIRTUAL_ENV", Some(venv.to_str().unwrap()))],
    );
    let mut s = std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    use std::io::Write;
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let got = common::read_to_eof(&mut s, Duration::from_secs(5));
    assert_eq!(server.stop(), 0);
    common::text(&got)
}

/// rgunicorn run to its end: (status, stderr).
fn rgunicorn_refusal(dir: &Path, app: &str, conf: &str) -> (i32, String) {
    let mut child = Command::new(rgunicorn())
        .current_dir(dir)
        .args([app, "-c", conf, "--bind", "127.0.0.1:0", "--workers", "1"])
        .arg("--no-control-socket")
        .env("VIRTUAL_ENV", venv())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("stderr.txt")).unwrap())
        .spawn()
        .unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(20));
    let stderr = std::fs::read_to_string(dir.join("stderr.txt")).unwrap();
    (status, stderr)
}

#[test]
fn a_replaced_response_writer_is_refused_by_name_where_gunicorn_adds_headers() {
    let dir = setup("patched-response");
    std::fs::write(dir.join("empty.conf.py"), "").unwrap();
    // In the config, the master refuses before binding; in the app module,
    // its worker fails to boot and the master stops. gunicorn sends the
    // header both times.
    let cases = [
        (
            "plain_app",
            "response.conf.py",
            1,
            "gunicorn.http.wsgi.Response was replaced by __config__.Response: rgunicorn writes \
             responses in Rust and never calls it",
            ("Listening at", false),
        ),
        (
            "patching_app",
            "empty.conf.py",
            3,
            "gunicorn.http.wsgi.Response.default_headers was replaced by \
             patching_app.default_headers",
            ("Worker failed to boot", true),
        ),
    ];
    for (app, conf, want_status, refusal, (line, logged)) in cases {
        let theirs = gunicorn_response(&dir, app, conf);
        assert!(theirs.contains("\r\nX-Frame-Options: DENY\r\n"), "{theirs}");
        let (status, stderr) = rgunicorn_refusal(&dir, app, conf);
        assert_eq!(status, want_status, "{stderr}");
        assert!(stderr.contains(refusal), "{stderr}");
        assert_eq!(stderr.contains(line), logged, "{stderr}");
        // --check-config reports it, as a start refuses it.
        let out = Command::new(rgunicorn())
            .current_dir(&dir)
            .args([app, "-c", conf, "--check-config"])
            .env("VIRTUAL_ENV", venv())
            .output()
            .unwrap();
        let stderr = common::text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{app}: {stderr}");
        assert!(stderr.contains("was replaced by"), "{app}: {stderr}");
    }
}

#[test]
fn a_replaced_arbiter_or_server_name_is_served_with_a_warning() {
    let dir = setup("patched-arbiter");
    let theirs = gunicorn_response(&dir, "plain_app", "arbiter.conf.py");
    assert!(theirs.contains("\r\nServer: hidden\r\n"), "{theirs}");
    let venv = venv();
    let server = Server::start_program_env(
        &rgunicorn(),
        "plain_app",
        &dir,
        &["-c", "arbiter.conf.py"],
        &[("VIRTUAL_ENV", Some(venv.to_str().unwrap()))],
    );
    assert_eq!(server.get("/").unwrap(), (200, "ok".to_string()));
    for warning in [
        "[WARNING] gunicorn.arbiter.Arbiter was replaced by __config__.CountingArbiter: \
         rgunicorn's master is Rust and never runs it",
        "[WARNING] gunicorn.app.base.Arbiter was replaced by __config__.CountingArbiter",
        "[WARNING] gunicorn.SERVER = \"hidden\" has no effect: rgunicorn's responses carry no \
         Server header",
    ] {
        assert!(server.logged(warning), "{warning}");
    }
    assert_eq!(server.stop(), 0);
}
