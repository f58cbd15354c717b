//! The master: gunicorn's arbiter, one thread, no tokio. The whole
//! supervisor loop is in this file (see LIFECYCLE.md for the picture):
//!
//! ```text
//! start: nworkers_changed -> on_starting -> signals -> listeners -> when_ready
//!        -> reloader (`reload`) -> spawn -> control socket
//! loop:  wait for signals (<= 1 s) -> handle each -> answer control
//!        commands -> changed files (`reload`) -> reap -> a reload that
//!        waited -> murder silent workers -> recycle by age and memory
//!        -> manage the worker count -> retire the replaced
//! ```
//!
//! A HUP (or a change of watched files) while the last reload is under
//! way waits for it, so at most two generations of workers live at once.
//!
//! The reloader (the file watcher of `reload`) is a process of its own:
//! see `reloader` and LIFECYCLE.md.
//!
//! The control socket's commands are executed in `master/control.rs`.
//!
//! Where rgunicorn does better than gunicorn: a worker that must go (HUP,
//! max_requests, max_worker_lifetime, max_worker_memory) is retired only
//! once its replacement serves, and the worker drains its connections
//! (see `worker`), so no request fails.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use pyo3::prelude::*;

use pyconf::Config;

use crate::app::AppFactory;
use crate::boot::{BootError, ServeError, SignalHooks, APP_LOAD_ERROR, WORKER_BOOT_ERROR};
use crate::control::server::ControlServer;
use crate::log;
use crate::observe::metrics::{MasterMetrics, RestartCause};
use crate::python::hooks::{self, PyServer, PyWorker};
use crate::python::reloader::Reloader;
use crate::python::worker_class::WorkerClass;
use crate::settings::Settings;
use crate::sys::notify::{Awaiting, Notifier};
use crate::sys::pidfile::Pidfile;
use crate::sys::process::{self, ChildKind, ExitKind, SignalPipe};
use crate::sys::scoreboard::{monotonic_ms, RetireAsk, Scoreboard, SlotState};
use crate::sys::sock::{self, BindOptions, Listener};
use crate::worker::{self, WorkerSetup};

mod control;

/// Most workers one master can have at once (TTIN beyond this is refused).
const MAX_SLOTS: usize = 512;

struct WorkerEntry {
    slot: usize,
    age: u64,
    obj: Py<PyWorker>,
    /// When SIGABRT was sent for a timeout (SIGKILL follows a second later).
    aborted: Option<Instant>,
    /// The master decided this worker goes (HUP, max_requests, TTOU,
    /// max_worker_lifetime, max_worker_memory):
    /// it no longer counts towards `num_workers`.
    retiring: bool,
    /// TERM was sent.
    terminated: bool,
    retiring_since: Option<Instant>,
    /// When it was forked, and how long it may live: `max_worker_lifetime`
    /// plus this worker's jitter (None: no limit).
    born: Instant,
    lifetime: Option<Duration>,
    /// Memory samples in a row above `max_worker_memory`.
    over_memory: u32,
    /// Why the master decided this worker goes (metrics); none: it left
    /// by itself (a crash, a kill).
    cause: Option<RestartCause>,
}

/// A replacement of every worker asked for while the last one is still
/// under way, taken once it is done (see `Master::take_pending`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Pending {
    /// `reload`: watched files changed.
    Files,
    /// HUP (or the control socket's `reload`): the configuration is read
    /// again too.
    Hup,
}

/// Why the loop stopped.
enum Stop {
    /// TERM: graceful stop, exit 0.
    Graceful,
    /// INT/QUIT: quick stop, exit 0.
    Quick,
    /// A worker failed to boot (3) or load the app (4).
    Halt(&'static str, i32),
}

pub struct Master<'py> {
    py: Python<'py>,
    argv: Vec<String>,
    /// The command line USR2 executes, and where (gunicorn's `START_CTX`).
    reexec_argv: Vec<String>,
    start_cwd: std::path::PathBuf,
    /// The USR2 child (the new master) while it lives.
    reexec_pid: i32,
    /// Set in a new master started by USR2: the old master's pid, until the
    /// old master exits and this one is promoted.
    master_pid: i32,
    master_name: String,
    /// `proc_name`, with `.2` in a new master not yet promoted.
    proc_name: String,
    /// The configuration as loaded (the hooks' `cfg` view is made from
    /// it) and its typed settings, both replaced on HUP.
    cfg: Config,
    settings: Settings,
    /// Where the workers' app comes from, and its factory for the current
    /// settings.
    app: AppSource,
    factory: AppFactory,
    listeners: Vec<Listener>,
    /// The `bind` entries `listeners` stand for (gunicorn's `cfg.address`
    /// before a reload): a HUP that changes them rebinds.
    bind_addrs: Vec<pyconf::validate::Address>,
    workers: BTreeMap<i32, WorkerEntry>,
    num_workers: usize,
    worker_age: u64,
    board: Arc<Scoreboard>,
    /// When the workers' memory is sampled next (`max_worker_memory`).
    next_memory_sample: Instant,
    signals: Option<SignalPipe>,
    server: Py<PyServer>,
    pidfile: Option<Pidfile>,
    pid: u32,
    systemd: bool,
    /// The environment before `raw_env` was exported (restored on HUP).
    env_orig: std::collections::HashMap<std::ffi::OsString, std::ffi::OsString>,
    /// TLS for every connection (`certfile`/`keyfile`), built at start and
    /// on HUP; workers inherit it.
    tls: Option<crate::http::tls::Tls>,
    /// systemd's notify socket (`NOTIFY_SOCKET`), if any.
    notify: Notifier,
    /// Prometheus exporter, statsd gauge, restarts by cause.
    metrics: MasterMetrics,
    /// The control socket (`rgunicornc`, gunicorn's `gunicornc`), once
    /// the first workers are spawned.
    control: Option<ControlServer>,
    /// For `show stats`: when this master started, workers it stopped,
    /// HUPs handled.
    started: Instant,
    workers_killed: u64,
    reloads: u64,
    /// `reload`: the process watching the workers' files.
    reloader: Option<Reloader>,
    /// When to start a reloader again after the last one died.
    reloader_restart: Option<Instant>,
    /// `reload`: a replacement failed to boot while others serve; no
    /// worker is started until the next change of a watched file.
    reload_hold: bool,
    /// A HUP or a change of watched files that waits for the last
    /// replacement to end.
    pending: Option<Pending>,
    /// When the newest generation of workers was started (at start, or by
    /// a replacement of every worker), until all of it serves.
    generation: Option<Instant>,
}

/// What ends the master's loop as an unhandled exception ends gunicorn's
/// ("Unhandled exception in main loop", exit 255): a hook's traceback, or
/// the failure's text.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Unhandled(String);

impl From<String> for Unhandled {
    fn from(message: String) -> Self {
        Unhandled(message)
    }
}

impl From<&str> for Unhandled {
    fn from(message: &str) -> Self {
        Unhandled(message.to_string())
    }
}

/// Errors that end the master the way gunicorn's would.
#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    /// Start-up failures: "Error: ..." and exit 1.
    #[error("{0}")]
    Startup(String),
    /// A Python exception in a start-up hook: traceback, exit 1.
    #[error("{0}")]
    StartupHook(String),
    /// A start-up hook called `sys.exit()`: its status, and no traceback
    /// (gunicorn lets the `SystemExit` end the process). A message given
    /// instead of a number is written to stderr, as Python does.
    #[error("sys.exit({0}) in a start-up hook")]
    Exit(u8, Option<String>),
}

/// Where the workers' app comes from.
pub enum AppSource {
    /// A Rust app (the built-in one, or a library app's).
    Rust(AppFactory),
    /// The Python app `uri`, served through `class`'s interface; its
    /// factory is made again from each load of the settings.
    Python { uri: String, class: WorkerClass },
}

