//! The access log: gunicorn's `access_log_format` (a Python `%`-mapping
//! format over gunicorn's atoms `h l u t r s m U q H b B f a T D M L p`,
//! `{header}i`, `{header}o`, `{var}e`), with gunicorn's escaping (`"` ->
//! `\"`) and `-` for a missing atom, written to `accesslog` (`-` =
//! stdout, or a file) by a writer thread of the worker, so formatting and
//! file I/O stay off the request path. Off unless `accesslog` is set (or
//! a `logconfig*` setting, as gunicorn's `access_log_enabled`).
//!
//! When Python's logging has other handlers for `gunicorn.access`, each
//! record goes to them instead, as gunicorn's `Logger.access` sends it:
//! `info(access_log_format, atoms)`, so a formatter sees `%(message)s` and
//! the atoms in `record.args` (a [`Route`] the Python side installs).

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, OnceLock};
use std::time::Duration;

/// Sends a record through Python's logging: the format and gunicorn's
/// atoms; `false` when it could not (the line is then written here).
pub type Route = fn(&str, Vec<(String, Value)>) -> bool;

static ROUTE: OnceLock<Route> = OnceLock::new();
static ROUTED: AtomicBool = AtomicBool::new(false);

/// Install the route (once per process image; inherited across fork).
pub fn set_route(route: Route) {
    let _ = ROUTE.set(route);
}

/// Whether records go through the route from now on.
pub fn set_routed(on: bool) {
    ROUTED.store(on, Ordering::Release);
}

/// What one request leaves for the log; formatted by the writer thread.
pub struct Record {
    pub remote_addr: String,
    pub method: String,
    /// The request target as received (gunicorn's `RAW_URI`).
    pub raw_uri: String,
    /// `HTTP/1.1`.
    pub protocol: std::borrow::Cow<'static, str>,
    pub status: u16,
    /// Request headers, names lowercased, in order received.
    pub request_headers: Vec<(String, String)>,
    pub response_headers: Vec<(String, String)>,
    /// Body bytes sent (`None` when nothing was sent).
    pub sent: Option<u64>,
    pub request_time: Duration,
    pub pid: u32,
}

enum Message {
    Record(Box<Record>),
    Reopen,
    /// Answered once every record before it is written.
    Flush(mpsc::Sender<()>),
}

/// The worker's handle to its access-log writer.
#[derive(Clone)]
pub struct AccessLog {
    tx: mpsc::Sender<Message>,
}

impl AccessLog {
    /// Start the writer thread for `target` (`-` = stdout; `None`: only
    /// through Python's logging) with `format`.
    pub fn start(target: Option<&str>, format: &str) -> std::io::Result<AccessLog> {
        let mut out = target.map(Output::open).transpose()?;
        let raw_format = format.to_string();
        let format = Format::parse(format);
        let (tx, rx) = mpsc::channel::<Message>();
        let mut dropped = crate::log::Dropped::new();
        std::thread::Builder::new()
            .name("rgunicorn-access-log".into())
            .spawn(move || {
                for msg in rx {
                    match msg {
                        Message::Record(r) => {
                            let now = crate::log::strftime(TIME_FORMAT);
                            if ROUTED.load(Ordering::Acquire) {
                                if let Some(route) = ROUTE.get() {
                                    if route(&raw_format, atoms(&r, &now)) {
                                        continue;
                                    }
                                }
                            }
                            if let Some(out) = out.as_mut() {
                                let mut line = format.render(&r, &now);
                                line.push('\n');
                                out.write(line.as_bytes(), &mut dropped);
                            }
                        }
                        Message::Reopen => {
                            if let Some(out) = out.as_mut() {
                                out.reopen();
                            }
                        }
                        Message::Flush(done) => {
                            let _ = done.send(());
                        }
                    }
                }
            })?;
        Ok(AccessLog { tx })
    }

    pub fn log(&self, record: Record) {
        let _ = self.tx.send(Message::Record(Box::new(record)));
    }

    /// Wait (at most `within`) until the records logged so far are
    /// written: a worker that exits must not lose its last lines.
    pub fn flush(&self, within: Duration) {
        let (done, wait) = mpsc::channel();
        if self.tx.send(Message::Flush(done)).is_ok() {
            let _ = wait.recv_timeout(within);
        }
    }

