//! The Python objects handed to the user's hooks, shaped like gunicorn's
//! Arbiter (`server`), Worker (`worker`), Config (`cfg`, in `hooks/cfg.rs`),
//! Logger (`log`), WorkerTmp (`worker.tmp`), Application (`server.app`)
//! and listeners (`server.LISTENERS`); and the hook calls.
//!
//! `server`, `worker`, `cfg`, `log` and `server.app` take attributes of
//! the hooks' own (`server.my_thing = ...`, `vars(server)`). The attributes
//! rgunicorn keeps are properties: `vars()` shows only what hooks stored.
//!
//! The listeners' `.sock` are Python sockets on copies (dup) of the
//! master's listening fds: a hook may close its copy without touching what
//! the workers accept on. A worker lets go of its inherited copies when it
//! drains, and the master closes its own when it stops (gunicorn then
//! empties `LISTENERS` too), so that a stopping server refuses new
//! connections at once rather than queueing them.

use std::os::fd::{AsFd, AsRawFd, IntoRawFd, RawFd};
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use pyo3::exceptions::PyAttributeError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};
use pyo3::BoundObject;

use pyconf::Config;

use crate::log::{self, Level};
use crate::sys::scoreboard::{monotonic_ms, RetireAsk, Scoreboard};
use crate::sys::sock::Listener;

mod cfg;
mod statsd;

pub use cfg::PyCfg;

/// `server.log` / `worker.log`: gunicorn's logger methods, writing to the
/// error log in gunicorn's format (`msg % args`, as `logging` does).
#[pyclass(module = "rgunicorn", name = "Logger", dict)]
pub struct PyLogger {
    #[pyo3(get)]
    cfg: Py<PyCfg>,
    /// `increment()` and the other statsd methods, with `statsd_host`.
    statsd: Arc<statsd::StatsdLog>,
}

impl PyLogger {
    fn new(py: Python<'_>, cfg: &Config, view: Py<PyCfg>) -> PyLogger {
        PyLogger {
            cfg: view,
            statsd: Arc::new(statsd::StatsdLog::new(crate::settings::statsd_settings(
                py, cfg,
            ))),
        }
    }
}

/// gunicorn's `Logger.LOG_LEVELS`, unknown names as INFO.
fn level_number(name: &str) -> i64 {
    match name.to_lowercase().as_str() {
        "critical" => 50,
        "error" => 40,
        "warning" => 30,
        "debug" => 10,
        _ => 20,
    }
}

fn logger<'py>(py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyAny>> {
    py.import("logging")?.call_method1("getLogger", (name,))
}

/// `logging.getLogger("gunicorn.error").<method>(msg, *args, **kwargs)`
/// (or the custom `logger_class`'s method): gunicorn's Logger methods call
/// its error logger, so `extra=`, `%` arguments and handlers set by
/// `logconfig_dict` apply as they do there.
fn error_logger(
    py: Python<'_>,
    method: &str,
    msg: &Bound<'_, PyAny>,
    args: &Bound<'_, PyTuple>,
    kwargs: Option<&Bound<'_, PyDict>>,
) -> PyResult<()> {
    let mut all = vec![msg.clone()];
    all.extend(args.iter());
    crate::python::logging::error_logger(py)?
        .getattr(method)?
        .call(PyTuple::new(py, all)?, kwargs)?;
    Ok(())
}

