//! HTTP/2, when `http_protocols` lists `h2` (gunicorn 27's rules): over TLS
//! it is chosen by ALPN (the offer is built in `tls`); in cleartext only
//! with prior knowledge (`http2_cleartext`) and only from peers in
//! `forwarded_allow_ips`, which must then open with the connection preface
//! or get gunicorn's 400. This module owns those decisions, the preface
//! read, hyper's HTTP/2 builder with gunicorn's `http2_*` settings, and the
//! per-request part: the HTTP/1 framer never sees an HTTP/2 stream, so
//! gunicorn's header policy is applied here, and each request is put in
//! the shape the apps already take (origin-form target, `Host` from
//! `:authority`).

use std::net::IpAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, HOST};
use http::{Request, Response, Uri};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use crate::http::gate::{py_bytes_repr, py_str_repr, HeaderMapPolicy, Limits};

/// RFC 9113 section 3.4.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// gunicorn's `H2C_PREFACE_TIMEOUT`: the whole preface must arrive within
/// this long of the connection's start.
const PREFACE_TIMEOUT: Duration = Duration::from_secs(1);

/// The HTTP/2 side of a configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct H2Settings {
    /// TLS connections may pick h2 by ALPN.
    pub over_tls: bool,
    /// Cleartext connections from trusted peers must open with the preface.
    pub prior_knowledge: bool,
    pub max_concurrent_streams: u32,
    pub initial_window_size: u32,
    pub max_frame_size: u32,
    pub max_header_list_size: u32,
}

impl H2Settings {
    /// `None` when `http_protocols` has no `h2`; also the warnings for what
    /// is asked for but not served (h3, the `Upgrade: h2c` mechanism).
    pub fn decide(
        protocols: &[String],
        cleartext: &str,
        is_ssl: bool,
        [streams, window, frame, header_list]: [u32; 4],
    ) -> (Option<H2Settings>, Vec<String>) {
        let mut warnings = Vec::new();
        if protocols.iter().any(|p| p == "h3") {
            warnings.push(
                "http_protocols lists h3: HTTP/3 is not served (gunicorn 27 does not serve it either)"
                    .to_string(),
            );
        }
        let h2 = protocols.iter().any(|p| p == "h2");
        if matches!(cleartext, "upgrade" | "both") {
            warnings.push(format!(
                "http2_cleartext = {cleartext:?}: the `Upgrade: h2c` mechanism is not implemented \
                 yet; {}",
                if cleartext == "both" {
                    "prior knowledge is"
                } else {
                    "cleartext HTTP/2 is not"
                }
            ));
        }
        if !h2 {
            return (None, warnings);
        }
        let settings = H2Settings {
            over_tls: is_ssl,
            // gunicorn: ignored when TLS is configured (ALPN decides there).
            prior_knowledge: !is_ssl && matches!(cleartext, "prior-knowledge" | "both"),
            max_concurrent_streams: streams,
            initial_window_size: window,
            max_frame_size: frame,
            max_header_list_size: header_list,
        };
        (Some(settings), warnings)
    }

    /// hyper's HTTP/2 server with these settings.
    pub fn builder(&self) -> hyper::server::conn::http2::Builder<hyper_util::rt::TokioExecutor> {
        let mut b = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new());
        b.timer(hyper_util::rt::TokioTimer::new())
            .max_concurrent_streams(self.max_concurrent_streams)
            .initial_stream_window_size(self.initial_window_size)
            .max_frame_size(self.max_frame_size)
            .max_header_list_size(self.max_header_list_size);
        b
    }
}

/// Read the connection preface from a peer that must send it (gunicorn's
/// `read_preface_blocking`, with its one budget for the whole preface).
/// `Ok` holds the preface bytes, which the HTTP/2 server must still read;
/// `Err` what arrived instead, for the 400.
pub async fn read_preface<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Vec<u8>, Vec<u8>> {
    let mut buf = Vec::with_capacity(PREFACE.len());
    let deadline = tokio::time::Instant::now() + PREFACE_TIMEOUT;
    while buf.len() < PREFACE.len() {
        let mut chunk = [0u8; 24];
        let want = PREFACE.len() - buf.len();
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk[..want])).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return Err(buf),
        }
        if !PREFACE.starts_with(&buf) {
            return Err(buf);
        }
    }
    Ok(buf)
}

