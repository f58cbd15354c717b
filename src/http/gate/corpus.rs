//! gunicorn's HTTP/1 request corpus (`../shared/conformance/
//! gunicorn-requests`, read in place, never copied): its cases, their
//! bytes and gunicorn 27.0.1's answers, for the tests that replay it (the
//! gate's unit tests, `tests/conformance.rs`, `tests/gate_vs_gunicorn.rs`).

use std::path::PathBuf;

/// One row of `EXPECTED.tsv`, with its request bytes.
#[derive(Clone, Debug)]
pub struct Case {
    /// `set/name`.
    pub name: String,
    /// `valid` or `invalid`.
    pub set: String,
    /// The error class gunicorn raises, or `-`.
    pub class: String,
    /// The settings the second answer is for (`name=value;...`, Python
    /// literals), or `-`.
    pub settings: String,
    /// gunicorn's status with default settings.
    pub status_default: String,
    /// gunicorn's status with [`Case::settings`].
    pub status_with_settings: String,
    pub bytes: Vec<u8>,
}

impl Case {
    /// [`Case::settings`] as (name, value) pairs; none for `-`.
    pub fn settings_list(&self) -> Vec<(String, String)> {
        if self.settings == "-" {
            return Vec::new();
        }
        self.settings
            .split(';')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect()
    }
}

/// Where the corpus is: beside this checkout, in `../shared`.
pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/conformance/gunicorn-requests")
}

/// Every case of `EXPECTED.tsv`, in its order. Panics if the corpus is
/// missing or a case file cannot be read.
pub fn load() -> Vec<Case> {
    let dir = dir();
    let tsv = std::fs::read_to_string(dir.join("EXPECTED.tsv")).expect("corpus EXPECTED.tsv");
    tsv.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let c: Vec<&str> = l.split('\t').collect();
            let path = dir.join(c[1]).join(format!("{}.http", c[0]));
            let raw = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            Case {
                name: format!("{}/{}", c[1], c[0]),
                set: c[1].into(),
                class: c[2].into(),
                settings: c[3].into(),
                status_default: c[4].into(),
                status_with_settings: c[5].into(),
                bytes: decode(&raw),
            }
        })
        .collect()
}

/// The bytes of a `.http` case, by the corpus README's rules. Panics on a
/// bad escape.
pub fn decode(raw: &[u8]) -> Vec<u8> {
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
