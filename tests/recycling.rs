//! Recycling by memory and age (rgunicorn's `max_worker_memory`,
//! `max_worker_lifetime`, `max_worker_lifetime_jitter`): a worker above its
//! memory limit for 3 samples 1 s apart, or past its lifetime, is replaced
//! the way max_requests replaces one (replacement first, then TERM), with
//! no failed request under a keep-alive load. So is a worker whose hook
//! sets `worker.alive = False`, which retires it in gunicorn too.

use crate::common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::server::*;
use common::*;

/// Resident memory of `pid` in MiB, from /proc/<pid>/statm (4 KiB pages).
fn rss_mib(pid: i32) -> u64 {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096 / (1024 * 1024)
}

/// Index of the first hook line starting with `prefix`.
fn hook_index(hooks: &[String], prefix: &str) -> usize {
    hooks
        .iter()
        .position(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} in {hooks:#?}"))
}

/// The pid `/health/worker` reports (the worker that served it).
fn serving_pid(server: &Server) -> i32 {
    let (status, body) = server.get("/health/worker").unwrap();
    assert_eq!(status, 200, "{body}");
    body.split("\"worker_id\":")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("no worker_id in {body}"))
}

#[test]
fn a_worker_above_max_worker_memory_is_replaced() {
    const LIMIT_MIB: u64 = 60;
    let dir = scratch_dir("recycle-memory");
    let server = Server::start_program(
        &testapp(),
        "tests:app",
        &dir,
        // A long graceful_timeout: the old worker's TERM then waits for
        // its replacement to serve even on a starved machine.
        &[
            "--max-worker-memory",
            &LIMIT_MIB.to_string(),
            "--graceful-timeout",
            "30",
        ],
    );
    server.wait_until(|| count(&server.hooks(), "post_worker_init") == 2);
    let before = server.worker_pids();
    assert_eq!(before.len(), 2);
    for pid in &before {
        assert!(
            rss_mib(*pid) < LIMIT_MIB,
            "idle worker {pid} is already above the limit"
        );
    }

    let allocated = Instant::now();
    let (status, body) = server
        .get(&format!("/alloc?mb={}", LIMIT_MIB + 20))
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let big: i32 = body.trim().parse().unwrap();
    assert!(before.contains(&big), "{big} not in {before:?}");
    assert!(rss_mib(big) > LIMIT_MIB, "the allocation is resident");

    let needle = format!("(pid: {big}) exceeded max_worker_memory (");
    server.wait_until(|| server.logged(&needle));
    let took = allocated.elapsed();
    let line = server.log_lines(|l| l.contains(&needle)).remove(0);
    assert!(
        line.contains(&format!(
            " MiB > {LIMIT_MIB} MiB) 3 times in a row: replacing it"
        )),
        "{line}"
    );
    assert!(line.contains("[WARNING]"), "{line}");
    // Three samples, one second apart.
    assert!(
        took >= Duration::from_millis(1900),
        "replaced after {took:?}"
    );

    // The replacement serves, the big worker is gone, the other one stays.
    server.wait_until(|| !alive(big) && server.worker_pids().len() == 2);
    let after = server.worker_pids();
    let other = *before.iter().find(|p| **p != big).unwrap();
    assert!(after.contains(&other), "{before:?} -> {after:?}");
    let new = *after.iter().find(|p| **p != other).unwrap();
    assert!(!before.contains(&new));
    server.wait_until(|| serving_pid(&server) == new);

    // Replacement first: the new worker booted before the old one exited.
    server.wait_until(|| count(&server.hooks(), "child_exit") == 1);
    let hooks = server.hooks();
    assert!(
        hook_index(&hooks, &format!("post_worker_init {new} "))
            < hook_index(&hooks, &format!("worker_exit {big} ")),
        "{hooks:#?}"
    );
    assert_eq!(
        hooks.last().unwrap(),
        &format!("child_exit {} {big}", server.pid())
    );
    assert_eq!(server.stop(), 0);
}

