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
//! target and version; the stand-in target carries the request line as
//! sent, which the worker takes out again ([`RawHead`],
//! [`restore_raw_head`]), so the app sees what gunicorn's app sees
//! ([`SentLine`]).
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

mod chunked;
mod classes;
pub mod corpus;
mod error;
mod gated_io;
mod head;
mod limits;
mod proxy;
mod target;
#[cfg(test)]
mod tests;

use classes::*;
pub use error::*;
pub use gated_io::*;
pub use limits::*;
pub use target::*;

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
    /// [`Self::plain_heads_in_place`] stopped at the head the framer reads
    /// next: its fast path has already said no to it.
    fast_declined: bool,
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
            fast_declined: false,
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
                None => {
                    self.fast_declined = true;
                    break;
                }
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
    #[cfg(test)]
    pub fn requests(&self) -> u64 {
        self.requests
    }

    /// Request heads handed to hyper so far (each gets an answer from the
    /// app, except one cut short by an error while [`Self::mid_request`]).
    #[cfg(test)]
    pub fn heads_released(&self) -> u64 {
        self.heads_released
    }

    /// What the PROXY protocol header said, if there was one.
    #[cfg(test)]
    pub fn proxy_info(&self) -> Option<&ProxyInfo> {
        self.proxy_info.as_ref()?.get()
    }

    /// The cell that holds the PROXY header's addresses once they are
    /// parsed (always before the first request head reaches hyper); `None`
    /// when `proxy_protocol` is off.
    pub fn proxy_info_sink(&self) -> Option<Arc<OnceLock<ProxyInfo>>> {
        self.proxy_info.clone()
    }

    pub(super) fn set_proxy_info(&mut self, info: ProxyInfo) {
        if let Some(cell) = &self.proxy_info {
            let _ = cell.set(info);
        }
    }

    pub(super) fn emit(&mut self, out: &mut Vec<u8>, bytes: &[u8]) {
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
    pub(super) fn flush_held(&mut self, out: &mut Vec<u8>) {
        if let Some(mut h) = self.held.take() {
            out.append(&mut h);
            self.heads_released += 1;
        }
    }

    pub(super) fn request_done(&mut self, out: &mut Vec<u8>) {
        self.flush_held(out);
        self.request_done_unheld();
    }

    /// [`Self::request_done`] for a request that was not held.
    pub(super) fn request_done_unheld(&mut self) {
        self.partial_released = false;
        self.state = if self.close_after {
            State::Closed
        } else {
            State::Head
        };
    }

    pub(super) fn run(
        &mut self,
        input: &[u8],
        eof: bool,
        out: &mut Vec<u8>,
    ) -> Result<usize, RequestError> {
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
}

pub(super) struct RequestLine<'a> {
    method: Cow<'a, [u8]>,
    /// As sent.
    target: &'a [u8],
    version: (u32, u32),
}

pub(super) struct Framing {
    chunked: bool,
    length: Option<u64>,
    must_close: bool,
    expect_continue: bool,
    codings: Vec<&'static str>,
}

/// The lines of a header block split at CRLF, as Python's
/// `block.split(b"\r\n")`: always at least one (maybe empty) line.
pub(super) struct CrlfLines<'a> {
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