impl AppSource {
    /// The workers' app factory under `settings`.
    pub fn factory(&self, settings: &Settings) -> anyhow::Result<AppFactory> {
        match self {
            AppSource::Rust(factory) => Ok(factory.clone()),
            AppSource::Python { uri, class } => {
                crate::python::wsgi::app_factory(settings, uri, class)
            }
        }
    }

    /// APP_MODULE of a Python app (imported in the master with
    /// `preload_app`, and in each worker before `post_worker_init`).
    fn python_uri(&self) -> Option<&str> {
        match self {
            AppSource::Rust(_) => None,
            AppSource::Python { uri, .. } => Some(uri),
        }
    }

    /// A UvicornWorker class's `timeout_keep_alive`, which replaces
    /// `keepalive`.
    fn keepalive(&self) -> Option<Duration> {
        match self {
            AppSource::Rust(_) => None,
            AppSource::Python { class, .. } => class.keepalive(),
        }
    }
}

impl<'py> Master<'py> {
    pub fn new(
        py: Python<'py>,
        argv: Vec<String>,
        reexec_argv: Vec<String>,
        cfg: Config,
        settings: Settings,
        app: AppSource,
        factory: AppFactory,
    ) -> Result<Master<'py>, MasterError> {
        let startup = |e: String| MasterError::Startup(e);
        let board = Arc::new(Scoreboard::new(MAX_SLOTS).map_err(|e| startup(e.to_string()))?);
        // A master started by USR2 knows its parent, the old master.
        let master_pid: i32 = std::env::var("GUNICORN_PID")
            .ok()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        let (master_name, proc_name) = if master_pid != 0 {
            (
                "Master.2".to_string(),
                format!("{}.2", settings.server.proc_name),
            )
        } else {
            ("Master".to_string(), settings.server.proc_name.clone())
        };
        let start_cwd = std::env::current_dir().unwrap_or_default();
        let server = PyServer::new(
            py,
            &cfg,
            proc_name.clone(),
            master_name.clone(),
            master_pid,
            &reexec_argv,
            &start_cwd,
        )
        .map_err(|e| startup(e.to_string()))?;
        server.borrow_mut(py).timeout = settings.server.timeout_secs;
        // gunicorn's arbiter makes its logger first: a custom logger_class.
        let view = server.borrow(py).cfg(py);
        crate::python::logging::install_logger_class(py, &settings.logging, view.bind(py))
            .map_err(|e| startup(format!("{e:#}")))?;
        crate::python::logging::log_config_dump(py, view.bind(py));
        // Before systemd's variables leave the environment (a USR2 master
        // gets them), and before anything is forked.
        let env_orig = std::env::vars_os().collect();
        let notify = Notifier::from_env(py, std::process::id(), master_pid);
        Ok(Master {
            py,
            argv,
            reexec_argv,
            start_cwd,
            reexec_pid: 0,
            master_pid,
            master_name,
            proc_name,
            cfg,
            settings,
            app,
            factory,
            listeners: Vec::new(),
            bind_addrs: Vec::new(),
            workers: BTreeMap::new(),
            num_workers: 0,
            worker_age: 0,
            board,
            next_memory_sample: Instant::now(),
            signals: None,
            server,
            pidfile: None,
            pid: std::process::id(),
            systemd: false,
            env_orig,
            notify,
            tls: None,
            metrics: MasterMetrics::default(),
            control: None,
            started: Instant::now(),
            workers_killed: 0,
            reloads: 0,
            reloader: None,
            reloader_restart: None,
            reload_hold: false,
            pending: None,
            generation: None,
        })
    }

    fn hook(
        &self,
        name: &str,
        args: impl IntoPyObject<'py, Target = pyo3::types::PyTuple>,
    ) -> PyResult<()> {
        hooks::call(self.py, &self.cfg, name, args)
    }

    fn traceback(&self, e: &PyErr) -> String {
        pyconf::config::format_traceback(self.py, e)
    }

    /// A start-up hook's exception as the start's end.
    fn startup_hook_error(&self, e: &PyErr) -> MasterError {
        let py = self.py;
        if !e.is_instance_of::<pyo3::exceptions::PySystemExit>(py) {
            return MasterError::StartupHook(self.traceback(e));
        }
        // Python's rule for the status: None is 0, an int is itself, and
        // anything else is printed and gives 1.
        let code = e.value(py).getattr("code").ok();
        match code {
            None => MasterError::Exit(1, None),
            Some(c) if c.is_none() => MasterError::Exit(0, None),
            Some(c) => match c.extract::<i64>() {
                Ok(n) => MasterError::Exit(n as u8, None),
                Err(_) => MasterError::Exit(1, c.str().ok().map(|s| s.to_string())),
            },
        }
    }

    /// Assigning `num_workers` fires `nworkers_changed(server, new, old)`.
    fn set_num_workers(&mut self, n: usize, old: Option<usize>) -> PyResult<()> {
        self.num_workers = n;
        self.server.borrow_mut(self.py).num_workers = n;
        let server = self.server.clone_ref(self.py);
        self.hook("nworkers_changed", (server, n, old))
    }

    fn export_env(&self) -> Result<(), Unhandled> {
        for (k, v) in self.settings.server.env.as_ref().map_err(Clone::clone)? {
            crate::python::embed::set_env(self.py, k, Some(v));
        }
        Ok(())
    }

    /// Start-up in gunicorn's order, then the loop. Returns the exit status.
    pub fn run(mut self) -> Result<u8, MasterError> {
        let py = self.py;
        log::configure(
            self.settings.logging.errorlog.as_deref(),
            &self.settings.logging.loglevel,
        )
        .map_err(|e| MasterError::Startup(format!("can't open error log: {e}")))?;
        self.chown_error_log();
        self.set_num_workers(self.settings.server.workers, None)
            .map_err(|e| self.startup_hook_error(&e))?;
        self.export_env()
            .map_err(|e| MasterError::Startup(e.to_string()))?;
        // preload_app: import in the master, after raw_env (gunicorn's
        // order); a failure ends the start with the traceback, exit 1.
        if let (true, Some(uri)) = (self.settings.server.preload_app, self.app.python_uri()) {
            crate::python::import::preload(py, uri).map_err(|e| match e {
                crate::python::import::AppError::Import(tb) => MasterError::StartupHook(tb),
                crate::python::import::AppError::NotFound(msg) => MasterError::Startup(msg),
            })?;
        }

        log::info(&format!("Starting rgunicorn {}", env!("CARGO_PKG_VERSION")));
        self.server.borrow_mut(py).pid = (self.pid as i64)
            .into_pyobject(py)
            .unwrap()
            .into_any()
            .unbind();
        if let Some(mut path) = self.settings.server.pidfile.clone() {
            if self.master_pid != 0 {
                path.push_str(".2");
            }
            self.pidfile = Some(
                Pidfile::create(&path, self.pid)
                    .map_err(|e| MasterError::Startup(e.to_string()))?,
            );
            self.server
                .borrow_mut(py)
                .set_pidfile(py, &path, self.pid)
                .map_err(|e| MasterError::Startup(e.to_string()))?;
        }
        let server = self.server.clone_ref(py);
        self.hook("on_starting", (server,))
            .map_err(|e| self.startup_hook_error(&e))?;
        self.signals =
            Some(SignalPipe::install().map_err(|e| MasterError::Startup(e.to_string()))?);

        // Checked before the sockets, as gunicorn checks certfile/keyfile.
        self.tls =
            crate::http::tls::load(&self.settings.tls).map_err(|e| MasterError::Startup(e.0))?;
        for w in &self.settings.http2.warnings {
            log::warning(w);
        }
        let inherited = sock::inherited().map_err(|e| MasterError::Startup(e.to_string()))?;
        self.listeners = match inherited {
            Some((l, systemd)) => {
                self.systemd = systemd;
                self.bind_addrs = sock::parse_binds(&self.settings.server.bind).unwrap_or_default();
                l
            }
            None => {
                self.bind_addrs = sock::parse_binds(&self.settings.server.bind)
                    .map_err(|e| MasterError::Startup(e.to_string()))?;
                sock::create(&self.bind_addrs, &self.bind_options())
                    .map_err(|e| MasterError::Startup(e.to_string()))?
            }
        };
        self.server.borrow_mut(py).systemd = self.systemd;
        self.server
            .borrow(py)
            .set_listeners(py, &self.listeners, self.tls.is_some())
            .map_err(|e| MasterError::Startup(format!("hooks' LISTENERS: {e}")))?;
        log::debug("Arbiter booted");
        log::info(&format!(
            "Listening at: {} ({})",
            self.listening_at(),
            self.pid
        ));
        self.metrics = MasterMetrics::start(&self.settings.metrics);
        log::info(if crate::python::gevent::plan().is_some() {
            "Using worker: rgunicorn (Rust, tokio + hyper; the WSGI app in greenlets on gevent's hub)"
        } else {
            "Using worker: rgunicorn (Rust, tokio + hyper)"
        });
        let server = self.server.clone_ref(py);
        self.hook("when_ready", (server,))
            .map_err(|e| self.startup_hook_error(&e))?;
        process::set_title(&format!("rgunicorn: master [{}]", self.proc_name));

        let outcome = self.main_loop();
        match outcome {
            Ok(stop) => Ok(self.halt(stop)),
            Err(e) => {
                log::error(&format!("Unhandled exception in main loop\n{e}"));
                self.notify.stopping(self.reexec_pid);
                self.stop(false);
                self.unlink_pidfile();
                Ok(255)
            }
        }
    }

    /// The error log file belongs to the workers' user and group, so that
    /// they can reopen it on USR1 (gunicorn chowns its log files too).
    fn chown_error_log(&self) {
        let Some(path) = self.settings.logging.errorlog.clone().filter(|p| p != "-") else {
            return;
        };
        let (uid, gid) = (self.settings.server.user, self.settings.server.group);
        if (uid, gid)
            != (
                nix::unistd::geteuid().as_raw(),
                nix::unistd::getegid().as_raw(),
            )
        {
            if let Err(e) = std::os::unix::fs::chown(&path, Some(uid), Some(gid)) {
                log::warning(&format!("can't chown {path} to {uid}:{gid}: {e}"));
            }
        }
    }

    /// The listeners as the `Listening at:` line shows them.
    fn listening_at(&self) -> String {
        let shown: Vec<String> = self
            .listeners
            .iter()
            .map(|l| match self.tls {
                Some(_) => crate::http::tls::listening_url(&l.to_string()),
                None => l.to_string(),
            })
            .collect();
        shown.join(",")
    }

    fn bind_options(&self) -> BindOptions {
        let server = &self.settings.server;
        BindOptions {
            backlog: server.backlog,
            reuse_port: server.reuse_port,
            umask: server.umask,
            owner: (server.user, server.group),
        }
    }

    /// HUP with a changed `bind` (gunicorn compares `cfg.address` before
    /// and after): the new entries are bound, the listeners no entry wants
    /// any more are closed here. The workers forked from now on serve the
    /// new set; the old workers keep their copies until they exit, so what
    /// they have in flight finishes. An entry that cannot be bound leaves
    /// everything as it was (gunicorn exits 1 there), and the next HUP
    /// tries again.
    fn apply_bind(&mut self) {
        let py = self.py;
        let addrs = match sock::parse_binds(&self.settings.server.bind) {
            Ok(addrs) => addrs,
            Err(e) => {
                log::error(&format!("Reload: bind not changed: {e}"));
                return;
            }
        };
        if addrs == self.bind_addrs {
            return;
        }
        if self.systemd {
            // The sockets are systemd's (its .socket unit says where).
            log::warning(
                "Reload: bind changed, but the listening sockets come from systemd \
                 (LISTEN_FDS): not changed",
            );
            self.bind_addrs = addrs;
            return;
        }
        let opts = self.bind_options();
        match sock::rebind(&mut self.listeners, &addrs, &opts) {
            Ok(removed) => {
                self.bind_addrs = addrs;
                let unlink = self.may_unlink();
                for l in removed {
                    sock::close(l, unlink);
                }
                let tls = self.tls.is_some();
                let server = self.server.borrow(py);
                server.close_listeners(py);
                if let Err(e) = server.set_listeners(py, &self.listeners, tls) {
                    log::error(&format!("hooks' LISTENERS: {e}"));
                }
                drop(server);
                // gunicorn's reload logs this line without the pid.
                log::info(&format!("Listening at: {}", self.listening_at()));
            }
            Err(e) => log::error(&format!(
                "Reload: bind not changed: {e}; still listening at: {}",
                self.listening_at()
            )),
        }
    }

    /// Whether this master removes a unix socket file it stops listening
    /// on: not while another master may use it (USR2 on either side,
    /// systemd, reuse_port), as in gunicorn.
    fn may_unlink(&self) -> bool {
        self.reexec_pid == 0
            && self.master_pid == 0
            && !self.systemd
            && !self.settings.server.reuse_port
    }

    fn main_loop(&mut self) -> Result<Stop, Unhandled> {
        // The watcher exists before the first worker reports to it.
        self.start_reloader(true);
        self.generation = Some(Instant::now());
        // The first workers start at once, not after the first wait.
        self.manage_workers()?;
        // Then the control socket (gunicorn's order).
        self.start_control();
        loop {
            self.maybe_promote();
            // Poll faster while something waits on a worker's state.
            let busy = self.workers.values().any(|w| w.retiring && !w.terminated)
                || self
                    .workers
                    .values()
                    .any(|w| self.board.slot(w.slot).state() == SlotState::Booting);
            let busy = busy || self.control.as_ref().is_some_and(ControlServer::has_output);
            let timeout = self.notify.cap_wait(
                if busy {
                    Duration::from_millis(20)
                } else {
                    Duration::from_secs(1)
                }
                .min(self.until_recycle_check()),
            );
            // The wait lets go of the GIL: Python threads the hooks started
            // in the master (a memory watcher in when_ready, a metrics
            // server) run meanwhile, as they do in gunicorn's arbiter.
            let signals = {
                let pipe = self.signals.as_ref().expect("installed");
                let fds = self.polled_fds();
                self.py.detach(|| pipe.wait_also(timeout, &fds))
            };
            for sig in signals {
                if sig == Signal::SIGCHLD {
                    log::debug("Handling signal: chld");
                } else {
                    log::info(&format!(
                        "Handling signal: {}",
                        sig.as_str().trim_start_matches("SIG").to_lowercase()
                    ));
                }
                match sig {
                    Signal::SIGTERM => return Ok(Stop::Graceful),
                    Signal::SIGINT | Signal::SIGQUIT => return Ok(Stop::Quick),
                    Signal::SIGHUP => self.hup()?,
                    Signal::SIGTTIN => {
                        let n = self.num_workers;
                        if n < MAX_SLOTS {
                            self.set_num_workers(n + 1, Some(n))
                                .map_err(|e| self.traceback(&e))?;
                        }
                    }
                    Signal::SIGTTOU => {
                        let n = self.num_workers;
                        if n > 1 {
                            self.set_num_workers(n - 1, Some(n))
                                .map_err(|e| self.traceback(&e))?;
                        }
                    }
                    Signal::SIGUSR1 => {
                        log::reopen();
                        for pid in self.workers.keys() {
                            let _ = process::kill(Pid::from_raw(*pid), Signal::SIGUSR1);
                        }
                    }
                    Signal::SIGWINCH => {
                        if self.settings.start.daemon {
                            log::info("graceful stop of workers");
                            let n = self.num_workers;
                            self.set_num_workers(0, Some(n))
                                .map_err(|e| self.traceback(&e))?;
                        } else {
                            log::debug("SIGWINCH ignored. Not daemonized");
                        }
                    }
                    Signal::SIGUSR2 => self.reexec(),
                    _ => {}
                }
            }
            self.serve_control();
            self.check_reloader();
            if let Some(stop) = self.reap_workers()? {
                return Ok(stop);
            }
            self.take_pending()?;
            self.murder_workers();
            self.recycle_workers();
            self.manage_workers()?;
            let board = &self.board;
            self.metrics
                .turn(self.workers.values().map(|w| board.slot(w.slot)));
            self.notify_tick();
        }
    }

    /// The fds the loop waits on besides its signals: the metrics
    /// exporter's and the control socket's (with their clients). A forked
    /// worker closes them.
    fn polled_fds(&self) -> Vec<std::os::fd::BorrowedFd<'_>> {
        let mut fds = self.metrics.poll_fds();
        if let Some(control) = &self.control {
            fds.extend(control.poll_fds());
        }
        if let Some(reloader) = &self.reloader {
            fds.push(reloader.poll_fd());
        }
        fds
    }

    /// systemd: `READY=1` once a worker serves (at start) or the whole new
    /// generation serves (after a HUP; or `graceful_timeout` after it, when
    /// the old workers are retired anyway), and the watchdog ping.
    fn notify_tick(&mut self) {
        if !self.notify.enabled() {
            return;
        }
        if let Some(awaiting) = self.notify.awaiting() {
            let serving = self.serving_current();
            let grace = self.settings.server.replacement_grace;
            let ready = match awaiting {
                Awaiting::Start => serving >= 1,
                Awaiting::Reload(at) => {
                    self.pending.is_none() && (serving >= self.num_workers || at.elapsed() > grace)
                }
            };
            if ready {
                self.notify.ready(self.pid, serving);
            }
        }
        self.notify.watchdog_tick();
    }

    /// HUP: reload now, or once the replacement under way is done. A storm
    /// of HUPs then costs one more generation, not one per HUP: at most
    /// two generations live at once (the one serving and the one booting).
    fn hup(&mut self) -> Result<(), Unhandled> {
        log::info(&format!("Hang up: {}", self.master_name));
        self.notify.reloading();
        let waiting = self.pending == Some(Pending::Hup);
        self.ask(Pending::Hup);
        self.take_pending()?;
        if self.pending.is_some() && !waiting {
            log::info(
                "Reload deferred: the workers of the last reload do not serve yet, or the \
                 ones they replace have not exited; reloading once they have",
            );
        }
        Ok(())
    }

    /// Every worker is to be replaced, as soon as no replacement is under
    /// way; asked again meanwhile, it is done once.
    fn ask(&mut self, what: Pending) {
        self.pending = self.pending.max(Some(what));
    }

    /// Whether a replacement of every worker is under way: the workers it
    /// replaces are still there (serving, or draining what they have in
    /// flight), or the newest generation does not serve yet. A generation
    /// that does not serve within `graceful_timeout` (the old one is retired
    /// anyway then) does not hold the next reload back: that one replaces it.
    fn replacing(&self) -> bool {
        let grace = self.settings.server.replacement_grace;
        self.workers
            .values()
            .any(|w| w.cause == Some(RestartCause::Reload))
            || self.generation.is_some_and(|t| t.elapsed() <= grace)
    }

    /// Do the reload or replacement asked for, unless one is under way.
    fn take_pending(&mut self) -> Result<(), Unhandled> {
        let Some(what) = self.pending else {
            return Ok(());
        };
        if self.replacing() {
            return Ok(());
        }
        self.pending = None;
        match what {
            Pending::Hup => self.reload(),
            Pending::Files => {
                self.replace_all();
                Ok(())
            }
        }
    }

    /// Re-evaluate the configuration, start a new generation of workers,
    /// retire the old one once the new one serves.
    fn reload(&mut self) -> Result<(), Unhandled> {
        let py = self.py;
        self.reloads += 1;
        self.notify.reloading();
        let cfg = match crate::settings::read_config(py, &self.argv) {
            Ok(cfg) => cfg,
            Err(err) => {
                eprint!("{err}");
                log::error(
                    "Reload failed: the configuration is invalid; exiting as gunicorn does.",
                );
                process::exit_now(err.exit_code() as i32);
            }
        };
        // Put back what raw_env replaced (or remove what it added), then
        // apply the new raw_env.
        if let Ok(old) = &self.settings.server.env {
            for (k, _) in old {
                let orig = self.env_orig.get(std::ffi::OsStr::new(k));
                crate::python::embed::set_env(py, k, orig.and_then(|v| v.to_str()));
            }
        }
        self.settings = Settings::load(py, &cfg);
        self.cfg = cfg;
        if let Err(e) = log::configure(
            self.settings.logging.errorlog.as_deref(),
            &self.settings.logging.loglevel,
        ) {
            log::error(&format!("can't reopen the error log: {e}"));
        }
        if let Err(e) = crate::python::logging::setup(py, &self.settings.logging) {
            log::error(&format!("can't set up logging: {e:#}"));
        }
        self.chown_error_log();
        // The workers forked from now on get the app made for the new
        // settings (threads, root_path, asgi_*); if it can't be made, the
        // old one.
        match self.app.factory(&self.settings) {
            Ok(factory) => self.factory = factory,
            Err(e) => log::error(&format!("Reload: the app's settings not changed: {e:#}")),
        }
        // New certificates are taken on HUP; a broken set keeps the old one.
        match crate::http::tls::load(&self.settings.tls) {
            Ok(tls) => self.tls = tls,
            Err(e) => log::error(&format!("Reload: TLS not changed: {e}")),
        }
        for w in &self.settings.http2.warnings {
            log::warning(w);
        }
        self.metrics.reconfigure(&self.settings.metrics);
        {
            let mut server = self.server.borrow_mut(py);
            server
                .reconfigure(py, &self.cfg)
                .map_err(|e| e.to_string())?;
            server.timeout = self.settings.server.timeout_secs;
            self.proc_name = self.settings.server.proc_name.clone();
            if self.master_pid != 0 {
                self.proc_name.push_str(".2");
            }
            server.proc_name = self.proc_name.clone();
        }
        let view = self.server.borrow(py).cfg(py);
        if let Err(e) =
            crate::python::logging::install_logger_class(py, &self.settings.logging, view.bind(py))
        {
            log::error(&format!("can't set up logger_class: {e:#}"));
        }
        let old = self.num_workers;
        self.set_num_workers(self.settings.server.workers, Some(old))
            .map_err(|e| self.traceback(&e))?;
        self.export_env()?;
        self.apply_bind();
        let server = self.server.clone_ref(py);
        self.hook("on_reload", (server,))
            .map_err(|e| self.traceback(&e))?;
        // The reload settings may have changed: a new watcher (or none),
        // told of the files by the new workers.
        if let Some(old) = self.reloader.take() {
            old.stop();
        }
        crate::python::reloader::disable();
        self.start_reloader(true);
        self.replace_all();
        Ok(())
    }

    /// Every worker is replaced, replacement first (HUP, or `reload`
    /// after a change).
    fn replace_all(&mut self) {
        self.reload_hold = false;
        self.generation = Some(Instant::now());
        for w in self.workers.values_mut().filter(|w| !w.retiring) {
            w.retiring = true;
            w.retiring_since = Some(Instant::now());
            w.cause = Some(RestartCause::Reload);
        }
    }

    /// `reload`: fork the process that watches the files (see
    /// `reloader`); `announce` logs gunicorn's warning.
    fn start_reloader(&mut self, announce: bool) {
        let py = self.py;
        self.reloader_restart = None;
        if !self.settings.reload.enabled {
            return;
        }
        if announce {
            log::warning("Reloader is on. Use in development only!");
            if self.settings.server.preload_app {
                log::warning(
                    "reload with preload_app: as in gunicorn, a change replaces the workers, \
                     but they run the code the master preloaded",
                );
            }
        }
        let mut close: Vec<std::os::fd::RawFd> = self
            .polled_fds()
            .iter()
            .map(std::os::fd::AsRawFd::as_raw_fd)
            .collect();
        close.extend(self.listeners.iter().map(|l| l.fd()));
        let title = format!("rgunicorn: reloader [{}]", self.proc_name);
        match Reloader::start(py, &self.settings.reload, &title, &close) {
            Ok(r) => self.reloader = Some(r),
            Err(e) => log::error(&e.to_string()),
        }
    }

    /// `reload`: a burst of changes to watched files replaces every
    /// worker; a reloader that died is started again (a second later),
    /// and the workers replaced so that it learns their files.
    fn check_reloader(&mut self) {
        if self.reloader_restart.is_some_and(|t| Instant::now() >= t) {
            self.start_reloader(false);
            self.ask(Pending::Files);
        }
        let Some(reloader) = self.reloader.as_mut() else {
            return;
        };
        let files = reloader.changed_files();
        if !files.is_empty() {
            crate::python::reloader::log_changes(&files);
            self.ask(Pending::Files);
        }
    }

    /// With `reload` on, a worker that failed to boot (3) or to load the
    /// app (4) while other workers serve does not halt the master, as it
    /// does in gunicorn: the workers that serve go on (those a reload was
    /// replacing are kept), and none is started until the next change.
    /// (A failed import does not get here: it is served as gunicorn's
    /// fail app.)
    fn hold_after_boot_failure(&mut self, pid: i32) -> bool {
        if !self.settings.reload.enabled {
            return false;
        }
        let board = &self.board;
        let serving = self
            .workers
            .values()
            .any(|w| !w.terminated && board.slot(w.slot).state() == SlotState::Serving);
        if !serving {
            return false;
        }
        if !self.reload_hold {
            log::error(&format!(
                "Worker (pid:{pid}) failed to boot; the workers that serve go on until \
                 the next change of a watched file"
            ));
        }
        self.reload_hold = true;
        // The next change replaces the failing generation at once.
        self.generation = None;
        // The rest of the failing generation goes (it runs the same
        // code); the workers it was replacing stay.
        let failing: Vec<i32> = self
            .workers
            .iter()
            .filter(|(_, w)| !w.retiring && board.slot(w.slot).state() == SlotState::Booting)
            .map(|(pid, _)| *pid)
            .collect();
        for w in self.workers.values_mut() {
            if w.retiring && !w.terminated && w.cause == Some(RestartCause::Reload) {
                w.retiring = false;
                w.retiring_since = None;
                w.cause = None;
            }
        }
        for pid in failing {
            if let Some(w) = self.workers.get_mut(&pid) {
                w.cause = Some(RestartCause::Reload);
            }
            self.terminate(pid);
        }
        true
    }

    /// USR2: fork a child that runs `pre_exec` and execs a new master
    /// with the listening sockets (`GUNICORN_FD`, or `LISTEN_FDS` under
    /// systemd). This master goes on serving until it is told to stop.
    fn reexec(&mut self) {
        if self.reexec_pid != 0 {
            log::warning("USR2 signal ignored. Child exists.");
            return;
        }
        if self.master_pid != 0 {
            log::warning("USR2 signal ignored. Parent exists.");
            return;
        }
        let py = self.py;
        let fds: Vec<i32> = self.listeners.iter().map(|l| l.fd()).collect();
        // The environment before raw_env, as gunicorn's `env_orig`, minus
        // what described this master's own start.
        let mut env: Vec<(String, String)> = self
            .env_orig
            .iter()
            .filter_map(|(k, v)| Some((k.to_str()?.to_string(), v.to_str()?.to_string())))
            .filter(|(k, _)| {
                !matches!(
                    k.as_str(),
                    "GUNICORN_PID" | "GUNICORN_FD" | "LISTEN_PID" | "LISTEN_FDS"
                )
            })
            .collect();
        env.push(("GUNICORN_PID".into(), self.pid.to_string()));
        let systemd = self.systemd;
        let (argv, cwd) = (self.reexec_argv.clone(), self.start_cwd.clone());
        let server = self.server.clone_ref(py);
        let cfg = &self.cfg;
        let forked = process::fork_python(py, ChildKind::Exec, move || {
            // rgunicorn does better than gunicorn here: a failing pre_exec
            // ends only this child (gunicorn's child ran the master's stop
            // and took the old master's workers and unix sockets with it).
            if let Err(e) = hooks::call(py, cfg, "pre_exec", (server,)) {
                hooks::log_exception(py, "Exception in pre_exec hook; not re-executing", &e);
                return 1;
            }
            if systemd {
                env.push(("LISTEN_PID".into(), std::process::id().to_string()));
                env.push(("LISTEN_FDS".into(), fds.len().to_string()));
            } else {
                let joined: Vec<String> = fds.iter().map(i32::to_string).collect();
                env.push(("GUNICORN_FD".into(), joined.join(",")));
            }
            if let Err(e) = std::env::set_current_dir(&cwd) {
                log::error(&format!("USR2: can't chdir to {}: {e}", cwd.display()));
            }
            let err = process::exec_master(&argv, &env, &fds);
            log::error(&format!("USR2: can't execute {:?}: {err}", argv.first()));
            1
        });
        match forked {
            Ok(pid) => {
                self.reexec_pid = pid.as_raw();
                self.server.borrow_mut(py).reexec_pid = self.reexec_pid;
            }
            Err(e) => log::error(&format!("USR2: fork failed: {e}")),
        }
    }

    /// A USR2 master becomes the master once the old one is gone (its
    /// parent changed): name, process title and pidfile lose their `.2`.
    fn maybe_promote(&mut self) {
        if self.master_pid == 0 || nix::unistd::getppid().as_raw() == self.master_pid {
            return;
        }
        log::info("Master has been promoted.");
        self.notify.promoted(self.pid);
        self.master_pid = 0;
        self.master_name = "Master".into();
        self.proc_name = self.settings.server.proc_name.clone();
        std::env::remove_var("GUNICORN_PID");
        if let (Some(pidfile), Some(path)) =
            (self.pidfile.as_mut(), self.settings.server.pidfile.clone())
        {
            if let Err(e) = pidfile.rename(&path, self.pid) {
                log::error(&e.to_string());
            } else if let Err(e) = self
                .server
                .borrow_mut(self.py)
                .set_pidfile(self.py, &path, self.pid)
            {
                log::error(&e.to_string());
            }
        }
        {
            let mut server = self.server.borrow_mut(self.py);
            server.master_pid = 0;
            server.master_name = self.master_name.clone();
            server.proc_name = self.proc_name.clone();
        }
        process::set_title(&format!("rgunicorn: master [{}]", self.proc_name));
    }

    fn spawn_worker(&mut self) -> Result<(), Unhandled> {
        let py = self.py;
        let Some(slot) = (0..self.board.len()).find(|&i| {
            self.board.slot(i).state() == SlotState::Free
                && !self.workers.values().any(|w| w.slot == i)
        }) else {
            return Err("no free worker slot".into());
        };
        // gunicorn creates each worker's heartbeat file there; rgunicorn's
        // heartbeat is in shared memory, but a missing directory fails the
        // same way.
        if let Some(dir) = &self.settings.server.worker_tmp_dir {
            if !std::path::Path::new(&dir).is_dir() {
                return Err(
                    format!("RuntimeError: {dir} doesn't exist. Can't create workertmp.").into(),
                );
            }
        }
        self.worker_age += 1;
        self.server.borrow_mut(py).worker_age = self.worker_age;
        let server = &self.settings.server;
        let max_requests = match server.max_requests {
            Some(n) => n + rand::random_range(0..=server.max_requests_jitter),
            None => u64::MAX,
        };
        let lifetime = server.max_worker_lifetime.map(|n| {
            Duration::from_secs(n + rand::random_range(0..=server.max_worker_lifetime_jitter))
        });
        let worker = PyWorker::new(
            py,
            &self.server.borrow(py),
            self.pid as i32,
            self.worker_age,
            max_requests,
            self.board.clone(),
            slot,
        )
        .map_err(|e| e.to_string())?;
        let server = self.server.clone_ref(py);
        self.hook("pre_fork", (server, worker.clone_ref(py)))
            .map_err(|e| self.traceback(&e))?;
        self.board.slot(slot).claim();

        let worker_settings = &self.settings.worker;
        let setup = WorkerSetup {
            slot,
            scoreboard: self.board.clone(),
            listener_fds: self.listeners.iter().map(|l| l.fd()).collect(),
            // Shared with `worker.max_requests`: what pre_fork or the
            // worker's own hooks write there is what the worker checks.
            max_requests: worker.borrow(py).max_requests_cell(),
            conn: crate::settings::Worker {
                keepalive: self.app.keepalive().unwrap_or(worker_settings.keepalive),
                ..worker_settings.clone()
            },
            ppid: self.pid as i32,
            app: self.factory.clone(),
            limits: self.settings.limits.clone(),
            request_hooks: crate::python::request_hooks::RequestHooks::from_config(
                py,
                &self.cfg,
                worker.clone_ref(py),
            ),
            access_log: crate::python::logging::access_log_enabled(py, &self.settings.logging)
                .then(|| {
                    let logging = &self.settings.logging;
                    (logging.accesslog.clone(), logging.access_log_format.clone())
                }),
            tls: self.tls.clone(),
            http2: self.settings.http2.settings.clone(),
            metrics: self.metrics.enabled(&self.settings.metrics),
            statsd: self.settings.metrics.statsd.clone(),
            io_yields_to_python: self.app.python_uri().is_some()
                && crate::python::gevent::plan().is_none(),
            reload_report: self.reloader.as_ref().map(Reloader::report_fd),
        };
        let child = WorkerProcess {
            cfg: &self.cfg,
            settings: &self.settings.server,
            title: format!("rgunicorn: worker [{}]", self.proc_name),
            server: self.server.clone_ref(py),
            worker: worker.clone_ref(py),
            setup: Some(setup),
            python_app: self.app.python_uri(),
        };
        let master_fds: Vec<std::os::fd::RawFd> = self
            .polled_fds()
            .iter()
            .map(std::os::fd::AsRawFd::as_raw_fd)
            .collect();
        let pid = process::fork_python(py, ChildKind::Worker, move || {
            process::close_master_fds(&master_fds);
            child.run(py)
        })
        .map_err(|e| format!("fork failed: {e}"))?;
        worker.borrow_mut(py).set_pid(py, pid.as_raw());
        self.board
            .slot(slot)
            .pid
            .store(pid.as_raw(), std::sync::atomic::Ordering::Release);
        let _ = self
            .server
            .borrow(py)
            .workers
            .bind(py)
            .set_item(pid.as_raw(), worker.clone_ref(py));
        self.workers.insert(
            pid.as_raw(),
            WorkerEntry {
                slot,
                age: self.worker_age,
                obj: worker,
                aborted: None,
                retiring: false,
                terminated: false,
                retiring_since: None,
                born: Instant::now(),
                lifetime,
                over_memory: 0,
                cause: None,
            },
        );
        Ok(())
    }

    /// How long until `recycle_workers` has something to check: the next
    /// memory sample or the first lifetime that ends (at most 1 s).
    fn until_recycle_check(&self) -> Duration {
        let now = Instant::now();
        let mut next = now + Duration::from_secs(1);
        if self.settings.server.max_worker_memory_mib.is_some() {
            next = next.min(self.next_memory_sample);
        }
        for w in self.workers.values() {
            if let (false, Some(lifetime)) = (w.retiring, w.lifetime) {
                if self.board.slot(w.slot).state() == SlotState::Serving {
                    next = next.min(w.born + lifetime);
                }
            }
        }
        next.saturating_duration_since(now)
    }

    /// Recycling by age and memory (rgunicorn's own settings): a serving
    /// worker past its `max_worker_lifetime` (+ jitter), or above
    /// `max_worker_memory` MiB for 3 samples 1 s apart, is retired as
    /// max_requests retires one: `manage_workers` starts its replacement
    /// and sends it TERM once the replacement serves. The RSS is read from
    /// /proc by the master, no round trip to the worker.
    fn recycle_workers(&mut self) {
        const MEMORY_STRIKES: u32 = 3;
        let now = Instant::now();
        let limit_mib = self.settings.server.max_worker_memory_mib.unwrap_or(0);
        let sample = limit_mib > 0 && now >= self.next_memory_sample;
        if sample {
            self.next_memory_sample = now + Duration::from_secs(1);
        }
        for (pid, w) in self.workers.iter_mut() {
            if w.retiring || self.board.slot(w.slot).state() != SlotState::Serving {
                continue;
            }
            let cause = match w.lifetime {
                Some(lifetime) if now >= w.born + lifetime => Some((
                    RestartCause::MaxWorkerLifetime,
                    log::Level::Info,
                    format!(
                        "reached max_worker_lifetime ({} s with jitter)",
                        lifetime.as_secs()
                    ),
                )),
                _ if sample => {
                    let rss = process::rss_bytes(*pid).unwrap_or(0) / (1024 * 1024);
                    w.over_memory = if rss > limit_mib {
                        w.over_memory + 1
                    } else {
                        0
                    };
                    (w.over_memory >= MEMORY_STRIKES).then(|| {
                        (
                            RestartCause::MaxWorkerMemory,
                            log::Level::Warning,
                            format!(
                                "exceeded max_worker_memory ({rss} MiB > {limit_mib} MiB) \
                                 {MEMORY_STRIKES} times in a row"
                            ),
                        )
                    })
                }
                _ => None,
            };
            if let Some((restart_cause, level, why)) = cause {
                log::log(
                    level,
                    &format!("Worker {} (pid: {pid}) {why}: replacing it", w.age),
                );
                w.cause = Some(restart_cause);
                w.retiring = true;
                w.retiring_since = Some(now);
            }
        }
    }

    /// Reach `num_workers` serving workers: spawn replacements first, then
    /// retire the replaced ones once the replacements serve; on TTOU, stop
    /// the oldest extra workers.
    fn manage_workers(&mut self) -> Result<(), Unhandled> {
        // A worker that reached max_requests, or whose hooks set
        // `worker.alive = False`, asks for its replacement.
        for w in self.workers.values_mut() {
            let slot = self.board.slot(w.slot);
            if !w.retiring && slot.state() == SlotState::WantsRetire {
                w.retiring = true;
                w.retiring_since = Some(Instant::now());
                w.cause = Some(match slot.retire_ask() {
                    RetireAsk::MaxRequests => RestartCause::MaxRequests,
                    RetireAsk::NotAlive => RestartCause::NotAlive,
                });
            }
        }
        let active = |m: &Self| m.workers.values().filter(|w| !w.retiring).count();
        while !self.reload_hold && active(self) < self.num_workers {
            self.spawn_worker()?;
        }
        let mut extra = active(self).saturating_sub(self.num_workers);
        if extra > 0 {
            let mut by_age: Vec<(u64, i32)> = self
                .workers
                .iter()
                .filter(|(_, w)| !w.retiring)
                .map(|(pid, w)| (w.age, *pid))
                .collect();
            by_age.sort();
            for (_, pid) in by_age {
                if extra == 0 {
                    break;
                }
                if let Some(w) = self.workers.get_mut(&pid) {
                    w.cause = Some(RestartCause::Ttou);
                }
                self.terminate(pid);
                extra -= 1;
            }
        }
        // Retire the replaced workers once enough replacements serve (or
        // after graceful_timeout, so a replacement that cannot boot does
        // not keep the old ones forever).
        let serving_new = self.serving_current();
        if serving_new >= self.num_workers {
            self.generation = None;
        }
        let grace = self.settings.server.replacement_grace;
        let due: Vec<i32> = self
            .workers
            .iter()
            .filter(|(_, w)| w.retiring && !w.terminated)
            .filter(|(_, w)| {
                serving_new >= self.num_workers
                    || w.retiring_since.is_some_and(|t| t.elapsed() > grace)
            })
            .map(|(pid, _)| *pid)
            .collect();
        for pid in due {
            self.terminate(pid);
        }
        Ok(())
    }

    /// Workers of the current generation (not being replaced) that serve.
    fn serving_current(&self) -> usize {
        self.workers
            .values()
            .filter(|w| !w.retiring && self.board.slot(w.slot).state() == SlotState::Serving)
            .count()
    }

    /// Send TERM (graceful stop) to one worker.
    fn terminate(&mut self, pid: i32) {
        if let Some(w) = self.workers.get_mut(&pid) {
            self.workers_killed += 1;
            w.retiring = true;
            w.terminated = true;
            let _ = process::kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
    }

    /// Timeouts: a serving worker silent for `timeout` seconds gets SIGABRT
    /// (its `worker_abort` hook runs), then SIGKILL with its process group.
    fn murder_workers(&mut self) {
        let Some(timeout) = self.settings.server.timeout else {
            return;
        };
        let timeout_ms = timeout.as_millis() as u64;
        let now = monotonic_ms();
        for (pid, w) in self.workers.iter_mut() {
            let slot = self.board.slot(w.slot);
            let beat = slot.heartbeat_ms.load(std::sync::atomic::Ordering::Acquire);
            if slot.state() == SlotState::Booting
                || beat == 0
                || now.saturating_sub(beat) <= timeout_ms
            {
                continue;
            }
            if w.aborted.is_none() {
                log::critical(&format!("WORKER TIMEOUT (pid:{pid})"));
                w.aborted = Some(Instant::now());
                w.cause = Some(RestartCause::Timeout);
                w.obj.borrow_mut(self.py).aborted = true;
                let _ = process::kill(Pid::from_raw(*pid), Signal::SIGABRT);
            } else if w
                .aborted
                .is_some_and(|t| t.elapsed() >= Duration::from_secs(1))
            {
                process::kill_group(Pid::from_raw(*pid));
            }
        }
    }

    /// Reap exited children: log how each ended, call `child_exit`, and
    /// halt on a boot (3) or app-load (4) failure.
    ///
    /// Every child reaped in one pass is accounted for before the first
    /// halt or hook error is returned (a child left out would be waited
    /// for forever).
    fn reap_workers(&mut self) -> Result<Option<Stop>, String> {
        let mut outcome: Result<Option<Stop>, String> = Ok(None);
        for (pid, how) in process::reap() {
            if pid.as_raw() == self.reexec_pid {
                // The USR2 child (or the new master it became) ended: a
                // new USR2 may try again.
                self.reexec_pid = 0;
                self.server.borrow_mut(self.py).reexec_pid = 0;
                match how {
                    ExitKind::Code(0) => {}
                    ExitKind::Code(code) => log::error(&format!(
                        "The new master (pid:{pid}) exited with code {code}."
                    )),
                    ExitKind::Signal(sig) => log::error(&format!(
                        "The new master (pid:{pid}) was sent {}!",
                        sig.as_str()
                    )),
                }
                continue;
            }
            if self.reloader.as_ref().is_some_and(|r| r.pid == pid) {
                log::error(&format!(
                    "The reloader (pid:{pid}) ended ({how:?}); starting a new one"
                ));
                self.reloader = None;
                self.reloader_restart = Some(Instant::now() + Duration::from_secs(1));
                continue;
            }
            let Some(w) = self.workers.remove(&pid.as_raw()) else {
                // Not a worker: a process a hook spawned, or (as PID 1 in a
                // container) an orphan reparented here. Reaped, nothing else.
                log::debug(&format!(
                    "Reaped a child that is not a worker (pid:{pid}): {how:?}"
                ));
                continue;
            };
            self.metrics.worker_gone(
                self.board.slot(w.slot),
                w.cause.unwrap_or(RestartCause::Crash),
            );
            self.board.slot(w.slot).set_state(SlotState::Free);
            let _ = self
                .server
                .borrow(self.py)
                .workers
                .bind(self.py)
                .del_item(pid.as_raw());
            // A boot or app-load failure halts; the first reason wins.
            let halt = match how {
                ExitKind::Code(WORKER_BOOT_ERROR) => {
                    Some(Stop::Halt("Worker failed to boot.", WORKER_BOOT_ERROR))
                }
                ExitKind::Code(APP_LOAD_ERROR) => {
                    Some(Stop::Halt("App failed to load.", APP_LOAD_ERROR))
                }
                _ => None,
            }
            .filter(|_| !self.hold_after_boot_failure(pid.as_raw()));
            if let Some(stop) = halt {
                if matches!(outcome, Ok(None)) {
                    outcome = Ok(Some(stop));
                }
                continue;
            }
            match how {
                ExitKind::Code(WORKER_BOOT_ERROR | APP_LOAD_ERROR) => {}
                ExitKind::Code(0) => {}
                ExitKind::Code(code) => {
                    log::error(&format!("Worker (pid:{pid}) exited with code {code}."))
                }
                ExitKind::Signal(Signal::SIGKILL) => log::error(&format!(
                    "Worker (pid:{pid}) was sent SIGKILL! Perhaps out of memory?"
                )),
                ExitKind::Signal(Signal::SIGTERM) => {
                    log::info(&format!("Worker (pid:{pid}) was sent SIGTERM!"))
                }
                ExitKind::Signal(sig) => {
                    log::warning(&format!("Worker (pid:{pid}) was sent {}!", sig.as_str()))
                }
            }
            w.obj.borrow_mut(self.py).alive = false;
            let server = self.server.clone_ref(self.py);
            if let Err(e) = self.hook("child_exit", (server, w.obj)) {
                if outcome.is_ok() {
                    outcome = Err(self.traceback(&e));
                }
            }
        }
        outcome
    }

    /// Stop all workers: TERM (graceful) or QUIT (quick), wait up to
    /// `graceful_timeout` reaping them, then SIGKILL what is left.
    fn stop(&mut self, graceful: bool) {
        // The control socket first (gunicorn's order): no command is taken
        // while the workers stop.
        if let Some(control) = self.control.take() {
            control.close();
        }
        self.reloader_restart = None;
        if let Some(reloader) = self.reloader.take() {
            reloader.stop();
        }
        let unlink = self.may_unlink();
        self.server.borrow(self.py).close_listeners(self.py);
        for l in self.listeners.drain(..) {
            sock::close(l, unlink);
        }
        let mut sig = if graceful {
            Signal::SIGTERM
        } else {
            Signal::SIGQUIT
        };
        for pid in self.workers.keys() {
            let _ = process::kill(Pid::from_raw(*pid), sig);
        }
        let mut limit = Instant::now() + self.settings.server.graceful_timeout;
        while !self.workers.is_empty() && Instant::now() < limit {
            for s in self
                .signals
                .as_ref()
                .map(|p| p.wait(Duration::from_millis(100)))
                .unwrap_or_default()
            {
                if sig == Signal::SIGTERM && matches!(s, Signal::SIGINT | Signal::SIGQUIT) {
                    log::info("Quick shutdown requested");
                    sig = Signal::SIGQUIT;
                    for pid in self.workers.keys() {
                        let _ = process::kill(Pid::from_raw(*pid), sig);
                    }
                    limit = Instant::now() + Duration::from_secs(2);
                }
            }
            // Errors in child_exit while stopping are logged, not fatal.
            if let Err(e) = self.reap_workers() {
                log::error(&e);
            }
        }
        for pid in self.workers.keys() {
            process::kill_group(Pid::from_raw(*pid));
        }
        // SIGKILL cannot be refused; the bound only guards against a child
        // that was reaped elsewhere.
        let limit = Instant::now() + Duration::from_secs(5);
        while !self.workers.is_empty() && Instant::now() < limit {
            std::thread::sleep(Duration::from_millis(10));
            if let Err(e) = self.reap_workers() {
                log::error(&e);
            }
        }
    }

    fn unlink_pidfile(&self) {
        if let Some(p) = &self.pidfile {
            p.unlink(self.pid);
        }
    }

    /// gunicorn's `halt`: stop, log, remove the pidfile, `on_exit`, exit status.
    fn halt(&mut self, stop: Stop) -> u8 {
        let (graceful, reason, code) = match stop {
            Stop::Graceful => (true, None, 0),
            Stop::Quick => (false, None, 0),
            Stop::Halt(reason, code) => (true, Some(reason), code),
        };
        self.notify.stopping(self.reexec_pid);
        self.stop(graceful);
        // gunicorn logs a halt with a non-zero status as an error.
        let level = if code == 0 {
            log::Level::Info
        } else {
            log::Level::Error
        };
        log::log(level, &format!("Shutting down: {}", self.master_name));
        if let Some(reason) = reason {
            log::log(level, &format!("Reason: {reason}"));
        }
        self.unlink_pidfile();
        let server = self.server.clone_ref(self.py);
        if let Err(e) = self.hook("on_exit", (server,)) {
            eprint!("{}", self.traceback(&e));
            return 1;
        }
        code as u8
    }
}