/// One method per level, all with the signature of `logging.Logger`'s,
/// and the rest of the logger in the same (single) `#[pymethods]` block.
macro_rules! level_methods {
    ($($name:ident => $level:expr),* $(,)?) => {
        #[pymethods]
        impl PyLogger {
            $(
                #[pyo3(signature = (msg, *args, **kwargs))]
                fn $name(
                    &self,
                    py: Python<'_>,
                    msg: &Bound<'_, PyAny>,
                    args: &Bound<'_, PyTuple>,
                    kwargs: Option<&Bound<'_, PyDict>>,
                ) -> PyResult<()> {
                    // gunicorn's Statsd logger sends an `extra=` metric
                    // from info() and debug(), and logs only a message
                    // that is not empty.
                    if matches!(stringify!($name), "info" | "debug")
                        && !self.statsd.log_extra(msg, kwargs)?
                    {
                        return Ok(());
                    }
                    log::count($level);
                    error_logger(py, stringify!($name), msg, args, kwargs)
                }
            )*

            /// gunicorn's statsd methods (`increment`, `decrement`,
            /// `gauge`, `timer`, `histogram`), there with `statsd_host`.
            fn __getattr__(&self, py: Python<'_>, name: &str) -> PyResult<Py<PyAny>> {
                self.statsd.method(py, name)
            }

            /// `log.exception(msg)`: the message and the traceback being handled.
            #[pyo3(signature = (msg, *args, **kwargs))]
            fn exception(
                &self,
                py: Python<'_>,
                msg: &Bound<'_, PyAny>,
                args: &Bound<'_, PyTuple>,
                kwargs: Option<&Bound<'_, PyDict>>,
            ) -> PyResult<()> {
                crate::log::COUNTS[3].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                error_logger(py, "exception", msg, args, kwargs)
            }

            /// `lvl` is a number or, as in gunicorn, a level's name.
            #[pyo3(signature = (lvl, msg, *args, **kwargs))]
            fn log(
                &self,
                py: Python<'_>,
                lvl: &Bound<'_, PyAny>,
                msg: &Bound<'_, PyAny>,
                args: &Bound<'_, PyTuple>,
                kwargs: Option<&Bound<'_, PyDict>>,
            ) -> PyResult<()> {
                let lvl: i64 = match lvl.extract::<String>() {
                    Ok(name) => level_number(&name),
                    Err(_) => lvl.extract()?,
                };
                let level = match lvl {
                    ..=10 => Level::Debug,
                    11..=20 => Level::Info,
                    21..=30 => Level::Warning,
                    31..=40 => Level::Error,
                    _ => Level::Critical,
                };
                if !self.statsd.log_extra(msg, kwargs)? {
                    return Ok(());
                }
                log::count(level);
                let mut all = vec![lvl.into_pyobject(py)?.into_any(), msg.clone()];
                all.extend(args.iter());
                crate::python::logging::error_logger(py)?
                    .getattr("log")?
                    .call(PyTuple::new(py, all)?, kwargs)?;
                Ok(())
            }

            /// gunicorn's signature. rgunicorn's workers write the access
            /// log themselves, for every request: a line written here
            /// would be a second one, so nothing is written.
            #[pyo3(signature = (resp, req, environ, request_time))]
            fn access(
                &self,
                resp: &Bound<'_, PyAny>,
                req: &Bound<'_, PyAny>,
                environ: &Bound<'_, PyAny>,
                request_time: &Bound<'_, PyAny>,
            ) {
                let _ = (resp, req, environ, request_time);
            }

            fn reopen_files(&self) {
                log::reopen();
            }

            /// rgunicorn's log files are not Python handlers: nothing to mark.
            fn close_on_exec(&self) {}

            /// The date as the access log shows it.
            fn now(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
                Ok(py
                    .import("time")?
                    .call_method1("strftime", ("[%d/%b/%Y:%H:%M:%S %z]",))?
                    .unbind())
            }

            /// `logging.getLogger("gunicorn.error")`.
            #[getter]
            fn error_log<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
                logger(py, "gunicorn.error")
            }

            /// `logging.getLogger("gunicorn.access")`.
            #[getter]
            fn access_log<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
                logger(py, "gunicorn.access")
            }

            /// `loglevel` as a `logging` level number.
            #[getter]
            fn loglevel(&self, py: Python<'_>) -> PyResult<i64> {
                let name: String = self.cfg.bind(py).getattr("loglevel")?.extract()?;
                Ok(level_number(&name))
            }

            /// gunicorn's rule: an access log, a logging config, or syslog
            /// that takes the access log.
            #[getter]
            fn access_log_enabled(&self, py: Python<'_>) -> PyResult<bool> {
                let cfg = self.cfg.bind(py);
                for name in ["accesslog", "logconfig", "logconfig_dict", "logconfig_json"] {
                    if cfg.getattr(name)?.is_truthy()? {
                        return Ok(true);
                    }
                }
                Ok(cfg.getattr("syslog")?.is_truthy()?
                    && !cfg.getattr("disable_redirect_access_to_syslog")?.is_truthy()?)
            }
        }
    };
}

