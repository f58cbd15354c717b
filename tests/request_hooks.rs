//! `pre_request` and `post_request` as gunicorn calls them: with gunicorn's
//! `req`/`resp` attributes and the minimal environ, a failing `pre_request`
//! fails its request with a 500 and `post_request(worker, req, {}, None)`
//! still runs, a failing `post_request` is logged and changes nothing; a
//! WSGI app's `post_request` gets the environ the app itself was called with
//! (a key the app added is there), as under gunicorn.

use crate::common;

use common::server::*;
use common::*;

const CONF: &str = r#"
bind = "127.0.0.1:0"
workers = 1
import os, json
LOG = os.environ["HOOK_LOG"] + ".req"
def _rec(d):
    with open(LOG, "a") as f:
        f.write(json.dumps(d, sort_keys=True) + "\n")
def pre_request(worker, req):
    if req.path == "/boom-pre":
        raise RuntimeError("pre_request failed on purpose")
    _rec({"hook": "pre", "pid": os.getpid(), "worker": worker.pid, "nr": worker.nr,
          "method": req.method, "uri": req.uri, "path": req.path, "query": req.query,
          "version": list(req.version), "ua": dict(req.headers).get("USER-AGENT")})
def post_request(worker, req, environ, resp):
    if req.path == "/boom-post":
        raise RuntimeError("post_request failed on purpose")
    _rec({"hook": "post", "path": req.path, "env_path": environ.get("PATH_INFO"),
          "env_ua": environ.get("HTTP_USER_AGENT"), "env_empty": environ == {},
          "env_wsgi": "wsgi.input" in environ, "env_marker": environ.get("app.marker"),
          "status": None if resp is None else resp.status,
          "code": None if resp is None else resp.status_code,
          "sent": None if resp is None else resp.sent})
"#;

