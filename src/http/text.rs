//! The two byte/text conversions the HTTP side shares: latin-1 (how WSGI,
//! gunicorn's atoms and hooks read header and path bytes) and
//! percent-decoding of a request path.

/// Bytes read as latin-1: each byte one char, never an error.
pub fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

/// `%XX` escapes decoded; a malformed one is kept as it is.
pub fn percent_decode(s: &[u8]) -> Vec<u8> {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' && i + 2 < s.len() {
            if let (Some(h), Some(l)) = (hex(s[i + 1]), hex(s[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

/// `PATH_INFO` as WSGI has it: percent-decoded bytes read as latin-1.
pub fn percent_decode_latin1(s: &str) -> String {
    latin1(&percent_decode(s.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding() {
        assert_eq!(percent_decode(b"/a%20b%2Fc"), b"/a b/c");
        assert_eq!(percent_decode(b"/%zz%4"), b"/%zz%4");
        assert_eq!(percent_decode(b"/%e9"), vec![b'/', 0xe9]);
        assert_eq!(percent_decode_latin1("/%41%zz%"), "/A%zz%");
        assert_eq!(percent_decode_latin1("/caf%C3%A9"), "/caf\u{c3}\u{a9}");
    }
}
