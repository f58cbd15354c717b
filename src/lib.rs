//! rgunicorn: a Rust drop-in replacement for the `gunicorn` command.
//!
//! The configuration layer lives in the `pyconf` crate; this crate owns how
//! the program starts ([`entry`]), the embedded interpreter ([`python`]) and
//! the loading of Python applications ([`pyapp`]).

pub mod access_log;
pub mod app;
pub mod asgi;
pub mod boot;
pub mod control;
pub mod entry;
pub mod gevent;
pub mod health;
pub mod hooks;
pub mod http2;
pub mod http_error;
pub mod log;
pub mod master;
pub mod metrics;
pub mod notify;
pub mod pidfile;
pub mod process;
pub mod pyapp;
pub mod pylog;
pub mod python;
pub mod reloader;
pub mod request_hooks;
pub mod scoreboard;
pub mod settings;
pub mod sock;
pub mod strict_http;
pub mod text;
pub mod tls;
pub mod worker;
pub mod worker_class;
pub mod wsgi;

pub use pyconf;

pub use app::{factory, LoopBeat, WorkerInfo};

/// Run a Rust application under rgunicorn's master and workers, with the
/// full gunicorn command line and config: `make_app` is called once in each
/// worker, after fork, and may return any `tower::Service` over
/// `http::Request<hyper::body::Incoming>` (an axum `Router` works as is).
pub fn run<F, S, B>(make_app: F) -> std::process::ExitCode
where
    F: Fn(&WorkerInfo) -> S + Send + Sync + 'static,
    S: tower::Service<http::Request<hyper::body::Incoming>, Response = http::Response<B>>
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
