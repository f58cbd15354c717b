//! The error log in gunicorn's line format,
//! `[2026-11-25 11:46:56 +0000] [16491] [INFO] message`, to stderr (`-`) or
//! a file, filtered by `loglevel`, reopened on USR1. Writes are synchronous
//! (one `write` per line): the master is single-threaded and forks, so no
//! background writer thread may own the log.
//!
//! When Python's logging has been given other handlers for
//! `gunicorn.error` (`logconfig_dict`, or code), rgunicorn's own lines go
//! through them: the Python side installs a [`Route`] here, so this module
//! depends on nothing above it. The access log has a synchronous sink here
//! too, for what Python code logs to `gunicorn.access` (the workers' own
//! access lines have their writer thread, in `observe`).

pub mod deps;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Debug = 10,
    Info = 20,
    Warning = 30,
    Error = 40,
    Critical = 50,
}

impl Level {
    /// gunicorn's `loglevel` names; an unknown name is `info`, silently.
    pub fn from_name(name: &str) -> Level {
        match name.to_ascii_lowercase().as_str() {
            "debug" => Level::Debug,
            "warning" | "warn" => Level::Warning,
            "error" => Level::Error,
            "critical" => Level::Critical,
            _ => Level::Info,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Warning => "WARNING",
            Level::Error => "ERROR",
            Level::Critical => "CRITICAL",
        }
    }
}

struct Sink {
    level: Level,
    /// None: stderr.
    path: Option<String>,
    file: Option<File>,
    /// Lines whose write failed (a full disk), not yet reported.
    dropped: Dropped,
}

static SINK: Mutex<Sink> = Mutex::new(Sink {
    level: Level::Info,
    path: None,
    file: None,
    dropped: Dropped::new(),
});

/// Lines a log could not write (a full disk, a closed stream): counted,
/// and the count reported once a write works again.
#[derive(Debug, Default)]
pub struct Dropped {
    lines: u64,
}

impl Dropped {
    pub const fn new() -> Dropped {
        Dropped { lines: 0 }
    }

    /// Write `line` (whole, with its newline) to `out`. A failed write is
    /// counted; while lines are counted, `notice(count)` is written first
    /// when the write can be tried again, and the count starts over once
    /// it is. Where the notice itself must not go to `out` (an access
    /// log), `notice` logs it elsewhere and returns an empty string.
    pub fn write(&mut self, out: &mut dyn Write, line: &[u8], notice: impl FnOnce(u64) -> String) {
        if self.lines > 0 {
            let text = notice(self.lines);
            if !text.is_empty() && out.write_all(text.as_bytes()).is_err() {
                self.lines += 1;
                return;
            }
            self.lines = 0;
        }
        if out.write_all(line).is_err() {
            self.lines += 1;
        }
    }

    /// Lines dropped and not yet reported.
    #[cfg(test)]
    pub fn count(&self) -> u64 {
        self.lines
    }
}

/// In a forked child: the lines the parent dropped are its to report.
pub fn forget_dropped() {
    for sink in [&SINK, &ACCESS_SINK] {
        sink.lock().unwrap_or_else(|e| e.into_inner()).dropped = Dropped::new();
    }
}

/// The error log's line about access log lines that were dropped.
pub fn access_lines_dropped(n: u64) {
    warning(&format!(
        "{n} access log line{} could not be written (disk full?) and {} dropped",
        if n == 1 { "" } else { "s" },
        if n == 1 { "was" } else { "were" },
    ));
}

/// The error log's own line about lines it dropped.
fn dropped_notice(n: u64) -> String {
    format!(
        "{} [{}] [WARNING] {n} log line{} could not be written (disk full?) and {} dropped\n",
        timestamp(),
        std::process::id(),
        if n == 1 { "" } else { "s" },
        if n == 1 { "was" } else { "were" },
    )
}

fn open(path: &str) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Configure from `errorlog` and `loglevel` (at start and on HUP); at
/// debug, what the dependencies report comes too ([`deps`]).
pub fn configure(errorlog: Option<&str>, level: &str) -> std::io::Result<()> {
    let path = errorlog.filter(|p| *p != "-").map(str::to_string);
    let file = path.as_deref().map(open).transpose()?;
    let level = Level::from_name(level);
    deps::install(level == Level::Debug);
    let mut sink = SINK.lock().unwrap_or_else(|e| e.into_inner());
    sink.level = level;
    sink.path = path;
    sink.file = file;
    Ok(())
}

/// Reopen the log files (USR1, after logrotate moved them), and those of
/// the Python side.
pub fn reopen() {
    for sink in [&SINK, &ACCESS_SINK] {
        let mut sink = sink.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(path) = sink.path.clone() {
            if let Ok(f) = open(&path) {
                sink.file = Some(f);
            }
        }
    }
    if let Some(reopen) = REOPEN.get() {
        reopen();
    }
}

