//! gunicorn's HTTP/1 request strictness, in front of hyper.
//!
//! This module owns two things:
//!
//! - [`Framer`]: a pure, incremental request framer (no IO). It reads the
//!   raw bytes of one connection with gunicorn 27.0.1's rules (request
//!   line, header fields, body framing, chunked encoding, trailers,
//!   pipelining, PROXY protocol) and hands back a *canonical* HTTP/1.1
//!   stream that hyper can only read the way gunicorn did, or the error
//!   gunicorn would answer ([`RequestError`]).
//! - [`GatedIo`]: the IO wrapper between the socket and hyper. hyper only
//!   ever reads validated bytes; after a framing error hyper sees EOF
//!   (so it still answers the earlier pipelined requests), and when hyper
//!   shuts the connection down the wrapper writes gunicorn's error page
//!   (or nothing, for gunicorn's "close without answer" cases). Once the
//!   app has switched the connection to another protocol (a `101
//!   Switching Protocols` answer: websockets), it passes bytes through
//!   untouched ([`GatedIo::raw_switch`]).
//!
//! What hyper sees is re-serialised, not the raw bytes: headers that
//! `header_map = "drop"` drops are gone, folded lines are unfolded, the
//! method is upper-cased under `casefold_http_method`, `Content-Length` and
//! `Transfer-Encoding` are written in one canonical form, chunk sizes lose
//! their leading zeros and extensions, trailers are dropped (gunicorn does
//! not give them to the app either). A request whose target is not plain
//! origin-form (absolute-form, a `#fragment`, bytes the `http` crate
//! refuses, ...), whose version is not HTTP/1.0 or 1.1, or whose
//! `Content-Length` has leading zeros is shown to hyper with a stand-in
//! target and version, and its request line as sent travels in a field of
//! its own that the worker takes out again ([`RawHead`],
//! [`restore_raw_head`]): the app sees what gunicorn's app sees.
//! A `CONNECT` reaches hyper under another method name, which the worker
//! turns back ([`restore_method`]) before the app sees the request: hyper
//! would answer a 2xx to it as a tunnel, gunicorn answers it as any other
//! request and then closes the connection.
//!
//! The authority is gunicorn 27.0.1's `gunicorn/http/message.py`,
//! `body.py`, `errors.py` and `workers/base.py:handle_error` (status,
//! reason and message text of each error).

use std::borrow::Cow;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};

/// gunicorn's `header_map` setting: what to do with a header field whose
/// name contains `_` (it would map to the same WSGI key as one with `-`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderMapPolicy {
    /// Default: the field is dropped (the app never sees it).
    Drop,
    /// The request is refused with 400.
    Refuse,
    /// The field is kept.
    Dangerous,
}

/// gunicorn's `proxy_protocol` setting (normalised: `True` is `Auto`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyProtocol {
    Off,
    V1,
    V2,
    Auto,
}

/// The settings the framer applies, with gunicorn's names and raw values
/// (the normalisation gunicorn applies, e.g. `limit_request_line >= 8190`
/// means 8190, is done here). `Default` is gunicorn 27.0.1's defaults.
#[derive(Clone, Debug)]
pub struct Limits {
    /// 0 = unlimited; values >= 8190 mean 8190.
    pub limit_request_line: i64,
    /// <= 0 or > 32768 mean 32768.
    pub limit_request_fields: i64,
    /// <= 0 means 8190.
    pub limit_request_field_size: i64,
    pub permit_unconventional_http_method: bool,
    pub permit_unconventional_http_version: bool,
    pub casefold_http_method: bool,
    pub permit_obsolete_folding: bool,
    pub strip_header_spaces: bool,
    pub header_map: HeaderMapPolicy,
    /// `(NAME, value)` pairs as in the config dict; the name is compared
    /// with the upper-cased field name, the value exactly.
    pub secure_scheme_headers: Vec<(String, String)>,
    /// Entries of `forwarded_allow_ips`: `*`, addresses or networks.
    pub forwarded_allow_ips: Vec<String>,
    pub forwarder_headers: Vec<String>,
    pub proxy_protocol: ProxyProtocol,
    pub proxy_allow_ips: Vec<String>,
    /// Not a gunicorn setting: how many bytes of a chunked request (head
    /// and body) are held back from hyper until the whole body is
    /// validated. A chunked request that fails within this many bytes never
    /// reaches the app, so the answer is exactly gunicorn's; a longer one
    /// is streamed, and a late error closes the connection after hyper's
    /// view of the body ends early (see [`GatedIo`]). 0 disables holding.
    pub hold_limit: usize,
    /// The two allow-lists parsed, on first use (the peer is checked per
    /// connection and, for Python apps, per request).
    pub parsed_allow: OnceLock<(Vec<AllowEntry>, Vec<AllowEntry>)>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            limit_request_line: 4094,
            limit_request_fields: 100,
            limit_request_field_size: 8190,
            permit_unconventional_http_method: false,
            permit_unconventional_http_version: false,
            casefold_http_method: false,
            permit_obsolete_folding: false,
            strip_header_spaces: false,
            header_map: HeaderMapPolicy::Drop,
            secure_scheme_headers: vec![
                ("X-FORWARDED-PROTOCOL".into(), "ssl".into()),
                ("X-FORWARDED-PROTO".into(), "https".into()),
                ("X-FORWARDED-SSL".into(), "on".into()),
            ],
            forwarded_allow_ips: vec!["127.0.0.1".into(), "::1".into()],
            forwarder_headers: vec!["SCRIPT_NAME".into(), "PATH_INFO".into()],
            proxy_protocol: ProxyProtocol::Off,
            proxy_allow_ips: vec!["127.0.0.1".into(), "::1".into()],
            hold_limit: 64 * 1024,
            parsed_allow: OnceLock::new(),
        }
    }
}

const MAX_REQUEST_LINE: usize = 8190;
const MAX_HEADERS: usize = 32768;
const DEFAULT_MAX_HEADERFIELD_SIZE: usize = 8190;

impl Limits {
    /// The request line limit in bytes, 0 = unlimited.
    pub fn request_line_limit(&self) -> usize {
        match self.limit_request_line {
            n if n < 0 => MAX_REQUEST_LINE,
            n => (n as usize).min(MAX_REQUEST_LINE),
        }
    }

    /// The maximum number of header fields.
    pub fn fields_limit(&self) -> usize {
        match self.limit_request_fields {
            n if n <= 0 || n as usize > MAX_HEADERS => MAX_HEADERS,
            n => n as usize,
        }
    }

    /// The maximum size of one header field (name, value, folds, CRLF).
    pub fn field_size_limit(&self) -> usize {
        match self.limit_request_field_size {
            n if n <= 0 => DEFAULT_MAX_HEADERFIELD_SIZE,
            n => n as usize,
        }
    }

    /// gunicorn's `max_buffer_headers`: the header block (and the trailer
    /// section) may not grow past this without its terminator.
    pub fn max_buffer_headers(&self) -> usize {
        self.fields_limit() * (self.field_size_limit() + 2) + 4
    }

    /// The value for hyper's `http1::Builder::max_buf_size`, so that hyper
    /// never refuses a head the framer accepted.
    pub fn hyper_max_buf_size(&self) -> usize {
        // The request line, and its target again in the field that
        // carries a [`RawHead`].
        let line = match self.request_line_limit() {
            0 => 1024 * 1024,
            n => n,
        };
        (self.max_buffer_headers() + 2 * line + 128).max(8192)
    }

    /// The value for hyper's `http1::Builder::max_headers` (one more for
    /// the field that carries a [`RawHead`]).
    pub fn hyper_max_headers(&self) -> usize {
        self.fields_limit() + 1
    }

    /// Whether `peer` may set the scheme and forwarder headers
    /// (`forwarded_allow_ips`). `None` (a UNIX socket) is trusted.
    pub fn trusts_forwarder(&self, peer: Option<IpAddr>) -> bool {
        entries_allow(&self.allow_lists().0, peer)
    }

    /// Whether `peer` may send a PROXY protocol header (`proxy_allow_ips`).
    pub fn trusts_proxy(&self, peer: Option<IpAddr>) -> bool {
        entries_allow(&self.allow_lists().1, peer)
    }

    fn allow_lists(&self) -> &(Vec<AllowEntry>, Vec<AllowEntry>) {
        self.parsed_allow.get_or_init(|| {
            let parse = |l: &[String]| l.iter().filter_map(|e| AllowEntry::parse(e)).collect();
            (
                parse(&self.forwarded_allow_ips),
                parse(&self.proxy_allow_ips),
            )
        })
    }
}

/// One entry of an allow-list: `*`, or an address with a prefix length.
#[derive(Clone, Copy, Debug)]
pub enum AllowEntry {
    Any,
    Net(IpAddr, Option<u8>),
}

impl AllowEntry {
    /// `None` for an entry that names no address (it never matches).
    fn parse(entry: &str) -> Option<AllowEntry> {
        let entry = entry.trim();
        if entry == "*" {
            return Some(AllowEntry::Any);
        }
        let (addr, prefix) = match entry.split_once('/') {
            Some((a, p)) => (a, p.parse::<u8>().ok()),
            None => (entry, None),
        };
        addr.parse::<IpAddr>()
            .ok()
            .map(|net| AllowEntry::Net(net, prefix))
    }
}

/// gunicorn's `_ip_in_allow_list`: `*`, an address, or a network
/// (`ipaddress.ip_network`); `None` (not an IP peer) is always allowed.
fn entries_allow(entries: &[AllowEntry], peer: Option<IpAddr>) -> bool {
    let Some(ip) = peer else { return true };
    entries.iter().any(|&entry| {
        let (net, prefix) = match entry {
            AllowEntry::Any => return true,
            AllowEntry::Net(net, prefix) => (net, prefix),
        };
        match (net, ip) {
            (IpAddr::V4(n), IpAddr::V4(i)) => {
                let bits = prefix.unwrap_or(32).min(32) as u32;
                let mask = if bits == 0 {
                    0
                } else {
                    u32::MAX << (32 - bits)
                };
                u32::from(n) & mask == u32::from(i) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(i)) => {
                let bits = prefix.unwrap_or(128).min(128) as u32;
                let mask = if bits == 0 {
                    0
                } else {
                    u128::MAX << (128 - bits)
                };
                u128::from(n) & mask == u128::from(i) & mask
            }
            _ => false,
        }
    })
}

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
    fn new(class: &'static str, status: u16, reason: &'static str, message: String) -> Self {
        RequestError {
            class,
            status,
            reason,
            message,
            empty: false,
        }
    }

    fn bad(class: &'static str, message: String) -> Self {
        Self::new(class, 400, "Bad Request", message)
    }

    fn no_more_data() -> Self {
        RequestError {
            class: "NoMoreData",
            status: 0,
            reason: "",
            message: String::new(),
            empty: true,
        }
    }

    fn request_line(line: &[u8]) -> Self {
        Self::bad(
            "InvalidRequestLine",
            format!(
                "Invalid Request Line 'Invalid HTTP request line: {}'",
                py_str_repr(line)
            ),
        )
    }

    fn method(m: &[u8]) -> Self {
        Self::bad(
            "InvalidRequestMethod",
            format!("Invalid Method 'Invalid HTTP method: {}'", py_str_repr(m)),
        )
    }

    fn version(v: String) -> Self {
        Self::bad(
            "InvalidHTTPVersion",
            format!("Invalid HTTP Version 'Invalid HTTP Version: {v}'"),
        )
    }

    fn header(h: &[u8]) -> Self {
        Self::bad(
            "InvalidHeader",
            format!("Invalid HTTP Header: {}", py_str_repr(h)),
        )
    }

    fn header_name(h: &[u8]) -> Self {
        Self::bad(
            "InvalidHeaderName",
            format!("Invalid HTTP header name: {}", py_str_repr(h)),
        )
    }

    fn limit_headers(msg: &str) -> Self {
        Self::new(
            "LimitRequestHeaders",
            431,
            "Request Header Fields Too Large",
            format!("Error parsing headers: '{msg}'"),
        )
    }

    fn limit_line(size: usize, max: usize) -> Self {
        Self::new(
            "LimitRequestLine",
            414,
            "URI Too Long",
            format!("Request Line is too large ({size} > {max})"),
        )
    }

    fn chunk_size(data: &[u8]) -> Self {
        Self::bad(
            "InvalidChunkSize",
            format!("Invalid chunk size: {}", py_bytes_repr(data)),
        )
    }

    fn chunk_terminator(term: &[u8]) -> Self {
        Self::bad(
            "ChunkMissingTerminator",
            format!(
                "Invalid chunk terminator is not '\\r\\n': {}",
                py_bytes_repr(term)
            ),
        )
    }

    fn chunk_extension(reason: &str) -> Self {
        Self::bad(
            "InvalidChunkExtension",
            format!("Invalid chunk extension: {reason}"),
        )
    }

    fn proxy_line(line: &[u8]) -> Self {
        Self::bad(
            "InvalidProxyLine",
            format!("'Invalid PROXY line: {}'", py_str_repr(line)),
        )
    }

    /// gunicorn's `handle_error` does not list `InvalidProxyHeader`, so it
    /// falls into the generic 500 branch.
    fn proxy_header() -> Self {
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
        let utf8 = crate::http_error::response(self.status, self.reason, &self.message);
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

/// What a PROXY protocol header said (gunicorn's `proxy_protocol_info`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProxyInfo {
    /// `TCP4`, `TCP6`, `LOCAL` or `UNSPEC`.
    pub proto: &'static str,
    pub client_addr: Option<IpAddr>,
    pub client_port: Option<u16>,
    pub proxy_addr: Option<IpAddr>,
    pub proxy_port: Option<u16>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Before a request (and its optional leading CRLF).
    Head,
    /// A `Content-Length` body: this many bytes to go.
    Body(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkCrlf,
    Trailers,
    /// gunicorn stops reading the connection after the last request
    /// (`Connection: close`, HTTP/1.0, CONNECT, ...): the rest is ignored.
    Closed,
    /// The peer closed cleanly between requests.
    Ended,
    Failed,
}

/// The incremental request framer of one connection. See the module doc.
pub struct Framer {
    limits: Arc<Limits>,
    trusted_forwarder: bool,
    trusted_proxy: bool,
    state: State,
    /// Requests whose head has been parsed on this connection.
    requests: u64,
    /// Whether gunicorn closes after the current request.
    close_after: bool,
    /// While holding a chunked request: its canonical bytes so far.
    held: Option<Vec<u8>>,
    /// A head was released to hyper whose request is not complete yet.
    partial_released: bool,
    /// Request heads handed to hyper so far.
    heads_released: u64,
    proxy_done: bool,
    /// What the PROXY header said, once parsed; shared with the worker,
    /// which reads it into each request. `None` when `proxy_protocol` is off.
    proxy_info: Option<Arc<OnceLock<ProxyInfo>>>,
    error: Option<RequestError>,
    /// The incomplete head seen by the last full scan, so that bytes
    /// trickling in are not rescanned from the start each time.
    head_wait: Option<HeadWait>,
    /// Tests: every head takes the full path ([`Self::plain_head`] off).
    no_fast_path: bool,
}

/// What the last full scan of an incomplete head found.
#[derive(Clone, Copy)]
struct HeadWait {
    /// Bytes of the head scanned.
    len: usize,
    /// Where the request line began (after an ignored empty line).
    start: usize,
    /// Where the header block begins, once the request line is complete.
    after_line: Option<usize>,
}

/// One parsed header field. Borrowed from the request's bytes: only a
/// folded value is copied.
struct Field<'a> {
    /// The name as sent (after `strip_header_spaces`); a token (ASCII).
    name: &'a [u8],
    /// The value, stripped of SP/HTAB, folds joined with a space.
    value: Cow<'a, [u8]>,
}

impl Field<'_> {
    /// Whether the name is `upper` (gunicorn compares upper-cased names).
    fn is(&self, upper: &str) -> bool {
        upper_eq(self.name, upper)
    }
}