/// gunicorn's answer to a trusted peer that did not open with the preface.
pub async fn refuse_preface<S: AsyncWrite + Unpin>(
    stream: &mut S,
    got: &[u8],
    peer: Option<IpAddr>,
) {
    let message = format!(
        "Expected HTTP/2 connection preface, got {}",
        py_bytes_repr(got)
    );
    crate::log::warning(&format!(
        "Invalid request from ip={}: {message}",
        peer.map(|p| p.to_string()).unwrap_or_default()
    ));
    let reply = crate::http::error::response(400, "Bad Request", &message);
    let _ = stream.write_all(&reply).await;
    let _ = stream.shutdown().await;
}

/// A stream whose first bytes were already read: they are returned first.
pub struct Rewind<S> {
    prefix: Bytes,
    inner: S,
}

impl<S> Rewind<S> {
    pub fn new(prefix: Vec<u8>, inner: S) -> Self {
        Rewind {
            prefix: prefix.into(),
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            let head = self.prefix.split_to(n);
            buf.put_slice(&head);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// gunicorn's refusal of one HTTP/2 request (the stream's answer; the
/// connection and its other streams go on).
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal {
    pub message: String,
}

impl Refusal {
    /// gunicorn's `handle_error` page, without the HTTP/1-only
    /// `Connection` header.
    pub fn response(&self) -> Response<crate::http::body::ResponseBody> {
        let mut resp = crate::http::error::error_response(400, "Bad Request", &self.message);
        resp.headers_mut().remove(http::header::CONNECTION);
        resp
    }
}

/// Put an HTTP/2 request in the shape the apps take, after gunicorn's
/// header policy (`HeaderPolicy._apply_header_policy`, shared with
/// HTTP/1 there): a repeated `Host` or `Content-Type` is refused, a field
/// name with `_` is dropped, refused or kept by `header_map` (forwarder
/// headers from a trusted peer are kept); then `Host` comes from
/// `:authority` and the target is origin-form, as gunicorn's `RAW_URI` is
/// `:path`. The scheme stays the transport's, as HTTP/1's.
pub fn prepare<B>(
    req: &mut Request<B>,
    limits: &Limits,
    trusted_peer: bool,
) -> Result<(), Refusal> {
    let headers = req.headers_mut();
    for singleton in [HOST, http::header::CONTENT_TYPE] {
        if headers.get_all(&singleton).iter().count() > 1 {
            let upper = singleton.as_str().to_ascii_uppercase();
            return Err(Refusal {
                message: format!("Invalid HTTP Header: {}", py_str_repr(upper.as_bytes())),
            });
        }
    }
    let underscored: Vec<http::HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().contains('_'))
        .cloned()
        .collect();
    for name in underscored {
        let upper = name.as_str().to_ascii_uppercase();
        let forwarder = trusted_peer
            && limits
                .forwarder_headers
                .iter()
                .any(|h| *h == upper || h == "*");
        if forwarder {
            continue;
        }
        match limits.header_map {
            HeaderMapPolicy::Dangerous => {}
            HeaderMapPolicy::Drop => {
                headers.remove(&name);
            }
            HeaderMapPolicy::Refuse => {
                return Err(Refusal {
                    message: format!(
                        "Invalid HTTP header name: {}",
                        py_str_repr(upper.as_bytes())
                    ),
                })
            }
        }
    }
    let uri = req.uri();
    if let Some(authority) = uri.authority() {
        if let Ok(host) = HeaderValue::from_str(authority.as_str()) {
            req.headers_mut().insert(HOST, host);
        }
    }
    let origin = req
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str().to_string())
        .unwrap_or_else(|| "/".to_string());
    if let Ok(origin) = origin.parse::<Uri>() {
        *req.uri_mut() = origin;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(
        protocols: &[&str],
        cleartext: &str,
        ssl: bool,
    ) -> (Option<H2Settings>, Vec<String>) {
        let p: Vec<String> = protocols.iter().map(|s| s.to_string()).collect();
        H2Settings::decide(&p, cleartext, ssl, [100, 65535, 16384, 65536])
    }

    #[test]
    fn h2_only_when_asked_and_prior_knowledge_only_in_cleartext() {
        assert_eq!(settings(&["h1"], "off", true).0, None);
        let (s, w) = settings(&["h2", "h1"], "off", true);
        let s = s.unwrap();
        assert!(s.over_tls && !s.prior_knowledge && w.is_empty());
        let s = settings(&["h1", "h2"], "prior-knowledge", false).0.unwrap();
        assert!(s.prior_knowledge && !s.over_tls);
        // Ignored with TLS, as in gunicorn.
        assert!(
            !settings(&["h2"], "prior-knowledge", true)
                .0
                .unwrap()
                .prior_knowledge
        );
        // Unimplemented parts are named.
        let (s, w) = settings(&["h2", "h3"], "both", false);
        assert!(s.unwrap().prior_knowledge);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[1].contains("http2_cleartext") && w[1].contains("Upgrade: h2c"));
    }

    #[test]
    fn prepare_gives_origin_form_and_host_and_applies_header_policy() {
        let limits = Limits::default();
        let mut req = Request::builder()
            .uri("https://example.test:8443/a/b?c=1")
            .header("x_under", "1")
            .header("script_name", "/app")
            .header("accept", "*/*")
            .body(())
            .unwrap();
        prepare(&mut req, &limits, true).unwrap();
        assert_eq!(req.uri().to_string(), "/a/b?c=1");
        assert_eq!(req.headers()[HOST], "example.test:8443");
        assert!(req.headers().get("x_under").is_none());
        assert_eq!(req.headers()["script_name"], "/app");
        // Untrusted peer: the forwarder header is dropped too.
        let mut req = Request::builder()
            .uri("/x")
            .header("script_name", "/app")
            .body(())
            .unwrap();
        prepare(&mut req, &limits, false).unwrap();
        assert!(req.headers().get("script_name").is_none());
        // A repeated Host is refused with gunicorn's message.
        let mut req = Request::builder()
            .uri("/x")
            .header("host", "a")
            .header("host", "b")
            .body(())
            .unwrap();
        assert_eq!(
            prepare(&mut req, &limits, false).unwrap_err().message,
            "Invalid HTTP Header: 'HOST'"
        );
        let refuse = Limits {
            header_map: HeaderMapPolicy::Refuse,
            ..Limits::default()
        };
        let mut req = Request::builder()
            .uri("/x")
            .header("x_y", "1")
            .body(())
            .unwrap();
        assert_eq!(
            prepare(&mut req, &refuse, false).unwrap_err().message,
            "Invalid HTTP header name: 'X_Y'"
        );
    }

    #[tokio::test]
    async fn preface_read_and_refusal() {
        let (mut client, mut server) = tokio::io::duplex(256);
        client.write_all(PREFACE).await.unwrap();
        client.write_all(b"\0\0\0\x04").await.unwrap();
        assert_eq!(read_preface(&mut server).await.unwrap(), PREFACE);
        // The frame after the preface is still there.
        let mut rest = [0u8; 4];
        server.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"\0\0\0\x04");

        let (mut client, mut server) = tokio::io::duplex(256);
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        assert_eq!(
            read_preface(&mut server).await.unwrap_err(),
            b"GET / HTTP/1.1\r\n"
        );

        let (mut client, mut server) = tokio::io::duplex(256);
        client.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
        // Stalled: the budget (1 s) runs out with what arrived.
        assert_eq!(
            read_preface(&mut server).await.unwrap_err(),
            b"PRI * HTTP/2.0\r\n"
        );
        drop(client);
    }

    #[tokio::test]
    async fn rewind_returns_the_prefix_first() {
        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(b"world").await.unwrap();
        drop(client);
        let mut r = Rewind::new(b"hello ".to_vec(), server);
        let mut s = String::new();
        r.read_to_string(&mut s).await.unwrap();
        assert_eq!(s, "hello world");
    }
}
