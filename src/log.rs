//! The error log in gunicorn's line format,
//! `[2026-11-25 11:46:56 +0000] [16491] [INFO] message`, to stderr (`-`) or
//! a file, filtered by `loglevel`, reopened on USR1. Writes are synchronous
//! (one `write` per line): the master is single-threaded and forks, so no
//! background writer thread may own the log (see design notes).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::Mutex;

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
}

static SINK: Mutex<Sink> = Mutex::new(Sink {
    level: Level::Info,
    path: None,
    file: None,
});

fn open(path: &str) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Configure from `errorlog` and `loglevel` (at start and on HUP).
pub fn configure(errorlog: Option<&str>, level: &str) -> std::io::Result<()> {
    let path = errorlog.filter(|p| *p != "-").map(str::to_string);
    let file = path.as_deref().map(open).transpose()?;
    let mut sink = SINK.lock().unwrap_or_else(|e| e.into_inner());
    sink.level = Level::from_name(level);
    sink.path = path;
    sink.file = file;
    Ok(())
}

/// Reopen the log file (USR1, after logrotate moved it).
pub fn reopen() {
    let mut sink = SINK.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(path) = sink.path.clone() {
        if let Ok(f) = open(&path) {
            sink.file = Some(f);
        }
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
    let counted = match level {
        Level::Critical => Some(0),
        Level::Error => Some(1),
        Level::Warning => Some(2),
        _ => None,
    };
    if let Some(i) = counted {
        crate::metrics::LOG_COUNTS[i].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    write(level, msg)
}

/// An exception with its traceback: counted as `gunicorn.log.exception`
/// (gunicorn's `logger.exception`), not as an error.
pub fn exception(level: Level, msg: &str) {
    crate::metrics::LOG_COUNTS[3].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    write(level, msg)
}

fn write(level: Level, msg: &str) {
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
    match sink.file.as_mut() {
        Some(f) => {
            let _ = f.write_all(line.as_bytes());
        }
        None => {
            let _ = std::io::stderr().write_all(line.as_bytes());
        }
    }
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

    #[test]
    fn timestamp_shape() {
        let t = timestamp();
        // [2026-11-25 11:46:56 +0000]
        assert_eq!(t.len(), 27, "{t}");
        assert!(t.starts_with('[') && t.ends_with(']'));
    }
}