/// gunicorn's key for a header name: the name upper-cased.
fn upper_of(name: &[u8]) -> String {
    String::from_utf8_lossy(name).to_ascii_uppercase()
}

/// `name.upper() == key`, as gunicorn compares a header with a key of
/// `secure_scheme_headers` or `forwarder_headers` (a key with lower-case
/// letters never matches).
fn upper_eq(name: &[u8], key: &str) -> bool {
    name.len() == key.len()
        && name
            .iter()
            .zip(key.as_bytes())
            .all(|(n, k)| n.to_ascii_uppercase() == *k)
}

/// The first `needle` (a short one: CRLF, `://`) in `hay`: a byte search
/// for its first byte, then a compare (cheaper than a substring searcher's
/// set-up for needles this short).
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let (&first, tail) = needle.split_first()?;
    let mut from = 0;
    while let Some(i) = memchr::memchr(first, &hay[from..]) {
        let at = from + i;
        if hay[at + 1..].starts_with(tail) {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

fn has_bare_lf(data: &[u8]) -> bool {
    memchr::memchr_iter(b'\n', data).any(|i| i == 0 || data[i - 1] != b'\r')
}

/// A byte table: `table[c]` is true for the bytes of `chars` and of
/// `[A-Za-z0-9]`.
const fn alnum_and(chars: &[u8]) -> [bool; 256] {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        t[c] = (c as u8).is_ascii_alphanumeric();
        c += 1;
    }
    let mut i = 0;
    while i < chars.len() {
        t[chars[i] as usize] = true;
        i += 1;
    }
    t
}

/// RFC 9110 `tchar`.
static TCHAR: [bool; 256] = alnum_and(b"!#$%&'*+-.^_`|~");

/// Bytes of an origin-form target that the `http` crate surely takes as
/// they are (RFC 3986 `pchar`, `/` and `?`; not `#`).
static PLAIN_TARGET: [bool; 256] = alnum_and(b"-._~!$&'()*+,;=:@/%?");

/// The longest target the `http` crate takes.
const MAX_URI_LEN: usize = u16::MAX as usize - 2;

/// A target hyper takes as it is, with no trial parse: `/` then
/// [`PLAIN_TARGET`] bytes, not too long. ([`Framer::plain_head`] applies
/// the same rule while it scans.)
fn is_plain_target(target: &[u8]) -> bool {
    target.first() == Some(&b'/')
        && target.len() <= MAX_URI_LEN
        && target.iter().all(|&c| PLAIN_TARGET[c as usize])
}

/// Byte classes of [`Framer::plain_head`]'s fast path, in one table.
const UPPER: u8 = 1;
/// [`PLAIN_TARGET`].
const TARGET: u8 = 2;
/// A `tchar` other than `_` (gunicorn refuses `_` in names by default, and
/// the full path knows the setting).
const NAME: u8 = 4;
/// Visible: 0x21-0x7e and obs-text 0x80-0xff.
const VISIBLE: u8 = 8;
/// A value byte: visible, SP or HTAB (not [`bad_value_byte`]).
const VALUE: u8 = 16;

static PLAIN: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        let mut k = 0;
        if b.is_ascii_uppercase() {
            k |= UPPER;
        }
        if PLAIN_TARGET[c] {
            k |= TARGET;
        }
        if TCHAR[c] && b != b'_' {
            k |= NAME;
        }
        if (b > 0x20 && b < 0x7f) || b >= 0x80 {
            k |= VISIBLE | VALUE;
        }
        if b == b' ' || b == b'\t' {
            k |= VALUE;
        }
        t[c] = k;
        c += 1;
    }
    t
};

fn is_tchar(c: u8) -> bool {
    TCHAR[c as usize]
}

fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&c| is_tchar(c))
}

fn strip_sp_tab(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// gunicorn's `RFC9110_5_5_INVALID_AND_DANGEROUS`.
fn bad_value_byte(c: u8) -> bool {
    (c < 0x20 && c != b'\t') || c == 0x7f
}

/// Python's `urlsplit` scheme rule: `[A-Za-z][A-Za-z0-9+.-]*` before the
/// first `:`; returns what follows the scheme (all of `url` without one).
fn after_scheme(url: &[u8]) -> &[u8] {
    if let Some(i) = memchr::memchr(b':', url) {
        if i > 0
            && url[0].is_ascii_alphabetic()
            && url[..i]
                .iter()
                .all(|&c| c.is_ascii_alphanumeric() || b"+-.".contains(&c))
        {
            return &url[i + 1..];
        }
    }
    url
}

/// `urlsplit`'s netloc (after `//`) and what follows it, or `None`.
fn split_netloc(url: &[u8]) -> Option<(&[u8], &[u8])> {
    let rest = url.strip_prefix(b"//")?;
    let end = rest
        .iter()
        .position(|&c| b"/?#".contains(&c))
        .unwrap_or(rest.len());
    Some(rest.split_at(end))
}

/// A request target split as gunicorn's `split_request_uri` (Python's
/// `urlsplit`, a target that begins with `//` being a path) splits it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TargetParts<'a> {
    pub path: &'a [u8],
    pub query: &'a [u8],
    pub fragment: &'a [u8],
}

/// See [`TargetParts`]; on the bytes as sent (printable ASCII).
pub fn split_target(uri: &[u8]) -> TargetParts<'_> {
    let mut url = uri;
    if !url.starts_with(b"//") {
        url = after_scheme(url);
        if let Some((_, rest)) = split_netloc(url) {
            url = rest;
        }
    }
    let (url, fragment) = match memchr::memchr(b'#', url) {
        Some(i) => (&url[..i], &url[i + 1..]),
        None => (url, &b""[..]),
    };
    let (path, query) = match memchr::memchr(b'?', url) {
        Some(i) => (&url[..i], &url[i + 1..]),
        None => (url, &b""[..]),
    };
    TargetParts {
        path,
        query,
        fragment,
    }
}

/// The subset of Python 3.11's `urlsplit` that raises `ValueError` for a
/// printable-ASCII target (unbalanced or invalid bracketed hosts).
fn urlsplit_fails(uri: &[u8]) -> bool {
    if uri.starts_with(b"//") {
        return false; // gunicorn prefixes "." first: never a netloc.
    }
    let Some((netloc, _)) = split_netloc(after_scheme(uri)) else {
        return false;
    };
    let open = netloc.contains(&b'[');
    let close = netloc.contains(&b']');
    if open != close {
        return true;
    }
    if open {
        let after = &netloc[netloc.iter().position(|&c| c == b'[').unwrap_or(0) + 1..];
        let host = &after[..after.iter().position(|&c| c == b']').unwrap_or(after.len())];
        if let Some(f) = host.strip_prefix(b"v") {
            // \Av[a-fA-F0-9]+\..+\Z
            let Some(dot) = memchr::memchr(b'.', f) else {
                return true;
            };
            let (hex, tail) = (&f[..dot], &f[dot + 1..]);
            return hex.is_empty()
                || !hex.iter().all(u8::is_ascii_hexdigit)
                || tail.is_empty()
                || tail.contains(&b'\n');
        }
        let addr = match memchr::memchr(b'%', host) {
            Some(i) if i + 1 < host.len() => &host[..i],
            Some(_) => return true,
            None => host,
        };
        // The target is printable ASCII: the parse reads bytes only.
        return std::str::from_utf8(addr).map_or(true, |a| a.parse::<Ipv6Addr>().is_err());
    }
    false
}

/// The prefix of a method that hyper is shown in place of another:
/// `CONNECT` is shown as the prefix alone, and a client's own method that
/// begins with it gets it once more, so the mapping is one to one and
/// [`restore_method`] can undo it.
const HIDDEN_METHOD: &[u8] = b"RGUNICORN-";

/// The method as hyper is shown it. hyper answers a 2xx to `CONNECT` as a
/// tunnel: it writes no `Content-Length` and no body (and nothing at all
/// when the app set a `Content-Length`), then hands the connection over.
/// gunicorn never tunnels: it sends the app's whole response and closes the
/// connection. Under another name the request is an ordinary one to hyper.
fn method_for_hyper(method: &[u8]) -> Cow<'_, [u8]> {
    if method == b"CONNECT" {
        Cow::Borrowed(HIDDEN_METHOD)
    } else if method.starts_with(HIDDEN_METHOD) {
        Cow::Owned([HIDDEN_METHOD, method].concat())
    } else {
        Cow::Borrowed(method)
    }
}

/// Undo [`method_for_hyper`] on a request that hyper read through a
/// [`GatedIo`], before anyone else sees it (app, hooks, access log).
/// Returns whether the request is a `CONNECT`: gunicorn closes the
/// connection after one whatever the answer, so its response must say
/// `Connection: close`.
pub fn restore_method<B>(req: &mut hyper::Request<B>) -> bool {
    let Some(rest) = req.method().as_str().as_bytes().strip_prefix(HIDDEN_METHOD) else {
        return false;
    };
    if rest.is_empty() {
        *req.method_mut() = hyper::Method::CONNECT;
        return true;
    }
    // The client's own method, which was a token: it parses again.
    if let Ok(method) = hyper::Method::from_bytes(rest) {
        *req.method_mut() = method;
    }
    false
}

/// The target hyper is shown for a request whose head is also carried as
/// sent ([`RawHead`]). Every absolute-form target a client sends is such a
/// request, so an absolute target here is always the framer's.
const RAW_MARK_TARGET: &[u8] = b"http://rgunicorn.raw/";

/// The field that carries a [`RawHead`] to [`restore_raw_head`]: the first
/// of the head, `<major>.<minor> <Content-Length> <target>`. A client's own
/// field of that name stays (first among the fields, where the map keeps
/// that name).
const RAW_FIELD: &str = "rgunicorn-raw";

/// What the app must see of a request line (and `Content-Length`) as the
/// client sent it, where hyper can only read a canonical form: a target
/// that is not plain origin-form (absolute-form, with a `#fragment`, with
/// bytes the `http` crate refuses, `*`, CONNECT's authority), a version
/// other than HTTP/1.0 and 1.1 (gunicorn takes any `HTTP/1.x`), or a
/// `Content-Length` with leading zeros. [`restore_raw_head`] puts one in
/// the request's extensions; most requests have none, and their target,
/// version and `Content-Length` are as sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawHead {
    /// The request target as sent (printable ASCII).
    pub target: Vec<u8>,
    /// `(1, 2)` for `HTTP/1.2`.
    pub version: (u8, u8),
    /// The `Content-Length` value as sent (SP/HTAB stripped), if any.
    pub content_length: Option<Vec<u8>>,
}

impl RawHead {
    /// The target split as gunicorn splits it.
    pub fn parts(&self) -> TargetParts<'_> {
        split_target(&self.target)
    }

    /// `HTTP/1.2` (gunicorn's `SERVER_PROTOCOL`).
    pub fn protocol(&self) -> String {
        format!("HTTP/{}.{}", self.version.0, self.version.1)
    }

    fn parse(v: &[u8]) -> Option<RawHead> {
        let [major, b'.', minor, b' ', rest @ ..] = v else {
            return None;
        };
        let sp = memchr::memchr(b' ', rest)?;
        Some(RawHead {
            target: rest[sp + 1..].to_vec(),
            version: (major.wrapping_sub(b'0'), minor.wrapping_sub(b'0')),
            content_length: (sp > 0).then(|| rest[..sp].to_vec()),
        })
    }
}

/// Undo the framer's marking of a request that carries a [`RawHead`]
/// (hyper read it through a [`GatedIo`]): the head goes into the request's
/// extensions, its field is removed, and the URI becomes what the `http`
/// crate makes of the target as sent ([`uri_for_app`]). Cheap for an
/// origin-form request (none is marked).
#[inline]
pub fn restore_raw_head<B>(req: &mut hyper::Request<B>) {
    if req.uri().scheme().is_none() {
        return;
    }
    restore_marked(req);
}

fn restore_marked<B>(req: &mut hyper::Request<B>) {
    if !req.headers().contains_key(RAW_FIELD) {
        return;
    }
    // Rebuilt without the field, in the same order (removing it from the
    // map would move the last field into its place).
    let fields = std::mem::take(req.headers_mut());
    let mut rest = hyper::HeaderMap::with_capacity(fields.len());
    let mut ours = None;
    let mut name = None;
    for (k, v) in fields {
        if let Some(k) = k {
            name = Some(k);
        }
        let Some(k) = &name else { continue };
        if ours.is_none() && k == RAW_FIELD {
            ours = Some(v);
        } else {
            rest.append(k.clone(), v);
        }
    }
    *req.headers_mut() = rest;
    let Some(raw) = ours.and_then(|v| RawHead::parse(v.as_bytes())) else {
        return;
    };
    *req.uri_mut() = uri_for_app(&raw.target);
    req.extensions_mut().insert(raw);
}

/// What the `http` crate makes of a target, for whoever reads the request's
/// URI (a Rust app): the target itself when it parses (a `#fragment`
/// dropped), else with the bytes `http` refuses percent-encoded, else its
/// path and query as gunicorn splits them, in origin-form.
pub fn uri_for_app(target: &[u8]) -> hyper::Uri {
    let encode = |t: &[u8]| {
        let mut enc = Vec::with_capacity(t.len() + 16);
        for &c in t {
            if b"\"<>\\^`{|}".contains(&c) {
                enc.extend_from_slice(format!("%{c:02X}").as_bytes());
            } else {
                enc.push(c);
            }
        }
        enc
    };
    if let Ok(uri) = hyper::Uri::try_from(target) {
        return uri;
    }
    if let Ok(uri) = hyper::Uri::try_from(encode(target)) {
        return uri;
    }
    let parts = split_target(target);
    let mut origin = Vec::with_capacity(target.len() + 1);
    if !parts.path.starts_with(b"/") {
        origin.push(b'/');
    }
    origin.extend_from_slice(parts.path);
    if !parts.query.is_empty() {
        origin.push(b'?');
        origin.extend_from_slice(parts.query);
    }
    hyper::Uri::try_from(encode(&origin)).unwrap_or_else(|_| hyper::Uri::from_static("/"))
}

/// Result of trying to parse one element that may be incomplete.
enum Step<T> {
    Done(T),
    NeedMore,
}

impl Framer {
    /// A framer for one connection from `peer` (`None` for a UNIX socket).
    pub fn new(limits: Arc<Limits>, peer: Option<IpAddr>) -> Self {
        let trusted_forwarder = limits.trusts_forwarder(peer);
        let trusted_proxy = limits.trusts_proxy(peer);
        let proxy_off = limits.proxy_protocol == ProxyProtocol::Off;
        Framer {
            proxy_done: proxy_off,
            limits,
            trusted_forwarder,
            trusted_proxy,
            state: State::Head,
            requests: 0,
            close_after: false,
            held: None,
            partial_released: false,
            heads_released: 0,
            proxy_info: (!proxy_off).then(Default::default),
            error: None,
            head_wait: None,
            no_fast_path: false,
        }
    }

