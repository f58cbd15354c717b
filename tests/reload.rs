//! `reload`: a change to a file the workers imported (or to a
//! `reload_extra_files` entry) replaces every worker, replacement first,
//! while clients keep getting answers: no failed request. A save that
//! breaks the import serves gunicorn's fail app (500 and the traceback)
//! and the save that fixes it reloads again; a burst of saves is one
//! reload; with `preload_app` the workers are replaced but keep the
//! preloaded code, as in gunicorn 27.0.1 (run side by side).

use crate::common;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::server::{Load, Server};
use common::{gunicorn, rgunicorn, scratch_dir};

fn venv() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-venv")
}

/// rgunicorn serving `app` from `dir` with `args`, in the test venv.
/// Started, and both workers booted (their imports done): a save from
/// here on is a change, not what a late worker imports first.
fn start(dir: &Path, app: &str, args: &[&str]) -> Server {
    let venv = venv();
    let server = Server::start_program_env(
        &rgunicorn(),
        app,
        dir,
        args,
        &[("VIRTUAL_ENV", Some(venv.to_str().unwrap()))],
    );
    server.wait_until(|| common::server::count(&server.hooks(), "post_worker_init") == 2);
    server
}

/// A save as an editor makes it: the whole file written at once, to a
/// temporary file renamed over the old one (a new inode, as vim, VS Code
/// and most editors save).
fn save(path: &Path, text: &str) {
    let tmp = path.with_extension("swp-test");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// `cond` within `within`, polled.
fn within(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// The master's workers (its children but the reloader).
fn workers(server: &Server) -> Vec<i32> {
    server
        .worker_pids()
        .into_iter()
        .filter(|p| {
            !std::fs::read_to_string(format!("/proc/{p}/cmdline"))
                .unwrap_or_default()
                .contains("reloader")
        })
        .collect()
}

fn body(server: &Server) -> String {
    server.get("/health").map(|(_, b)| b).unwrap_or_default()
}

const GREETING_APP: &str = "\
from greeting import GREETING

def application(environ, start_response):
    body = GREETING.encode()
    start_response('200 OK', [('Content-Type', 'text/plain'),
                              ('Content-Length', str(len(body)))])
    return [body]
";

/// The migration guide's stack: FastAPI under UvicornWorker. The edited
/// file is a module the app imports, not the app's own.
#[test]
fn a_module_edit_replaces_every_worker_with_no_failed_request() {
    let dir = scratch_dir("reload-module");
    std::fs::write(
        dir.join("main.py"),
        "from fastapi import FastAPI\n\
         from fastapi.responses import PlainTextResponse\n\
         from greeting import GREETING\n\
         app = FastAPI()\n\
         @app.get('/health', response_class=PlainTextResponse)\n\
         async def health():\n    return GREETING\n",
    )
    .unwrap();
    std::fs::write(dir.join("greeting.py"), "GREETING = 'v1'\n").unwrap();
    let server = start(
        &dir,
        "main:app",
        &["--reload", "-k", "uvicorn.workers.UvicornWorker"],
    );
    assert_eq!(body(&server), "v1");
    let before = workers(&server);
    assert_eq!(before.len(), 2);
    let load = Load::start(server.port, 8);
    server.wait_until(|| load.ok.load(Ordering::Relaxed) > 50);

    save(&dir.join("greeting.py"), "GREETING = 'v2'\n");
    server.wait_until(|| body(&server) == "v2");
    // The old generation drained and left; the load ran throughout.
    server.wait_until(|| {
        let now = workers(&server);
        now.len() == 2 && before.iter().all(|p| !now.contains(p))
    });
    let served = load.ok.load(Ordering::Relaxed);
    server.wait_until(|| load.ok.load(Ordering::Relaxed) > served + 50);
    let (ok, failed) = load.finish();
    eprintln!("module edit: {ok} requests served, {failed} failed");
    assert_eq!(failed, 0, "{ok} ok");
    let greeting = dir.join("greeting.py");
    assert_eq!(
        server.log_count(&format!(
            "Worker reloading: {} modified",
            greeting.display()
        )),
        1
    );
    assert_eq!(
        server.log_count("Reloader is on. Use in development only!"),
        1
    );
    assert_eq!(server.stop(), 0);
}

/// `reload_extra_files`: a plain path, and a glob pattern re-expanded as
/// the server runs (a file created after the start is watched, and its
/// first edit reloads, as in gunicorn).
#[test]
fn extra_files_and_patterns_reload() {
    let dir = scratch_dir("reload-extra");
    std::fs::create_dir(dir.join("templates")).unwrap();
    std::fs::write(
        dir.join("app.py"),
        "import glob\n\
         def _read():\n    \
             parts = [open('settings.ini').read().strip()]\n    \
             parts += [open(p).read().strip() for p in sorted(glob.glob('templates/*.txt'))]\n    \
             return ' '.join(parts).encode()\n\
         BODY = _read()\n\
         def application(environ, start_response):\n    \
             start_response('200 OK', [('Content-Length', str(len(BODY)))])\n    \
             return [BODY]\n",
    )
    .unwrap();
    std::fs::write(dir.join("settings.ini"), "a1").unwrap();
    std::fs::write(dir.join("templates/one.txt"), "b1").unwrap();
    let server = start(
        &dir,
        "app",
        &[
            "--reload",
            "--reload-extra-file",
            "settings.ini",
            "--reload-extra-file",
            "templates/*.txt",
        ],
    );
    assert_eq!(body(&server), "a1 b1");
    let load = Load::start(server.port, 8);

    save(&dir.join("settings.ini"), "a2");
    server.wait_until(|| body(&server) == "a2 b1");
    save(&dir.join("templates/one.txt"), "b2");
    server.wait_until(|| body(&server) == "a2 b2");
    // Created after the start: picked up by the pattern (no reload for
    // the creation itself), then its first edit reloads.
    std::fs::write(dir.join("templates/two.txt"), "c1").unwrap();
    let reloads = server.log_count("Worker reloading:");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        // Saved until the reloader knows the file (patterns are expanded
        // once a second), each save given time to be seen.
        save(&dir.join("templates/two.txt"), "c2");
        if within(Duration::from_millis(1500), || {
            server.log_count("Worker reloading:") > reloads
        }) {
            break;
        }
        assert!(Instant::now() < deadline, "the new template never reloaded");
    }
    server.wait_until(|| body(&server) == "a2 b2 c2");

    let (ok, failed) = load.finish();
    eprintln!("extra files: {ok} requests served, {failed} failed");
    assert_eq!(failed, 0, "{ok} ok");
    assert_eq!(server.stop(), 0);
}

/// The app starts importing a module that does not parse: the new
/// workers serve gunicorn's fail app (500, the traceback as text), the
/// master goes on, and the save that fixes that module (never imported
/// before: watched because the failed import reported it) reloads.
#[test]
fn a_syntax_error_serves_the_traceback_and_the_fixing_save_reloads() {
    syntax_error_then_fix(&["--reload"]);
}

/// The same with gevent workers (their app runs on a hub; the fail app
/// is served without one).
#[test]
fn a_syntax_error_under_gevent_workers_too() {
    syntax_error_then_fix(&["--reload", "-k", "gevent"]);
}

fn syntax_error_then_fix(args: &[&str]) {
    let dir = scratch_dir("reload-syntax");
    std::fs::write(dir.join("app.py"), GREETING_APP).unwrap();
    std::fs::write(dir.join("greeting.py"), "GREETING = 'v1'\n").unwrap();
    std::fs::write(dir.join("broken.py"), "GREETING = 'v2' +\n").unwrap();
    let server = start(&dir, "app", args);
    assert_eq!(body(&server), "v1");
    let client = Load::recording(server.port, 4);
    server.wait_until(|| client.seen(|(s, b)| *s == 200 && b == "v1"));

    save(
        &dir.join("app.py"),
        &GREETING_APP.replace("greeting", "broken"),
    );
    server.wait_until(|| client.seen(|(s, _)| *s == 500));
    let (status, text) = server.get("/health").unwrap();
    assert_eq!(status, 500);
    assert!(text.contains("broken.py"), "{text}");
    assert!(
        text.trim_end().ends_with("SyntaxError: invalid syntax"),
        "{text}"
    );

    save(&dir.join("broken.py"), "GREETING = 'v2'\n");
    server.wait_until(|| client.seen(|(s, b)| *s == 200 && b == "v2"));
    let (answers, failures) = client.finish_recorded();
    eprintln!(
        "syntax error: {} answers, {} transport failures",
        answers.len(),
        failures.len()
    );
    assert!(failures.is_empty(), "{failures:?}");
    // Every answer is the old app's, the fail app's or the fixed app's.
    for (status, body) in &answers {
        assert!(
            (*status == 200 && (body == "v1" || body == "v2"))
                || (*status == 500 && body.contains("SyntaxError")),
            "{status} {body}"
        );
    }
    assert!(server.get("/health").unwrap() == (200, "v2".into()));
    assert_eq!(server.stop(), 0);
}

/// Ten saves 30 ms apart (a formatter rewriting a file, a `git checkout`):
/// one reload, after the last save, and the workers replaced once.
#[test]
fn a_burst_of_saves_is_one_reload() {
    let dir = scratch_dir("reload-burst");
    std::fs::write(dir.join("app.py"), GREETING_APP).unwrap();
    std::fs::write(dir.join("greeting.py"), "GREETING = 'v0'\n").unwrap();
    let server = start(&dir, "app", &["--reload"]);
    assert_eq!(body(&server), "v0");
    let load = Load::start(server.port, 8);
    let mut saved = Vec::new();
    for i in 1..=10 {
        save(&dir.join("greeting.py"), &format!("GREETING = 'v{i}'\n"));
        saved.push(Instant::now());
        std::thread::sleep(Duration::from_millis(30));
    }
    server.wait_until(|| body(&server) == "v10");
    let (ok, failed) = load.finish();
    eprintln!("burst: {ok} requests served, {failed} failed");
    assert_eq!(failed, 0, "{ok} ok");
    // A pause of 250 ms ends a burst: one the test itself took (a loaded
    // machine can stall its thread that long) is allowed its reload.
    let gaps: Vec<Duration> = saved.windows(2).map(|w| w[1] - w[0]).collect();
    let pauses = gaps
        .iter()
        .filter(|g| **g >= Duration::from_millis(200))
        .count();
    let reloads = server.log_count("Worker reloading:");
    assert!(
        reloads >= 1 && reloads <= 1 + pauses,
        "{reloads} reloads, gaps between saves {gaps:?}"
    );
    // 2 workers at the start, 2 for each reload.
    assert_eq!(server.log_count("Booting worker with pid"), 2 + 2 * reloads);
    assert_eq!(server.stop(), 0);
}

/// The worker pid and the app's version.
const PID_APP: &str = "\
import os
from greeting import GREETING

def application(environ, start_response):
    body = ('%s %d' % (GREETING, os.getpid())).encode()
    start_response('200 OK', [('Content-Length', str(len(body)))])
    return [body]
";

/// With `preload_app` the master imported the app: gunicorn's workers
/// still watch and restart on a change, but run the preloaded code. The
/// same here, next to gunicorn 27.0.1 (its polling reloader: the test
/// venv has no inotify module).
#[test]
fn reload_with_preload_replaces_the_workers_but_keeps_the_code_as_gunicorn() {
    for program in [rgunicorn(), gunicorn()] {
        let dir = scratch_dir("reload-preload");
        std::fs::write(dir.join("app.py"), PID_APP).unwrap();
        std::fs::write(dir.join("greeting.py"), "GREETING = 'v1'\n").unwrap();
        let venv = venv();
        let server = Server::start_program_env(
            &program,
            "app",
            &dir,
            &["--reload", "--preload", "-w", "1"],
            &[("VIRTUAL_ENV", Some(venv.to_str().unwrap()))],
        );
        let first = body(&server);
        assert!(first.starts_with("v1 "), "{first}");
        // gunicorn's polling reloader takes its first look at the files
        // up to a second after the worker serves, and a save before that
        // look is never seen: saved again until the worker changes.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            save(&dir.join("greeting.py"), "GREETING = 'v2'\n");
            if within(Duration::from_millis(2500), || {
                let now = body(&server);
                !now.is_empty() && now != first
            }) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{}: no reload",
                program.display()
            );
        }
        let now = body(&server);
        assert!(now.starts_with("v1 "), "{}: {now}", program.display());
        assert!(server.log_count("Worker reloading:") >= 1);
        assert_eq!(server.stop(), 0, "{}", program.display());
    }
}

