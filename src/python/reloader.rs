//! `reload`: replace the workers when a file they imported changes.
//!
//! ```text
//! worker (after its app is loaded) --"path\0"...--> report pipe --> reloader process
//!   (sys.modules' files, and the files of a failed import)       (notify: inotify or polling)
//! reloader --"path\0"... "\0" (one burst)--> change pipe --> master loop
//!   -> "Worker reloading: <path> modified" -> every worker replaced, replacement first
//! ```
//!
//! The watcher runs in a process of its own, forked by the master before
//! the first workers: the `notify` crate watches from threads, and the
//! master forks, so a thread there could hold a lock (the allocator's, the
//! log's, the environment's) at the moment of a fork; the master stays one
//! thread. gunicorn watches from each worker instead; one watcher for all
//! the generations of workers also sees a change made while a replacement
//! boots, which a watcher started by that replacement would miss.
//!
//! A replacement whose import fails serves gunicorn's fail app (500, the
//! traceback as text/plain), and the failing files are watched, so the
//! save that fixes them reloads again.

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use ::notify::{RecursiveMode, Watcher};
use nix::unistd::Pid;
use pyo3::prelude::*;

use crate::app::BoxApp;
use crate::log;
use crate::settings::ReloadEngine;
use crate::sys::process::{self, ChildKind};

/// A burst of saves is one reload: the reload starts once no watched file
/// has changed for this long...
const QUIET: Duration = Duration::from_millis(250);
/// ...or this long after the first change of the burst, whichever is first.
const MOST_DELAY: Duration = Duration::from_secs(2);
/// gunicorn's polling reloader stats every file once a second; glob
/// patterns of `reload_extra_files` are expanded again as often.
const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// How many changed files one reload names in the log.
const LOGGED_FILES: usize = 10;
/// A single write(2) of at most this many bytes to a pipe is not
/// interleaved with another writer's (POSIX PIPE_BUF on Linux): workers
/// write complete records in chunks of this size, so their reports never
/// mix within a record.
const PIPE_BUF: usize = 4096;

/// `reload` is on for the workers forked from now on (set by the master,
/// inherited by fork).
static ENABLED: AtomicBool = AtomicBool::new(false);

pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// In a worker: why its app failed to import, and the files involved.
static FAILURE: Mutex<Option<String>> = Mutex::new(None);
static FAILED_FILES: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Why the reloader process could not start.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ReloaderError(pub String);

impl From<String> for ReloaderError {
    fn from(message: String) -> Self {
        ReloaderError(message)
    }
}

impl From<&str> for ReloaderError {
    fn from(message: &str) -> Self {
        ReloaderError(message.to_string())
    }
}

/// The master's side of a running reloader process.
pub struct Reloader {
    pub pid: Pid,
    /// Write end of the report pipe: each worker inherits it.
    report: OwnedFd,
    /// Read end of the change pipe (non-blocking), polled by the loop.
    changes: OwnedFd,
    /// Bytes of a burst not complete yet.
    pending: Vec<u8>,
}

impl Reloader {
    /// Fork the reloader. `close_in_child` are the master's fds it must
    /// not keep (listeners, the metrics and control sockets).
    pub fn start(
        py: Python<'_>,
        settings: &crate::settings::Reload,
        title: &str,
        close_in_child: &[RawFd],
    ) -> Result<Reloader, ReloaderError> {
        let engine = settings.engine;
        let extra = settings.extra_files.clone();
        let cloexec = nix::fcntl::OFlag::O_CLOEXEC;
        let (report_rx, report_tx) =
            nix::unistd::pipe2(cloexec).map_err(|e| format!("reloader: pipe: {e}"))?;
        let (changes_rx, changes_tx) = nix::unistd::pipe2(cloexec | nix::fcntl::OFlag::O_NONBLOCK)
            .map_err(|e| format!("reloader: pipe: {e}"))?;
        // The writer side blocks: a burst is never dropped half-way.
        set_blocking(&changes_tx);
        let mut close: Vec<RawFd> = close_in_child.to_vec();
        close.extend([report_tx.as_raw_fd(), changes_rx.as_raw_fd()]);
        let master = std::process::id() as i32;
        let title = title.to_string();
        ENABLED.store(true, Ordering::Relaxed);
        let pid = process::fork_python(py, ChildKind::Reloader, move || {
            process::close_master_fds(&close);
            process::die_with_parent(master);
            process::set_title(&title);
            py.detach(|| run(report_rx, changes_tx, engine, extra))
        })
        .map_err(|e| format!("reloader: fork failed: {e}"))?;
        Ok(Reloader {
            pid,
            report: report_tx,
            changes: changes_rx,
            pending: Vec::new(),
        })
    }