    /// Validate what arrived. `input` is everything received and not yet
    /// consumed, `eof` whether the peer has half-closed. Appends to `out`
    /// the canonical bytes hyper may read now, and returns how many bytes
    /// of `input` were consumed (the rest must be passed again, with more
    /// data behind it). On `Err`, `out` still holds everything validated
    /// before the error (earlier pipelined requests): hyper must get those,
    /// then EOF, and the connection then gets the error's response.
    pub fn advance(
        &mut self,
        input: &[u8],
        eof: bool,
        out: &mut Vec<u8>,
    ) -> Result<usize, RequestError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        match self.run(input, eof, out) {
            Ok(n) => Ok(n),
            Err(e) => {
                self.held = None;
                self.state = State::Failed;
                self.error = Some(e.clone());
                Err(e)
            }
        }
    }

    /// Nothing more will be forwarded: hyper should see EOF once `out` is
    /// drained (the peer closed between requests, or gunicorn would stop
    /// reading this connection after its last request).
    pub fn at_end(&self) -> bool {
        matches!(self.state, State::Closed | State::Ended | State::Failed)
    }

    /// Whether [`Self::plain_heads_in_place`] may run now: between
    /// requests, with nothing buffered or pending.
    pub fn in_place_ready(&self) -> bool {
        self.state == State::Head
            && self.proxy_done
            && self.head_wait.is_none()
            && self.held.is_none()
            && self.error.is_none()
            && !self.no_fast_path
    }

    /// The zero-copy form of [`Self::advance`] for fresh socket bytes,
    /// when [`Self::in_place_ready`]: consumes the whole requests at the
    /// start of `input` that the fast path takes (their canonical form is
    /// their own bytes) and returns their length, so those bytes can go to
    /// hyper where they already are. The rest, if any, must then go through
    /// [`Self::advance`].
    pub fn plain_heads_in_place(&mut self, input: &[u8]) -> usize {
        let mut pos = 0;
        while self.state == State::Head && pos < input.len() {
            match self.plain_head(&input[pos..]) {
                Some(n) => pos += n,
                None => break,
            }
        }
        pos
    }

    /// Whether a request head has been given to hyper whose body is not
    /// complete (so hyper is inside a request right now).
    pub fn mid_request(&self) -> bool {
        self.partial_released
    }

    /// Requests parsed on this connection so far.
    pub fn requests(&self) -> u64 {
        self.requests
    }

    /// Request heads handed to hyper so far (each gets an answer from the
    /// app, except one cut short by an error while [`Self::mid_request`]).
    pub fn heads_released(&self) -> u64 {
        self.heads_released
    }

    /// What the PROXY protocol header said, if there was one.
    pub fn proxy_info(&self) -> Option<&ProxyInfo> {
        self.proxy_info.as_ref()?.get()
    }

    /// The cell that holds the PROXY header's addresses once they are
    /// parsed (always before the first request head reaches hyper); `None`
    /// when `proxy_protocol` is off.
    pub fn proxy_info_sink(&self) -> Option<Arc<OnceLock<ProxyInfo>>> {
        self.proxy_info.clone()
    }

    fn set_proxy_info(&mut self, info: ProxyInfo) {
        if let Some(cell) = &self.proxy_info {
            let _ = cell.set(info);
        }
    }

    fn emit(&mut self, out: &mut Vec<u8>, bytes: &[u8]) {
        match &mut self.held {
            Some(h) => {
                h.extend_from_slice(bytes);
                if h.len() > self.limits.hold_limit {
                    self.flush_held(out);
                    self.partial_released = true;
                }
            }
            None => out.extend_from_slice(bytes),
        }
    }

    /// Release a held request (it always starts with its head).
    fn flush_held(&mut self, out: &mut Vec<u8>) {
        if let Some(mut h) = self.held.take() {
            out.append(&mut h);
            self.heads_released += 1;
        }
    }

    fn request_done(&mut self, out: &mut Vec<u8>) {
        self.flush_held(out);
        self.request_done_unheld();
    }

    /// [`Self::request_done`] for a request that was not held.
    fn request_done_unheld(&mut self) {
        self.partial_released = false;
        self.state = if self.close_after {
            State::Closed
        } else {
            State::Head
        };
    }

    fn run(&mut self, input: &[u8], eof: bool, out: &mut Vec<u8>) -> Result<usize, RequestError> {
        let mut pos = 0;
        loop {
            let rest = &input[pos..];
            match self.state {
                State::Closed | State::Ended | State::Failed => return Ok(input.len()),
                State::Head => {
                    if rest.is_empty() {
                        if eof {
                            self.state = State::Ended;
                        }
                        return Ok(pos);
                    }
                    if !self.proxy_done {
                        match self.proxy(rest, eof)? {
                            Step::Done(n) => {
                                self.proxy_done = true;
                                pos += n;
                                continue;
                            }
                            Step::NeedMore => return Ok(pos),
                        }
                    }
                    match self.head(rest, eof, out)? {
                        Step::Done(n) => pos += n,
                        Step::NeedMore => return Ok(pos),
                    }
                }
                State::Body(n) => {
                    let take = (rest.len() as u64).min(n) as usize;
                    self.emit(out, &rest[..take]);
                    pos += take;
                    let left = n - take as u64;
                    if left == 0 {
                        self.request_done(out);
                    } else {
                        self.state = State::Body(left);
                        if eof {
                            // gunicorn hands the app a short body; hyper
                            // sees the body end early.
                            self.state = State::Ended;
                        }
                        return Ok(pos);
                    }
                }
                State::ChunkSize => match self.chunk_size(rest, eof, out)? {
                    Step::Done(n) => pos += n,
                    Step::NeedMore => return Ok(pos),
                },
                State::ChunkData(n) => {
                    let take = (rest.len() as u64).min(n) as usize;
                    self.emit(out, &rest[..take]);
                    pos += take;
                    let left = n - take as u64;
                    if left == 0 {
                        self.state = State::ChunkCrlf;
                    } else {
                        self.state = State::ChunkData(left);
                        if eof {
                            return Err(RequestError::no_more_data());
                        }
                        return Ok(pos);
                    }
                }
                State::ChunkCrlf => {
                    if rest.len() < 2 && !eof {
                        return Ok(pos);
                    }
                    if !rest.starts_with(b"\r\n") {
                        return Err(RequestError::chunk_terminator(&rest[..rest.len().min(2)]));
                    }
                    self.emit(out, b"\r\n");
                    pos += 2;
                    self.state = State::ChunkSize;
                }
                State::Trailers => match self.trailers(rest, eof, out)? {
                    Step::Done(n) => pos += n,
                    Step::NeedMore => return Ok(pos),
                },
            }
        }
    }

    fn proxy(&mut self, rest: &[u8], eof: bool) -> Result<Step<usize>, RequestError> {
        const V2_SIG: &[u8] = b"\r\n\r\n\x00\r\nQUIT\n";
        if rest.len() < 12 {
            return if eof {
                Err(RequestError::no_more_data())
            } else {
                Ok(Step::NeedMore)
            };
        }
        let mode = self.limits.proxy_protocol;
        if matches!(mode, ProxyProtocol::V2 | ProxyProtocol::Auto) && rest.starts_with(V2_SIG) {
            self.proxy_access()?;
            return self.proxy_v2(rest, eof);
        }
        if matches!(mode, ProxyProtocol::V1 | ProxyProtocol::Auto) && rest.starts_with(b"PROXY ") {
            self.proxy_access()?;
            return self.proxy_v1(rest, eof);
        }
        Ok(Step::Done(0))
    }

    fn proxy_access(&self) -> Result<(), RequestError> {
        if self.trusted_proxy {
            Ok(())
        } else {
            Err(RequestError::new(
                "ForbiddenProxyRequest",
                403,
                "Forbidden",
                "Request forbidden".into(),
            ))
        }
    }

    fn proxy_v1(&mut self, rest: &[u8], eof: bool) -> Result<Step<usize>, RequestError> {
        let Some(idx) = find(rest, b"\r\n") else {
            if rest.len() > MAX_REQUEST_LINE {
                // gunicorn waits without bound; a PROXY v1 line is at most
                // 107 bytes.
                return Err(RequestError::proxy_line(&rest[..MAX_REQUEST_LINE]));
            }
            return if eof {
                Err(RequestError::no_more_data())
            } else {
                Ok(Step::NeedMore)
            };
        };
        let line = &rest[..idx];
        let bits: Vec<&[u8]> = line.split(|&c| c == b' ').collect();
        if bits.len() != 6 {
            return Err(RequestError::proxy_line(line));
        }
        let proto = bits[1];
        // std's address parsers read ASCII bytes only (no Unicode digits
        // or spaces); inet_pton's grammar is the same.
        let parse = |b: &[u8], v6: bool| -> Option<IpAddr> {
            let s = std::str::from_utf8(b).ok().filter(|s| s.is_ascii())?;
            if v6 {
                s.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
            } else {
                s.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
            }
        };
        let v6 = match proto {
            b"TCP4" => false,
            b"TCP6" => true,
            _ => {
                let mut m = b"protocol '".to_vec();
                m.extend_from_slice(proto);
                m.extend_from_slice(b"' not supported");
                return Err(RequestError::proxy_line(&m));
            }
        };
        let (Some(s_addr), Some(d_addr)) = (parse(bits[2], v6), parse(bits[3], v6)) else {
            return Err(RequestError::proxy_line(line));
        };
        let invalid_port = || {
            let mut m = b"invalid port ".to_vec();
            m.extend_from_slice(line);
            RequestError::proxy_line(&m)
        };
        let (Some(sp), Some(dp)) = (port_number(bits[4]), port_number(bits[5])) else {
            return Err(invalid_port());
        };
        let (Ok(sp), Ok(dp)) = (u16::try_from(sp), u16::try_from(dp)) else {
            return Err(invalid_port());
        };
        self.set_proxy_info(ProxyInfo {
            proto: if v6 { "TCP6" } else { "TCP4" },
            client_addr: Some(s_addr),
            client_port: Some(sp),
            proxy_addr: Some(d_addr),
            proxy_port: Some(dp),
        });
        Ok(Step::Done(idx + 2))
    }

    fn proxy_v2(&mut self, rest: &[u8], eof: bool) -> Result<Step<usize>, RequestError> {
        let need_more = |eof| {
            if eof {
                Err(RequestError::no_more_data())
            } else {
                Ok(Step::NeedMore)
            }
        };
        if rest.len() < 16 {
            return need_more(eof);
        }
        let ver_cmd = rest[12];
        let fam_proto = rest[13];
        let length = u16::from_be_bytes([rest[14], rest[15]]) as usize;
        if ver_cmd >> 4 != 2 {
            return Err(RequestError::proxy_header());
        }
        let command = ver_cmd & 0x0f;
        if command > 1 {
            return Err(RequestError::proxy_header());
        }
        let total = 16 + length;
        if rest.len() < total {
            return need_more(eof);
        }
        let unspec = ProxyInfo {
            proto: "LOCAL",
            client_addr: None,
            client_port: None,
            proxy_addr: None,
            proxy_port: None,
        };
        if command == 0 {
            self.set_proxy_info(unspec);
            return Ok(Step::Done(total));
        }
        if fam_proto & 0x0f != 1 {
            return Err(RequestError::proxy_header());
        }
        let a = &rest[16..total];
        let port = |b: &[u8]| u16::from_be_bytes([b[0], b[1]]);
        let info = match fam_proto >> 4 {
            1 => {
                if length < 12 {
                    return Err(RequestError::proxy_header());
                }
                ProxyInfo {
                    proto: "TCP4",
                    client_addr: Some(IpAddr::from([a[0], a[1], a[2], a[3]])),
                    proxy_addr: Some(IpAddr::from([a[4], a[5], a[6], a[7]])),
                    client_port: Some(port(&a[8..])),
                    proxy_port: Some(port(&a[10..])),
                }
            }
            2 => {
                if length < 36 {
                    return Err(RequestError::proxy_header());
                }
                let ip = |b: &[u8]| {
                    let mut o = [0u8; 16];
                    o.copy_from_slice(&b[..16]);
                    IpAddr::from(o)
                };
                ProxyInfo {
                    proto: "TCP6",
                    client_addr: Some(ip(&a[0..])),
                    proxy_addr: Some(ip(&a[16..])),
                    client_port: Some(port(&a[32..])),
                    proxy_port: Some(port(&a[34..])),
                }
            }
            0 => ProxyInfo {
                proto: "UNSPEC",
                ..unspec
            },
            _ => return Err(RequestError::proxy_header()),
        };
        self.set_proxy_info(info);
        Ok(Step::Done(total))
    }

    /// One request head; on success the state moves to its body.
    fn head(
        &mut self,
        rest: &[u8],
        eof: bool,
        out: &mut Vec<u8>,
    ) -> Result<Step<usize>, RequestError> {
        let need_more = |eof| {
            if eof {
                Err(RequestError::no_more_data())
            } else {
                Ok(Step::NeedMore)
            }
        };
        // Bytes with no LF can't end a line or the head, nor be a bare LF:
        // unless they cross a size limit, the answer is still "need more".
        if let Some(w) = self.head_wait {
            if rest.len() >= w.len && !rest[w.len..].contains(&b'\n') {
                let limit = self.limits.request_line_limit();
                let within = match w.after_line {
                    Some(after) => rest.len() - after <= self.limits.max_buffer_headers(),
                    None => limit == 0 || (rest.len() - w.start).saturating_sub(2) <= limit,
                };
                if within {
                    self.head_wait = Some(HeadWait {
                        len: rest.len(),
                        ..w
                    });
                    return need_more(eof);
                }
            }
        }
        // The fast path on a head's first look only (a head that trickles
        // in is then scanned incrementally by the full path).
        let first_look = self.head_wait.take().is_none();
        if first_look && !self.no_fast_path {
            if let Some(n) = self.plain_head(rest) {
                out.extend_from_slice(&rest[..n]);
                return Ok(Step::Done(n));
            }
        }
        // RFC 9112 2.2: one empty line before the request line is ignored.
        let mut start = 0;
        if rest == b"\r" {
            return need_more(eof);
        }
        if rest.starts_with(b"\r\n") {
            start = 2;
        }
        let data = &rest[start..];
        let limit = self.limits.request_line_limit();
        let crlf = find(data, b"\r\n");
        let line_end = crlf.unwrap_or(data.len());
        if data[..line_end].contains(&b'\n') {
            return Err(RequestError::request_line(b"bare LF as line terminator"));
        }
        let Some(line_end) = crlf else {
            if limit > 0 && data.len().saturating_sub(2) > limit {
                return Err(RequestError::limit_line(data.len(), limit));
            }
            self.head_wait = Some(HeadWait {
                len: rest.len(),
                start,
                after_line: None,
            });
            return need_more(eof);
        };
        if limit > 0 && line_end > limit {
            return Err(RequestError::limit_line(line_end, limit));
        }
        let line = &data[..line_end];
        let after_line = start + line_end + 2;
        let hdata = &rest[after_line..];

        // The header block.
        let done = hdata.starts_with(b"\r\n");
        let idx = find(hdata, b"\r\n\r\n");
        if idx.is_none() && !done {
            // Validate the request line early, as gunicorn does before
            // reading the headers.
            self.request_line(line)?;
            if has_bare_lf(hdata) {
                return Err(RequestError::header(b"bare LF as line terminator"));
            }
            if hdata.len() > self.limits.max_buffer_headers() {
                return Err(RequestError::limit_headers("max buffer headers"));
            }
            self.head_wait = Some(HeadWait {
                len: rest.len(),
                start,
                after_line: Some(after_line),
            });
            return need_more(eof);
        }
        let req = self.request_line(line)?;
        let (block, body_start): (&[u8], usize) = if done {
            (&[], after_line + 2)
        } else {
            let idx = idx.unwrap_or(0);
            (&hdata[..idx], after_line + idx + 4)
        };
        let fields = self.parse_headers(block, false)?;
        let framing = self.body_framing(&fields, req.version)?;

        self.requests += 1;
        self.close_after = framing.must_close
            || *req.method == *b"CONNECT"
            || match fields.iter().find(|f| f.is("CONNECTION")) {
                Some(f) => {
                    let v = strip_sp_tab(&f.value);
                    if v.eq_ignore_ascii_case(b"close") {
                        true
                    } else if v.eq_ignore_ascii_case(b"keep-alive") {
                        false
                    } else {
                        req.version <= (1, 0)
                    }
                }
                None => req.version <= (1, 0),
            };

        // The canonical head for hyper: straight into `out`, unless the
        // request is held.
        let held = framing.chunked && !framing.expect_continue && self.limits.hold_limit > 0;
        let mut held_head = Vec::new();
        let head = if held { &mut held_head } else { &mut *out };
        head.reserve(block.len() + 2 * line.len() + 96);
        head.extend_from_slice(&method_for_hyper(&req.method));
        head.push(b' ');
        // A head the app must see as sent is marked (see [`RawHead`]).
        let content_length = fields.iter().find(|f| f.is("CONTENT-LENGTH"));
        let marked = !is_plain_target(req.target)
            || !matches!(req.version, (1, 0) | (1, 1))
            || content_length.is_some_and(|f| f.value.len() > 1 && f.value[0] == b'0');
        head.extend_from_slice(if marked { RAW_MARK_TARGET } else { req.target });
        head.extend_from_slice(match req.version {
            (1, 0) => b" HTTP/1.0\r\n",
            (0, _) => b" HTTP/1.0\r\n",
            _ => b" HTTP/1.1\r\n",
        });
        if marked {
            let (major, minor) = req.version;
            head.extend_from_slice(b"Rgunicorn-Raw: ");
            head.extend_from_slice(&[b'0' + major as u8, b'.', b'0' + minor as u8, b' ']);
            if let Some(f) = content_length {
                head.extend_from_slice(&f.value);
            }
            head.push(b' ');
            head.extend_from_slice(req.target);
            head.extend_from_slice(b"\r\n");
        }
        let mut te_written = false;
        for f in &fields {
            if f.is("CONTENT-LENGTH") {
                use std::io::Write as _;
                let _ = write!(head, "Content-Length: {}", framing.length.unwrap_or(0));
            } else if f.is("TRANSFER-ENCODING") {
                if te_written {
                    continue;
                }
                te_written = true;
                head.extend_from_slice(b"Transfer-Encoding: ");
                head.extend_from_slice(framing.codings.join(", ").as_bytes());
            } else {
                head.extend_from_slice(f.name);
                head.extend_from_slice(b": ");
                head.extend_from_slice(&f.value);
            }
            head.extend_from_slice(b"\r\n");
        }
        head.extend_from_slice(b"\r\n");

        if held {
            self.held = Some(Vec::new());
            self.emit(out, &held_head);
        } else {
            self.heads_released += 1;
        }
        if framing.chunked {
            if self.held.is_none() {
                self.partial_released = true;
            }
            self.state = State::ChunkSize;
        } else {
            match framing.length {
                Some(n) if n > 0 => {
                    self.partial_released = true;
                    self.state = State::Body(n);
                }
                _ => self.request_done(out),
            }
        }
        Ok(Step::Done(body_start))
    }

    /// The common request, without [`Self::head`]'s full parse: a whole
    /// head whose canonical form is its own bytes and that no rule can
    /// refuse or change: an upper-case method (not CONNECT, which hyper is
    /// shown under another name: [`method_for_hyper`]; a method with that
    /// name's `-` is not all upper-case either), a plain
    /// origin-form target, HTTP/1.0 or 1.1, and `Name: value` fields with
    /// token names (no `_`), one space, no folding, no control bytes and
    /// none of the fields that frame a body or that gunicorn checks
    /// (Content-Length, Transfer-Encoding, Expect, a second Host or
    /// Content-Type, the scheme headers of a trusted forwarder), within the
    /// limits. Anything else (`None`) takes the full path, which gives the
    /// same answer; a test compares the two on generated requests.
    /// Returns the head's length; the caller forwards those bytes as they
    /// are.
    fn plain_head(&mut self, rest: &[u8]) -> Option<usize> {
        // One pass, one table lookup per byte (see `PLAIN`): this runs for
        // nearly every request, so it is written for the byte loop.
        let l = &self.limits;
        let class = |i: usize| rest.get(i).map_or(0, |&c| PLAIN[c as usize]);
        // The end of the run of `kind` bytes from `from` (an iterator: no
        // bounds check per byte).
        let span = |from: usize, kind: u8| {
            let r = rest.get(from..).unwrap_or_default();
            from + r
                .iter()
                .position(|&c| PLAIN[c as usize] & kind == 0)
                .unwrap_or(r.len())
        };
        let mut i = span(0, UPPER);
        if !(3..=20).contains(&i) || rest.get(i) != Some(&b' ') || &rest[..i] == b"CONNECT" {
            return None;
        }
        let target_at = i + 1;
        if rest.get(target_at) != Some(&b'/') {
            return None;
        }
        i = span(target_at + 1, TARGET);
        if rest.get(i) != Some(&b' ') || i - target_at > MAX_URI_LEN {
            return None;
        }
        let version_at = i + 1;
        let version = rest.get(version_at..version_at + 10)?;
        if version[8..] != *b"\r\n" {
            return None;
        }
        let http10 = match u64::from_le_bytes(version[..8].try_into().ok()?) {
            v if v == u64::from_le_bytes(*b"HTTP/1.1") => false,
            v if v == u64::from_le_bytes(*b"HTTP/1.0") => true,
            _ => return None,
        };
        let line_len = version_at + 8;
        let limit = l.request_line_limit();
        if limit > 0 && line_len > limit {
            return None;
        }
        let max_fields = l.fields_limit();
        let max_size = l.field_size_limit();
        let mut pos = line_len + 2;
        let mut fields = 0;
        let (mut seen_host, mut seen_ct) = (false, false);
        let mut connection: Option<&[u8]> = None;
        loop {
            if class(pos) & NAME == 0 {
                // Not a field name: the end of the head, or another path.
                if rest.get(pos..pos + 2)? == b"\r\n" {
                    pos += 2;
                    break;
                }
                return None;
            }
            if fields >= max_fields {
                return None;
            }
            let colon = span(pos + 1, NAME);
            // ": " then a value that starts and ends with a visible byte.
            if rest.get(colon..colon + 2)? != b": " || class(colon + 2) & VISIBLE == 0 {
                return None;
            }
            let value_at = colon + 2;
            let end = span(value_at + 1, VALUE);
            if rest.get(end..end + 2)? != b"\r\n"
                || class(end - 1) & VISIBLE == 0
                || matches!(rest.get(end + 2), Some(b' ' | b'\t'))
            {
                return None;
            }
            let line_len = end - pos;
            if line_len + 2 > max_size {
                return None;
            }
            let name = &rest[pos..colon];
            let is = |upper: &str| upper_eq(name, upper);
            match name.len() {
                4 if is("HOST") => {
                    if seen_host {
                        return None;
                    }
                    seen_host = true;
                }
                6 if is("EXPECT") => return None,
                10 if is("CONNECTION") => connection = connection.or(Some(&rest[value_at..end])),
                12 if is("CONTENT-TYPE") => {
                    if seen_ct {
                        return None;
                    }
                    seen_ct = true;
                }
                14 if is("CONTENT-LENGTH") => return None,
                17 if is("TRANSFER-ENCODING") => return None,
                _ if self.trusted_forwarder
                    && l.secure_scheme_headers.iter().any(|(k, _)| is(k)) =>
                {
                    return None
                }
                _ => {}
            }
            fields += 1;
            pos = end + 2;
        }
        self.requests += 1;
        self.close_after = match connection {
            Some(v) if v.eq_ignore_ascii_case(b"close") => true,
            Some(v) if v.eq_ignore_ascii_case(b"keep-alive") => false,
            _ => http10,
        };
        self.heads_released += 1;
        self.request_done_unheld();
        Some(pos)
    }

    fn request_line<'a>(&self, line: &'a [u8]) -> Result<RequestLine<'a>, RequestError> {
        let l = &self.limits;
        let mut bits = line.splitn(3, |&c| c == b' ');
        let (Some(method), Some(target), Some(version)) = (bits.next(), bits.next(), bits.next())
        else {
            return Err(RequestError::request_line(line));
        };
        if !l.permit_unconventional_http_method
            && (method.iter().any(|&c| c.is_ascii_lowercase() || c == b'#')
                || !(3..=20).contains(&method.len()))
        {
            return Err(RequestError::method(method));
        }
        if !is_token(method) {
            return Err(RequestError::method(method));
        }
        let method = if l.casefold_http_method && method.iter().any(u8::is_ascii_lowercase) {
            Cow::Owned(method.to_ascii_uppercase())
        } else {
            Cow::Borrowed(method)
        };
        if target.iter().any(|&c| !(0x21..=0x7e).contains(&c)) {
            return Err(RequestError::request_line(line));
        }
        if target.is_empty() {
            return Err(RequestError::request_line(line));
        }
        if target == b"*" && *method != *b"OPTIONS" {
            return Err(RequestError::request_line(line));
        }
        if *method != *b"CONNECT"
            && target != b"*"
            && !target.starts_with(b"/")
            && find(target, b"://").is_none()
        {
            return Err(RequestError::request_line(line));
        }
        if urlsplit_fails(target) {
            return Err(RequestError::request_line(line));
        }
        let version = match version {
            [b'H', b'T', b'T', b'P', b'/', a, b'.', b]
                if a.is_ascii_digit() && b.is_ascii_digit() =>
            {
                ((a - b'0') as u32, (b - b'0') as u32)
            }
            _ => return Err(RequestError::version(py_str_repr(version))),
        };
        if !l.permit_unconventional_http_version && !((1, 0)..(2, 0)).contains(&version) {
            return Err(RequestError::version(format!(
                "({}, {})",
                version.0, version.1
            )));
        }
        Ok(RequestLine {
            method,
            target,
            version,
        })
    }

    /// gunicorn's `parse_headers` (headers or trailers).
    fn parse_headers<'a>(
        &self,
        block: &'a [u8],
        from_trailer: bool,
    ) -> Result<Vec<Field<'a>>, RequestError> {
        let l = &self.limits;
        let mut fields: Vec<Field<'a>> = Vec::new();
        if block.is_empty() && !from_trailer {
            return Ok(fields);
        }
        fields.reserve(8);
        let mut lines = CrlfLines::new(block);
        let trusted = self.trusted_forwarder && !from_trailer;
        let mut scheme: Option<bool> = None;
        let mut seen_host = false;
        let mut seen_ct = false;
        let max_fields = l.fields_limit();
        let max_size = l.field_size_limit();
        while let Some(curr) = lines.next() {
            if fields.len() >= max_fields {
                return Err(RequestError::limit_headers("limit request headers fields"));
            }
            let mut length = curr.len() + 2;
            let colon = memchr::memchr(b':', curr);
            let Some(colon) = colon.filter(|&c| c > 0) else {
                return Err(RequestError::header(curr));
            };
            let mut name = &curr[..colon];
            if l.strip_header_spaces {
                while let [rest @ .., b' ' | b'\t'] = name {
                    name = rest;
                }
            }
            if !is_token(name) {
                return Err(RequestError::header_name(name));
            }
            let is = |upper: &str| upper_eq(name, upper);
            if from_trailer
                && (is("HOST")
                    || is("CONTENT-LENGTH")
                    || is("TRANSFER-ENCODING")
                    || is("TRAILER")
                    || is("AUTHORIZATION")
                    || is("TE"))
            {
                return Err(RequestError::header_name(upper_of(name).as_bytes()));
            }
            let mut value = Cow::Borrowed(strip_sp_tab(&curr[colon + 1..]));
            while matches!(lines.peek_first(), Some(b' ' | b'\t')) {
                if !l.permit_obsolete_folding {
                    return Err(RequestError::bad(
                        "ObsoleteFolding",
                        format!(
                            "Obsolete line folding is unacceptable: {}",
                            py_str_repr(upper_of(name).as_bytes())
                        ),
                    ));
                }
                let cont = lines.next().unwrap_or_default();
                length += cont.len() + 2;
                if length > max_size {
                    return Err(RequestError::limit_headers(
                        "limit request headers fields size",
                    ));
                }
                let joined = value.to_mut();
                joined.push(b' ');
                joined.extend_from_slice(strip_sp_tab(cont));
            }
            // Branch-free, so that it vectorises: values are long.
            if value.iter().fold(false, |bad, &c| bad | bad_value_byte(c)) {
                return Err(RequestError::header(upper_of(name).as_bytes()));
            }
            if length > max_size {
                return Err(RequestError::limit_headers(
                    "limit request headers fields size",
                ));
            }
            // _apply_header_policy
            let seen = if is("HOST") {
                Some(&mut seen_host)
            } else if is("CONTENT-TYPE") {
                Some(&mut seen_ct)
            } else {
                None
            };
            if let Some(seen) = seen {
                if *seen {
                    return Err(RequestError::header(upper_of(name).as_bytes()));
                }
                *seen = true;
            }
            if !from_trailer && is("EXPECT") {
                // 100-continue is understood (and ignored for HTTP/1.0).
                if !value.eq_ignore_ascii_case(b"100-continue") {
                    return Err(RequestError::new(
                        "ExpectationFailed",
                        417,
                        "Expectation Failed",
                        format!("Unable to comply with expectation: {}", py_str_repr(&value)),
                    ));
                }
            }
            if trusted {
                if let Some((_, want)) = l.secure_scheme_headers.iter().find(|(k, _)| is(k)) {
                    let secure = *value == *want.as_bytes();
                    match scheme {
                        Some(s) if s != secure => {
                            return Err(RequestError::bad(
                                "InvalidSchemeHeaders",
                                "Contradictory scheme headers".into(),
                            ))
                        }
                        Some(_) => {}
                        None => scheme = Some(secure),
                    }
                }
            }
            if memchr::memchr(b'_', name).is_some() {
                let forwarder = trusted && l.forwarder_headers.iter().any(|h| h == "*" || is(h));
                if !forwarder {
                    match l.header_map {
                        HeaderMapPolicy::Dangerous => {}
                        HeaderMapPolicy::Drop => continue,
                        HeaderMapPolicy::Refuse => {
                            return Err(RequestError::header_name(upper_of(name).as_bytes()))
                        }
                    }
                }
            }
            fields.push(Field { name, value });
        }
        Ok(fields)
    }

    /// gunicorn's `set_body_reader`.
    fn body_framing(&self, fields: &[Field], version: (u32, u32)) -> Result<Framing, RequestError> {
        let mut chunked = false;
        let mut te = false;
        let mut must_close = false;
        let mut expect_continue = false;
        let mut content_length: Option<&[u8]> = None;
        let mut codings: Vec<&'static str> = Vec::new();
        let te_err = || RequestError::header(b"TRANSFER-ENCODING");
        for f in fields {
            if f.is("CONTENT-LENGTH") {
                if content_length.is_some() {
                    return Err(RequestError::header(b"CONTENT-LENGTH"));
                }
                content_length = Some(&f.value);
            } else if f.is("TRANSFER-ENCODING") {
                te = true;
                for val in f.value.split(|&c| c == b',') {
                    let v = strip_sp_tab(val).to_ascii_lowercase();
                    let coding = match v.as_slice() {
                        b"chunked" => {
                            if chunked {
                                return Err(te_err());
                            }
                            chunked = true;
                            "chunked"
                        }
                        b"identity" => {
                            if chunked {
                                return Err(te_err());
                            }
                            "identity"
                        }
                        b"compress" | b"deflate" | b"gzip" => {
                            if chunked {
                                return Err(te_err());
                            }
                            must_close = true;
                            match v.as_slice() {
                                b"compress" => "compress",
                                b"deflate" => "deflate",
                                _ => "gzip",
                            }
                        }
                        _ => {
                            return Err(RequestError::new(
                                "UnsupportedTransferCoding",
                                501,
                                "Not Implemented",
                                format!("Unsupported transfer coding: {}", py_str_repr(&f.value)),
                            ))
                        }
                    };
                    codings.push(coding);
                }
            } else if f.is("EXPECT") {
                expect_continue = version >= (1, 1);
            }
        }
        if te && !chunked {
            return Err(te_err());
        }
        let length = if chunked {
            if version < (1, 1) {
                return Err(te_err());
            }
            if content_length.is_some() {
                return Err(RequestError::header(b"CONTENT-LENGTH"));
            }
            None
        } else if let Some(cl) = content_length {
            if cl.is_empty() || !cl.iter().all(|c| c.is_ascii_digit()) {
                return Err(RequestError::header(b"CONTENT-LENGTH"));
            }
            // Known difference: gunicorn takes any size; beyond u64 is refused.
            let n = cl.iter().try_fold(0u64, |acc, &c| {
                acc.checked_mul(10)?.checked_add((c - b'0') as u64)
            });
            Some(n.ok_or_else(|| RequestError::header(b"CONTENT-LENGTH"))?)
        } else {
            None
        };
        Ok(Framing {
            chunked,
            length,
            must_close,
            expect_continue,
            codings,
        })
    }

    fn chunk_size(
        &mut self,
        rest: &[u8],
        eof: bool,
        out: &mut Vec<u8>,
    ) -> Result<Step<usize>, RequestError> {
        let Some(idx) = find(rest, b"\r\n") else {
            let limit = self.limits.field_size_limit();
            if rest.len() > limit {
                return Err(RequestError::chunk_size(
                    format!("line over {limit} bytes with no terminator").as_bytes(),
                ));
            }
            return if eof {
                Err(RequestError::no_more_data())
            } else {
                Ok(Step::NeedMore)
            };
        };
        let line = &rest[..idx];
        let (mut size, ext) = match line.iter().position(|&c| c == b';') {
            Some(p) => (&line[..p], Some(&line[p + 1..])),
            None => (line, None),
        };
        if let Some(ext) = ext {
            if ext.contains(&b'\r') {
                return Err(RequestError::chunk_extension("bare CR not allowed"));
            }
            while let [r @ .., b' ' | b'\t'] = size {
                size = r;
            }
        }
        if size.is_empty() || !size.iter().all(|c| c.is_ascii_hexdigit()) {
            return Err(RequestError::chunk_size(size));
        }
        if let Some(ext) = ext {
            if !chunk_ext_ok(ext) {
                return Err(RequestError::chunk_extension("invalid chunk extension"));
            }
        }
        let digits: &[u8] = {
            let z = size.iter().take_while(|&&c| c == b'0').count();
            &size[z..]
        };
        // Known difference: gunicorn takes any size; past 2^60 is refused.
        if digits.len() > 15 {
            return Err(RequestError::chunk_size(size));
        }
        let n = digits.iter().fold(0u64, |acc, &c| {
            let v = match c {
                b'0'..=b'9' => c - b'0',
                b'a'..=b'f' => c - b'a' + 10,
                _ => c - b'A' + 10,
            };
            acc * 16 + v as u64
        });
        if n == 0 {
            self.state = State::Trailers;
        } else {
            self.emit(out, format!("{n:x}\r\n").as_bytes());
            self.state = State::ChunkData(n);
        }
        Ok(Step::Done(idx + 2))
    }

    fn trailers(
        &mut self,
        rest: &[u8],
        eof: bool,
        out: &mut Vec<u8>,
    ) -> Result<Step<usize>, RequestError> {
        let done = rest.starts_with(b"\r\n");
        let idx = find(rest, b"\r\n\r\n");
        let consumed = if done {
            2
        } else if let Some(idx) = idx {
            self.parse_headers(&rest[..idx], true)?;
            idx + 4
        } else {
            if rest.len() > self.limits.max_buffer_headers() {
                return Err(RequestError::limit_headers(
                    "limit request trailer section size",
                ));
            }
            if has_bare_lf(rest) {
                return Err(RequestError::header(b"bare LF as line terminator"));
            }
            if eof {
                return Err(RequestError::chunk_terminator(b""));
            }
            return Ok(Step::NeedMore);
        };
        self.emit(out, b"0\r\n\r\n");
        self.request_done(out);
        Ok(Step::Done(consumed))
    }
}