level_methods! {
    debug => Level::Debug,
    info => Level::Info,
    warning => Level::Warning,
    error => Level::Error,
    critical => Level::Critical,
}

/// One of `server.LISTENERS` (gunicorn's `TCPSocket`/`UnixSocket`): `.sock`
/// and, as in gunicorn, every other attribute taken from it.
#[pyclass(module = "rgunicorn", name = "Listener")]
pub struct PyListener {
    sock: Option<Py<PyAny>>,
    shown: String,
}

#[pymethods]
impl PyListener {
    /// The Python socket (None once closed).
    #[getter]
    fn sock(&self, py: Python<'_>) -> Py<PyAny> {
        self.sock
            .as_ref()
            .map(|s| s.clone_ref(py))
            .unwrap_or_else(|| py.None())
    }

    fn __getattr__<'py>(&self, py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyAny>> {
        match &self.sock {
            Some(sock) => sock.bind(py).getattr(name),
            None => Err(PyAttributeError::new_err(format!(
                "'NoneType' object has no attribute '{name}'"
            ))),
        }
    }

    /// Close this copy (the server's listener stays open). An error is
    /// logged, as gunicorn does.
    /// The socket is taken out first and closed with no borrow held
    /// (closing runs Python, and another thread may read the listener).
    fn close(slf: &Bound<'_, Self>, py: Python<'_>) {
        let sock = slf.borrow_mut().sock.take();
        if let Some(sock) = sock {
            if let Err(e) = sock.bind(py).call_method0("close") {
                log::info(&format!("Error while closing socket {}", e.value(py)));
            }
        }
    }

    fn __str__(&self) -> String {
        self.shown.clone()
    }

    fn __repr__(&self) -> String {
        format!("<rgunicorn.Listener {}>", self.shown)
    }
}

/// The hooks' copies of the listening fds with their inodes, so that a
/// worker can let go of them when it drains (see [`release_listener_copies`]).
static LISTENER_COPIES: Mutex<Vec<(RawFd, u64)>> = Mutex::new(Vec::new());

/// gunicorn's `str()` of a listener: `http://127.0.0.1:8000`,
/// `http://[::1]:8000`, `unix:/path`; `https://` with TLS for IPv4 only
/// (gunicorn's `TCP6Socket.__str__` always says `http`).
fn listener_str(l: &Listener, tls: bool) -> String {
    let shown = l.to_string();
    let v4 = l
        .socket
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .is_some_and(|a| a.is_ipv4());
    if tls && v4 {
        crate::http::tls::listening_url(&shown)
    } else {
        shown
    }
}

fn listener_copy(py: Python<'_>, l: &Listener, tls: bool) -> PyResult<PyListener> {
    // F_DUPFD_CLOEXEC: a USR2 exec does not take the copy along.
    let copy = l.socket.as_fd().try_clone_to_owned()?;
    let ino = nix::sys::stat::fstat(&copy)
        .map_err(std::io::Error::from)?
        .st_ino;
    let kwargs = PyDict::new(py);
    kwargs.set_item("fileno", copy.as_raw_fd())?;
    let sock = py
        .import("socket")?
        .getattr("socket")?
        .call((), Some(&kwargs))?;
    // The Python socket owns the copy from here on.
    let fd = copy.into_raw_fd();
    if let Ok(mut copies) = LISTENER_COPIES.lock() {
        copies.push((fd, ino));
    }
    Ok(PyListener {
        sock: Some(sock.unbind()),
        shown: listener_str(l, tls),
    })
}