#[test]
fn workers_are_replaced_after_max_worker_lifetime() {
    let dir = scratch_dir("recycle-lifetime");
    let started = Instant::now();
    let server = Server::start(
        &dir,
        &["--max-worker-lifetime", "2", "--graceful-timeout", "30"],
    );
    server.wait_until(|| count(&server.hooks(), "post_worker_init") == 2);
    let first = server.worker_pids();
    assert_eq!(first.len(), 2);

    // Both first workers are replaced; new pids serve.
    server.wait_until(|| {
        let now = server.worker_pids();
        now.len() == 2 && now.iter().all(|p| !first.contains(p))
    });
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "replaced after {:?}",
        started.elapsed()
    );
    let second = server.worker_pids();
    server.wait_until(|| second.contains(&serving_pid(&server)));
    for pid in &first {
        server.wait_until(|| !alive(*pid));
        let needle = format!("(pid: {pid}) reached max_worker_lifetime (2 s");
        server.wait_until(|| server.logged(&needle));
        let lines = server.log_lines(|l| l.contains(&needle));
        assert_eq!(lines.len(), 1, "{pid}");
        assert!(lines[0].contains("[INFO]"), "{}", lines[0]);
    }
    // Replacement first: TERM goes to an old worker only once two
    // non-retiring workers serve, so at least one replacement booted
    // before the first old worker exited, and both before the second.
    let hooks = server.hooks();
    let exits: Vec<usize> = first
        .iter()
        .map(|pid| hook_index(&hooks, &format!("worker_exit {pid} ")))
        .collect();
    let booted_before = |i: usize| count(&hooks[..i], "post_worker_init");
    let (early, late) = (exits[0].min(exits[1]), exits[0].max(exits[1]));
    assert!(booted_before(early) >= 3, "{hooks:#?}");
    assert_eq!(booted_before(late), 4, "{hooks:#?}");
    assert_eq!(server.stop(), 0);
}

#[test]
fn lifetime_recycling_loses_no_request_under_load() {
    let dir = scratch_dir("recycle-load");
    let server = Server::start(
        &dir,
        &[
            "--max-worker-lifetime",
            "1",
            "--max-worker-lifetime-jitter",
            "1",
        ],
    );
    let load = Load::start(server.port, 16);
    // Two generations replaced at least (2 workers each).
    server.wait_until(|| count(&server.hooks(), "child_exit") >= 4);
    let served = load.ok.load(Ordering::Relaxed);
    server.wait_until(|| load.ok.load(Ordering::Relaxed) > served + 100);
    let (ok, failed) = load.finish();
    eprintln!("max_worker_lifetime=1 (+0-1 s): {ok} requests served, {failed} failed");
    assert_eq!(failed, 0, "{ok} ok");
    assert!(server.log_count("reached max_worker_lifetime") >= 4);
    assert_eq!(server.stop(), 0);
}

/// A real config's memory guard: `post_request` sets `worker.alive =
/// False` (here on one query) and gunicorn's worker leaves its loop; the
/// hooks of [`HOOKS_CONF`] record the rest.
const NOT_ALIVE_HOOK: &str = r#"
workers = 1
graceful_timeout = 10
def post_request(worker, req, environ, resp):
    if req.query == "retire=1":
        worker.alive = False
"#;

#[test]
fn worker_alive_false_in_a_hook_retires_the_worker_as_in_gunicorn() {
    let dir = scratch_dir("recycle-not-alive");
    copy_test_apps(&dir);
    let conf = format!("{HOOKS_CONF}{NOT_ALIVE_HOOK}");
    for program in [gunicorn(), rgunicorn()] {
        let ours = program == rgunicorn();
        let server = Server::start_conf(&program, "plain_app", &dir, &conf, &[]);
        server.wait_until(|| count(&server.hooks(), "post_worker_init") == 1);
        let pid = |path: &str| -> i32 {
            let (status, body) = server.get(path).unwrap();
            assert_eq!(status, 200, "{program:?} {path}: {body}");
            body.trim()
                .parse()
                .unwrap_or_else(|_| panic!("{program:?} {path}: {body:?}"))
        };
        let first = pid("/pid");
        // rgunicorn: a keep-alive load throughout loses nothing (gunicorn's
        // sync worker closes each connection, so it is not loaded here).
        let load = ours.then(|| Load::start(server.port, 4));
        assert_eq!(pid("/pid?retire=1"), first, "{program:?}");
        server.wait_until(|| pid("/pid") != first);
        let exited = format!("worker_exit {first} ");
        server.wait_until(|| server.hooks().iter().any(|l| l.starts_with(&exited)));
        server.wait_until(|| !server.worker_pids().contains(&first));
        if let Some(load) = load {
            let (ok, failed) = load.finish();
            assert_eq!(failed, 0, "{ok} ok");
            // Replacement first, then the old worker's exit.
            let hooks = server.hooks();
            let new = pid("/pid");
            assert!(
                hook_index(&hooks, &format!("post_worker_init {new} "))
                    < hook_index(&hooks, &exited),
                "{hooks:#?}"
            );
        }
        assert_eq!(server.stop(), 0, "{program:?}");
        std::fs::remove_file(dir.join("hooks.log")).ok();
    }
}
