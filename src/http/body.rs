//! The response body every app's body is turned into, so that the worker
//! holds one response type whatever the app (Rust, WSGI, ASGI).

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The response body every app's body is turned into.
pub type ResponseBody = UnsyncBoxBody<Bytes, BoxError>;

/// A `Full` body, boxed.
pub fn full(body: impl Into<Bytes>) -> ResponseBody {
    Full::new(body.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}
