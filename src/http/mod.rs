//! HTTP on the wire, below the apps: the gate that checks every request's
//! bytes as gunicorn's parser does before hyper reads them, gunicorn's
//! error responses, HTTP/2, TLS, and the byte/text conversions they share.

pub mod body;
pub mod error;
pub mod gate;
pub mod h2;
pub mod text;
pub mod tls;
