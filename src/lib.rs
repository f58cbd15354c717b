//! rgunicorn: a Rust drop-in replacement for the `gunicorn` command.
//!
//! A Rust app is served with [`run`] (any `tower::Service`, an axum
//! `Router` as is); a Python app is named on the command line as for
//! gunicorn, and the `rgunicorn` binary ([`entry`]) serves it.
//!
//! # Layout
//!
//! Each folder owns one concern; dependencies point down this list, never
//! up (`tests/layout.rs` checks it).
//!
//! - `entry`: how the program starts (both binaries, `--check-config`).
//! - `master/`: the supervisor loop, gunicorn's arbiter: signals, hooks,
//!   the worker table, spawning, USR2 re-exec, the control commands.
//! - `worker/`: a worker process: tokio runtime, accept loops,
//!   connections, keep-alive, the drain.
//! - `python/`: the embedded interpreter, the app's import, the hooks, the
//!   WSGI/ASGI/gevent interfaces, Python's logging, the reloader.
//! - `observe/`: the access log and the metrics.
//! - `settings`: the configuration read once per load into typed settings.
//! - `app/`: the Rust app boundary ([`run`], [`WorkerInfo`]) and the
//!   built-in app.
//! - `http/`: the request gate, gunicorn's error responses, HTTP/2, TLS.
//! - `sys/`: fork/exec/signals, sockets, the scoreboard, pidfile, systemd.
//! - `control/`: the control socket's protocol, server and client.
//! - `log/`: the error log; `boot`: how a worker's boot fails.
//! - the `pyconf` crate: gunicorn's settings table, config file and CLI.
//!
//! The path of one request and of one setting: see ARCHITECTURE in the
//! README.

pub(crate) mod app;
pub(crate) mod boot;
pub mod control;
pub mod entry;
pub(crate) mod http;
pub(crate) mod log;
pub(crate) mod master;
pub(crate) mod observe;
pub(crate) mod python;
pub(crate) mod settings;
pub(crate) mod sys;
pub(crate) mod worker;

pub use pyconf;

pub use app::health;
pub use app::{factory, AppFactory, LoopBeat, WorkerInfo};

/// For the integration tests: gunicorn's request corpus.
#[doc(hidden)]
pub use http::gate::corpus;

/// Run a Rust application under rgunicorn's master and workers, with the
/// full gunicorn command line and config: `make_app` is called once in each
/// worker, after fork, and may return any `tower::Service` over
/// `http::Request<hyper::body::Incoming>` (an axum `Router` works as is).
pub fn run<F, S, B>(make_app: F) -> std::process::ExitCode
where
    F: Fn(&WorkerInfo) -> S + Send + Sync + 'static,
    S: tower::Service<::http::Request<hyper::body::Incoming>, Response = ::http::Response<B>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<app::BoxError>,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<app::BoxError>,
{
    entry::run_app(factory(make_app))
}
