//! The built-in app served for APP_MODULE `rgunicorn:health`: the health
//! endpoints of the migration guide, answered by the worker itself.
//! `GET /health`, `GET /health/worker` (pid, uptime, requests served by
//! this worker), `GET /health/ready`; anything else 404.

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};

use crate::worker::WorkerStats;

fn json(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

pub fn handle<B>(req: &Request<B>, stats: &WorkerStats) -> Response<Full<Bytes>> {
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
                stats.pid,
                stats.started.elapsed().as_secs_f64(),
                stats.requests_served()
            ),
        ),
        "/health/ready" => json(StatusCode::OK, r#"{"status":"ready"}"#.into()),
        _ => json(StatusCode::NOT_FOUND, r#"{"detail":"Not Found"}"#.into()),
    }
}