struct RequestLine<'a> {
    method: Cow<'a, [u8]>,
    /// As sent.
    target: &'a [u8],
    version: (u32, u32),
}

struct Framing {
    chunked: bool,
    length: Option<u64>,
    must_close: bool,
    expect_continue: bool,
    codings: Vec<&'static str>,
}

/// The lines of a header block split at CRLF, as Python's
/// `block.split(b"\r\n")`: always at least one (maybe empty) line.
struct CrlfLines<'a> {
    rest: Option<&'a [u8]>,
}

impl<'a> CrlfLines<'a> {
    fn new(block: &'a [u8]) -> Self {
        CrlfLines { rest: Some(block) }
    }

    /// The first byte of the next line, if there is a next line.
    fn peek_first(&self) -> Option<u8> {
        self.rest.and_then(|r| r.first().copied())
    }
}

impl<'a> Iterator for CrlfLines<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let rest = self.rest?;
        match find(rest, b"\r\n") {
            Some(i) => {
                self.rest = Some(&rest[i + 2..]);
                Some(&rest[..i])
            }
            None => {
                self.rest = None;
                Some(rest)
            }
        }
    }
}

/// A PROXY v1 port: ASCII decimal digits only, on the bytes as sent.
/// gunicorn's `int()` also takes surrounding whitespace (Unicode's too,
/// after its latin-1 decode), a sign and `_` separators; those are
/// refused here. `u32::MAX` stands for any value past it (out of range
/// either way).
fn port_number(b: &[u8]) -> Option<u32> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0u32, |acc, &c| {
        acc.saturating_mul(10).saturating_add((c - b'0') as u32)
    }))
}