    /// USR1: reopen the file (after logrotate moved it).
    pub fn reopen(&self) {
        let _ = self.tx.send(Message::Reopen);
    }
}

impl AccessLog {
    /// Wrap `body` so that `record` is logged once the body is done (ended
    /// or dropped, so an aborted response is logged too), with the bytes
    /// sent and the time since `started`.
    pub fn log_when_done<B>(
        &self,
        body: B,
        mut record: Record,
        started: std::time::Instant,
    ) -> crate::app::OnDone<B> {
        let log = self.clone();
        crate::app::OnDone::new(body, move |sent| {
            record.sent = Some(sent);
            record.request_time = started.elapsed();
            log.log(record);
        })
    }
}

/// Apache's common log time, as gunicorn's `now()`.
const TIME_FORMAT: &str = "[%d/%b/%Y:%H:%M:%S %z]";

enum Output {
    Stdout,
    File { path: String, file: std::fs::File },
}

impl Output {
    fn open(target: &str) -> std::io::Result<Output> {
        if target == "-" {
            return Ok(Output::Stdout);
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(target)?;
        Ok(Output::File {
            path: target.to_string(),
            file,
        })
    }

    /// Write one line; lines a write drops are counted, and the count goes
    /// to the error log once a write works again.
    fn write(&mut self, line: &[u8], dropped: &mut crate::log::Dropped) {
        let mut stdout;
        let target: &mut dyn Write = match self {
            Output::Stdout => {
                stdout = std::io::stdout();
                &mut stdout
            }
            Output::File { file, .. } => file,
        };
        // The count goes to the error log, not among the access lines.
        dropped.write(target, line, |n| {
            crate::log::access_lines_dropped(n);
            String::new()
        });
    }

    fn reopen(&mut self) {
        if let Output::File { path, file } = self {
            if let Ok(f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&*path)
            {
                *file = f;
            }
        }
    }
}

/// A parsed `access_log_format`.
#[derive(Debug, PartialEq)]
pub struct Format {
    parts: Vec<Part>,
}

#[derive(Debug, PartialEq)]
enum Part {
    Text(String),
    /// `%(key)<conversion>`.
    Atom {
        key: String,
        numeric: bool,
    },
}

/// An atom's value: gunicorn's atoms are strings, ints or None.
/// An atom's value, as gunicorn's atoms dict holds it.
pub enum Value {
    Str(String),
    Int(u128),
    None,
}

/// The keys of gunicorn's `Logger.atoms` that do not name a header.
const ATOM_KEYS: &[&str] = &[
    "h", "l", "u", "t", "r", "s", "m", "U", "q", "H", "b", "B", "f", "a", "T", "D", "M", "L", "p",
];

/// gunicorn's atoms for `r` (`Logger.atoms`): the letters, `{name}i` and
/// `{name}o` for each header, and the environ's `{name}e`.
pub fn atoms(r: &Record, now: &str) -> Vec<(String, Value)> {
    let mut out: Vec<(String, Value)> = ATOM_KEYS
        .iter()
        .map(|k| (k.to_string(), atom(r, k, now)))
        .collect();
    for (list, suffix) in [(&r.request_headers, "i"), (&r.response_headers, "o")] {
        for (name, _) in list.iter() {
            let key = format!("{{{name}}}{suffix}");
            let value = atom(r, &key, now);
            out.push((key, value));
        }
    }
    for var in [
        "request_method",
        "raw_uri",
        "path_info",
        "query_string",
        "server_protocol",
        "remote_addr",
    ] {
        let key = format!("{{{var}}}e");
        let value = atom(r, &key, now);
        out.push((key, value));
    }
    out
}

impl Format {
    /// Python's `%` with a mapping: `%(key)s`, `%(key)d`, `%%`; flags,
    /// width and precision are skipped.
    pub fn parse(format: &str) -> Format {
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut rest = format;
        while let Some(i) = rest.find('%') {
            text.push_str(&rest[..i]);
            rest = &rest[i + 1..];
            if let Some(r) = rest.strip_prefix('%') {
                text.push('%');
                rest = r;
                continue;
            }
            let Some(r) = rest.strip_prefix('(') else {
                text.push('%');
                continue;
            };
            let Some(close) = r.find(')') else {
                text.push_str("%(");
                rest = r;
                continue;
            };
            let key = r[..close].to_string();
            let after = &r[close + 1..];
            let spec_len = after
                .find(|c: char| !"-#0 +.123456789".contains(c))
                .unwrap_or(after.len());
            let conv = after[spec_len..].chars().next().unwrap_or('s');
            rest = &after[(spec_len + conv.len_utf8()).min(after.len())..];
            if !text.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut text)));
            }
            parts.push(Part::Atom {
                key,
                numeric: matches!(conv, 'd' | 'i' | 'u'),
            });
        }
        text.push_str(rest);
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        Format { parts }
    }

    /// The line for `r`, with `now` as the `t` atom.
    pub fn render(&self, r: &Record, now: &str) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Atom { key, numeric } => match atom(r, key, now) {
                    // gunicorn's SafeAtoms escapes quotes in string values.
                    Value::Str(s) => out.push_str(&s.replace('"', "\\\"")),
                    Value::Int(n) => out.push_str(&n.to_string()),
                    Value::None if *numeric => out.push('-'),
                    Value::None => out.push_str("None"),
                },
            }
        }
        out
    }
}