/// `reload_engine = "poll"`: the files are looked at once a second
/// (gunicorn's polling reloader) instead of inotify.
#[test]
fn the_poll_engine_reloads_too() {
    let dir = scratch_dir("reload-poll");
    std::fs::write(dir.join("app.py"), GREETING_APP).unwrap();
    std::fs::write(dir.join("greeting.py"), "GREETING = 'v1'\n").unwrap();
    let server = start(&dir, "app", &["--reload", "--reload-engine", "poll"]);
    assert_eq!(body(&server), "v1");
    let load = Load::start(server.port, 4);
    save(&dir.join("greeting.py"), "GREETING = 'v2'\n");
    server.wait_until(|| body(&server) == "v2");
    let (ok, failed) = load.finish();
    assert_eq!(failed, 0, "{ok} ok");
    assert_eq!(server.log_count("Worker reloading:"), 1);
    assert_eq!(server.stop(), 0);
}

const LIFESPAN_APP: &str = "\
from greeting import GREETING, FAIL

async def app(scope, receive, send):
    if scope['type'] == 'lifespan':
        while True:
            message = await receive()
            if message['type'] == 'lifespan.startup':
                if FAIL:
                    await send({'type': 'lifespan.startup.failed', 'message': 'FAIL is set'})
                    return
                await send({'type': 'lifespan.startup.complete'})
            elif message['type'] == 'lifespan.shutdown':
                await send({'type': 'lifespan.shutdown.complete'})
                return
    body = GREETING.encode()
    await send({'type': 'http.response.start', 'status': 200,
                'headers': [(b'content-length', str(len(body)).encode())]})
    await send({'type': 'http.response.body', 'body': body})