/// gunicorn's `CHUNK_EXT_RE` on `";" + ext`:
/// `*( BWS ";" BWS token [ BWS "=" BWS ( token / quoted-string ) ] )`.
fn chunk_ext_ok(ext: &[u8]) -> bool {
    let s = {
        let mut v = Vec::with_capacity(ext.len() + 1);
        v.push(b';');
        v.extend_from_slice(ext);
        v
    };
    let mut i = 0;
    let ws = |i: &mut usize| {
        while *i < s.len() && (s[*i] == b' ' || s[*i] == b'\t') {
            *i += 1;
        }
    };
    let token = |i: &mut usize| -> bool {
        let st = *i;
        while *i < s.len() && is_tchar(s[*i]) {
            *i += 1;
        }
        *i > st
    };
    while i < s.len() {
        ws(&mut i);
        if i >= s.len() || s[i] != b';' {
            return false;
        }
        i += 1;
        ws(&mut i);
        if !token(&mut i) {
            return false;
        }
        // Optional "= value"; the regex backtracks over BWS when absent.
        let save = i;
        ws(&mut i);
        if i < s.len() && s[i] == b'=' {
            i += 1;
            ws(&mut i);
            if i < s.len() && s[i] == b'"' {
                i += 1;
                loop {
                    match s.get(i) {
                        None => return false,
                        Some(b'"') => {
                            i += 1;
                            break;
                        }
                        Some(b'\\') => match s.get(i + 1) {
                            Some(&c) if c == b'\t' || (0x20..=0x7e).contains(&c) || c >= 0x80 => {
                                i += 2
                            }
                            _ => return false,
                        },
                        Some(&c)
                            if c == b'\t'
                                || c == b' '
                                || c == 0x21
                                || (0x23..=0x5b).contains(&c)
                                || (0x5d..=0x7e).contains(&c)
                                || c >= 0x80 =>
                        {
                            i += 1
                        }
                        Some(_) => return false,
                    }
                }
            } else if !token(&mut i) {
                return false;
            }
        } else {
            i = save;
        }
    }
    true
}

// ---------------------------------------------------------------------------
// The IO wrapper.

/// The socket as hyper sees it: only validated, canonical request bytes.
///
/// Reads go socket -> [`Framer`] -> hyper. After a framing error hyper
/// reads EOF right after the last valid byte, so it still answers the
/// earlier pipelined requests; when hyper then shuts the connection down
/// (`poll_shutdown`, which hyper calls when it closes a connection after
/// EOF with `half_close(true)`), the wrapper writes gunicorn's error page
/// and closes. If the error came in the body of a request hyper was
/// already reading (a chunked body larger than
/// [`Limits::hold_limit`]), whatever hyper writes after reading that EOF
/// (the app's answer to a truncated request) is discarded, so the client
/// gets only gunicorn's error, as from gunicorn.
pub struct GatedIo<T> {
    inner: T,
    framer: Framer,
    /// Socket bytes the framer has not consumed yet.
    inbuf: Vec<u8>,
    /// Validated bytes for hyper, from `out_pos` on.
    outbuf: Vec<u8>,
    out_pos: usize,
    /// The read buffer of the slow path, allocated on first use (the
    /// common read goes straight into hyper's buffer).
    scratch: Vec<u8>,
    sock_eof: bool,
    error: Option<RequestError>,
    /// The error arrived while hyper was inside a request.
    error_mid_request: bool,
    /// hyper has read the EOF that stands for the error.
    hyper_saw_error: bool,
    /// The error response, and how much of it is written.
    reply: Option<(Vec<u8>, usize)>,
    /// Set once the connection has switched protocols: no more framing.
    raw: Arc<AtomicBool>,
}