    /// The fd a worker reports its files to.
    pub fn report_fd(&self) -> RawFd {
        self.report.as_raw_fd()
    }

    /// The fd the loop polls.
    pub fn poll_fd(&self) -> BorrowedFd<'_> {
        self.changes.as_fd()
    }

    /// The files of every burst complete so far (in the order they
    /// changed, each once).
    pub fn changed_files(&mut self) -> Vec<String> {
        let mut buf = [0u8; 8192];
        loop {
            match nix::unistd::read(&self.changes, &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
            }
        }
        let mut files: Vec<String> = Vec::new();
        // A burst ends with an empty record; the rest waits for its end.
        while let Some(end) = self.pending.windows(2).position(|w| w == b"\0\0") {
            let burst: Vec<u8> = self.pending.drain(..end + 2).collect();
            for record in burst.split(|&b| b == 0).filter(|r| !r.is_empty()) {
                let path = String::from_utf8_lossy(record).into_owned();
                if !files.contains(&path) {
                    files.push(path);
                }
            }
        }
        files
    }

    /// TERM to the reloader (the loop reaps it as any other child).
    pub fn stop(self) {
        let _ = process::kill(self.pid, nix::sys::signal::Signal::SIGTERM);
    }
}

/// The log lines of one reload.
pub fn log_changes(files: &[String]) {
    for f in files.iter().take(LOGGED_FILES) {
        log::info(&format!("Worker reloading: {f} modified"));
    }
    if files.len() > LOGGED_FILES {
        log::info(&format!(
            "Worker reloading: {} more files modified",
            files.len() - LOGGED_FILES
        ));
    }
}

/// `reload` turned off (on HUP): workers forked from now on report nothing.
pub fn disable() {
    ENABLED.store(false, Ordering::Relaxed);
}

fn set_blocking(fd: &OwnedFd) {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    if let Ok(flags) = fcntl(fd, FcntlArg::F_GETFL) {
        let flags = OFlag::from_bits_truncate(flags) - OFlag::O_NONBLOCK;
        let _ = fcntl(fd, FcntlArg::F_SETFL(flags));
    }
}

/// What the reloader's loop waits for.
enum Msg {
    /// Files a worker reported, as it saw them.
    Files(Vec<(PathBuf, Stamp)>),
    Event(::notify::Result<::notify::Event>),
}

/// A file as last seen: modification time (s, ns), size, inode (a save
/// by rename changes the inode even within one mtime tick); None: missing.
type Stamp = Option<(i64, i64, u64, u64)>;

fn stamp(path: &Path) -> Stamp {
    std::fs::metadata(path)
        .ok()
        .map(|m| (m.mtime(), m.mtime_nsec(), m.size(), m.ino()))
}

/// A report record: `mtime:mtime_ns:size:inode:path` as the worker saw
/// the file (`-` for a file it could not stat), so that a save between
/// the worker's look and the watch is not missed.
fn record(path: &str) -> String {
    match stamp(Path::new(path)) {
        Some((s, ns, size, ino)) => format!("{s}:{ns}:{size}:{ino}:{path}"),
        None => format!("-:-:-:-:{path}"),
    }
}

fn parse_record(record: &str) -> Option<(PathBuf, Stamp)> {
    let mut parts = record.splitn(5, ':');
    let (s, ns, size, ino, path) = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    );
    let stamp = match (s.parse(), ns.parse(), size.parse(), ino.parse()) {
        (Ok(s), Ok(ns), Ok(size), Ok(ino)) => Some((s, ns, size, ino)),
        _ => None,
    };
    Some((PathBuf::from(path), stamp))
}

