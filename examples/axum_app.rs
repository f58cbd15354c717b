//! A Rust web app served by rgunicorn: an axum `Router`, made once per
//! worker after fork (its state, here a per-worker hit counter, belongs to
//! that worker), with rgunicorn's whole command line and config.
//!
//! ```sh
//! cargo run --release --example axum_app -- 'axum_app' -c examples/gunicorn.conf.py
//! curl -s localhost:8000/users/7    # {"id":7,"worker":<pid>,"hits":1}
//! ```

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};

#[derive(Clone)]
struct AppState {
    worker_pid: u32,
    hits: Arc<AtomicU64>,
}

#[derive(serde::Serialize)]
struct User {
    id: u64,
    worker: u32,
    hits: u64,
}

async fn user(State(state): State<AppState>, Path(id): Path<u64>) -> Json<User> {
    let hits = state.hits.fetch_add(1, Ordering::Relaxed) + 1;
    Json(User {
        id,
        worker: state.worker_pid,
        hits,
    })
}

fn main() -> ExitCode {
    rgunicorn::run(|worker| {
        let state = AppState {
            worker_pid: worker.pid(),
            hits: Arc::new(AtomicU64::new(0)),
        };
        Router::new()
            .route("/", get(|| async { "hello from axum\n" }))
            .route("/users/{id}", get(user))
            .with_state(state)
    })
}