impl<T> GatedIo<T> {
    /// Wrap `inner`, the connection from `peer` (`None` for a UNIX socket).
    pub fn new(inner: T, limits: Arc<Limits>, peer: Option<IpAddr>) -> Self {
        GatedIo {
            inner,
            framer: Framer::new(limits, peer),
            inbuf: Vec::new(),
            outbuf: Vec::new(),
            out_pos: 0,
            scratch: Vec::new(),
            sock_eof: false,
            error: None,
            error_mid_request: false,
            hyper_saw_error: false,
            reply: None,
            raw: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The switch that ends framing on this connection: set it when the
    /// app answers `101 Switching Protocols`, before hyper writes that
    /// answer. From then on the bytes on the wire are the new protocol's
    /// (websocket frames), so reads pass them through untouched: first
    /// whatever the framer holds, then the socket's.
    pub fn raw_switch(&self) -> Arc<AtomicBool> {
        self.raw.clone()
    }

    fn is_raw(&self) -> bool {
        self.raw.load(Ordering::Acquire)
    }

    /// The refusal pending or written on this connection, if any.
    pub fn error(&self) -> Option<&RequestError> {
        self.error.as_ref()
    }

    /// The framer (e.g. for [`Framer::proxy_info`]).
    pub fn framer(&self) -> &Framer {
        &self.framer
    }

    /// See [`Framer::proxy_info_sink`].
    pub fn proxy_info_sink(&self) -> Option<Arc<OnceLock<ProxyInfo>>> {
        self.framer.proxy_info_sink()
    }

    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    fn swallowing(&self) -> bool {
        self.hyper_saw_error && self.error_mid_request && !self.is_raw()
    }
}

impl<T: hyper::rt::Read + hyper::rt::Write + Unpin> GatedIo<T> {
    fn run_framer(&mut self) {
        match self
            .framer
            .advance(&self.inbuf, self.sock_eof, &mut self.outbuf)
        {
            Ok(n) => {
                self.inbuf.drain(..n);
            }
            Err(e) => {
                self.error_mid_request = self.framer.mid_request();
                self.error = Some(e);
                self.inbuf = Vec::new();
            }
        }
    }

    /// [`Self::run_framer`] over `scratch[..n]` while `inbuf` is empty.
    fn run_framer_on_scratch(&mut self, n: usize) {
        match self
            .framer
            .advance(&self.scratch[..n], self.sock_eof, &mut self.outbuf)
        {
            Ok(used) => self.inbuf.extend_from_slice(&self.scratch[used..n]),
            Err(e) => {
                self.error_mid_request = self.framer.mid_request();
                self.error = Some(e);
                self.inbuf = Vec::new();
            }
        }
    }

    /// Write the pending error response, if any, once.
    fn poll_reply(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.reply.is_none() {
            let bytes = self
                .error
                .as_ref()
                .map(|e| e.response_bytes())
                .unwrap_or_default();
            self.reply = Some((bytes, 0));
        }
        loop {
            let Some((bytes, pos)) = &mut self.reply else {
                return Poll::Ready(Ok(()));
            };
            if *pos >= bytes.len() {
                return Poll::Ready(Ok(()));
            }
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*pos..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *pos += n;
        }
    }
}

impl<T: hyper::rt::Read + hyper::rt::Write + Unpin> hyper::rt::Read for GatedIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.out_pos < this.outbuf.len() {
                let avail = &this.outbuf[this.out_pos..];
                let n = avail.len().min(buf.remaining());
                buf.put_slice(&avail[..n]);
                this.out_pos += n;
                if this.out_pos == this.outbuf.len() {
                    this.outbuf.clear();
                    this.out_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.is_raw() {
                // Switched protocols: what the framer held back first
                // (a client can't have sent much before the 101), then
                // the socket as it is.
                if !this.inbuf.is_empty() {
                    let n = this.inbuf.len().min(buf.remaining());
                    buf.put_slice(&this.inbuf[..n]);
                    this.inbuf.drain(..n);
                    return Poll::Ready(Ok(()));
                }
                if this.sock_eof {
                    return Poll::Ready(Ok(()));
                }
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            if this.error.is_some() {
                this.hyper_saw_error = true;
                return Poll::Ready(Ok(()));
            }
            if this.framer.at_end() {
                return Poll::Ready(Ok(()));
            }
            if this.inbuf.is_empty() && this.framer.in_place_ready() {
                // The common case: read straight into hyper's buffer and
                // leave there the whole plain requests at its start (no
                // copy); the rest is copied out and framed as usual.
                // SAFETY: the slice is only written by the read below (which
                // initializes what it reports), never de-initialized.
                let space = unsafe { buf.as_mut() };
                let mut rb = hyper::rt::ReadBuf::uninit(space);
                ready!(Pin::new(&mut this.inner).poll_read(cx, rb.unfilled()))?;
                let got = rb.filled();
                let verbatim = this.framer.plain_heads_in_place(got);
                this.inbuf.extend_from_slice(&got[verbatim..]);
                if got.is_empty() {
                    this.sock_eof = true;
                }
                if this.sock_eof || !this.inbuf.is_empty() {
                    this.run_framer();
                }
                if verbatim > 0 {
                    // SAFETY: the read initialized at least `verbatim`
                    // bytes at the cursor's start.
                    unsafe { buf.advance(verbatim) };
                    return Poll::Ready(Ok(()));
                }
            } else {
                if this.scratch.is_empty() {
                    this.scratch = vec![0u8; 16 * 1024];
                }
                let n = {
                    let mut rb = hyper::rt::ReadBuf::new(&mut this.scratch[..]);
                    ready!(Pin::new(&mut this.inner).poll_read(cx, rb.unfilled()))?;
                    rb.filled().len()
                };
                if n == 0 {
                    this.sock_eof = true;
                    this.run_framer();
                } else if this.inbuf.is_empty() {
                    // Frame the read where it is, keep only what is left
                    // over (one copy fewer).
                    this.run_framer_on_scratch(n);
                } else {
                    this.inbuf.extend_from_slice(&this.scratch[..n]);
                    this.run_framer();
                }
            }
            if this.sock_eof && this.outbuf.is_empty() && this.error.is_none() {
                // Nothing more can come: EOF for hyper.
                return Poll::Ready(Ok(()));
            }
        }
    }
}

impl<T: hyper::rt::Read + hyper::rt::Write + Unpin> hyper::rt::Write for GatedIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.swallowing() {
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.swallowing() {
            return Poll::Ready(Ok(bufs.iter().map(|b| b.len()).sum()));
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.error.is_some() && !this.is_raw() {
            ready!(this.poll_reply(cx))?;
            ready!(Pin::new(&mut this.inner).poll_flush(cx))?;
        }
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

/// The decoding of a `.http` case of gunicorn's request corpus (its
/// README's rules); used by the conformance tests. Panics on a bad escape.
pub fn decode_corpus_case(raw: &[u8]) -> Vec<u8> {
    let s: Vec<u8> = raw.iter().copied().filter(|&c| c != b'\n').collect();
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] != b'\\' {
            out.push(s[i]);
            i += 1;
            continue;
        }
        match s.get(i + 1) {
            Some(b'r') if s[i + 2..].starts_with(b"\\n") => {
                out.extend_from_slice(b"\r\n");
                i += 4;
            }
            Some(b'0') => {
                out.push(0);
                i += 2;
            }
            Some(b'n') => {
                out.push(b'\n');
                i += 2;
            }
            Some(b't') => {
                out.push(b'\t');
                i += 2;
            }
            Some(b'x') => {
                let h = std::str::from_utf8(&s[i + 2..i + 4]).unwrap();
                out.push(u8::from_str_radix(h, 16).unwrap());
                i += 4;
            }
            other => panic!("bad escape {other:?}"),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    fn corpus_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/conformance/gunicorn-requests")
    }

    fn decode(raw: &[u8]) -> Vec<u8> {
        super::decode_corpus_case(raw)
    }

    pub(super) struct Case {
        pub name: String,
        pub set: String,
        pub class: String,
        pub settings: Vec<(String, String)>,
        pub status_default: String,
        pub status_with_settings: String,
        pub bytes: Vec<u8>,
    }

    pub(super) fn load_corpus() -> Vec<Case> {
        let dir = corpus_dir();
        let tsv = std::fs::read_to_string(dir.join("EXPECTED.tsv")).expect("corpus EXPECTED.tsv");
        tsv.lines()
            .skip(1)
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let c: Vec<&str> = l.split('\t').collect();
                let settings = if c[3] == "-" {
                    vec![]
                } else {
                    c[3].split(';')
                        .map(|kv| {
                            let (k, v) = kv.split_once('=').unwrap();
                            (k.trim().to_string(), v.trim().to_string())
                        })
                        .collect()
                };
                let raw = std::fs::read(dir.join(c[1]).join(format!("{}.http", c[0]))).unwrap();
                Case {
                    name: format!("{}/{}", c[1], c[0]),
                    set: c[1].into(),
                    class: c[2].into(),
                    settings,
                    status_default: c[4].into(),
                    status_with_settings: c[5].into(),
                    bytes: decode(&raw),
                }
            })
            .collect()
    }

    fn py_literal(v: &str) -> String {
        v.trim_matches(|c| c == '\'' || c == '"').to_string()
    }

    /// Apply a `name=value` corpus setting (a Python literal).
    pub(super) fn apply(l: &mut Limits, name: &str, value: &str) {
        let b = value == "True";
        let int = || value.parse::<i64>().unwrap();
        match name {
            "limit_request_line" => l.limit_request_line = int(),
            "limit_request_fields" => l.limit_request_fields = int(),
            "limit_request_field_size" => l.limit_request_field_size = int(),
            "permit_unconventional_http_method" => l.permit_unconventional_http_method = b,
            "permit_unconventional_http_version" => l.permit_unconventional_http_version = b,
            "casefold_http_method" => l.casefold_http_method = b,
            "permit_obsolete_folding" => l.permit_obsolete_folding = b,
            "strip_header_spaces" => l.strip_header_spaces = b,
            "header_map" => {
                l.header_map = match py_literal(value).as_str() {
                    "drop" => HeaderMapPolicy::Drop,
                    "refuse" => HeaderMapPolicy::Refuse,
                    "dangerous" => HeaderMapPolicy::Dangerous,
                    other => panic!("header_map {other}"),
                }
            }
            "forwarded_allow_ips" => {
                l.forwarded_allow_ips = py_literal(value)
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .collect()
            }
            "proxy_protocol" => {
                l.proxy_protocol = match value {
                    "True" => ProxyProtocol::Auto,
                    "False" => ProxyProtocol::Off,
                    v => match py_literal(v).as_str() {
                        "v1" => ProxyProtocol::V1,
                        "v2" => ProxyProtocol::V2,
                        "off" => ProxyProtocol::Off,
                        _ => ProxyProtocol::Auto,
                    },
                }
            }
            other => panic!("setting {other} not handled"),
        }
    }

    #[test]
    fn common_heads_take_the_fast_path() {
        let limits = Arc::new(Limits::default());
        let take = |head: &[u8]| {
            let mut f = Framer::new(limits.clone(), Some(IpAddr::from([10, 0, 0, 1])));
            f.plain_head(head)
                .map(|n| (n, head[..n].to_vec(), f.close_after))
        };
        let wrk = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n\r\n";
        assert_eq!(take(wrk), Some((wrk.len(), wrk.to_vec(), false)));
        let browser = b"GET /a/b?c=d HTTP/1.1\r\nHost: example.com\r\nUser-Agent: Mozilla/5.0 (X11)\r\nAccept: text/html,*/*;q=0.8\r\nConnection: close\r\n\r\n";
        assert_eq!(take(browser), Some((browser.len(), browser.to_vec(), true)));
        let http10 = b"HEAD / HTTP/1.0\r\n\r\nGET";
        assert_eq!(take(http10), Some((19, http10[..19].to_vec(), true)));
        for other in [
            &b"GET /health HTTP/1.1\r\nHost: a\r\n"[..],
            b"GET /health HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            b"GET /health HTTP/1.1\r\nX_Y: 1\r\n\r\n",
            b"GET /health HTTP/1.1\r\nHost:a\r\n\r\n",
            b"GET /h#f HTTP/1.1\r\n\r\n",
            b"get / HTTP/1.1\r\n\r\n",
            b"\r\nGET / HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(take(other), None, "{}", String::from_utf8_lossy(other));
        }
    }

    /// An allow-list as the config gives it, checked for `peer`.
    fn ip_allowed(list: &[String], peer: Option<IpAddr>) -> bool {
        let entries: Vec<AllowEntry> = list.iter().filter_map(|e| AllowEntry::parse(e)).collect();
        entries_allow(&entries, peer)
    }

    /// Run the framer over `input` fed in pieces of `step` bytes, then EOF;
    /// returns the canonical output and the result.
    fn run_steps(
        limits: &Arc<Limits>,
        input: &[u8],
        step: usize,
    ) -> (Vec<u8>, Framer, Option<RequestError>) {
        run_steps_with(limits, input, step, false)
    }

    /// [`run_steps`], with the fast path off when `full_only`.
    fn run_steps_with(
        limits: &Arc<Limits>,
        input: &[u8],
        step: usize,
        full_only: bool,
    ) -> (Vec<u8>, Framer, Option<RequestError>) {
        let mut f = Framer::new(limits.clone(), Some(IpAddr::from([127, 0, 0, 1])));
        f.no_fast_path = full_only;
        let mut out = Vec::new();
        let mut buf: Vec<u8> = Vec::new();
        let mut fed = 0;
        let mut err = None;
        loop {
            let end = (fed + step).min(input.len());
            buf.extend_from_slice(&input[fed..end]);
            fed = end;
            let eof = fed == input.len();
            match f.advance(&buf, eof, &mut out) {
                Ok(n) => {
                    buf.drain(..n);
                }
                Err(e) => {
                    err = Some(e);
                    break;
                }
            }
            if eof {
                // A second call at EOF must not change anything.
                match f.advance(&buf, true, &mut out) {
                    Ok(n) => assert!(n == buf.len() || f.at_end()),
                    Err(e) => err = Some(e),
                }
                break;
            }
        }
        (out, f, err)
    }

    /// The statuses a client would read (the corpus's notation).
    pub(super) fn statuses(limits: &Arc<Limits>, input: &[u8]) -> String {
        let (_, f, err) = run_steps(limits, input, usize::MAX / 2);
        let mut answered = f.heads_released();
        let mut v: Vec<String> = Vec::new();
        if let Some(e) = &err {
            if f.mid_request() && !e.empty {
                answered -= 1;
            }
        }
        for _ in 0..answered {
            v.push("200".into());
        }
        if let Some(e) = err {
            if !e.empty {
                v.push(e.status.to_string());
            }
        }
        if v.is_empty() {
            "EMPTY".into()
        } else {
            v.join(",")
        }
    }

    /// Cases where rgunicorn deliberately answers otherwise, with why.
    pub(super) const KNOWN: &[(&str, &str)] = &[(
        "valid/022",
        "gunicorn's measuring app sent no Content-Length, so its HTTP/1.0 keep-alive \
         response had to close the connection before the second request; \
         rgunicorn's responses always carry a length and keep the connection",
    )];

    #[test]
    fn corpus_framer_only() {
        let cases = load_corpus();
        assert!(cases.len() >= 140, "corpus not found or short");
        let (mut ok_d, mut ok_s, mut n_s) = (0, 0, 0);
        let mut failures = Vec::new();
        let mut class_mismatch = Vec::new();
        for c in &cases {
            let known = KNOWN.iter().any(|(k, _)| *k == c.name);
            let defaults = Arc::new(Limits::default());
            let got = statuses(&defaults, &c.bytes);
            if got == c.status_default {
                ok_d += 1;
            } else if !known {
                failures.push(format!(
                    "{} default: want {} got {}",
                    c.name, c.status_default, got
                ));
            }
            if c.set == "invalid" && c.settings.is_empty() {
                let (_, _, err) = run_steps(&defaults, &c.bytes, usize::MAX / 2);
                let class = err.map(|e| e.class).unwrap_or("-");
                if class != c.class {
                    class_mismatch.push(format!("{}: want {} got {}", c.name, c.class, class));
                }
            }
            if !c.settings.is_empty() {
                n_s += 1;
                let mut l = Limits::default();
                for (k, v) in &c.settings {
                    apply(&mut l, k, v);
                }
                let got = statuses(&Arc::new(l), &c.bytes);
                if got == c.status_with_settings {
                    ok_s += 1;
                } else if !known {
                    failures.push(format!(
                        "{} with {:?}: want {} got {}",
                        c.name, c.settings, c.status_with_settings, got
                    ));
                }
            }
        }
        println!(
            "framer: {ok_d}/{} default, {ok_s}/{n_s} with settings",
            cases.len()
        );
        assert!(failures.is_empty(), "{failures:#?}");
        assert!(class_mismatch.is_empty(), "{class_mismatch:#?}");
    }

    #[test]
    fn corpus_is_split_invariant() {
        // Feeding the bytes one at a time gives the same output and answer.
        let limits = Arc::new(Limits::default());
        for c in load_corpus() {
            let (o1, _, e1) = run_steps(&limits, &c.bytes, usize::MAX / 2);
            for step in [1, 7] {
                let (o2, _, e2) = run_steps(&limits, &c.bytes, step);
                assert_eq!(
                    e1.as_ref().map(|e| (e.status, e.class)),
                    e2.as_ref().map(|e| (e.status, e.class)),
                    "{} step {step}",
                    c.name
                );
                assert_eq!(o1, o2, "{} step {step}", c.name);
            }
        }
    }

    fn frame(input: &[u8]) -> (Vec<u8>, Option<RequestError>) {
        let (o, _, e) = run_steps(&Arc::new(Limits::default()), input, usize::MAX / 2);
        (o, e)
    }

    #[test]
    fn canonical_output() {
        let (out, err) = frame(
            b"\r\nPOST /a?b=\"c\" HTTP/1.1\r\nHost: x\r\nX_Y: dropped\r\nTransfer-Encoding: Identity ,\tChunked\r\n\r\n\
              0005;a=b\r\nhello\r\n000\r\nVary: *\r\n\r\nGET / HTTP/1.0\r\nContent-Length: 002\r\n\r\nokGET /ignored HTTP/1.1\r\n\r\n",
        );
        assert!(err.is_none(), "{err:?}");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "POST http://rgunicorn.raw/ HTTP/1.1\r\nRgunicorn-Raw: 1.1  /a?b=\"c\"\r\n\
             Host: x\r\nTransfer-Encoding: identity, chunked\r\n\r\n\
             5\r\nhello\r\n0\r\n\r\nGET http://rgunicorn.raw/ HTTP/1.0\r\nRgunicorn-Raw: 1.0 002 /\r\n\
             Content-Length: 2\r\n\r\nok"
        );
    }

