//! A test-only Rust app served by rgunicorn's master and workers, for the
//! request conformance test (tests/conformance.rs): it reads the whole
//! request body, then answers 200 on any path, like the app gunicorn's
//! corpus was measured with. A body that ends early (the connection was
//! refused mid-request) still gets its 200 here: what the client sees is
//! decided by the worker's request framing, not by the app.
//! Run: `echoapp APP_MODULE [rgunicorn flags]` (APP_MODULE is not loaded).

use std::convert::Infallible;
use std::process::ExitCode;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;

fn main() -> ExitCode {
    rgunicorn::run(|_worker| {
        tower::service_fn(|req: Request<Incoming>| async move {
            let n = match req.into_body().collect().await {
                Ok(body) => body.to_bytes().len(),
                Err(_) => 0,
            };
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(format!("ok {n}\n")))))
        })
    })
}
