//! What gunicorn answers to a request it refuses ([`RequestError`]: its
//! exception class, status, reason and message text), and Python's
//! `repr()` as its messages quote the bytes.
/// What gunicorn answers to a request it refuses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestError {
    /// gunicorn's exception class, e.g. `"InvalidHeader"`.
    pub class: &'static str,
    pub status: u16,
    pub reason: &'static str,
    /// The message under the title of the error page (`handle_error`'s
    /// `mesg`), e.g. `Invalid HTTP Version 'Invalid HTTP Version: 'FTP/1.1''`.
    pub message: String,
    /// Close the connection without any response (gunicorn's
    /// `NoMoreData`: the peer closed in the middle of a request).
    pub empty: bool,
}

impl RequestError {
    pub(super) fn new(
        class: &'static str,
        status: u16,
        reason: &'static str,
        message: String,
    ) -> Self {
        RequestError {
            class,
            status,
            reason,
            message,
            empty: false,
        }
    }

    pub(super) fn bad(class: &'static str, message: String) -> Self {
        Self::new(class, 400, "Bad Request", message)
    }

    pub(super) fn no_more_data() -> Self {
        RequestError {
            class: "NoMoreData",
            status: 0,
            reason: "",
            message: String::new(),
            empty: true,
        }
    }

    pub(super) fn request_line(line: &[u8]) -> Self {
        Self::bad(
            "InvalidRequestLine",
            format!(
                "Invalid Request Line 'Invalid HTTP request line: {}'",
                py_str_repr(line)
            ),
        )
    }

    pub(super) fn method(m: &[u8]) -> Self {
        Self::bad(
            "InvalidRequestMethod",
            format!("Invalid Method 'Invalid HTTP method: {}'", py_str_repr(m)),
        )
    }

    pub(super) fn version(v: String) -> Self {
        Self::bad(
            "InvalidHTTPVersion",
            format!("Invalid HTTP Version 'Invalid HTTP Version: {v}'"),
        )
    }

    pub(super) fn header(h: &[u8]) -> Self {
        Self::bad(
            "InvalidHeader",
            format!("Invalid HTTP Header: {}", py_str_repr(h)),
        )
    }

    pub(super) fn header_name(h: &[u8]) -> Self {
        Self::bad(
            "InvalidHeaderName",
            format!("Invalid HTTP header name: {}", py_str_repr(h)),
        )
    }

    pub(super) fn limit_headers(msg: &str) -> Self {
        Self::new(
            "LimitRequestHeaders",
            431,
            "Request Header Fields Too Large",
            format!("Error parsing headers: '{msg}'"),
        )
    }

    pub(super) fn limit_line(size: usize, max: usize) -> Self {
        Self::new(
            "LimitRequestLine",
            414,
            "URI Too Long",
            format!("Request Line is too large ({size} > {max})"),
        )
    }

    pub(super) fn chunk_size(data: &[u8]) -> Self {
        Self::bad(
            "InvalidChunkSize",
            format!("Invalid chunk size: {}", py_bytes_repr(data)),
        )
    }

    pub(super) fn chunk_terminator(term: &[u8]) -> Self {
        Self::bad(
            "ChunkMissingTerminator",
            format!(
                "Invalid chunk terminator is not '\\r\\n': {}",
                py_bytes_repr(term)
            ),
        )
    }

    pub(super) fn chunk_extension(reason: &str) -> Self {
        Self::bad(
            "InvalidChunkExtension",
            format!("Invalid chunk extension: {reason}"),
        )
    }

    pub(super) fn proxy_line(line: &[u8]) -> Self {
        Self::bad(
            "InvalidProxyLine",
            format!("'Invalid PROXY line: {}'", py_str_repr(line)),
        )
    }

    /// gunicorn's `handle_error` does not list `InvalidProxyHeader`, so it
    /// falls into the generic 500 branch.
    pub(super) fn proxy_header() -> Self {
        Self::new(
            "InvalidProxyHeader",
            500,
            "Internal Server Error",
            String::new(),
        )
    }

    /// The bytes to write to the socket (empty for [`Self::empty`]):
    /// gunicorn's `util.write_error`, latin-1 encoded like gunicorn's.
    pub fn response_bytes(&self) -> Vec<u8> {
        if self.empty {
            return Vec::new();
        }
        let utf8 = crate::http::error::response(self.status, self.reason, &self.message);
        if utf8.is_ascii() {
            return utf8;
        }
        // gunicorn encodes the page as latin-1 (every char of our messages
        // comes from latin-1 decoded bytes) and counts characters.
        let text = String::from_utf8_lossy(&utf8).into_owned();
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            return utf8;
        };
        let latin1: Vec<u8> = body.chars().map(|c| c as u32 as u8).collect();
        let head = head.replace(
            &format!("Content-Length: {}", body.len()),
            &format!("Content-Length: {}", latin1.len()),
        );
        let mut out = head.into_bytes();
        out.extend_from_slice(b"\r\n\r\n");
        out.extend_from_slice(&latin1);
        out
    }
}

impl std::fmt::Display for RequestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.empty {
            write!(f, "{}: connection closed mid-request", self.class)
        } else {
            write!(f, "{} {}: {}", self.status, self.reason, self.message)
        }
    }
}

impl std::error::Error for RequestError {}

/// Python's `repr()` of `bytes` decoded as latin-1 (a `str`).
pub(crate) fn py_str_repr(b: &[u8]) -> String {
    let has_sq = b.contains(&b'\'');
    let has_dq = b.contains(&b'"');
    let q = if has_sq && !has_dq { '"' } else { '\'' };
    let mut out = String::new();
    out.push(q);
    for &c in b {
        match c {
            b'\\' => out.push_str("\\\\"),
            b'\t' => out.push_str("\\t"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            c if c as char == q => {
                out.push('\\');
                out.push(q);
            }
            c if c < 0x20 || (0x7f..=0xa0).contains(&c) || c == 0xad => {
                out.push_str(&format!("\\x{c:02x}"));
            }
            c => out.push(c as char),
        }
    }
    out.push(q);
    out
}

/// Python's `repr()` of a `bytes` object.
pub(crate) fn py_bytes_repr(b: &[u8]) -> String {
    let has_sq = b.contains(&b'\'');
    let has_dq = b.contains(&b'"');
    let q = if has_sq && !has_dq { b'"' } else { b'\'' };
    let mut out = String::from("b");
    out.push(q as char);
    for &c in b {
        match c {
            b'\\' => out.push_str("\\\\"),
            b'\t' => out.push_str("\\t"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            c if c == q => {
                out.push('\\');
                out.push(q as char);
            }
            c if !(0x20..0x7f).contains(&c) => out.push_str(&format!("\\x{c:02x}")),
            c => out.push(c as char),
        }
    }
    out.push(q as char);
    out
}
