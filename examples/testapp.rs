//! A test-only Rust app served by rgunicorn's master and workers, with
//! endpoints the shipped built-in app must not have: `/sleep?s=N` (waits
//! without blocking the worker) and `/block?s=N` (blocks the worker's
//! serving loop, so the master's timeout must kill it). Everything else is
//! the built-in health app. Run: `testapp APP_MODULE [rgunicorn flags]`.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;

fn seconds(query: Option<&str>) -> f64 {
    query
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("s=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0)
}

fn main() -> ExitCode {
    rgunicorn::entry::main_with_app(Arc::new(|req, stats| {
        let secs = seconds(req.uri().query());
        match req.uri().path() {
            "/sleep" => Box::pin(async move {
                tokio::time::sleep(Duration::from_secs_f64(secs)).await;
                Response::new(Full::new(Bytes::from("slept")))
            }),
            "/block" => {
                // Deliberately blocks the runtime thread: no heartbeat.
                std::thread::sleep(Duration::from_secs_f64(secs));
                Box::pin(async { Response::new(Full::new(Bytes::from("blocked"))) })
            }
            _ => {
                let resp = rgunicorn::health::handle(&req, &stats);
                Box::pin(async move { resp })
            }
        }
    }))
}