/// In a worker that starts draining: point its inherited copies at
/// /dev/null, so that once the master and the workers have closed the
/// listeners, new connections are refused at once. A hook then sees a
/// socket that is not one any more (`getsockname` raises).
pub fn release_listener_copies() {
    let copies = match LISTENER_COPIES.lock() {
        Ok(c) => c.clone(),
        Err(_) => return,
    };
    if copies.is_empty() {
        return;
    }
    let Ok(null) = std::fs::File::open("/dev/null") else {
        return;
    };
    for (fd, ino) in copies {
        // A copy a hook closed may have had its number reused: only the
        // copy itself (the listener's inode) is replaced; the Python socket
        // that owns the number keeps a valid fd and closes /dev/null in the
        // end.
        if crate::sys::fd::socket_inode(fd) == Some(ino) {
            crate::sys::fd::replace_with(&null, fd);
        }
    }
}

/// `server.app` (gunicorn's Application): its `cfg` and the app's URI.
#[pyclass(module = "rgunicorn", name = "Application", dict)]
pub struct PyApplication {
    #[pyo3(get)]
    cfg: Py<PyCfg>,
    #[pyo3(get)]
    app_uri: Option<String>,
}

/// `server.pidfile` (gunicorn's Pidfile): the path and the pid written.
#[pyclass(module = "rgunicorn", name = "Pidfile")]
pub struct PyPidfile {
    #[pyo3(get)]
    fname: String,
    #[pyo3(get)]
    pid: u32,
}

/// The `server` argument of hooks (gunicorn's Arbiter).
#[pyclass(module = "rgunicorn", name = "Arbiter", dict)]
pub struct PyServer {
    #[pyo3(get, set)]
    pub pid: Py<PyAny>,
    #[pyo3(get)]
    cfg: Py<PyCfg>,
    #[pyo3(get)]
    log: Py<PyLogger>,
    #[pyo3(get)]
    app: Py<PyApplication>,
    #[pyo3(get)]
    pub num_workers: usize,
    #[pyo3(get, name = "WORKERS")]
    pub workers: Py<PyDict>,
    #[pyo3(get, name = "LISTENERS")]
    listeners: Py<PyList>,
    #[pyo3(get, name = "START_CTX")]
    start_ctx: Py<PyDict>,
    #[pyo3(get)]
    pidfile: Py<PyAny>,
    #[pyo3(get)]
    pub systemd: bool,
    #[pyo3(get)]
    pub proc_name: String,
    #[pyo3(get)]
    pub master_name: String,
    #[pyo3(get)]
    pub timeout: i64,
    #[pyo3(get)]
    pub worker_age: u64,
    #[pyo3(get)]
    pub reexec_pid: i32,
    #[pyo3(get)]
    pub master_pid: i32,
}

impl PyServer {
    /// `argv` is the command line a USR2 executes (gunicorn's
    /// `START_CTX["args"]`), `cwd` where.
    pub fn new(
        py: Python<'_>,
        cfg: &Config,
        proc_name: String,
        master_name: String,
        master_pid: i32,
        argv: &[String],
        cwd: &std::path::Path,
    ) -> PyResult<Py<PyServer>> {
        let view = PyCfg::new(py, cfg)?;
        let start_ctx = PyDict::new(py);
        start_ctx.set_item("args", argv)?;
        start_ctx.set_item("cwd", cwd.to_string_lossy())?;
        start_ctx.set_item(0, argv.first())?;
        Py::new(
            py,
            PyServer {
                pid: py.None(),
                log: Py::new(py, PyLogger::new(py, cfg, view.clone_ref(py)))?,
                app: Py::new(
                    py,
                    PyApplication {
                        cfg: view.clone_ref(py),
                        app_uri: cfg.app_uri.clone(),
                    },
                )?,
                cfg: view,
                num_workers: 0,
                workers: PyDict::new(py).unbind(),
                listeners: PyList::empty(py).unbind(),
                start_ctx: start_ctx.unbind(),
                pidfile: py.None(),
                systemd: false,
                proc_name,
                master_name,
                // Set by the master from its settings.
                timeout: 0,
                worker_age: 0,
                reexec_pid: 0,
                master_pid,
            },
        )
    }