fn records(server: &Server) -> Vec<String> {
    let path = format!("{}.req", server.hook_log.display());
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn raw(port: u16, head: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    s.write_all(head.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn pre_and_post_request_as_gunicorn() {
    let dir = scratch_dir("reqhooks");
    std::fs::write(dir.join("reqhooks.conf.py"), CONF).unwrap();
    let server = Server::start(&dir, &["-c", "reqhooks.conf.py"]);
    let worker = server.worker_pids()[0];

    let resp = raw(
        server.port,
        "GET /health?x=1 HTTP/1.1\r\nHost: t\r\nUser-Agent: t/1\r\nConnection: close\r\n\r\n",
    );
    let body_len = resp.split("\r\n\r\n").nth(1).unwrap().len();
    server.wait_until(|| {
        records(&server)
            .iter()
            .any(|l| l.contains(r#""env_ua": "t/1""#))
    });
    let recs = records(&server);
    // The readiness probe made a first /health request; this is ours.
    let pre = recs
        .iter()
        .find(|l| l.contains(r#""uri": "/health?x=1""#))
        .unwrap();
    for want in [
        format!(r#""pid": {worker}"#),
        format!(r#""worker": {worker}"#),
        r#""method": "GET""#.to_string(),
        r#""uri": "/health?x=1""#.to_string(),
        r#""query": "x=1""#.to_string(),
        r#""version": [1, 1]"#.to_string(),
        r#""ua": "t/1""#.to_string(),
    ] {
        assert!(pre.contains(&want), "{want} in {pre}");
    }
    assert!(
        !pre.contains(r#""nr": 0"#),
        "worker.nr counts requests: {pre}"
    );
    let post = recs
        .iter()
        .find(|l| l.contains(r#""env_ua": "t/1""#))
        .unwrap();
    for want in [
        r#""env_path": "/health""#.to_string(),
        r#""env_ua": "t/1""#.to_string(),
        r#""env_empty": false"#.to_string(),
        r#""status": "200 OK""#.to_string(),
        r#""code": 200"#.to_string(),
        format!(r#""sent": {body_len}"#),
    ] {
        assert!(post.contains(&want), "{want} in {post}");
    }

    // A failing pre_request: 500, traceback logged, post_request with {} and None.
    let resp = raw(
        server.port,
        "GET /boom-pre HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert!(resp.starts_with("HTTP/1.1 500"), "{resp}");
    server.wait_until(|| {
        records(&server)
            .iter()
            .any(|l| l.contains(r#""path": "/boom-pre""#))
    });
    let post = records(&server)
        .into_iter()
        .find(|l| l.contains(r#""path": "/boom-pre""#))
        .unwrap();
    assert!(
        post.contains(r#""env_empty": true"#) && post.contains(r#""status": null"#),
        "{post}"
    );
    server.wait_until(|| server.logged("pre_request failed on purpose"));

    // A failing post_request: logged, the response as the app made it.
    let resp = raw(
        server.port,
        "GET /boom-post HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert!(resp.starts_with("HTTP/1.1 404"), "{resp}");
    server.wait_until(|| {
        server.logged("Exception in post_request hook")
            && server.logged("post_request failed on purpose")
    });
    assert_eq!(server.stop(), 0);
}

#[test]
fn post_request_gets_the_wsgi_apps_own_environ_as_in_gunicorn() {
    let dir = scratch_dir("reqhooks-wsgi");
    std::fs::write(dir.join("reqhooks.conf.py"), CONF).unwrap();
    std::fs::write(
        dir.join("marking_app.py"),
        "def application(environ, start_response):\n    environ['app.marker'] = 'set by the app'\n    start_response('200 OK', [('Content-Type', 'text/plain')])\n    return [b'ok']\n",
    )
    .unwrap();
    for program in [rgunicorn(), gunicorn()] {
        let server =
            Server::start_program(&program, "marking_app", &dir, &["-c", "reqhooks.conf.py"]);
        raw(
            server.port,
            "GET /marked HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        );
        server.wait_until(|| {
            records(&server)
                .iter()
                .any(|l| l.contains(r#""hook": "post""#) && l.contains(r#""path": "/marked""#))
        });
        let post = records(&server)
            .into_iter()
            .find(|l| l.contains(r#""hook": "post""#) && l.contains(r#""path": "/marked""#))
            .unwrap();
        assert!(post.contains(r#""env_wsgi": true"#), "{program:?}: {post}");
        assert!(
            post.contains(r#""env_marker": "set by the app""#),
            "{program:?}: {post}"
        );
        server.stop();
        std::fs::remove_file(format!("{}.req", server_log(&dir))).ok();
    }
}

fn server_log(dir: &std::path::Path) -> String {
    dir.join("hooks.log").display().to_string()
}

#[test]
fn a_failing_pre_request_is_logged_with_method_and_target_as_gunicorn() {
    // gunicorn's handle_error: "Error handling request %s %s" with the
    // method and the target as sent.
    let dir = scratch_dir("reqhooks-label");
    copy_test_apps(&dir);
    std::fs::write(dir.join("reqhooks.conf.py"), CONF).unwrap();
    for program in [gunicorn(), rgunicorn()] {
        let server = Server::start_program(&program, "wsgi_app", &dir, &["-c", "reqhooks.conf.py"]);
        let resp = raw(
            server.port,
            "GET /boom-pre?x=1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        );
        assert!(resp.starts_with("HTTP/1.1 500"), "{program:?}: {resp}");
        server.wait_until(|| {
            !server
                .log_lines(|l| l.ends_with("[ERROR] Error handling request GET /boom-pre?x=1"))
                .is_empty()
        });
        assert_eq!(server.stop(), 0, "{program:?}");
    }
}

/// A real config's request timing: `pre_request` sets an attribute on
/// `req`, `post_request` reads it back from the same object.
const TIMING_CONF: &str = r#"
bind = "127.0.0.1:0"
workers = 1
import os, json, time
LOG = os.environ["HOOK_LOG"] + ".req"
SEEN = []
def pre_request(worker, req):
    req.start_time = time.time()
    req.tag = "pre:" + req.path
    SEEN.append(req)
def post_request(worker, req, environ, resp):
    with open(LOG, "a") as f:
        f.write(json.dumps({"path": req.path, "tag": getattr(req, "tag", None),
                            "same": req is SEEN[-1],
                            "timed": time.time() >= getattr(req, "start_time", 1e12),
                            "status": resp.status}, sort_keys=True) + "\n")
"#;

#[test]
fn attributes_pre_request_sets_on_req_reach_post_request_as_in_gunicorn() {
    let dir = scratch_dir("reqhooks-attrs");
    std::fs::write(dir.join("timing.conf.py"), TIMING_CONF).unwrap();
    copy_test_apps(&dir);
    // gunicorn's sync worker, rgunicorn with the same WSGI app, and
    // rgunicorn's built-in Rust app (the hooks serve every kind of app).
    for (program, app) in [
        (gunicorn(), "plain_app"),
        (rgunicorn(), "plain_app"),
        (rgunicorn(), "rgunicorn:health"),
    ] {
        let server = Server::start_program(&program, app, &dir, &["-c", "timing.conf.py"]);
        let resp = raw(
            server.port,
            "GET /timed HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        );
        assert!(resp.contains("\r\n\r\n"), "{program:?} {app}: {resp}");
        server.wait_until(|| records(&server).iter().any(|l| l.contains("/timed")));
        let post = records(&server)
            .into_iter()
            .find(|l| l.contains(r#""path": "/timed""#))
            .unwrap();
        for want in [
            r#""same": true"#,
            r#""tag": "pre:/timed""#,
            r#""timed": true"#,
        ] {
            assert!(post.contains(want), "{program:?} {app}: {want} in {post}");
        }
        assert_eq!(server.stop(), 0, "{program:?} {app}");
        std::fs::remove_file(format!("{}.req", server_log(&dir))).ok();
    }
}