    #[test]
    fn connect_reaches_hyper_under_another_name() {
        let (out, err) = frame(
            b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\nGET /ignored HTTP/1.1\r\n\r\n",
        );
        assert!(err.is_none(), "{err:?}");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "RGUNICORN- http://rgunicorn.raw/ HTTP/1.1\r\nRgunicorn-Raw: 1.1  example.com:443\r\n\
             Host: example.com:443\r\n\r\n"
        );
        // A client's own method with the same prefix is told apart.
        let (out, _) = frame(b"RGUNICORN- / HTTP/1.1\r\n\r\nRGUNICORN-X / HTTP/1.1\r\n\r\n");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "RGUNICORN-RGUNICORN- / HTTP/1.1\r\n\r\nRGUNICORN-RGUNICORN-X / HTTP/1.1\r\n\r\n"
        );
        // casefold_http_method upper-cases first: `connect` is a CONNECT.
        let l = Limits {
            casefold_http_method: true,
            permit_unconventional_http_method: true,
            ..Limits::default()
        };
        let (out, _, _) = run_steps(&Arc::new(l), b"connect h:1 HTTP/1.1\r\n\r\n", 1000);
        assert!(out.starts_with(b"RGUNICORN- http://rgunicorn.raw/ "));
    }

    #[test]
    fn restore_method_undoes_the_hiding() {
        let restored = |m: &str| {
            let mut req = hyper::Request::builder().method(m).body(()).unwrap();
            let connect = restore_method(&mut req);
            (req.method().to_string(), connect)
        };
        for m in ["CONNECT", "GET", "RGUNICORN-", "RGUNICORN-X", "-X-"] {
            let hidden = String::from_utf8(method_for_hyper(m.as_bytes()).into_owned()).unwrap();
            assert_eq!(restored(&hidden), (m.to_string(), m == "CONNECT"), "{m}");
        }
        // A CONNECT that the gate did not hide is not reported as one.
        assert_eq!(restored("CONNECT"), ("CONNECT".to_string(), false));
    }

    #[test]
    fn error_messages_match_gunicorn() {
        let e = frame(b"GET /foo FTP/1.1\r\n\r\n").1.unwrap();
        assert_eq!(
            e.message,
            "Invalid HTTP Version 'Invalid HTTP Version: 'FTP/1.1''"
        );
        let e = frame(b"GET /foo HTTP/2.0\r\n\r\n").1.unwrap();
        assert_eq!(
            e.message,
            "Invalid HTTP Version 'Invalid HTTP Version: (2, 0)'"
        );
        let e = frame(b"get /foo HTTP/1.1\r\n\r\n").1.unwrap();
        assert_eq!(e.message, "Invalid Method 'Invalid HTTP method: 'get''");
        let e = frame(b"GET /x HTTP/1.1\r\nA: \x07\r\n\r\n").1.unwrap();
        assert_eq!(e.message, "Invalid HTTP Header: 'A'");
        let e = frame(b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n6_0\r\n")
            .1
            .unwrap();
        assert_eq!(e.message, "Invalid chunk size: b'6_0'");
        let e = frame(b"GET /x HTTP/1.1\r\nTransfer-Encoding: br\r\n\r\n")
            .1
            .unwrap();
        assert_eq!(
            (e.status, e.message.as_str()),
            (501, "Unsupported transfer coding: 'br'")
        );
        let e = frame(b"GET /x HTTP/1.1\r\nExpect: 200-ok\r\n\r\n")
            .1
            .unwrap();
        assert_eq!(e.status, 417);
        let e = frame(&[b"GET /".as_slice(), &[b'a'; 5000], b" HTTP/1.1\r\n\r\n"].concat())
            .1
            .unwrap();
        assert_eq!((e.status, e.reason), (414, "URI Too Long"));
        assert_eq!(e.message, "Request Line is too large (5014 > 4094)");
        // Non-ASCII messages go out latin-1 encoded, as gunicorn's do.
        let e = frame(b"GET\xe9 / HTTP/1.1\r\n\r\n").1.unwrap();
        let bytes = e.response_bytes();
        let text: String = bytes.iter().map(|&c| c as char).collect();
        let (_, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(
            text.contains(&format!("Content-Length: {}\r\n", body.chars().count())),
            "{text}"
        );
        assert!(bytes.contains(&0xe9));
    }

    #[test]
    fn incomplete_and_closing() {
        // EOF mid-head: no answer at all.
        assert!(frame(b"GET / HTTP/1.1\r\nHost").1.unwrap().empty);
        // EOF mid-chunk: no answer; after the data but before CRLF: 400.
        assert!(
            frame(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel")
                .1
                .unwrap()
                .empty
        );
        assert_eq!(
            frame(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello")
                .1
                .unwrap()
                .class,
            "ChunkMissingTerminator"
        );
        // A clean close between requests is no error.
        assert!(frame(b"GET / HTTP/1.1\r\n\r\n").1.is_none());
        assert!(frame(b"").1.is_none());
        // After Connection: close the rest is never read.
        let (out, err) = frame(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\nBAD\r\n\r\n");
        assert!(err.is_none());
        assert!(out.ends_with(b"close\r\n\r\n"));
    }

    #[test]
    fn forwarded_trust() {
        let l = Arc::new(Limits::default());
        let input = b"GET / HTTP/1.1\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Ssl: off\r\n\r\n";
        let mut f = Framer::new(l.clone(), Some("10.0.0.1".parse().unwrap()));
        assert!(
            f.advance(input, true, &mut Vec::new()).is_ok(),
            "untrusted peer: ignored"
        );
        let mut f = Framer::new(l.clone(), None);
        assert!(
            f.advance(input, true, &mut Vec::new()).is_err(),
            "UNIX socket: trusted"
        );
        assert!(ip_allowed(
            &["10.0.0.0/8".into()],
            Some("10.2.3.4".parse().unwrap())
        ));
        assert!(!ip_allowed(
            &["10.0.0.0/8".into()],
            Some("11.2.3.4".parse().unwrap())
        ));
        assert!(ip_allowed(&["::1".into()], Some("::1".parse().unwrap())));
    }

    #[test]
    fn hold_limit_streams_large_chunked_bodies() {
        let l = Limits {
            hold_limit: 10,
            ..Limits::default()
        };
        let l = Arc::new(l);
        let mut f = Framer::new(l, None);
        let mut out = Vec::new();
        let input = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n";
        assert_eq!(f.advance(input, false, &mut out), Ok(input.len()));
        assert!(out.starts_with(b"POST / HTTP/1.1"));
        assert!(f.mid_request());
        assert!(f.advance(b"zz\r\n", false, &mut out).is_err());
    }

    #[test]
    fn proxy_protocol() {
        let l = Limits {
            proxy_protocol: ProxyProtocol::Auto,
            ..Limits::default()
        };
        let l = Arc::new(l);
        let mut f = Framer::new(l.clone(), Some(IpAddr::from([127, 0, 0, 1])));
        let mut out = Vec::new();
        let input = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET / HTTP/1.0\r\n\r\n";
        assert!(f.advance(input, true, &mut out).is_ok());
        assert_eq!(out, b"GET / HTTP/1.0\r\n\r\n");
        let info = f.proxy_info().unwrap();
        assert_eq!(info.client_port, Some(56324));
        let mut f = Framer::new(l, Some(IpAddr::from([10, 0, 0, 1])));
        assert_eq!(f.advance(input, true, &mut out).unwrap_err().status, 403);
    }

    #[test]
    fn proxy_ports_are_ascii_digits_on_the_wire() {
        let l = Arc::new(Limits {
            proxy_protocol: ProxyProtocol::V1,
            ..Limits::default()
        });
        let port_of = |port: &[u8]| {
            let mut input = b"PROXY TCP4 1.2.3.4 5.6.7.8 ".to_vec();
            input.extend_from_slice(port);
            input.extend_from_slice(b" 2\r\nGET / HTTP/1.1\r\n\r\n");
            let mut f = Framer::new(l.clone(), Some(IpAddr::from([127, 0, 0, 1])));
            let mut out = Vec::new();
            match f.advance(&input, true, &mut out) {
                Ok(_) => Ok(f.proxy_info().unwrap().client_port.unwrap()),
                Err(e) => Err((e.status, e.message)),
            }
        };
        assert_eq!(port_of(b"1"), Ok(1));
        assert_eq!(port_of(b"0001"), Ok(1));
        assert_eq!(port_of(b"65535"), Ok(65535));
        // Python's int() takes all of these (gunicorn: 200 for the ASCII
        // ones and a lone latin-1 NBSP; 400 for UTF-8's NBSP and the
        // Arabic-Indic digit only because latin-1 decodes them to other
        // characters); on the bytes as sent none is a port.
        for bad in [
            &b"\xc2\xa01"[..],
            b"\xa01",
            b"\x851",
            b"\t1",
            b"1\t",
            b"+1",
            b"-0",
            b"1_0",
            b"\xd9\xa2",
            b"\xef\xbc\x91",
            b"",
            b"65536",
            b"99999999999999999999999",
        ] {
            let got = port_of(bad);
            let Err((400, msg)) = &got else {
                panic!("{bad:?}: {got:?}");
            };
            assert!(msg.contains("invalid port"), "{bad:?}: {msg}");
        }
    }

    #[test]
    fn targets_split_as_urlsplit() {
        // (target, path, query, fragment) as Python 3.11's urlsplit (via
        // gunicorn's split_request_uri) gives them.
        let cases: &[(&str, &str, &str, &str)] = &[
            ("/p?q=1#frag", "/p", "q=1", "frag"),
            ("http://a", "", "", ""),
            ("http://a?x=1#y", "", "x=1", "y"),
            ("http:///x", "/x", "", ""),
            ("://a/x", "://a/x", "", ""),
            ("HTTP://A/p", "/p", "", ""),
            ("a.com:443", "443", "", ""),
            ("*", "*", "", ""),
            ("//x/y?z", "//x/y", "z", ""),
            ("h:/x", "/x", "", ""),
            ("http:x", "x", "", ""),
            ("1http://a/x", "1http://a/x", "", ""),
            ("/a#b?c", "/a", "", "b?c"),
        ];
        for (target, path, query, fragment) in cases {
            let got = split_target(target.as_bytes());
            let want = TargetParts {
                path: path.as_bytes(),
                query: query.as_bytes(),
                fragment: fragment.as_bytes(),
            };
            assert_eq!(got, want, "{target}");
        }
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn framer_output(input: &[u8]) -> Result<Vec<u8>, RequestError> {
            let (out, _, err) = run_steps(&Arc::new(Limits::default()), input, usize::MAX / 2);
            match err {
                Some(e) => Err(e),
                None => Ok(out),
            }
        }

        /// A socket that yields `chunks` one read at a time, then EOF.
        struct Chunks(std::collections::VecDeque<Vec<u8>>);

        impl hyper::rt::Read for Chunks {
            fn poll_read(
                self: Pin<&mut Self>,
                _: &mut Context<'_>,
                mut buf: hyper::rt::ReadBufCursor<'_>,
            ) -> Poll<io::Result<()>> {
                let chunks = &mut self.get_mut().0;
                if let Some(front) = chunks.front_mut() {
                    let n = front.len().min(buf.remaining());
                    buf.put_slice(&front[..n]);
                    front.drain(..n);
                    if front.is_empty() {
                        chunks.pop_front();
                    }
                }
                Poll::Ready(Ok(()))
            }
        }

        impl hyper::rt::Write for Chunks {
            fn poll_write(
                self: Pin<&mut Self>,
                _: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                Poll::Ready(Ok(buf.len()))
            }
            fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
                Poll::Ready(Ok(()))
            }
            fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
                Poll::Ready(Ok(()))
            }
        }

        /// What hyper reads through [`GatedIo`] (reads of at most `cap`
        /// bytes) from a socket delivering `input` in pieces of `step`.
        fn read_through_gate(
            limits: &Arc<Limits>,
            input: &[u8],
            step: usize,
            cap: usize,
        ) -> (Vec<u8>, Option<RequestError>) {
            let chunks = input.chunks(step.max(1)).map(<[u8]>::to_vec).collect();
            let mut io = GatedIo::new(
                Chunks(chunks),
                limits.clone(),
                Some(IpAddr::from([127, 0, 0, 1])),
            );
            let mut cx = Context::from_waker(std::task::Waker::noop());
            let mut space = vec![0u8; cap];
            let mut out = Vec::new();
            for _ in 0..=input.len() * 2 + 4 {
                let mut rb = hyper::rt::ReadBuf::new(&mut space);
                let polled = hyper::rt::Read::poll_read(Pin::new(&mut io), &mut cx, rb.unfilled());
                assert!(matches!(polled, Poll::Ready(Ok(()))), "{polled:?}");
                if rb.filled().is_empty() {
                    return (out, io.error().cloned());
                }
                out.extend_from_slice(rb.filled());
            }
            panic!("no EOF from the gate");
        }

        /// The default limits, or limits small enough for generated
        /// requests to cross them.
        fn limits_for(tight: bool) -> Limits {
            let mut limits = Limits::default();
            if tight {
                limits.limit_request_line = 24;
                limits.limit_request_fields = 2;
                limits.limit_request_field_size = 12;
            }
            limits
        }

        /// Both paths give the same bytes, error, count and state.
        fn same_on_both_paths(
            limits: &Limits,
            input: &[u8],
            step: usize,
        ) -> Result<(), TestCaseError> {
            let limits = Arc::new(limits.clone());
            let (fast_out, fast, fast_err) = run_steps_with(&limits, input, step, false);
            let (full_out, full, full_err) = run_steps_with(&limits, input, step, true);
            prop_assert_eq!(fast_err, full_err);
            prop_assert_eq!(fast_out, full_out);
            prop_assert_eq!(
                (
                    fast.requests(),
                    fast.heads_released(),
                    fast.at_end(),
                    fast.close_after
                ),
                (
                    full.requests(),
                    full.heads_released(),
                    full.at_end(),
                    full.close_after
                )
            );
            Ok(())
        }

        /// Heads near the fast path's edges: plain fields, and now and then
        /// a field it must leave to the full path.
        fn plain_request() -> impl Strategy<Value = Vec<u8>> {
            let method = prop::sample::select(vec![
                "GET", "POST", "HEAD", "CONNECT", "get", "GETX", "AB", "OPTIONS",
            ]);
            let target = prop::sample::select(vec![
                "/", "/health", "/a?b=c&d", "/%41b", "//x", "/a#f", "/\"q\"", "*", "/a b",
            ]);
            let version =
                prop::sample::select(vec!["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/1.1 "]);
            let name = prop::sample::select(vec![
                "Host",
                "host",
                "X-A",
                "Content-Type",
                "Connection",
                "Content-Length",
                "Transfer-Encoding",
                "Expect",
                "X_U",
                "X-Forwarded-Proto",
                "Bad Name",
                "",
            ]);
            let value = prop::sample::select(vec![
                "v",
                "close",
                "Keep-Alive",
                " lead",
                "trail ",
                "a\tb",
                "",
                "\x7f",
                "5",
                "https",
                "\u{e9}",
                "100-continue",
                "chunked",
            ]);
            let sep = prop::sample::select(vec![": ", ":", " : ", ":  "]);
            let headers = prop::collection::vec((name, sep, value, any::<bool>()), 0..5);
            (method, target, version, headers, any::<bool>()).prop_map(|(m, t, v, hs, lead)| {
                let mut r = Vec::new();
                if lead {
                    r.extend_from_slice(b"\r\n");
                }
                r.extend_from_slice(format!("{m} {t} {v}\r\n").as_bytes());
                for (n, sep, val, fold) in hs {
                    r.extend_from_slice(n.as_bytes());
                    r.extend_from_slice(sep.as_bytes());
                    r.extend(val.chars().map(|c| c as u32 as u8));
                    r.extend_from_slice(b"\r\n");
                    if fold {
                        r.extend_from_slice(b" folded\r\n");
                    }
                }
                r.extend_from_slice(b"\r\n");
                r
            })
        }

        /// Requests the fast path takes whole, mostly (a second Host or a
        /// `Connection: close` now and then): the zero-copy read path's
        /// common case, which the edge cases above rarely produce.
        fn common_request() -> impl Strategy<Value = Vec<u8>> {
            let method = prop::sample::select(vec!["GET", "POST", "HEAD", "DELETE"]);
            let target = prop::sample::select(vec!["/", "/health", "/a/b?c=d&e=%41", "/x:y@z"]);
            let field = prop::sample::select(vec![
                "Host: example.com",
                "Accept: */*",
                "User-Agent: curl/8.0 (x86_64)",
                "X-Request-Id: 42",
                "Connection: keep-alive",
                "Connection: close",
            ]);
            let fields = prop::collection::vec(field, 0..4);
            (method, target, fields).prop_map(|(m, t, fs)| {
                let mut r = format!("{m} {t} HTTP/1.1\r\n");
                for f in fs {
                    r.push_str(f);
                    r.push_str("\r\n");
                }
                r.push_str("\r\n");
                r.into_bytes()
            })
        }

        /// One to three requests of any of the kinds above, back to back.
        fn pipelined() -> impl Strategy<Value = Vec<u8>> {
            prop::collection::vec(
                prop_oneof![common_request(), plain_request(), request()],
                1..4,
            )
            .prop_map(|reqs| reqs.concat())
        }

        fn request() -> impl Strategy<Value = Vec<u8>> {
            let method =
                prop::sample::select(vec!["GET", "POST", "PUT", "OPTIONS", "DELETE", "-X-"]);
            let target = prop::sample::select(vec![
                "/",
                "/a?b=c",
                "/\"q\"?x=\"y\"",
                "*",
                "http://h/p",
                "//x",
            ]);
            let version = prop::sample::select(vec!["HTTP/1.1", "HTTP/1.0"]);
            let name = "[A-Za-z0-9!#$%&'*+.^_`|~-]{1,12}";
            let value = "[ \\t\\x21-\\x7e\\x80-\\xff]{0,20}";
            let headers = prop::collection::vec((name, value), 0..6);
            let body = prop::collection::vec(any::<u8>(), 0..40);
            (method, target, version, headers, body, any::<bool>()).prop_map(
                |(m, t, v, hs, body, chunked)| {
                    let mut r = format!("{m} {t} {v}\r\n").into_bytes();
                    for (n, val) in hs {
                        r.extend_from_slice(n.as_bytes());
                        r.extend_from_slice(b": ");
                        r.extend(val.chars().map(|c| c as u32 as u8));
                        r.extend_from_slice(b"\r\n");
                    }
                    if chunked && v == "HTTP/1.1" {
                        r.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                        if !body.is_empty() {
                            r.extend_from_slice(format!("{:X}\r\n", body.len()).as_bytes());
                            r.extend_from_slice(&body);
                            r.extend_from_slice(b"\r\n");
                        }
                        r.extend_from_slice(b"0\r\n\r\n");
                    } else {
                        r.extend_from_slice(
                            format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes(),
                        );
                        r.extend_from_slice(&body);
                    }
                    r
                },
            )
        }

        /// `out` without the fields that mark a head whose target is
        /// already the stand-in one (a marked head framed again).
        fn without_remarks(out: &[u8]) -> Vec<u8> {
            let mark = b"\r\nRgunicorn-Raw: ";
            let stand_in = b" http://rgunicorn.raw/";
            let mut v = out.to_vec();
            let mut from = 0;
            while let Some(i) = find(&v[from..], mark).map(|i| i + from) {
                let end = find(&v[i + 2..], b"\r\n").map_or(v.len(), |e| i + 2 + e);
                if v[..end].ends_with(stand_in) {
                    v.drain(i..end);
                } else {
                    from = end;
                }
            }
            v
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn arbitrary_bytes_never_panic(input in prop::collection::vec(any::<u8>(), 0..600), step in 1usize..50) {
                let t = std::time::Instant::now();
                let (o1, _, e1) = run_steps(&Arc::new(Limits::default()), &input, usize::MAX / 2);
                let (o2, _, e2) = run_steps(&Arc::new(Limits::default()), &input, step);
                prop_assert!(t.elapsed() < std::time::Duration::from_secs(2));
                prop_assert_eq!(e1.map(|e| (e.status, e.class)), e2.map(|e| (e.status, e.class)));
                prop_assert_eq!(o1, o2);
            }

            #[test]
            fn http_like_bytes_never_panic(
                reqs in prop::collection::vec(request(), 1..3),
                noise in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
            ) {
                let mut input = reqs.concat();
                for (i, b) in noise {
                    let at = i.index(input.len());
                    input[at] = b;
                }
                let _ = framer_output(&input);
            }

            #[test]
            fn the_fast_path_answers_as_the_full_path(
                input in pipelined(),
                step in prop_oneof![Just(usize::MAX / 2), 1usize..40],
                tight in any::<bool>(),
                casefold in any::<bool>(),
            ) {
                let limits = Limits { casefold_http_method: casefold, ..limits_for(tight) };
                same_on_both_paths(&limits, &input, step)?;
            }

            #[test]
            fn the_gate_gives_hyper_what_the_full_path_gives(
                input in pipelined(),
                step in prop_oneof![Just(usize::MAX / 2), 1usize..40],
                room in prop_oneof![Just(8192usize), 0usize..64],
                tight in any::<bool>(),
            ) {
                // The read path as hyper drives it (plain requests left in
                // hyper's buffer, the rest copied and framed), against the
                // framer with its fast path off, given the same pieces
                // (hyper's buffer holds a whole piece: with tight limits,
                // which error comes first depends on the pieces, as in
                // gunicorn).
                let limits = Arc::new(limits_for(tight));
                let step = step.min(input.len());
                let (gated, gated_err) = read_through_gate(&limits, &input, step, step + room);
                let (full, _, full_err) = run_steps_with(&limits, &input, step, true);
                prop_assert_eq!(gated_err, full_err);
                prop_assert_eq!(gated, full);
            }

            #[test]
            fn accepted_output_is_accepted_again(reqs in prop::collection::vec(request(), 1..3)) {
                let input = reqs.concat();
                if let Ok(out) = framer_output(&input) {
                    // The canonical form is a fixed point but for the
                    // marking of marked heads again, and hyper's URI
                    // parser reads every target in it.
                    let again = framer_output(&out).map(|a| without_remarks(&a));
                    prop_assert_eq!(again.as_ref(), Ok(&out));
                }
            }
        }
    }

    /// GatedIo in front of a real hyper connection.
    mod gated {
        use super::*;
        use http_body_util::{BodyExt, Full};
        use hyper_util::rt::TokioIo;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        async fn exchange(limits: Limits, request: &[u8]) -> String {
            let (client, server) = tokio::io::duplex(1 << 20);
            let io = GatedIo::new(
                TokioIo::new(server),
                Arc::new(limits),
                Some(IpAddr::from([127, 0, 0, 1])),
            );
            let serve = tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    |req: hyper::Request<hyper::body::Incoming>| async move {
                        let ok = req.into_body().collect().await.is_ok();
                        let body = if ok { "ok" } else { "body error" };
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                            bytes::Bytes::from(body),
                        )))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .half_close(true)
                    .serve_connection(io, svc)
                    .await;
            });
            let (mut rd, mut wr) = tokio::io::split(client);
            wr.write_all(request).await.unwrap();
            wr.shutdown().await.unwrap();
            let mut got = Vec::new();
            tokio::time::timeout(std::time::Duration::from_secs(5), rd.read_to_end(&mut got))
                .await
                .expect("server hung")
                .unwrap();
            let _ = serve.await;
            String::from_utf8_lossy(&got).into_owned()
        }

        fn status_lines(s: &str) -> Vec<&str> {
            s.match_indices("HTTP/1.1 ")
                .map(|(i, _)| &s[i..i + s[i..].find("\r\n").unwrap_or(s.len() - i)])
                .collect()
        }

        #[tokio::test]
        async fn pipelined_then_refused() {
            let r = exchange(
                Limits::default(),
                b"GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\nget /3 HTTP/1.1\r\n\r\n",
            )
            .await;
            assert_eq!(
                status_lines(&r),
                [
                    "HTTP/1.1 200 OK",
                    "HTTP/1.1 200 OK",
                    "HTTP/1.1 400 Bad Request"
                ],
                "{r}"
            );
            assert!(r.ends_with("</html>\n"), "{r}");
        }

        #[tokio::test]
        async fn first_request_refused() {
            let r = exchange(
                Limits::default(),
                b"GET /foo HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            )
            .await;
            assert_eq!(status_lines(&r), ["HTTP/1.1 400 Bad Request"], "{r}");
            assert!(r.contains("Invalid HTTP Header: &#x27;HOST&#x27;"), "{r}");
        }

        #[tokio::test]
        async fn empty_close() {
            let r = exchange(Limits::default(), b"GET /foo HTTP/1.1\r\nHo").await;
            assert_eq!(r, "");
        }

        /// What a service behind the gate sees of each request on one
        /// connection: `method target version raw-head`.
        async fn seen(request: &[u8]) -> Vec<String> {
            let (client, server) = tokio::io::duplex(1 << 20);
            let io = GatedIo::new(
                TokioIo::new(server),
                Arc::new(Limits::default()),
                Some(IpAddr::from([127, 0, 0, 1])),
            );
            let log = Arc::new(std::sync::Mutex::new(Vec::new()));
            let seen = log.clone();
            let serve = tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |mut req: hyper::Request<hyper::body::Incoming>| {
                        restore_method(&mut req);
                        restore_raw_head(&mut req);
                        let raw = req.extensions().get::<RawHead>().map(|r| {
                            format!(
                                "{} {:?} {}",
                                r.protocol(),
                                r.content_length.as_deref().map(String::from_utf8_lossy),
                                String::from_utf8_lossy(&r.target)
                            )
                        });
                        let fields: Vec<String> = req
                            .headers()
                            .iter()
                            .map(|(k, v)| format!("{k}={}", v.to_str().unwrap()))
                            .collect();
                        seen.lock().unwrap().push(format!(
                            "{} {} {:?} {raw:?} {}",
                            req.method(),
                            req.uri(),
                            req.version(),
                            fields.join(",")
                        ));
                        async move {
                            let _ = req.into_body().collect().await;
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                                bytes::Bytes::from("ok"),
                            )))
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .half_close(true)
                    .serve_connection(io, svc)
                    .await;
            });
            let (mut rd, mut wr) = tokio::io::split(client);
            wr.write_all(request).await.unwrap();
            wr.shutdown().await.unwrap();
            let mut got = Vec::new();
            tokio::time::timeout(std::time::Duration::from_secs(5), rd.read_to_end(&mut got))
                .await
                .expect("server hung")
                .unwrap();
            let _ = serve.await;
            let v = log.lock().unwrap().clone();
            v
        }

        #[tokio::test]
        async fn the_request_line_as_sent_reaches_the_app() {
            let got = seen(
                b"GET /p?q=1#frag HTTP/1.1\r\nHost: a\r\n\r\n\
                  GET http://a HTTP/1.1\r\n\r\n\
                  GET http:///x HTTP/1.2\r\n\r\n\
                  POST /p HTTP/1.1\r\nContent-Length: 002\r\nRgunicorn-Raw: theirs\r\n\r\nok\
                  GET ://a/x HTTP/1.1\r\n\r\n\
                  GET /plain HTTP/1.1\r\nRgunicorn-Raw: theirs\r\n\r\n\
                  HEAD /h#x HTTP/1.1\r\n\r\n\
                  CONNECT a.com:443 HTTP/1.1\r\n\r\n",
            )
            .await;
            assert_eq!(
                got,
                [
                    r#"GET /p?q=1 HTTP/1.1 Some("HTTP/1.1 None /p?q=1#frag") host=a"#,
                    r#"GET http://a/ HTTP/1.1 Some("HTTP/1.1 None http://a") "#,
                    r#"GET /x HTTP/1.1 Some("HTTP/1.2 None http:///x") "#,
                    r#"POST /p HTTP/1.1 Some("HTTP/1.1 Some(\"002\") /p") rgunicorn-raw=theirs,content-length=2"#,
                    r#"GET ://a/x HTTP/1.1 Some("HTTP/1.1 None ://a/x") "#,
                    "GET /plain HTTP/1.1 None rgunicorn-raw=theirs",
                    r#"HEAD /h HTTP/1.1 Some("HTTP/1.1 None /h#x") "#,
                    r#"CONNECT a.com:443 HTTP/1.1 Some("HTTP/1.1 None a.com:443") "#,
                ]
            );
        }

        #[tokio::test]
        async fn quoted_target_reaches_the_app() {
            let r = exchange(
                Limits::default(),
                b"GET /with_\"quotes\"?foo=\"bar\" HTTP/1.1\r\n\r\n",
            )
            .await;
            assert_eq!(status_lines(&r), ["HTTP/1.1 200 OK"], "{r}");
        }

        #[tokio::test]
        async fn chunked_error_held_back() {
            let r = exchange(
                Limits::default(),
                b"GET /1 HTTP/1.1\r\n\r\nPOST /2 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6_0\r\n world\r\n0\r\n\r\n",
            )
            .await;
            assert_eq!(
                status_lines(&r),
                ["HTTP/1.1 200 OK", "HTTP/1.1 400 Bad Request"],
                "{r}"
            );
        }

        #[tokio::test]
        async fn chunked_error_after_streaming() {
            let l = Limits {
                hold_limit: 8,
                ..Limits::default()
            };
            let r = exchange(
                l,
                b"GET /1 HTTP/1.1\r\n\r\nPOST /2 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6_0\r\n world\r\n0\r\n\r\n",
            )
            .await;
            assert_eq!(
                status_lines(&r),
                ["HTTP/1.1 200 OK", "HTTP/1.1 400 Bad Request"],
                "{r}"
            );
            assert!(!r.contains("body error"), "{r}");
        }

        /// Read from `rd` until `got` ends with `end`.
        async fn read_until(
            rd: &mut (impl tokio::io::AsyncRead + Unpin),
            got: &mut Vec<u8>,
            end: &[u8],
        ) {
            let mut b = [0u8; 1];
            while !got.ends_with(end) {
                let n = tokio::time::timeout(std::time::Duration::from_secs(5), rd.read(&mut b))
                    .await
                    .expect("server hung")
                    .unwrap();
                assert!(n > 0, "EOF after {:?}", String::from_utf8_lossy(got));
                got.push(b[0]);
            }
        }

        /// An upgrade request answered as HTTP keeps the connection framed;
        /// once the app answers 101 and sets the switch, the bytes that
        /// follow (never valid HTTP) pass through both ways untouched.
        #[tokio::test]
        async fn switched_protocols_pass_raw_bytes() {
            let (client, server) = tokio::io::duplex(1 << 16);
            let io = GatedIo::new(
                TokioIo::new(server),
                Arc::new(Limits::default()),
                Some(IpAddr::from([127, 0, 0, 1])),
            );
            let raw = io.raw_switch();
            let svc = hyper::service::service_fn(
                move |mut req: hyper::Request<hyper::body::Incoming>| {
                    let raw = raw.clone();
                    async move {
                        let mut resp = hyper::Response::new(Full::new(bytes::Bytes::from("ok")));
                        if req.uri().path() == "/switch" {
                            let on = hyper::upgrade::on(&mut req);
                            raw.store(true, Ordering::Release);
                            tokio::spawn(async move {
                                // An echo of the raw bytes.
                                let mut io = TokioIo::new(on.await.unwrap());
                                let mut buf = [0u8; 64];
                                loop {
                                    let n = io.read(&mut buf).await.unwrap();
                                    if n == 0 {
                                        break;
                                    }
                                    io.write_all(&buf[..n]).await.unwrap();
                                }
                            });
                            *resp.status_mut() = hyper::StatusCode::SWITCHING_PROTOCOLS;
                            *resp.body_mut() = Full::new(bytes::Bytes::new());
                            resp.headers_mut()
                                .insert("upgrade", hyper::header::HeaderValue::from_static("test"));
                            resp.headers_mut().insert(
                                "connection",
                                hyper::header::HeaderValue::from_static("upgrade"),
                            );
                        }
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                },
            );
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .half_close(true)
                    .serve_connection(io, svc)
                    .with_upgrades(),
            );
            let (mut rd, mut wr) = tokio::io::split(client);
            let upgrade = "Upgrade: test\r\nConnection: upgrade\r\n\r\n";
            let mut got = Vec::new();
            wr.write_all(format!("GET /stay HTTP/1.1\r\n{upgrade}").as_bytes())
                .await
                .unwrap();
            read_until(&mut rd, &mut got, b"\r\n\r\nok").await;
            assert!(
                got.starts_with(b"HTTP/1.1 200 OK"),
                "{}",
                String::from_utf8_lossy(&got)
            );
            got.clear();
            wr.write_all(format!("GET /switch HTTP/1.1\r\n{upgrade}").as_bytes())
                .await
                .unwrap();
            read_until(&mut rd, &mut got, b"\r\n\r\n").await;
            assert!(
                got.starts_with(b"HTTP/1.1 101 Switching Protocols"),
                "{}",
                String::from_utf8_lossy(&got)
            );
            // A bare LF, a lower-case "method", bytes past 0x7f: the framer
            // would refuse each.
            let frames: &[u8] = b"\x81\x85get bare\nLF\xff\r\n\r\n";
            wr.write_all(frames).await.unwrap();
            got.clear();
            read_until(&mut rd, &mut got, b"\r\n\r\n").await;
            assert_eq!(got, frames);
        }

        /// A CONNECT answered 200 with a body: hyper writes the whole
        /// response (no tunnel), and the connection then ends, as gunicorn
        /// stops reading after a CONNECT.
        #[tokio::test]
        async fn connect_answered_as_any_request() {
            let (client, server) = tokio::io::duplex(1 << 16);
            let io = GatedIo::new(
                TokioIo::new(server),
                Arc::new(Limits::default()),
                Some(IpAddr::from([127, 0, 0, 1])),
            );
            let svc = hyper::service::service_fn(
                |mut req: hyper::Request<hyper::body::Incoming>| async move {
                    let connect = restore_method(&mut req);
                    restore_raw_head(&mut req);
                    // No tunnel to take either (one would only resolve
                    // after this response).
                    assert!(hyper::upgrade::on(&mut req).await.is_err());
                    let body = format!("{connect} {} {}", req.method(), req.uri());
                    let resp = hyper::Response::builder()
                        .header("content-length", body.len())
                        .body(Full::new(bytes::Bytes::from(body)))
                        .unwrap();
                    Ok::<_, std::convert::Infallible>(resp)
                },
            );
            let serve = tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .half_close(true)
                    .serve_connection(io, svc)
                    .with_upgrades(),
            );
            let (mut rd, mut wr) = tokio::io::split(client);
            // No half-close: the end of the connection is the server's doing.
            wr.write_all(
                b"CONNECT [::1]:443 HTTP/1.1\r\nHost: [::1]:443\r\n\r\nGET /next HTTP/1.1\r\n\r\n",
            )
            .await
            .unwrap();
            let mut got = Vec::new();
            tokio::time::timeout(std::time::Duration::from_secs(5), rd.read_to_end(&mut got))
                .await
                .expect("connection left open")
                .unwrap();
            let got = String::from_utf8(got).unwrap();
            let (head, body) = got.split_once("\r\n\r\n").unwrap();
            assert_eq!(body, "true CONNECT [::1]:443", "{got}");
            assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
            assert!(head.contains("\r\ncontent-length: 22"), "{got}");
            assert!(serve.await.unwrap().is_ok());
        }

        #[tokio::test]
        async fn chunked_ok() {
            let r = exchange(
                Limits::default(),
                b"POST /2 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n000\r\n\r\nGET /second HTTP/1.1\r\n\r\n",
            )
            .await;
            assert_eq!(
                status_lines(&r),
                ["HTTP/1.1 200 OK", "HTTP/1.1 200 OK"],
                "{r}"
            );
            assert!(!r.contains("body error"), "{r}");
        }
    }
}