";

/// A save after which the app imports but its workers cannot boot (the
/// lifespan startup fails: gunicorn's exit 3, which halts it): the
/// workers that serve go on with the code they have, no worker is
/// started until the next change, and that change reloads.
#[test]
fn a_boot_failure_keeps_the_serving_workers_until_the_next_change() {
    let dir = scratch_dir("reload-boot");
    std::fs::write(dir.join("app.py"), LIFESPAN_APP).unwrap();
    std::fs::write(dir.join("greeting.py"), "GREETING = 'v1'\nFAIL = False\n").unwrap();
    let server = start(&dir, "app:app", &["--reload"]);
    // The app imports `greeting` in its lifespan startup.
    server.wait_until(|| server.log_count("Application startup complete.") == 2);
    assert_eq!(body(&server), "v1");
    let before = workers(&server);
    let client = Load::recording(server.port, 4);

    save(&dir.join("greeting.py"), "GREETING = 'v2'\nFAIL = True\n");
    // The replacements went; the first workers are all that is left.
    server.wait_until(|| {
        server.log_count("the workers that serve go on until the next change") == 1
            && server.log_count("Booting worker with pid") == 4
            && workers(&server) == before
    });
    assert_eq!(body(&server), "v1");

    save(&dir.join("greeting.py"), "GREETING = 'v3'\nFAIL = False\n");
    server.wait_until(|| body(&server) == "v3");
    let (answers, failures) = client.finish_recorded();
    assert!(failures.is_empty(), "{failures:?}");
    for (status, body) in &answers {
        assert!(
            *status == 200 && (body == "v1" || body == "v3"),
            "{status} {body}"
        );
    }
    assert_eq!(server.stop(), 0);
}