/// A worker process, the child side of a fork: what its life needs from
/// the master.
struct WorkerProcess<'a> {
    /// For the hooks.
    cfg: &'a Config,
    settings: &'a crate::settings::Server,
    title: String,
    server: Py<PyServer>,
    worker: Py<PyWorker>,
    /// Taken when it serves.
    setup: Option<WorkerSetup>,
    /// APP_MODULE of a Python app, imported during the boot.
    python_app: Option<&'a str>,
}

impl WorkerProcess<'_> {
    /// gunicorn's order (log, `post_fork`, env, user/group,
    /// `post_worker_init`, serve; then, as gunicorn's `finally`, "Worker
    /// exiting" and `worker_exit`, a failed boot included). Returns the
    /// exit status: errors become statuses here, at the fork boundary.
    fn run(mut self, py: Python<'_>) -> i32 {
        let pid = std::process::id();
        // The worker's signals are blocked from its fork (see
        // `fork_python`): its signal thread takes them (sigwait), and a
        // Python-level handler a hook installs never does (it is called
        // from there instead, see `on_term`).
        self.worker.borrow_mut(py).set_pid(py, pid as i32);
        process::set_title(&self.title);
        log::info(&format!("Booting worker with pid: {pid}"));
        let status = match self.boot(py) {
            Err(e) => e.status(),
            Ok(()) => {
                let setup = self.setup.take().expect("a worker serves once");
                self.serve(py, setup)
            }
        };
        log::info(&format!("Worker exiting (pid: {pid})"));
        self.worker.borrow_mut(py).alive = false;
        if let Err(e) = hooks::call(py, self.cfg, "worker_exit", (self.server, self.worker)) {
            hooks::log_exception_at(py, log::Level::Warning, "Exception during worker exit:", &e);
        }
        status
    }

    /// Serve until drained; the exit status.
    fn serve(&self, py: Python<'_>, setup: WorkerSetup) -> i32 {
        let (cfg, server, worker) = (self.cfg, &self.server, &self.worker);
        {
            let signal_hooks = SignalHooks {
                on_quit: signal_hook(py, cfg, server, worker, "worker_int"),
                on_abort: signal_hook(py, cfg, server, worker, "worker_abort"),
                on_term: Box::new(crate::python::embed::call_sigterm_handler),
            };
            let served = match crate::python::gevent::plan() {
                // This thread runs gevent's hub; tokio gets its own.
                Some(plan) => {
                    let limit = setup.conn.worker_connections;
                    let io = move |hooks| worker::serve(setup, hooks);
                    crate::python::gevent::serve(py, &plan, limit, signal_hooks, io)
                }
                None => py.detach(|| worker::serve(setup, signal_hooks)),
            };
            match served {
                Ok(requests) => {
                    worker.borrow_mut(py).nr = requests;
                    0
                }
                // The app's factory failed: a boot failure (logged), as
                // gunicorn's `load_wsgi` inside `init_process`.
                Err(ServeError::Boot(e)) => e.status(),
                Err(ServeError::Io(e)) => {
                    log::error(&format!("Worker failed: {e}"));
                    0
                }
            }
        }
    }

    /// Everything before serving, in gunicorn's order (its `init_process`:
    /// `post_fork`, env, user/group, the app's import, `post_worker_init`);
    /// an error is logged where it is found.
    fn boot(&self, py: Python<'_>) -> Result<(), BootError> {
        let (cfg, server, worker, python_app) =
            (self.cfg, &self.server, &self.worker, self.python_app);
        let failed = |e: PyErr| {
            hooks::log_exception(py, "Exception in worker process", &e);
            BootError::Worker
        };
        hooks::call(
            py,
            cfg,
            "post_fork",
            (server.clone_ref(py), worker.clone_ref(py)),
        )
        .map_err(failed)?;
        // gunicorn's gevent worker patches first thing in init_process, after
        // post_fork (so psycogreen's patch there comes first too).
        if let Some(plan) = crate::python::gevent::plan() {
            plan.patch(py, worker).map_err(failed)?;
        }
        if let Ok(env) = &self.settings.env {
            for (k, v) in env {
                crate::python::embed::set_env(py, k, Some(v));
            }
        }
        // As gunicorn's init_signals: SIGTERM has a Python handler for code
        // that wraps it (the worker drains on TERM whatever it does). Before
        // the user switch: the new user may not read the stdlib's files.
        crate::python::embed::install_sigterm_standin(py).map_err(failed)?;
        // user/group: after post_fork, which runs with the master's privileges.
        let (uid, gid) = (self.settings.user, self.settings.group);
        if let Err(e) = process::set_owner(uid, gid, self.settings.initgroups) {
            log::error(&format!(
                "Exception in worker process: can't switch to user {uid} group {gid}: {e}"
            ));
            return Err(BootError::Worker);
        }
        // The app is there for post_worker_init, as gunicorn's `worker.wsgi`
        // and `worker.app.callable` (the interface takes it from here).
        if let Some(uri) = python_app {
            match crate::python::import::import_in_worker(py, uri) {
                Ok(app) => {
                    let worker = worker.bind(py);
                    worker.setattr("wsgi", &app).map_err(failed)?;
                    worker
                        .getattr("app")
                        .and_then(|a| a.setattr("callable", &app))
                        .map_err(failed)?;
                }
                // With `reload` on, the boot goes on to serve gunicorn's fail
                // app, as gunicorn's `load_wsgi` does (see `reloader`).
                Err(_) if crate::python::reloader::import_failed() => {}
                Err(code) => return Err(code),
            }
        }
        hooks::call(py, cfg, "post_worker_init", (worker.clone_ref(py),)).map_err(failed)?;
        worker.borrow_mut(py).booted = true;
        Ok(())
    }
}

/// What the worker's signal thread runs on INT/QUIT (`worker_int`) or on
/// ABRT (`worker_abort`): that hook, then `worker_exit`, each logged if it
/// raises.
fn signal_hook(
    py: Python<'_>,
    cfg: &Config,
    server: &Py<PyServer>,
    worker: &Py<PyWorker>,
    hook: &'static str,
) -> Box<dyn Fn() + Send> {
    let (on_signal, on_exit) = (
        cfg.hook(py, hook).unbind(),
        cfg.hook(py, "worker_exit").unbind(),
    );
    let (server, worker) = (server.clone_ref(py), worker.clone_ref(py));
    Box::new(move || {
        Python::attach(|py| {
            worker.borrow_mut(py).alive = false;
            if let Err(e) = on_signal.bind(py).call1((worker.clone_ref(py),)) {
                hooks::log_exception(py, &format!("Exception in {hook} hook"), &e);
            }
            if let Err(e) = on_exit
                .bind(py)
                .call1((server.clone_ref(py), worker.clone_ref(py)))
            {
                hooks::log_exception_at(
                    py,
                    log::Level::Warning,
                    "Exception during worker exit:",
                    &e,
                );
            }
        })
    })
}
