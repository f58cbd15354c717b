//! Chunked bodies: chunk sizes, extensions and trailers, as gunicorn's
//! `ChunkedReader` reads them.

use super::*;

impl Framer {
    pub(super) fn chunk_size(
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

    pub(super) fn trailers(
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

/// gunicorn's `CHUNK_EXT_RE` on `";" + ext`:
/// `*( BWS ";" BWS token [ BWS "=" BWS ( token / quoted-string ) ] )`.
pub(super) fn chunk_ext_ok(ext: &[u8]) -> bool {
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