    /// A new configuration (HUP): a new `cfg` view for the server, its
    /// app and its logger (workers forked from now on get it too).
    pub fn reconfigure(&mut self, py: Python<'_>, cfg: &Config) -> PyResult<()> {
        let view = PyCfg::new(py, cfg)?;
        {
            let mut app = self.app.borrow_mut(py);
            app.cfg = view.clone_ref(py);
            app.app_uri = cfg.app_uri.clone();
        }
        *self.log.borrow_mut(py) = PyLogger::new(py, cfg, view.clone_ref(py));
        self.cfg = view;
        Ok(())
    }

    /// `LISTENERS`: a copy of each listener for the hooks (the list object
    /// stays the same, as workers share it as `worker.sockets`).
    pub fn set_listeners(&self, py: Python<'_>, listeners: &[Listener], tls: bool) -> PyResult<()> {
        let list = self.listeners.bind(py);
        for l in listeners {
            list.append(Py::new(py, listener_copy(py, l, tls)?)?)?;
        }
        Ok(())
    }

    /// Stopping (or a HUP that changed `bind`): close the master's copies
    /// and empty `LISTENERS`, as gunicorn's `stop`.
    ///
    /// Takes `&self`: closing runs Python (`socket.close`), during which
    /// another Python thread may look at the server; emptied in place.
    pub fn close_listeners(&self, py: Python<'_>) {
        let list = self.listeners.bind(py);
        for l in list.iter() {
            if let Ok(l) = l.cast::<PyListener>() {
                PyListener::close(l, py);
            }
        }
        let _ = list.del_slice(0, list.len());
        // All closed: a worker forked later has none of them to let go of.
        if let Ok(mut copies) = LISTENER_COPIES.lock() {
            copies.clear();
        }
    }

    pub fn set_pidfile(&mut self, py: Python<'_>, fname: &str, pid: u32) -> PyResult<()> {
        let pidfile = PyPidfile {
            fname: fname.to_string(),
            pid,
        };
        self.pidfile = Py::new(py, pidfile)?.into_any();
        Ok(())
    }

    pub fn cfg(&self, py: Python<'_>) -> Py<PyCfg> {
        self.cfg.clone_ref(py)
    }
}

#[pymethods]
impl PyServer {
    #[classattr]
    const WORKER_BOOT_ERROR: i32 = crate::boot::WORKER_BOOT_ERROR;
    #[classattr]
    const APP_LOAD_ERROR: i32 = crate::boot::APP_LOAD_ERROR;

    /// `cfg.worker_class`, read when asked (gunicorn reads it at start).
    #[getter]
    fn worker_class<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.cfg.bind(py).getattr("worker_class")
    }

    #[getter]
    fn address<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.cfg.bind(py).getattr("address")
    }

    /// rgunicorn has no dirty arbiter.
    #[getter]
    fn dirty_arbiter_pid(&self) -> i32 {
        0
    }

    /// gunicorn's `kill_worker(pid, sig)`: send a worker a signal (a
    /// memory watcher's thread in the master recycles a worker this way);
    /// a process already gone is no error. The master then sees the
    /// worker's exit as any other: a TERM drains it, and it is replaced.
    fn kill_worker(&self, py: Python<'_>, pid: i32, sig: i32) -> PyResult<()> {
        match py.import("os")?.call_method1("kill", (pid, sig)) {
            Err(e) if e.is_instance_of::<pyo3::exceptions::PyProcessLookupError>(py) => Ok(()),
            Err(e) => Err(e),
            Ok(_) => Ok(()),
        }
    }

    fn __repr__(&self) -> String {
        format!("<rgunicorn.Arbiter {}>", self.master_name)
    }
}

/// What a worker's hook object shares with the serving loop of its
/// process (after fork each process has its own copy).
pub struct WorkerLink {
    board: Arc<Scoreboard>,
    slot: usize,
    /// The worker's pid: 0 before fork; the master's copy is given it
    /// after fork, the worker's own copy when the worker starts.
    pid: AtomicI32,
    /// When the object was made (monotonic ms): `last_update` before the
    /// worker's first heartbeat, as gunicorn's new temp file's mtime.
    created_ms: u64,
    /// `worker.max_requests`, read by the serving loop on each request.
    max_requests: Arc<AtomicU64>,
}

