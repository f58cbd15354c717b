//! gunicorn's error responses, byte for byte (`util.write_error`): a small
//! HTML page with `Connection: close`, written straight to the socket when
//! no app response can be (a request that gunicorn refuses, a worker killed
//! on timeout in the middle of a request), or as a response hyper writes.

use http::Response;

use crate::http::body::{full, ResponseBody};

/// The raw HTTP/1.1 response gunicorn writes for `status` / `reason`, with
/// `message` (HTML-escaped) under the title.
pub fn response(status: u16, reason: &str, message: &str) -> Vec<u8> {
    let html = format!(
        "<html>\n  <head>\n    <title>{reason}</title>\n  </head>\n  <body>\n    <h1><p>{reason}</p></h1>\n    {}\n  </body>\n</html>\n",
        escape(message)
    );
    format!(
        "HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\r\n{html}",
        html.len()
    )
    .into_bytes()
}

/// Python's `html.escape` (quotes included).
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            c => out.push(c),
        }
    }
    out
}

/// gunicorn's 500 for an app that failed.
pub fn internal_error() -> Response<ResponseBody> {
    error_response(500, "Internal Server Error", "")
}

/// gunicorn's error page (`util.write_error`) as a response: HTML body,
/// `Connection: close`, the reason phrase kept.
pub fn error_response(status: u16, reason: &str, message: &str) -> Response<ResponseBody> {
    let raw = response(status, reason, message);
    let body_at = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
        .unwrap_or(raw.len());
    let mut resp = Response::new(full(raw[body_at..].to_vec()));
    *resp.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(r) = hyper::ext::ReasonPhrase::try_from(reason.as_bytes()) {
        resp.extensions_mut().insert(r);
    }
    let headers = resp.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/html"),
    );
    headers.insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_gunicorn_write_error() {
        let r = String::from_utf8(response(500, "Internal Server Error", "")).unwrap();
        let (head, body) = r.split_once("\r\n\r\n").unwrap();
        assert_eq!(
            head,
            format!(
                "HTTP/1.1 500 Internal Server Error\r\nConnection: close\r\nContent-Type: text/html\r\nContent-Length: {}",
                body.len()
            )
        );
        assert!(body.contains("<h1><p>Internal Server Error</p></h1>"));
        let r = String::from_utf8(response(400, "Bad Request", "Invalid <x> & 'y'")).unwrap();
        assert!(r.contains("Invalid &lt;x&gt; &amp; &#x27;y&#x27;"), "{r}");
    }
}