/// Sends one of rgunicorn's own lines through Python's logging; `false`
/// when it could not (the line is then written here as usual).
pub type Route = fn(Level, &str) -> bool;

static ROUTE: OnceLock<Route> = OnceLock::new();
static ROUTED: AtomicBool = AtomicBool::new(false);
/// Recomputes whether lines are routed (after code may have changed the
/// handlers: a hook, the app's import).
static REFRESH: OnceLock<fn()> = OnceLock::new();
/// Reopens the Python side's files on USR1.
static REOPEN: OnceLock<fn()> = OnceLock::new();

/// Install the route, the refresh and the reopen of the Python side (once
/// per process image; inherited across fork).
pub fn set_route(route: Route, refresh: fn(), reopen: fn()) {
    let _ = ROUTE.set(route);
    let _ = REFRESH.set(refresh);
    let _ = REOPEN.set(reopen);
}

/// Whether lines go through the route from now on.
pub fn set_routed(on: bool) {
    ROUTED.store(on, Ordering::Release);
}

/// Look again at Python's handlers (no-op without a route installed).
pub fn refresh_routing() {
    if let Some(refresh) = REFRESH.get() {
        refresh();
    }
}

/// A line that Python's handler for `gunicorn.error` formatted: written
/// as is (the logger has filtered its level).
pub fn write_line(line: &str) {
    write_to(&SINK, line);
}

/// The sink for lines Python code logs to `gunicorn.access`: `accesslog`
/// (`-`: stdout), opened at start and on HUP.
static ACCESS_SINK: Mutex<Sink> = Mutex::new(Sink {
    level: Level::Debug,
    path: None,
    file: None,
    dropped: Dropped::new(),
});

/// Configure the access sink from `accesslog` (`None`: nothing is written).
pub fn configure_access(accesslog: Option<&str>) -> std::io::Result<()> {
    let path = accesslog.filter(|p| *p != "-").map(str::to_string);
    let file = path.as_deref().map(open).transpose()?;
    let mut sink = ACCESS_SINK.lock().unwrap_or_else(|e| e.into_inner());
    sink.path = path;
    sink.file = file;
    Ok(())
}

/// A line that Python's handler for `gunicorn.access` formatted.
pub fn write_access_line(line: &str) {
    write_to(&ACCESS_SINK, line);
}

/// `line` and a newline to the sink's file, or else to stderr (the error
/// sink) or stdout (the access sink).
fn write_to(sink: &Mutex<Sink>, line: &str) {
    let mut out = String::with_capacity(line.len() + 1);
    out.push_str(line);
    out.push('\n');
    let access = std::ptr::eq(sink, &ACCESS_SINK);
    let mut guard = sink.lock().unwrap_or_else(|e| e.into_inner());
    let sink = &mut *guard;
    let mut stdout;
    let mut stderr;
    let target: &mut dyn Write = match sink.file.as_mut() {
        Some(f) => f,
        None if access => {
            stdout = std::io::stdout();
            &mut stdout
        }
        None => {
            stderr = std::io::stderr();
            &mut stderr
        }
    };
    let mut reported = None;
    sink.dropped.write(target, out.as_bytes(), |n| {
        if access {
            // Not into the access log: its lines have a format of their own.
            reported = Some(n);
            String::new()
        } else {
            dropped_notice(n)
        }
    });
    drop(guard);
    if let Some(n) = reported {
        access_lines_dropped(n);
    }
}

/// `[%Y-%m-%d %H:%M:%S %z]` in local time, as gunicorn's datefmt.
pub fn timestamp() -> String {
    strftime("[%Y-%m-%d %H:%M:%S %z]")
}

