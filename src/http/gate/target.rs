//! Request targets as gunicorn splits them (`split_request_uri`, Python's
//! `urlsplit`), and how a request hyper would read differently reaches it:
//! CONNECT under another method name, a target or version hyper does not
//! take as a stand-in target that carries the request line as sent
//! ([`RawHead`]), both turned back in the worker, and what the app is shown
//! of the request line ([`SentLine`]).

use super::*;

/// Python's `urlsplit` scheme rule: `[A-Za-z][A-Za-z0-9+.-]*` before the
/// first `:`; returns what follows the scheme (all of `url` without one).
pub(super) fn after_scheme(url: &[u8]) -> &[u8] {
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
pub(super) fn split_netloc(url: &[u8]) -> Option<(&[u8], &[u8])> {
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
pub(super) fn urlsplit_fails(uri: &[u8]) -> bool {
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
pub(super) const HIDDEN_METHOD: &[u8] = b"RGUNICORN-";

/// The method as hyper is shown it. hyper answers a 2xx to `CONNECT` as a
/// tunnel: it writes no `Content-Length` and no body (and nothing at all
/// when the app set a `Content-Length`), then hands the connection over.
/// gunicorn never tunnels: it sends the app's whole response and closes the
/// connection. Under another name the request is an ordinary one to hyper.
pub(super) fn method_for_hyper(method: &[u8]) -> Cow<'_, [u8]> {
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

/// The start of the target hyper is shown for a request whose head is
/// also carried as sent ([`RawHead`]): its path is the head as sent,
/// `<major>.<min> <Content-Length> <target>`, in hex. Every absolute-form
/// target a client sends is such a request, so an absolute target here is
/// always the framer's. In the target, not in a field of its own, so that
/// hyper's header array keeps its size (`limit_request_fields`, on the
/// stack at the default 100).
pub(super) const RAW_MARK_TARGET: &[u8] = b"http://rgunicorn.raw/";

/// The host of [`RAW_MARK_TARGET`].
const RAW_HOST: &str = "rgunicorn.raw";

/// `bytes` in lower-case hex, appended to `out`.
pub(super) fn push_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for &b in bytes {
        out.push(HEX[usize::from(b >> 4)]);
        out.push(HEX[usize::from(b & 15)]);
    }
}

/// What [`push_hex`] wrote, or `None`.
pub(super) fn unhex(hex: &[u8]) -> Option<Vec<u8>> {
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    hex.chunks(2)
        .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
}

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

    pub(super) fn parse(v: &[u8]) -> Option<RawHead> {
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

/// The request line as the client sent it, for whatever shows it (the WSGI
/// environ, the ASGI scope, the request hooks, the access log): the
/// [`RawHead`] where hyper read a canonical form, else hyper's URI and
/// version, which are then as sent (an HTTP/2 request's URI is origin-form
/// by then, as its `:path`).
#[derive(Clone, Copy, Debug)]
pub struct SentLine<'a> {
    raw: Option<&'a RawHead>,
    uri: &'a hyper::Uri,
    version: hyper::Version,
}

impl<'a> SentLine<'a> {
    pub fn of_request<B>(req: &'a hyper::Request<B>) -> SentLine<'a> {
        SentLine {
            raw: req.extensions().get::<RawHead>(),
            uri: req.uri(),
            version: req.version(),
        }
    }

    pub fn of_parts(parts: &'a http::request::Parts) -> SentLine<'a> {
        SentLine {
            raw: parts.extensions.get::<RawHead>(),
            uri: &parts.uri,
            version: parts.version,
        }
    }

    /// The head as sent, when hyper read another.
    pub fn raw(&self) -> Option<&'a RawHead> {
        self.raw
    }

    /// The target (gunicorn's `RAW_URI`).
    pub fn target(&self) -> Cow<'a, str> {
        if let Some(raw) = self.raw {
            return match std::str::from_utf8(&raw.target) {
                Ok(text) => Cow::Borrowed(text),
                Err(_) => Cow::Owned(crate::http::text::latin1(&raw.target)),
            };
        }
        match self.uri.path_and_query() {
            Some(pq) if self.uri.scheme().is_none() => Cow::Borrowed(pq.as_str()),
            _ => Cow::Owned(self.uri.to_string()),
        }
    }

    /// The target split as gunicorn splits it (the path still
    /// percent-encoded).
    pub fn parts(&self) -> TargetParts<'a> {
        match self.raw {
            Some(raw) => raw.parts(),
            None => TargetParts {
                path: self.uri.path().as_bytes(),
                query: self.uri.query().unwrap_or("").as_bytes(),
                fragment: b"",
            },
        }
    }

    /// `(1, 1)` for `HTTP/1.1`; HTTP/2 is `(2, 0)`.
    pub fn version(&self) -> (u8, u8) {
        match (self.raw, self.version) {
            (Some(raw), _) => raw.version,
            (None, hyper::Version::HTTP_09) => (0, 9),
            (None, hyper::Version::HTTP_10) => (1, 0),
            (None, hyper::Version::HTTP_2) => (2, 0),
            (None, hyper::Version::HTTP_3) => (3, 0),
            (None, _) => (1, 1),
        }
    }

    /// Whether the request came over HTTP/2 (not a request line that says
    /// so: gunicorn's HTTP/1 parser takes any `HTTP/1.x` only).
    pub fn is_http2(&self) -> bool {
        self.raw.is_none() && self.version == hyper::Version::HTTP_2
    }

    /// `HTTP/1.1` (gunicorn's `SERVER_PROTOCOL`, and the access log's).
    pub fn protocol(&self) -> Cow<'static, str> {
        match self.version() {
            (1, 1) => Cow::Borrowed("HTTP/1.1"),
            (1, 0) => Cow::Borrowed("HTTP/1.0"),
            (2, 0) => Cow::Borrowed("HTTP/2.0"),
            (major, minor) => Cow::Owned(format!("HTTP/{major}.{minor}")),
        }
    }
}

/// Undo the framer's marking of a request that carries a [`RawHead`]
/// (hyper read it through a [`GatedIo`]): the head goes into the request's
/// extensions, and the URI becomes what the `http` crate makes of the
/// target as sent ([`uri_for_app`]). Cheap for an origin-form request
/// (none is marked).
#[inline]
pub fn restore_raw_head<B>(req: &mut hyper::Request<B>) {
    if req.uri().scheme().is_none() {
        return;
    }
    restore_marked(req);
}

pub(super) fn restore_marked<B>(req: &mut hyper::Request<B>) {
    if req.uri().host() != Some(RAW_HOST) {
        return;
    }
    let hex = req.uri().path().as_bytes();
    let Some(raw) = unhex(hex.strip_prefix(b"/").unwrap_or(hex))
        .as_deref()
        .and_then(RawHead::parse)
    else {
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
