//! The built-in app served for APP_MODULE `rgunicorn:health`: the health
//! endpoints of the migration guide, answered by the worker itself.
//! `GET /health`, `GET /health/worker` (pid, uptime, requests served by
//! this worker), `GET /health/ready`; anything else 404.

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};

use crate::app::{AppFactory, WorkerInfo};

fn json(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

/// The built-in app, made through the same API as any Rust app.
pub fn app() -> AppFactory {
    crate::app::factory(|worker| {
        let worker = worker.clone();
        tower::service_fn(move |req: Request<hyper::body::Incoming>| {
            let resp = handle(&req, &worker);
            async move { Ok::<_, std::convert::Infallible>(resp) }
        })
    })
}

/// Answer one request.
pub fn handle<B>(req: &Request<B>, worker: &WorkerInfo) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return json(
            StatusCode::METHOD_NOT_ALLOWED,
            r#"{"detail":"Method Not Allowed"}"#.into(),
        );
    }
    match req.uri().path() {
        "/health" => json(StatusCode::OK, r#"{"status":"healthy"}"#.into()),
        "/health/worker" => json(
            StatusCode::OK,
            format!(
                r#"{{"status":"healthy","worker_id":{},"uptime_seconds":{:.3},"requests_served":{}}}"#,
                worker.pid(),
                worker.uptime().as_secs_f64(),
                worker.requests_served()
            ),
        ),
        "/health/ready" => json(StatusCode::OK, r#"{"status":"ready"}"#.into()),
        _ => json(StatusCode::NOT_FOUND, r#"{"detail":"Not Found"}"#.into()),
    }
}
