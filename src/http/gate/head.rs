//! A request head: the request line, the header fields (obs-fold,
//! spaces, `header_map`, forwarded headers) and the body framing they
//! decide, with a fast path for plain heads.

use super::*;

impl Framer {
    /// One request head; on success the state moves to its body.
    pub(super) fn head(
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
        let declined = std::mem::take(&mut self.fast_declined);
        if first_look && !declined && !self.no_fast_path {
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
                    if has_close_token(v) {
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
        if marked {
            let (major, minor) = req.version;
            head.extend_from_slice(RAW_MARK_TARGET);
            push_hex(head, &[b'0' + major as u8, b'.', b'0' + minor as u8, b' ']);
            if let Some(f) = content_length {
                push_hex(head, &f.value);
            }
            push_hex(head, b" ");
            push_hex(head, req.target);
        } else {
            head.extend_from_slice(req.target);
        }
        head.extend_from_slice(match req.version {
            (1, 0) => b" HTTP/1.0\r\n",
            (0, _) => b" HTTP/1.0\r\n",
            _ => b" HTTP/1.1\r\n",
        });
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
    pub(super) fn plain_head(&mut self, rest: &[u8]) -> Option<usize> {
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
            Some(v) if has_close_token(v) => true,
            Some(v) if v.eq_ignore_ascii_case(b"keep-alive") => false,
            _ => http10,
        };
        self.heads_released += 1;
        self.request_done_unheld();
        Some(pos)
    }

    pub(super) fn request_line<'a>(&self, line: &'a [u8]) -> Result<RequestLine<'a>, RequestError> {
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
    pub(super) fn parse_headers<'a>(
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
    pub(super) fn body_framing(
        &self,
        fields: &[Field],
        version: (u32, u32),
    ) -> Result<Framing, RequestError> {
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
}