impl WorkerLink {
    /// This process is the worker.
    fn in_worker(&self) -> bool {
        self.pid.load(Ordering::Relaxed) == std::process::id() as i32
    }

    /// Refresh the heartbeat: in the worker only (elsewhere there is no
    /// worker to vouch for).
    fn notify(&self) {
        if self.in_worker() {
            self.board.slot(self.slot).beat();
        }
    }

    /// Ask the master for a replacement (`worker.alive = False`).
    fn ask_retire(&self) {
        if self.board.slot(self.slot).ask_retire(RetireAsk::NotAlive) {
            crate::sys::process::wake_master();
        }
    }

    /// The last heartbeat (monotonic ms) while the slot is this worker's.
    fn last_update_ms(&self) -> u64 {
        let slot = self.board.slot(self.slot);
        let pid = self.pid.load(Ordering::Relaxed);
        let ours = self.in_worker() || (pid != 0 && slot.pid.load(Ordering::Acquire) == pid);
        if ours {
            self.created_ms
                .max(slot.heartbeat_ms.load(Ordering::Acquire))
        } else {
            self.created_ms
        }
    }
}

/// `worker.tmp` (gunicorn's WorkerTmp): the heartbeat, which rgunicorn
/// keeps in the scoreboard's shared memory instead of a file's mtime.
#[pyclass(module = "rgunicorn", name = "WorkerTmp")]
pub struct PyWorkerTmp {
    link: Arc<WorkerLink>,
}

#[pymethods]
impl PyWorkerTmp {
    fn notify(&self) {
        self.link.notify();
    }

    /// Seconds on the monotonic clock, as gunicorn 27 stores them in the
    /// file's mtime (`time.monotonic() - last_update()` is the silence).
    fn last_update(&self) -> f64 {
        self.link.last_update_ms() as f64 / 1000.0
    }

    /// There is no file: `io.UnsupportedOperation` (an `OSError`).
    fn fileno(&self, py: Python<'_>) -> PyResult<()> {
        let unsupported = py.import("io")?.getattr("UnsupportedOperation")?;
        Err(PyErr::from_value(unsupported.call1((
            "rgunicorn's worker heartbeat is in shared memory, not a file",
        ))?))
    }

    /// Nothing to close.
    fn close(&self) {}
}

/// The `worker` argument of hooks.
#[pyclass(module = "rgunicorn", name = "Worker", dict)]
pub struct PyWorker {
    /// `"[booting]"` in `pre_fork`, the pid afterwards.
    #[pyo3(get, set)]
    pub pid: Py<PyAny>,
    #[pyo3(get, set)]
    pub ppid: i32,
    #[pyo3(get)]
    pub age: u64,
    #[pyo3(get, set)]
    pub nr: u64,
    /// See the `alive` setter.
    pub alive: bool,
    #[pyo3(get, set)]
    pub booted: bool,
    #[pyo3(get, set)]
    pub aborted: bool,
    /// `cfg.timeout / 2`, as gunicorn hands its workers.
    #[pyo3(get)]
    pub timeout: f64,
    #[pyo3(get)]
    cfg: Py<PyCfg>,
    #[pyo3(get)]
    log: Py<PyLogger>,
    #[pyo3(get, set)]
    app: Py<PyAny>,
    /// `server.LISTENERS` (the same list, as in gunicorn).
    #[pyo3(get, set)]
    sockets: Py<PyAny>,
    #[pyo3(get)]
    tmp: Py<PyWorkerTmp>,
    link: Arc<WorkerLink>,
}