/// The reloader process: watch, debounce, tell the master.
fn run(reports: OwnedFd, changes: OwnedFd, engine: ReloadEngine, extra: Vec<String>) -> i32 {
    let (tx, rx) = mpsc::channel::<Msg>();
    let reports_tx = tx.clone();
    if let Err(e) = std::thread::Builder::new()
        .name("rgunicorn-reports".into())
        .spawn(move || read_reports(reports, reports_tx))
    {
        log::error(&format!("reloader: can't start: {e}"));
        return 1;
    }
    let handler = |tx: mpsc::Sender<Msg>| {
        move |event| {
            let _ = tx.send(Msg::Event(event));
        }
    };
    let poll_config = ::notify::Config::default().with_poll_interval(POLL_INTERVAL);
    let polling = |tx| {
        ::notify::PollWatcher::new(handler(tx), poll_config)
            .map(|w| (Box::new(w) as Box<dyn Watcher>, true))
    };
    let watcher = match engine {
        ReloadEngine::Poll => polling(tx),
        ReloadEngine::Inotify | ReloadEngine::Auto => {
            match ::notify::INotifyWatcher::new(handler(tx.clone()), ::notify::Config::default()) {
                Ok(w) => Ok((Box::new(w) as Box<dyn Watcher>, false)),
                Err(e) if engine == ReloadEngine::Auto => {
                    log::warning(&format!(
                        "reloader: inotify unavailable ({e}); polling every {} s",
                        POLL_INTERVAL.as_secs()
                    ));
                    polling(tx)
                }
                Err(e) => Err(e),
            }
        }
    };
    let (mut watcher, poll) = match watcher {
        Ok(w) => w,
        Err(e) => {
            log::error(&format!("reloader: can't watch files: {e}"));
            return 1;
        }
    };
    let (patterns, plain): (Vec<String>, Vec<String>) =
        extra.into_iter().partition(|e| e.contains(['*', '?', '[']));
    let mut state = Watched {
        poll,
        ..Watched::default()
    };
    for f in plain {
        let f = absolute(Path::new(&f));
        let now = stamp(&f);
        state.add(&mut *watcher, f, now);
    }
    let mut next_glob = Instant::now();
    loop {
        if !patterns.is_empty() && Instant::now() >= next_glob {
            for f in expand(&patterns) {
                let now = stamp(&f);
                state.add(&mut *watcher, f, now);
            }
            next_glob = Instant::now() + POLL_INTERVAL;
        }
        let wait = state
            .burst_due()
            .unwrap_or_else(|| Instant::now() + POLL_INTERVAL)
            .saturating_duration_since(Instant::now());
        match rx.recv_timeout(wait) {
            Ok(Msg::Files(files)) => {
                for (f, seen) in files {
                    state.add(&mut *watcher, f, seen);
                }
            }
            Ok(Msg::Event(Ok(event))) => state.on_event(&event),
            Ok(Msg::Event(Err(e))) => log::debug(&format!("reloader: watch error: {e}")),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return 0,
        }
        if let Some(due) = state.burst_due() {
            if Instant::now() >= due {
                let mut out = Vec::new();
                for f in state.changed.drain(..) {
                    out.extend_from_slice(f.as_os_str().as_encoded_bytes());
                    out.push(0);
                }
                out.push(0);
                state.burst_started = None;
                // The master is gone when its end is closed.
                if crate::sys::fd::write_all(changes.as_raw_fd(), &out).is_err() {
                    return 0;
                }
            }
        }
    }
}

/// The files watched and the burst being gathered.
#[derive(Default)]
struct Watched {
    poll: bool,
    files: HashMap<PathBuf, Stamp>,
    /// A watched directory (inotify) or file (polling) -> the files to
    /// look at when an event names it or something in it.
    by_dir: HashMap<PathBuf, Vec<PathBuf>>,
    watched: HashSet<PathBuf>,
    changed: Vec<PathBuf>,
    burst_started: Option<Instant>,
    last_change: Option<Instant>,
}

impl Watched {
    /// When the burst being gathered is due to be sent.
    fn burst_due(&self) -> Option<Instant> {
        let first = self.burst_started?;
        let last = self.last_change.unwrap_or(first);
        Some((last + QUIET).min(first + MOST_DELAY))
    }
}