/// One atom of gunicorn's `Logger.atoms`, or `-` when there is none.
fn atom(r: &Record, key: &str, now: &str) -> Value {
    let t = r.request_time;
    let header = |list: &[(String, String)], name: &str| {
        list.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let dash = |v: Option<String>| Value::Str(v.unwrap_or_else(|| "-".into()));
    // Split as gunicorn splits the target (at ASCII bytes: still UTF-8).
    let split = crate::http::gate::split_target(r.raw_uri.as_bytes());
    let text = |b| std::str::from_utf8(b).unwrap_or_default();
    let (path, query) = (text(split.path), text(split.query));
    if key.starts_with('{') {
        let lower = key.to_ascii_lowercase();
        let inner = &lower[1..lower.rfind('}').unwrap_or(lower.len())];
        return match &lower[lower.rfind('}').map(|i| i + 1).unwrap_or(0)..] {
            "i" => dash(header(&r.request_headers, inner)),
            "o" => dash(header(&r.response_headers, inner)),
            "e" => dash(environ(r, inner, path, query)),
            _ => Value::Str("-".into()),
        };
    }
    match key {
        "h" => Value::Str(r.remote_addr.clone()),
        "l" => Value::Str("-".into()),
        "u" => dash(header(&r.request_headers, "authorization").and_then(|a| basic_user(&a))),
        "t" => Value::Str(now.to_string()),
        "r" => Value::Str(format!("{} {} {}", r.method, r.raw_uri, r.protocol)),
        "s" => Value::Int(r.status as u128),
        "m" => Value::Str(r.method.clone()),
        "U" => Value::Str(crate::http::text::percent_decode_latin1(path)),
        "q" => Value::Str(query.to_string()),
        "H" => Value::Str(r.protocol.to_string()),
        "b" => Value::Str(r.sent.map(|n| n.to_string()).unwrap_or_else(|| "-".into())),
        "B" => r.sent.map(|n| Value::Int(n as u128)).unwrap_or(Value::None),
        "f" => dash(header(&r.request_headers, "referer")),
        "a" => dash(header(&r.request_headers, "user-agent")),
        "T" => Value::Int(t.as_secs() as u128),
        "D" => Value::Int(t.as_micros()),
        "M" => Value::Int(t.as_millis()),
        "L" => Value::Str(format!("{}.{:06}", t.as_secs(), t.subsec_micros())),
        "p" => Value::Str(format!("<{}>", r.pid)),
        _ => Value::Str("-".into()),
    }
}

/// `{var}e`: the minimal WSGI-style environ that gunicorn 27's `asgi`
/// worker builds (names lowercased, as gunicorn's atoms are).
fn environ(r: &Record, name: &str, path: &str, query: &str) -> Option<String> {
    match name {
        "request_method" => Some(r.method.clone()),
        "raw_uri" => Some(r.raw_uri.clone()),
        "path_info" => Some(crate::http::text::percent_decode_latin1(path)),
        "query_string" => Some(query.to_string()),
        "server_protocol" => Some(r.protocol.to_string()),
        "remote_addr" => Some(r.remote_addr.clone()),
        _ => {
            let header = name.strip_prefix("http_")?.replace('_', "-");
            let values: Vec<&str> = r
                .request_headers
                .iter()
                .filter(|(k, _)| *k == header)
                .map(|(_, v)| v.as_str())
                .collect();
            (!values.is_empty()).then(|| values.join(","))
        }
    }
}

/// The user of `Authorization: Basic ...` (gunicorn's `_get_user`).
fn basic_user(auth: &str) -> Option<String> {
    let (scheme, encoded) = auth.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64_decode(encoded.trim())?;
    let text = String::from_utf8(decoded).ok()?;
    Some(text.split_once(':')?.0.to_string())
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let bytes: Vec<u8> = s.bytes().filter(|&c| c != b'=').collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= value(c)? << (18 - 6 * i);
        }
        let n = match chunk.len() {
            4 => 3,
            3 => 2,
            2 => 1,
            _ => return None,
        };
        out.extend_from_slice(&acc.to_be_bytes()[1..1 + n]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        Record {
            remote_addr: "127.0.0.1".into(),
            method: "GET".into(),
            raw_uri: "/a%20b?x=1".into(),
            protocol: "HTTP/1.1".into(),
            status: 200,
            request_headers: vec![
                ("host".into(), "h".into()),
                ("user-agent".into(), "curl \"7\"".into()),
                ("authorization".into(), "Basic dXNlcjpwYXNz".into()),
                ("x-multi".into(), "1".into()),
                ("x-multi".into(), "2".into()),
            ],
            response_headers: vec![("content-type".into(), "text/plain".into())],
            sent: Some(12),
            request_time: Duration::from_micros(1_234_567),
            pid: 42,
        }
    }

    #[test]
    fn every_atom() {
        let f = Format::parse(
            "%(h)s %(l)s %(u)s %(t)s \"%(r)s\" %(s)s %(m)s %(U)s %(q)s %(H)s %(b)s %(B)s %(f)s \"%(a)s\" %(T)s %(D)s %(M)s %(L)s %(p)s %({Host}i)s %({content-type}o)s %({path_info}e)s %({http_x_multi}e)s %({nope}i)s %(zz)s 100%%",
        );
        let line = f.render(&record(), "[25/Nov/2026:10:00:00 +0000]");
        assert_eq!(
            line,
            "127.0.0.1 - user [25/Nov/2026:10:00:00 +0000] \"GET /a%20b?x=1 HTTP/1.1\" 200 GET /a b x=1 HTTP/1.1 12 12 - \"curl \\\"7\\\"\" 1 1234567 1234 1.234567 <42> h text/plain /a b 1,2 - - 100%"
        );
    }

    #[test]
    fn nothing_sent_and_numeric_conversions() {
        let mut r = record();
        r.sent = None;
        let f = Format::parse("%(b)s %(B)s %(B)d %(s)d %(D)05d");
        assert_eq!(f.render(&r, ""), "- None - 200 1234567");
    }

    #[test]
    fn default_format_of_gunicorn() {
        let f = Format::parse("%(h)s %(l)s %(u)s %(t)s \"%(r)s\" %(s)s %(b)s \"%(f)s\" \"%(a)s\"");
        assert_eq!(
            f.render(&record(), "[t]"),
            "127.0.0.1 - user [t] \"GET /a%20b?x=1 HTTP/1.1\" 200 12 \"-\" \"curl \\\"7\\\"\""
        );
    }

    #[test]
    fn the_target_is_split_as_gunicorn_splits_it() {
        let mut r = record();
        r.raw_uri = "http://h/a%20b?x=1#f".into();
        r.protocol = "HTTP/1.2".into();
        let f = Format::parse("%(r)s|%(U)s|%(q)s|%(H)s");
        assert_eq!(
            f.render(&r, ""),
            "GET http://h/a%20b?x=1#f HTTP/1.2|/a b|x=1|HTTP/1.2"
        );
        r.raw_uri = "http://h".into();
        assert_eq!(f.render(&r, ""), "GET http://h HTTP/1.2|||HTTP/1.2");
    }

    #[test]
    fn decoding() {
        assert_eq!(base64_decode("dXNlcjpwYXNz").unwrap(), b"user:pass");
        assert_eq!(basic_user("Bearer x"), None);
    }
}
