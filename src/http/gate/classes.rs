//! Byte classes and scans of the request's bytes: tokens, field values,
//! targets, CRLF search. ASCII only: nothing here reads request bytes as
//! Unicode text.

/// gunicorn's key for a header name: the name upper-cased.
pub(super) fn upper_of(name: &[u8]) -> String {
    String::from_utf8_lossy(name).to_ascii_uppercase()
}

/// `name.upper() == key`, as gunicorn compares a header with a key of
/// `secure_scheme_headers` or `forwarder_headers` (a key with lower-case
/// letters never matches).
pub(super) fn upper_eq(name: &[u8], key: &str) -> bool {
    name.len() == key.len()
        && name
            .iter()
            .zip(key.as_bytes())
            .all(|(n, k)| n.to_ascii_uppercase() == *k)
}

/// The first `needle` (a short one: CRLF, `://`) in `hay`: a byte search
/// for its first byte, then a compare (cheaper than a substring searcher's
/// set-up for needles this short).
pub(super) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
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

pub(super) fn has_bare_lf(data: &[u8]) -> bool {
    memchr::memchr_iter(b'\n', data).any(|i| i == 0 || data[i - 1] != b'\r')
}

/// A byte table: `table[c]` is true for the bytes of `chars` and of
/// `[A-Za-z0-9]`.
pub(super) const fn alnum_and(chars: &[u8]) -> [bool; 256] {
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
pub(super) static TCHAR: [bool; 256] = alnum_and(b"!#$%&'*+-.^_`|~");

/// Bytes of an origin-form target that the `http` crate surely takes as
/// they are (RFC 3986 `pchar`, `/` and `?`; not `#`).
pub(super) static PLAIN_TARGET: [bool; 256] = alnum_and(b"-._~!$&'()*+,;=:@/%?");

/// The longest target the `http` crate takes.
pub(super) const MAX_URI_LEN: usize = u16::MAX as usize - 2;

/// A target hyper takes as it is, with no trial parse: `/` then
/// [`PLAIN_TARGET`] bytes, not too long. ([`Framer::plain_head`] applies
/// the same rule while it scans.)
pub(super) fn is_plain_target(target: &[u8]) -> bool {
    target.first() == Some(&b'/')
        && target.len() <= MAX_URI_LEN
        && target.iter().all(|&c| PLAIN_TARGET[c as usize])
}

/// Byte classes of [`Framer::plain_head`]'s fast path, in one table.
pub(super) const UPPER: u8 = 1;
/// [`PLAIN_TARGET`].
pub(super) const TARGET: u8 = 2;
/// A `tchar` other than `_` (gunicorn refuses `_` in names by default, and
/// the full path knows the setting).
pub(super) const NAME: u8 = 4;
/// Visible: 0x21-0x7e and obs-text 0x80-0xff.
pub(super) const VISIBLE: u8 = 8;
/// A value byte: visible, SP or HTAB (not [`bad_value_byte`]).
pub(super) const VALUE: u8 = 16;

pub(super) static PLAIN: [u8; 256] = {
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

pub(super) fn is_tchar(c: u8) -> bool {
    TCHAR[c as usize]
}

pub(super) fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&c| is_tchar(c))
}

pub(super) fn strip_sp_tab(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// gunicorn's `RFC9110_5_5_INVALID_AND_DANGEROUS`.
pub(super) fn bad_value_byte(c: u8) -> bool {
    (c < 0x20 && c != b'\t') || c == 0x7f
}

/// A `Connection` value with the `close` option among its tokens: the
/// connection ends after this request (close wins, RFC 9110 7.6.1, as the
/// worker answers it; gunicorn only reads a value that is exactly `close`).
pub(super) fn has_close_token(v: &[u8]) -> bool {
    v.eq_ignore_ascii_case(b"close")
        || v.split(|&c| c == b',')
            .any(|t| strip_sp_tab(t).eq_ignore_ascii_case(b"close"))
}
