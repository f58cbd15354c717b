//! Rust applications on rgunicorn's library API: an axum `Router`
//! (examples/axum_app.rs) served by the master and workers, and an app that
//! panics, which costs its client a 500 and nothing else.

use crate::common;

use common::server::*;
use common::*;

fn example(name: &str) -> std::path::PathBuf {
    rgunicorn().parent().unwrap().join("examples").join(name)
}

#[test]
fn an_axum_router_is_served_with_per_worker_state() {
    let dir = scratch_dir("rust-axum");
    let server = Server::start_program(&example("axum_app"), "axum_app", &dir, &[]);
    let (status, body) = server.get("/").unwrap();
    assert_eq!((status, body.as_str()), (200, "hello from axum\n"));
    let (status, body) = server.get("/users/7").unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with(r#"{"id":7,"worker":"#), "{body}");
    let worker: i32 = body
        .split("\"worker\":")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .and_then(|p| p.parse().ok())
        .unwrap();
    assert!(server.worker_pids().contains(&worker), "{body}");
    assert_eq!(server.get("/nope").unwrap().0, 404);
    // The hooks of the config file run as for any app (the start returns
    // once one worker answers; the other may still be booting).
    server.wait_until(|| count(&server.hooks(), "post_worker_init") == 2);
    assert_eq!(server.stop(), 0);
}

#[test]
fn a_panicking_handler_gets_a_500_and_the_worker_lives() {
    let dir = scratch_dir("rust-panic");
    let server = Server::start_program(&testapp(), "tests:app", &dir, &["--workers", "1"]);
    let worker = server.worker_pids();
    let (status, body) = server.get("/panic").unwrap();
    assert_eq!(status, 500);
    assert!(
        body.contains("<h1><p>Internal Server Error</p></h1>"),
        "{body}"
    );
    assert_eq!(server.get("/health").unwrap().0, 200);
    assert_eq!(server.worker_pids(), worker, "same worker");
    // The error line is written before the 500; the reader thread may lag.
    server.wait_until(|| {
        server.logged(
            "[ERROR] Error handling request: the app panicked: testapp: /panic was asked for",
        )
    });
    assert_eq!(server.stop(), 0);
}

#[test]
fn runtime_threads_gives_each_worker_a_multi_thread_runtime() {
    for (threads, expected) in [("1", 0), ("3", 3)] {
        let dir = scratch_dir("rust-rt-threads");
        let server = Server::start(&dir, &["--runtime-threads", threads, "--workers", "1"]);
        assert_eq!(server.get("/health").unwrap().0, 200);
        let worker = server.worker_pids()[0];
        // tokio names its pool threads "tokio-rt-worker" and starts them
        // as the runtime warms up: wait for the expected count, then check
        // that it does not grow (the worker's other threads are named).
        let pool = || {
            thread_names(worker)
                .iter()
                .filter(|n| *n == "tokio-rt-worker")
                .count()
        };
        server.wait_until(|| pool() == expected);
        assert_eq!(server.get("/health").unwrap().0, 200);
        assert_eq!(pool(), expected, "--runtime-threads {threads}");
        assert_eq!(server.stop(), 0);
    }
}