impl Watched {
    /// Watch `file`, last seen as `seen`: a file that changed since
    /// (before its watch existed) is a change now.
    fn add(&mut self, watcher: &mut dyn Watcher, file: PathBuf, seen: Stamp) {
        if self.files.contains_key(&file) {
            return;
        }
        self.files.insert(file.clone(), seen);
        // inotify watches directories (an editor's save by rename replaces
        // the file's inode, and a watch on it would end there); a symlink
        // is also watched where its target lives, as gunicorn does.
        let mut targets = Vec::new();
        if self.poll {
            targets.push(file.clone());
        } else {
            if let Some(dir) = file.parent() {
                targets.push(dir.to_path_buf());
            }
            if std::fs::symlink_metadata(&file).is_ok_and(|m| m.file_type().is_symlink()) {
                if let Some(dir) = std::fs::canonicalize(&file)
                    .ok()
                    .and_then(|t| t.parent().map(Path::to_path_buf))
                {
                    targets.push(dir);
                }
            }
        }
        for target in targets {
            self.by_dir
                .entry(target.clone())
                .or_default()
                .push(file.clone());
            if self.watched.insert(target.clone()) {
                if let Err(e) = watcher.watch(&target, RecursiveMode::NonRecursive) {
                    log::debug(&format!("reloader: can't watch {}: {e}", target.display()));
                }
            }
        }
        self.recheck(file);
    }

    /// Compare `file` with how it was last seen; a difference is a change
    /// of the burst being gathered.
    fn recheck(&mut self, file: PathBuf) {
        let now = stamp(&file);
        let Some(seen) = self.files.get_mut(&file) else {
            return;
        };
        if *seen != now {
            *seen = now;
            if !self.changed.contains(&file) {
                self.changed.push(file);
            }
            let t = Instant::now();
            self.burst_started.get_or_insert(t);
            self.last_change = Some(t);
        }
    }

    fn on_event(&mut self, event: &::notify::Event) {
        // Reading a file changes nothing.
        if matches!(event.kind, ::notify::EventKind::Access(_)) {
            return;
        }
        let mut candidates: Vec<PathBuf> = Vec::new();
        if event.paths.is_empty() || event.need_rescan() {
            candidates.extend(self.files.keys().cloned());
        }
        for p in &event.paths {
            for key in [Some(p.as_path()), p.parent()].into_iter().flatten() {
                if let Some(files) = self.by_dir.get(key) {
                    candidates.extend(files.iter().cloned());
                }
            }
        }
        for file in candidates {
            self.recheck(file);
        }
    }
}

