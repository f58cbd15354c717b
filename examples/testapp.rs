//! A test-only Rust app served by rgunicorn's master and workers, with
//! endpoints the shipped built-in app must not have: `/sleep?s=N` (waits
//! without blocking the worker), `/block?s=N` (blocks the worker's serving
//! loop, so the master's timeout must kill it), `/panic` (the app
//! panics: the client gets a 500, the worker lives) and `/alloc?mb=N`
//! (allocates N MiB, touches every page and keeps it, so the worker's RSS
//! grows; answers the worker's pid). Everything else is the built-in
//! health app. Run: `testapp APP_MODULE [rgunicorn flags]`.

use std::convert::Infallible;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;

/// The number in `name=` of a query string, or `default`.
fn param(query: Option<&str>, name: &str, default: f64) -> f64 {
    query
        .and_then(|q| {
            q.split('&')
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What `/alloc` allocated: kept for the life of the worker.
static HELD: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

fn main() -> ExitCode {
    rgunicorn::run(|worker| {
        let worker = worker.clone();
        tower::service_fn(move |req: Request<Incoming>| {
            let worker = worker.clone();
            async move {
                let secs = param(req.uri().query(), "s", 1.0);
                let resp = match req.uri().path() {
                    "/sleep" => {
                        tokio::time::sleep(Duration::from_secs_f64(secs)).await;
                        Response::new(Full::new(Bytes::from("slept")))
                    }
                    "/block" => {
                        // Deliberately blocks the runtime thread: no heartbeat.
                        std::thread::sleep(Duration::from_secs_f64(secs));
                        Response::new(Full::new(Bytes::from("blocked")))
                    }
                    "/panic" => panic!("testapp: /panic was asked for"),
                    "/alloc" => {
                        let mib = param(req.uri().query(), "mb", 1.0) as usize;
                        // Filled with ones, so every page is written (resident).
                        HELD.lock().unwrap().push(vec![1u8; mib << 20]);
                        Response::new(Full::new(Bytes::from(std::process::id().to_string())))
                    }
                    _ => rgunicorn::health::handle(&req, &worker),
                };
                Ok::<_, Infallible>(resp)
            }
        })
    })
}