impl PyWorker {
    /// The worker of `slot`, `age`-th of `server`, that recycles after
    /// `max_requests` requests (`u64::MAX`: never).
    pub fn new(
        py: Python<'_>,
        server: &PyServer,
        ppid: i32,
        age: u64,
        max_requests: u64,
        board: Arc<Scoreboard>,
        slot: usize,
    ) -> PyResult<Py<PyWorker>> {
        let link = Arc::new(WorkerLink {
            board,
            slot,
            pid: AtomicI32::new(0),
            created_ms: monotonic_ms(),
            max_requests: Arc::new(AtomicU64::new(max_requests)),
        });
        Py::new(
            py,
            PyWorker {
                pid: PyString::new(py, "[booting]").into_any().unbind(),
                ppid,
                age,
                nr: 0,
                alive: true,
                booted: false,
                aborted: false,
                timeout: server.timeout as f64 / 2.0,
                cfg: server.cfg.clone_ref(py),
                log: server.log.clone_ref(py),
                app: server.app.clone_ref(py).into_any(),
                sockets: server.listeners.clone_ref(py).into_any(),
                tmp: Py::new(py, PyWorkerTmp { link: link.clone() })?,
                link,
            },
        )
    }

    /// The worker's pid: in the master after fork, and in the worker
    /// itself (which makes `notify` beat there).
    pub fn set_pid(&mut self, py: Python<'_>, pid: i32) {
        self.link.pid.store(pid, Ordering::Relaxed);
        self.pid = (pid as i64).into_pyobject(py).unwrap().into_any().unbind();
    }

    /// The threshold the serving loop checks, shared with
    /// `worker.max_requests` (a hook's write takes effect).
    pub fn max_requests_cell(&self) -> Arc<AtomicU64> {
        self.link.max_requests.clone()
    }
}

#[pymethods]
impl PyWorker {
    /// `sys.maxsize` when the worker never recycles, as gunicorn.
    #[getter]
    fn max_requests(&self) -> u64 {
        self.link
            .max_requests
            .load(Ordering::Relaxed)
            .min(i64::MAX as u64)
    }

    /// Takes effect in the process that writes it: in `pre_fork` for the
    /// worker about to be forked, in the worker's own hooks (`post_fork`,
    /// `post_worker_init`, `pre_request`, ...) for that worker.
    #[setter]
    fn set_max_requests(&self, value: i64) {
        self.link
            .max_requests
            .store(value.max(0) as u64, Ordering::Relaxed);
    }

    #[getter]
    fn alive(&self) -> bool {
        self.alive
    }

    /// `worker.alive = False` in the worker (a `post_request` that finds
    /// the process too big, say) retires it gracefully, as gunicorn's
    /// workers leave their loop: the master starts a replacement, then
    /// the worker finishes what it serves and exits. Elsewhere the flag
    /// is only the object's.
    #[setter]
    fn set_alive(&mut self, alive: bool) {
        self.alive = alive;
        if !alive && self.link.in_worker() {
            self.link.ask_retire();
        }
    }

    /// gunicorn's `notify()`: refresh this worker's heartbeat.
    fn notify(&self) {
        self.link.notify();
    }

    /// rgunicorn does not reload code (`reload` is not acted on).
    #[getter]
    fn reloader(&self, py: Python<'_>) -> Py<PyAny> {
        py.None()
    }

    fn __str__(&self, py: Python<'_>) -> String {
        format!("<Worker {}>", self.pid.bind(py))
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        self.__str__(py)
    }
}

/// Call hook `name` of the configuration with `args`.
pub fn call<'py>(
    py: Python<'py>,
    cfg: &Config,
    name: &str,
    args: impl IntoPyObject<'py, Target = PyTuple>,
) -> PyResult<()> {
    let hook = cfg.hook(py, name);
    let args: Bound<'py, PyTuple> = args.into_pyobject(py).map_err(Into::into)?.into_bound();
    let result = hook.call1(args);
    // The hook may have changed Python's log handlers.
    crate::python::logging::refresh(py);
    result?;
    Ok(())
}

/// Log a hook's exception with its traceback (hooks whose errors gunicorn
/// logs and ignores, such as `worker_exit`).
pub fn log_exception(py: Python<'_>, msg: &str, err: &PyErr) {
    log_exception_at(py, Level::Error, msg, err)
}

/// [`log_exception`] at another level (`worker_exit`'s is a warning).
pub fn log_exception_at(py: Python<'_>, level: Level, msg: &str, err: &PyErr) {
    log::exception(
        level,
        &format!(
            "{msg}\n{}",
            pyconf::config::format_traceback(py, err).trim_end()
        ),
    );
}