/// The report pipe's records, until every writer is gone.
fn read_reports(fd: OwnedFd, tx: mpsc::Sender<Msg>) {
    let mut file = std::fs::File::from(fd);
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = match std::io::Read::read(&mut file, &mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        pending.extend_from_slice(&buf[..n]);
        let Some(last) = pending.iter().rposition(|&b| b == 0) else {
            continue;
        };
        let records: Vec<u8> = pending.drain(..=last).collect();
        let files = records
            .split(|&b| b == 0)
            .filter_map(|r| parse_record(&String::from_utf8_lossy(r)))
            .collect();
        if tx.send(Msg::Files(files)).is_err() {
            return;
        }
    }
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// `reload_extra_files` patterns, expanded as gunicorn does (Python's
/// `glob.glob(pattern, recursive=True)`, so `*` skips dotfiles as there).
fn expand(patterns: &[String]) -> Vec<PathBuf> {
    Python::attach(|py| {
        let mut out = Vec::new();
        let Ok(glob) = py.import("glob") else {
            return out;
        };
        for p in patterns {
            let kwargs = pyo3::types::PyDict::new(py);
            let _ = kwargs.set_item("recursive", true);
            if let Ok(found) = glob
                .call_method("glob", (p,), Some(&kwargs))
                .and_then(|l| l.extract::<Vec<String>>())
            {
                out.extend(found.iter().map(|f| absolute(Path::new(f))));
            }
        }
        out
    })
}

/// In a worker, once its app is loaded (or failed to load): send the
/// master's reloader the files of every module imported (gunicorn's
/// reloader watches `sys.modules`, `.pyc` named as its `.py`), and those
/// of a failed import.
pub fn report_modules(fd: RawFd) {
    // In a gevent worker, Python runs on the hub only.
    crate::python::gevent::run_python(move |py| report_files(py, fd));
}

fn report_files(py: Python<'_>, fd: RawFd) {
    let mut files: Vec<String> = module_files(py).unwrap_or_default();
    if let Ok(failed) = FAILED_FILES.lock() {
        files.extend(failed.iter().cloned());
    }
    let mut chunk: Vec<u8> = Vec::with_capacity(PIPE_BUF);
    for f in files {
        let record = record(&f);
        let record = record.as_bytes();
        if record.is_empty() || record.contains(&0) || record.len() + 1 > PIPE_BUF {
            continue;
        }
        if chunk.len() + record.len() + 1 > PIPE_BUF {
            if crate::sys::fd::write_all(fd, &chunk).is_err() {
                return;
            }
            chunk.clear();
        }
        chunk.extend_from_slice(record);
        chunk.push(0);
    }
    if !chunk.is_empty() {
        let _ = crate::sys::fd::write_all(fd, &chunk);
    }
}

fn module_files(py: Python<'_>) -> PyResult<Vec<String>> {
    let modules = py.import("sys")?.getattr("modules")?;
    // A copy: an import on another thread may change sys.modules.
    let values = py
        .import("builtins")?
        .getattr("list")?
        .call1((modules.call_method0("values")?,))?;
    let mut out = Vec::new();
    for m in values.try_iter()? {
        let Ok(m) = m else { continue };
        let Ok(file) = m.getattr("__file__").and_then(|f| f.extract::<String>()) else {
            continue;
        };
        if file.is_empty() {
            continue;
        }
        let file = match file.strip_suffix(".pyc").or(file.strip_suffix(".pyo")) {
            Some(stem) => format!("{stem}.py"),
            None => file,
        };
        out.push(absolute(Path::new(&file)).to_string_lossy().into_owned());
    }
    Ok(out)
}

/// With `reload` on: the files an exception raised while importing the
/// app came from (a SyntaxError's file, every file of its traceback), to
/// be watched although no module of theirs is left in `sys.modules`.
pub fn note_failed_files(py: Python<'_>, err: &PyErr) {
    if !enabled() {
        return;
    }
    let mut files = Vec::new();
    if err.is_instance_of::<pyo3::exceptions::PySyntaxError>(py) {
        if let Ok(f) = err
            .value(py)
            .getattr("filename")
            .and_then(|f| f.extract::<String>())
        {
            files.push(f);
        }
    }
    let mut tb = err.traceback(py).map(|t| t.into_any());
    while let Some(t) = tb.filter(|t| !t.is_none()) {
        if let Ok(f) = t
            .getattr("tb_frame")
            .and_then(|f| f.getattr("f_code"))
            .and_then(|c| c.getattr("co_filename"))
            .and_then(|f| f.extract::<String>())
        {
            files.push(f);
        }
        tb = t.getattr("tb_next").ok();
    }
    if let Ok(mut failed) = FAILED_FILES.lock() {
        failed.extend(
            files
                .into_iter()
                .filter(|f| Path::new(f).is_file())
                .map(|f| absolute(Path::new(&f)).to_string_lossy().into_owned()),
        );
    }
}

/// With `reload` on, in a worker: the app could not be imported, for
/// this reason (the traceback, or gunicorn's AppImportError message).
pub fn note_import_failure(message: &str) {
    if !enabled() {
        return;
    }
    if let Ok(mut failure) = FAILURE.lock() {
        *failure = Some(message.to_string());
    }
}

/// With `reload` on, in a worker: its app failed to import.
pub fn import_failed() -> bool {
    enabled() && FAILURE.lock().is_ok_and(|f| f.is_some())
}

/// The fail app when the worker's import failed during its boot (with
/// `reload` on): the interface does not import the app again.
pub fn fail_app_if_import_failed() -> Option<BoxApp> {
    let message = FAILURE.lock().ok().and_then(|f| f.clone())?;
    enabled().then(|| fail_app(message))
}

/// gunicorn's `util.make_fail_app`.
fn fail_app(message: String) -> BoxApp {
    let body = bytes::Bytes::from(message);
    tower::util::BoxCloneService::new(tower::service_fn(
        move |_req: http::Request<hyper::body::Incoming>| {
            let body = body.clone();
            async move {
                let len = body.len();
                let mut resp = http::Response::new(crate::app::full(body));
                *resp.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
                let headers = resp.headers_mut();
                headers.insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("text/plain"),
                );
                headers.insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(len));
                Ok::<_, std::convert::Infallible>(resp)
            }
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_keeps_a_path_with_colons_and_the_stamp() {
        let dir = std::env::temp_dir().join(format!("reloader-record-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("a:b.py");
        std::fs::write(&file, "x = 1\n").unwrap();
        let path = file.to_str().unwrap();
        let (parsed, seen) = parse_record(&record(path)).unwrap();
        assert_eq!(parsed, file);
        assert_eq!(seen, stamp(&file));
        assert!(seen.is_some());
        let missing = dir.join("gone.py");
        let (parsed, seen) = parse_record(&record(missing.to_str().unwrap())).unwrap();
        assert_eq!((parsed, seen), (missing, None));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