/// Format the current local time with C's strftime.
pub fn strftime(format: &str) -> String {
    let fmt = std::ffi::CString::new(format).unwrap_or_default();
    let mut buf = [0u8; 128];
    // SAFETY: time(NULL) and localtime_r only write to the tm we own;
    // strftime writes at most buf.len() bytes into buf and returns the count.
    let n = unsafe {
        let now = libc::time(std::ptr::null_mut());
        let mut tm: libc::tm = std::mem::zeroed();
        libc::localtime_r(&now, &mut tm);
        libc::strftime(
            buf.as_mut_ptr() as *mut libc::c_char,
            buf.len(),
            fmt.as_ptr(),
            &tm,
        )
    };
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// Log a line; warnings and worse are counted for statsd's
/// `gunicorn.log.*` counters (whatever `loglevel` lets through, as gunicorn).
pub fn log(level: Level, msg: &str) {
    count(level);
    write(level, msg)
}

/// Log records by level since the process started (critical, error,
/// warning, exception), for gunicorn's `gunicorn.log.*` counters.
pub static COUNTS: [std::sync::atomic::AtomicU64; 4] = [
    std::sync::atomic::AtomicU64::new(0),
    std::sync::atomic::AtomicU64::new(0),
    std::sync::atomic::AtomicU64::new(0),
    std::sync::atomic::AtomicU64::new(0),
];

/// Count a line of `level` for statsd's `gunicorn.log.*` (warnings and
/// worse), as gunicorn's statsd logger counts its calls.
pub fn count(level: Level) {
    let counted = match level {
        Level::Critical => Some(0),
        Level::Error => Some(1),
        Level::Warning => Some(2),
        _ => None,
    };
    if let Some(i) = counted {
        COUNTS[i].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// An exception with its traceback: counted as `gunicorn.log.exception`
/// (gunicorn's `logger.exception`), not as an error.
pub fn exception(level: Level, msg: &str) {
    COUNTS[3].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    write(level, msg)
}

fn write(level: Level, msg: &str) {
    if ROUTED.load(Ordering::Acquire) {
        if let Some(route) = ROUTE.get() {
            if route(level, msg) {
                return;
            }
        }
    }
    let mut sink = SINK.lock().unwrap_or_else(|e| e.into_inner());
    if level < sink.level {
        return;
    }
    let line = format!(
        "{} [{}] [{}] {}\n",
        timestamp(),
        std::process::id(),
        level.label(),
        msg
    );
    let sink = &mut *sink;
    let mut stderr;
    let target: &mut dyn Write = match sink.file.as_mut() {
        Some(f) => f,
        None => {
            stderr = std::io::stderr();
            &mut stderr
        }
    };
    sink.dropped.write(target, line.as_bytes(), dropped_notice);
}

pub fn debug(msg: &str) {
    log(Level::Debug, msg)
}
pub fn info(msg: &str) {
    log(Level::Info, msg)
}
pub fn warning(msg: &str) {
    log(Level::Warning, msg)
}
pub fn error(msg: &str) {
    log(Level::Error, msg)
}
pub fn critical(msg: &str) {
    log(Level::Critical, msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_names_as_gunicorn() {
        assert_eq!(Level::from_name("DEBUG"), Level::Debug);
        assert_eq!(Level::from_name("warning"), Level::Warning);
        assert_eq!(Level::from_name("bogus"), Level::Info);
    }

    /// A sink whose writes fail while `full` is set, as on a full disk.
    struct Disk {
        full: bool,
        written: Vec<u8>,
    }

    impl Write for Disk {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.full {
                return Err(std::io::Error::from_raw_os_error(libc::ENOSPC));
            }
            self.written.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn dropped_lines_are_counted_and_reported_once_writing_works() {
        let mut disk = Disk {
            full: false,
            written: Vec::new(),
        };
        let mut dropped = Dropped::new();
        let notice = |n: u64| format!("dropped {n}\n");
        dropped.write(&mut disk, b"one\n", notice);
        disk.full = true;
        for line in [b"two\n", b"three\n".as_slice(), b"four\n"] {
            dropped.write(&mut disk, line, notice);
        }
        assert_eq!(dropped.count(), 3);
        // The notice fails too: one more dropped, nothing reported yet.
        dropped.write(&mut disk, b"five\n", notice);
        assert_eq!(dropped.count(), 4);
        disk.full = false;
        dropped.write(&mut disk, b"six\n", notice);
        dropped.write(&mut disk, b"seven\n", notice);
        assert_eq!(dropped.count(), 0);
        assert_eq!(
            String::from_utf8(disk.written).unwrap(),
            "one\ndropped 4\nsix\nseven\n"
        );
    }

    #[test]
    fn a_full_device_counts_every_line() {
        // /dev/full fails every write with ENOSPC, as a full disk does.
        let Ok(mut full) = OpenOptions::new().append(true).open("/dev/full") else {
            return;
        };
        let mut dropped = Dropped::new();
        for _ in 0..5 {
            dropped.write(&mut full, b"line\n", dropped_notice);
        }
        assert_eq!(dropped.count(), 5);
        let notice = dropped_notice(5);
        assert!(
            notice.contains(
                "[WARNING] 5 log lines could not be written (disk full?) and were dropped"
            ),
            "{notice}"
        );
    }

    #[test]
    fn timestamp_shape() {
        let t = timestamp();
        // [2026-11-25 11:46:56 +0000]
        assert_eq!(t.len(), 27, "{t}");
        assert!(t.starts_with('[') && t.ends_with(']'));
    }
}
