//! A test-only Rust app served by rgunicorn's master and workers, with
//! endpoints the shipped built-in app must not have: `/sleep?s=N` (waits
//! without blocking the worker), `/block?s=N` (blocks the worker's serving
//! loop, so the master's timeout must kill it) and `/panic` (the app
//! panics: the client gets a 500, the worker lives). Everything else is the
//! built-in health app. Run: `testapp APP_MODULE [rgunicorn flags]`.

use std::convert::Infallible;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;

fn seconds(query: Option<&str>) -> f64 {
    query
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("s=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0)
}

fn main() -> ExitCode {
    rgunicorn::run(|worker| {
        let worker = worker.clone();
        tower::service_fn(move |req: Request<Incoming>| {
            let worker = worker.clone();
            async move {
                let secs = seconds(req.uri().query());
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
                    _ => rgunicorn::health::handle(&req, &worker),
                };
                Ok::<_, Infallible>(resp)
            }
        })
    })
}
