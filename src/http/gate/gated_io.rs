//! [`GatedIo`]: the socket as hyper sees it, only validated, canonical
//! request bytes, and gunicorn's error page when hyper closes after a
//! refused request.

use super::*;

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
    /// With an error pending, hyper wrote a response that closes the
    /// connection (a 500 with `Connection: close`): gunicorn stops there,
    /// so the error page is not written after it.
    closed_by_response: bool,
    /// Set once the connection has switched protocols: no more framing.
    raw: Arc<AtomicBool>,
    /// Set once the client has sent a byte.
    heard: Arc<AtomicBool>,
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
            closed_by_response: false,
            reply: None,
            raw: Arc::new(AtomicBool::new(false)),
            heard: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Set once the client has sent its first byte: a connection without
    /// a request yet that has sent nothing may be a client about to write,
    /// one that sent part of a head and stopped is trickling it.
    pub fn heard(&self) -> Arc<AtomicBool> {
        self.heard.clone()
    }

    /// The switch that ends framing on this connection: set it when the
    /// app answers `101 Switching Protocols`, before hyper writes that
    /// answer. From then on the bytes on the wire are the new protocol's
    /// (websocket frames), so reads pass them through untouched: first
    /// whatever the framer holds, then the socket's.
    pub fn raw_switch(&self) -> Arc<AtomicBool> {
        self.raw.clone()
    }

    pub(super) fn is_raw(&self) -> bool {
        self.raw.load(Ordering::Acquire)
    }

    /// The refusal pending or written on this connection, if any.
    #[cfg(test)]
    pub fn error(&self) -> Option<&RequestError> {
        self.error.as_ref()
    }

    /// See [`Framer::proxy_info_sink`].
    pub fn proxy_info_sink(&self) -> Option<Arc<OnceLock<ProxyInfo>>> {
        self.framer.proxy_info_sink()
    }

    pub(super) fn swallowing(&self) -> bool {
        self.hyper_saw_error && self.error_mid_request && !self.is_raw()
    }
}

impl<T: hyper::rt::Read + hyper::rt::Write + Unpin> GatedIo<T> {
    pub(super) fn run_framer(&mut self) {
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
    pub(super) fn run_framer_on_scratch(&mut self, n: usize) {
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
    pub(super) fn poll_reply(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
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
                if !got.is_empty() {
                    this.note_heard();
                }
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
                if n > 0 {
                    this.note_heard();
                }
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

impl<T> GatedIo<T> {
    fn note_heard(&self) {
        if !self.heard.load(Ordering::Relaxed) {
            self.heard.store(true, Ordering::Relaxed);
        }
    }

    /// Whether `written` (hyper's output, while an error is pending) holds
    /// a response head that closes the connection.
    fn note_closing_response(&mut self, written: &[u8]) {
        const CLOSE: &[u8] = b"\r\nconnection: close\r\n";
        if written
            .windows(CLOSE.len())
            .any(|w| w.eq_ignore_ascii_case(CLOSE))
        {
            self.closed_by_response = true;
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
        if this.error.is_some() {
            this.note_closing_response(buf);
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
        if this.error.is_some() {
            for b in bufs {
                this.note_closing_response(b);
            }
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
        if this.error.is_some() && !this.is_raw() && !this.closed_by_response {
            ready!(this.poll_reply(cx))?;
            ready!(Pin::new(&mut this.inner).poll_flush(cx))?;
        }
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}
