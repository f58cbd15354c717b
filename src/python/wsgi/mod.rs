//! Serving the user's Python WSGI application (PEP 3333) from a Rust worker.
//!
//! This module owns:
//!
//! - the choice of interface from `worker_class` (`sync`/`gthread` ->
//!   WSGI, the ASGI classes -> "not served yet", anything else an error;
//!   the default `sync` -> detected from the app) and the worker's
//!   [`AppFactory`] that imports APP_MODULE after fork (gunicorn's exit
//!   statuses 3 and 4 when it can't);
//! - the pool of `threads` app threads: std threads attached to the
//!   interpreter for their whole life, that detach while they wait for a
//!   request. The tokio thread never runs Python and never takes the GIL.
//!   Under a gevent class there is no pool: [`crate::python::gevent`] runs
//!   [`handle`] in a greenlet per request, and the waits below park the
//!   greenlet instead of detaching the thread;
//! - the environ (compared key by key with gunicorn 27.0.1's sync worker in
//!   `tests/wsgi.rs`), `wsgi.input` (the request body streamed from the
//!   tokio side through a small bounded channel, the GIL released while an
//!   app thread waits for bytes), `wsgi.errors`, `wsgi.file_wrapper`;
//! - `start_response` (with `exc_info`), `write()`, the response iterable
//!   streamed as it yields (bounded channel, the GIL released while the
//!   client is slow) and its `close()`; an exception before the headers
//!   went out is gunicorn's 500 and a traceback in the error log.
//!
//! Data flow of one request: the service (tokio thread) starts a pump task
//! for the body, queues a [`Job`] and awaits the response head; an app
//! thread builds the environ, calls the app, and sends back either a whole
//! response (a list, or a body whose `Content-Length` is reached by its
//! first chunk) or a head plus a channel the rest is streamed through.

use std::io::Write as _;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use pyo3::exceptions::{PyAssertionError, PyOSError, PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};
use tokio::sync::{mpsc, oneshot};
use tower::util::BoxCloneService;

use crate::settings::PythonApp;

use crate::app::ConnAddrs;
use crate::app::{
    full, internal_error, AppFactory, BoxApp, BoxError, Capacity, LoopBeat, ResponseBody,
    WorkerInfo,
};
use crate::http::gate::{Limits, SentLine};
use crate::http::text::{latin1, percent_decode};
use crate::log;
use crate::python::import;
use crate::python::request_hooks::AppEnviron;
use crate::python::worker_class::{Interface, WorkerClass};

use crate::boot::BootError;

/// Request body chunks buffered between the pump and the app thread.
const BODY_CHANNEL: usize = 4;
/// Response chunks buffered between the app thread and hyper.
const RESPONSE_CHANNEL: usize = 4;
/// The app threads' stack (Python code recurses on it).
const APP_THREAD_STACK: usize = 8 << 20;

/// Python helpers: `wsgi.errors` (an `io.RawIOBase`, as gunicorn's), PEP
/// 3333's file wrapper and the ASGI detection.
const HELPERS: &std::ffi::CStr = pyo3::ffi::c_str!(include_str!("wsgi.py"));

/// The interface the app is served with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Choice {
    Wsgi,
    /// worker_class is the default: look at the app.
    Detect,
}

/// Settings the app threads (or a gevent worker's hub) need, read in the
/// master at start.
#[derive(Clone)]
pub(crate) struct Settings {
    uri: String,
    choice: Choice,
    threads: usize,
    multithread: bool,
    multiprocess: bool,
    errorlog: Option<String>,
    limits: Arc<Limits>,
    /// `post_request` is configured: each response carries its environ.
    post_request: bool,
    /// For an app detected as ASGI (worker_class not set).
    asgi: crate::python::asgi::Settings,
}

/// What the worker imported.
enum Loaded {
    Wsgi(WsgiApp),
    Asgi(Py<PyAny>),
}

/// `worker_class` as a string (a class object as `module.QualName`).
fn worker_class_name(py: Python<'_>, settings: &PythonApp) -> String {
    let v = settings.worker_class.bind(py);
    if let Ok(s) = v.extract::<String>() {
        return s;
    }
    let part = |name: &str| {
        v.getattr(name)
            .and_then(|p| p.extract::<String>())
            .unwrap_or_default()
    };
    format!("{}.{}", part("__module__"), part("__qualname__"))
}

/// For a Rust app (built-in or a library app): worker_class picks nothing,
/// say so when it was set.
pub fn log_ignored_worker_class(py: Python<'_>, settings: &PythonApp) {
    let class = worker_class_name(py, settings);
    if class != "sync" {
        log::info(&format!(
            "worker_class {class:?} is ignored: a Rust app is served by rgunicorn's Rust workers"
        ));
    }
}

/// The worker's app factory for the Python app `uri` (called in the master
/// at start; the app itself is imported in each worker, after fork).
///
/// `class` is the resolved `worker_class`. rgunicorn's configuration does
/// not record whether a setting was set explicitly, so the default value
/// `sync` counts as "not set" and the interface is then detected from the
/// app.
pub fn app_factory(
    settings: &crate::settings::Settings,
    uri: &str,
    class: &WorkerClass,
) -> anyhow::Result<AppFactory> {
    let (choice, threaded) = match &class.interface {
        Interface::Detect => (Choice::Detect, false),
        // gunicorn's async workers say multithread (greenlets).
        Interface::Wsgi { threaded } => (Choice::Wsgi, *threaded),
        Interface::Gevent(_) => (Choice::Wsgi, true),
        Interface::Asgi(uvicorn) => {
            return crate::python::asgi::app_factory(settings, uri, uvicorn.as_deref())
        }
    };
    let python = &settings.python;
    let threads = python.threads;
    let settings = Settings {
        uri: uri.to_string(),
        choice,
        threads,
        // gunicorn runs the threaded worker for gthread or threads > 1.
        multithread: threads > 1 || threaded,
        multiprocess: python.multiprocess,
        errorlog: python.errorlog_file.clone(),
        limits: settings.limits.clone(),
        post_request: python.post_request,
        asgi: crate::python::asgi::Settings::new(settings, None)?,
    };
    if let Interface::Gevent(gevent) = &class.interface {
        let green = crate::python::gevent::app_factory(settings, gevent.patch_override.clone());
        // With `reload` on, an import that failed during the boot is
        // served as gunicorn's fail app.
        return Ok(Arc::new(move |info: &WorkerInfo| {
            match crate::python::reloader::fail_app_if_import_failed() {
                Some(app) => Ok(app),
                None => green(info),
            }
        }));
    }
    Ok(Arc::new(move |info: &WorkerInfo| {
        // With `reload` on, an import that failed during the boot is
        // served as gunicorn's fail app.
        if let Some(app) = crate::python::reloader::fail_app_if_import_failed() {
            return Ok(app);
        }
        load(&settings, info)
    }))
}

/// In the worker: import the app, choose the interface, start the app
/// threads. The error's reason is already logged.
fn load(settings: &Settings, info: &WorkerInfo) -> Result<BoxApp, BootError> {
    let loaded = Python::attach(|py| -> Result<Loaded, BootError> {
        let app = import::worker_app_or_status(py, &settings.uri)?;
        let helpers = helpers(py).map_err(|e| {
            crate::python::hooks::log_exception(py, "Exception in worker process", &e);
            BootError::Worker
        })?;
        if settings.choice == Choice::Detect {
            let asgi = helpers
                .getattr("is_asgi")
                .and_then(|f| f.call1((app.bind(py),)))
                .and_then(|r| r.is_truthy())
                .unwrap_or(false);
            if asgi {
                log::info(&format!(
                    "{} is an ASGI application (detected: worker_class is not set)",
                    settings.uri
                ));
                return Ok(Loaded::Asgi(app));
            }
            log::info(&format!(
                "{} is a WSGI application (detected: worker_class is not set)",
                settings.uri
            ));
        }
        WsgiApp::new(py, settings, app, &helpers)
            .map(Loaded::Wsgi)
            .map_err(|e| {
                crate::python::hooks::log_exception(py, "Exception in worker process", &e);
                BootError::Worker
            })
    })?;
    let app = match loaded {
        Loaded::Wsgi(app) => app,
        Loaded::Asgi(app) => return crate::python::asgi::serve_imported(&settings.asgi, app, info),
    };
    // gunicorn's sync worker (one thread) is timed out when a request is
    // stuck in the app: its one app thread is then the heartbeat. With
    // threads (gthread) a stuck request is not, as in gunicorn.
    let beat = (settings.threads == 1).then(|| info.watch_loop());
    // With threads, the worker stops accepting while they are all busy
    // (one thread is covered by its heartbeat).
    let capacity = (settings.threads > 1).then(|| info.watch_pool(settings.threads));
    let pool = Arc::new(
        Pool::start(app, settings.threads, beat, capacity).map_err(|e| {
            log::error(&format!(
                "Exception in worker process: can't start the app threads: {e}"
            ));
            BootError::Worker
        })?,
    );
    Ok(BoxCloneService::new(tower::service_fn(
        move |req: Request<Incoming>| {
            let pool = pool.clone();
            async move { Ok(pool.call(req).await) }
        },
    )))
}

/// In a gevent worker, on the hub's thread: import the app (always WSGI,
/// as gunicorn's gevent workers serve it). The error's reason is already
/// logged.
pub(crate) fn load_green(py: Python<'_>, settings: &Settings) -> Result<WsgiApp, BootError> {
    let app = import::worker_app_or_status(py, &settings.uri)?;
    let made = helpers(py).and_then(|helpers| WsgiApp::new(py, settings, app, &helpers));
    match made {
        Ok(mut app) => {
            app.green = true;
            Ok(app)
        }
        Err(e) => {
            crate::python::hooks::log_exception(py, "Exception in worker process", &e);
            Err(BootError::Worker)
        }
    }
}

fn helpers(py: Python<'_>) -> PyResult<Bound<'_, PyModule>> {
    PyModule::from_code(py, HELPERS, c"rgunicorn_wsgi.py", c"rgunicorn_wsgi")
}

/// The imported app and what every environ shares.
pub(crate) struct WsgiApp {
    app: Py<PyAny>,
    /// The environ keys that are the same for every request.
    base: Py<PyDict>,
    /// The `SCRIPT_NAME` environment variable (gunicorn reads it too).
    script_name_env: String,
    limits: Arc<Limits>,
    /// See [`Settings::post_request`].
    post_request: bool,
    /// Served by greenlets on gevent's hub: waits for the tokio side park
    /// the greenlet ([`crate::python::gevent::block_on`]) instead of the thread.
    green: bool,
}

impl WsgiApp {
    fn new(
        py: Python<'_>,
        s: &Settings,
        app: Py<PyAny>,
        helpers: &Bound<'_, PyModule>,
    ) -> PyResult<WsgiApp> {
        let base = PyDict::new(py);
        let sink = Py::new(
            py,
            ErrorSink {
                path: s.errorlog.clone(),
            },
        )?;
        base.set_item(
            "wsgi.errors",
            helpers.getattr("ErrorStream")?.call1((sink,))?,
        )?;
        base.set_item("wsgi.version", (1, 0))?;
        base.set_item("wsgi.multithread", s.multithread)?;
        base.set_item("wsgi.multiprocess", s.multiprocess)?;
        base.set_item("wsgi.run_once", false)?;
        base.set_item("wsgi.file_wrapper", helpers.getattr("FileWrapper")?)?;
        base.set_item("wsgi.input_terminated", true)?;
        base.set_item(
            "SERVER_SOFTWARE",
            helpers
                .getattr("server_software")?
                .call1((format!("rgunicorn/{}", env!("CARGO_PKG_VERSION")),))?,
        )?;
        Ok(WsgiApp {
            app,
            base: base.unbind(),
            script_name_env: std::env::var("SCRIPT_NAME").unwrap_or_default(),
            limits: s.limits.clone(),
            post_request: s.post_request,
            green: false,
        })
    }
}

/// One request for an app thread (or a greenlet).
pub(crate) struct Job {
    pub(crate) parts: http::request::Parts,
    pub(crate) body: Option<mpsc::Receiver<BodyChunk>>,
    pub(crate) reply: oneshot::Sender<Response<ResponseBody>>,
}

/// A piece of the request body, or why reading it failed.
pub(crate) type BodyChunk = Result<Bytes, hyper::Error>;

/// The app threads and the queue that feeds them.
struct Pool {
    /// The queue to the app threads (`Sender` is `Sync`: no lock).
    jobs: std_mpsc::Sender<Job>,
}

impl Pool {
    fn start(
        app: WsgiApp,
        threads: usize,
        beat: Option<LoopBeat>,
        capacity: Option<Arc<Capacity>>,
    ) -> std::io::Result<Pool> {
        let (tx, rx) = std_mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let app = Arc::new(app);
        for i in 0..threads {
            let (rx, app, beat) = (rx.clone(), app.clone(), beat.clone());
            let capacity = capacity.clone();
            std::thread::Builder::new()
                .name(format!("rgunicorn-wsgi-{i}"))
                .stack_size(APP_THREAD_STACK)
                .spawn(move || app_thread(&app, &rx, beat, capacity))?;
        }
        Ok(Pool { jobs: tx })
    }

    /// Serve one request (on the tokio thread: no Python here).
    async fn call(&self, req: Request<Incoming>) -> Response<ResponseBody> {
        let (parts, body) = req.into_parts();
        let body = (!http_body::Body::is_end_stream(&body)).then(|| pump(body));
        let (reply, response) = oneshot::channel();
        let queued = self.jobs.send(Job { parts, body, reply }).is_ok();
        if !queued {
            log::error("Error handling request: the app threads are gone");
            return internal_error();
        }
        // A dropped reply (a panic in the app thread) is a 500 too.
        response.await.unwrap_or_else(|_| internal_error())
    }
}

/// Read the request body on the tokio side into a bounded channel, as the
/// app asks for it; stops when the app's end is dropped.
pub(crate) fn pump(mut body: Incoming) -> mpsc::Receiver<BodyChunk> {
    let (tx, rx) = mpsc::channel(BODY_CHANNEL);
    tokio::spawn(async move {
        loop {
            let frame = tokio::select! {
                f = body.frame() => f,
                _ = tx.closed() => return,
            };
            match frame {
                None => return,
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        if !data.is_empty() && tx.send(Ok(data)).await.is_err() {
                            return;
                        }
                    }
                }
                Some(Err(e)) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            }
        }
    });
    rx
}

/// An app thread: attached to the interpreter for good, detached while it
/// waits for the next request. With `beat`, it beats while idle and after
/// each request, never during one. With `capacity`, it counts itself busy
/// for the time of each request.
fn app_thread(
    app: &WsgiApp,
    jobs: &Mutex<std_mpsc::Receiver<Job>>,
    beat: Option<LoopBeat>,
    capacity: Option<Arc<Capacity>>,
) {
    crate::sys::process::set_thread_role(crate::sys::process::ThreadRole::App);
    Python::attach(|py| loop {
        let job = py.detach(|| loop {
            let Ok(rx) = jobs.lock() else { return None };
            let Some(beat) = &beat else {
                return rx.recv().ok();
            };
            beat.beat();
            match rx.recv_timeout(std::time::Duration::from_millis(500)) {
                Ok(job) => return Some(job),
                Err(std_mpsc::RecvTimeoutError::Timeout) => continue,
                Err(std_mpsc::RecvTimeoutError::Disconnected) => return None,
            }
        });
        let Some(job) = job else { return };
        if job.reply.is_closed() {
            // The client went away while the request was queued.
            continue;
        }
        if let Some(c) = &capacity {
            c.take();
        }
        let caught = std::panic::catch_unwind(AssertUnwindSafe(|| handle(py, app, job)));
        if let Some(c) = &capacity {
            c.give();
        }
        if caught.is_err() {
            log::error("Error handling request: panic in the WSGI app thread");
        }
        if let Some(beat) = &beat {
            beat.beat();
        }
    })
}

/// Run the app for one request and send its response.
pub(crate) fn handle(py: Python<'_>, app: &WsgiApp, job: Job) {
    let Job { parts, body, reply } = job;
    // As gunicorn's "Error handling request GET /p?q".
    let raw = SentLine::of_parts(&parts).target();
    let label = format!("{} {raw}", parts.method);
    let shared = Arc::new(Shared {
        state: Mutex::new(RespState {
            head: None,
            started: false,
            phase: Phase::Pending(reply),
            remaining: None,
            environ: None,
        }),
        green: app.green,
    });
    let input = match Py::new(py, Input::new(body, app.green)) {
        Ok(i) => i,
        Err(e) => {
            shared.fail(py, &label, &e);
            return;
        }
    };
    let environ = match build_environ(py, app, &parts, &raw, &input) {
        Ok(env) => env,
        Err(EnvironError::Py(e)) => {
            shared.fail(py, &label, &e);
            return;
        }
        Err(EnvironError::ScriptName(msg)) => {
            // gunicorn's ConfigurationProblem: a 500 with the message.
            log::warning(&format!(
                "Invalid request from ip={}: {msg}",
                peer_ip(&parts)
            ));
            shared.send_raw_error(500, "Bad Request", &msg);
            return;
        }
    };
    if app.post_request {
        shared.lock().environ = Some(AppEnviron(Arc::new(environ.clone().unbind())));
    }
    let responder = match Py::new(
        py,
        Responder {
            shared: shared.clone(),
        },
    ) {
        Ok(r) => r,
        Err(e) => {
            shared.fail(py, &label, &e);
            return;
        }
    };
    let result = app.app.bind(py).call1((environ, responder));
    match result {
        Err(e) => shared.fail(py, &label, &e),
        Ok(iterable) => {
            let sent = send_iterable(py, &shared, &iterable);
            // close() whatever happened, as PEP 3333 wants.
            let closed = match iterable.getattr(intern!(py, "close")) {
                Ok(close) => close.call0().map(|_| ()),
                Err(_) => Ok(()),
            };
            match sent.and(closed) {
                Ok(()) => shared.finish(py, &label),
                Err(e) => shared.fail(py, &label, &e),
            }
        }
    }
    // Let the body pump go, even if the app kept the environ.
    if let Ok(mut input) = input.bind(py).try_borrow_mut() {
        input.rx = None;
    }
}

fn peer_ip(parts: &http::request::Parts) -> String {
    parts
        .extensions
        .get::<ConnAddrs>()
        .and_then(|a| a.peer)
        .map(|p| p.ip().to_string())
        .unwrap_or_default()
}

/// Iterate the app's response and send what it yields.
fn send_iterable(py: Python<'_>, shared: &Shared, iterable: &Bound<'_, PyAny>) -> PyResult<()> {
    // A list or tuple is in memory already: one response, no channel.
    if shared.pending()
        && (iterable.is_exact_instance_of::<PyList>() || iterable.is_exact_instance_of::<PyTuple>())
    {
        let mut body = BytesMut::new();
        for item in iterable.try_iter()? {
            body.extend_from_slice(chunk_bytes(&item?)?);
        }
        return shared.send_all(py, body.freeze());
    }
    for item in iterable.try_iter()? {
        let item = item?;
        let data = chunk_bytes(&item)?;
        if data.is_empty() {
            continue;
        }
        if !shared.send(py, Bytes::copy_from_slice(data))? {
            // The client is gone: stop iterating (close() still runs).
            break;
        }
    }
    Ok(())
}

/// A body chunk must be bytes (gunicorn: `TypeError: %r is not a byte`).
fn chunk_bytes<'a>(item: &'a Bound<'_, PyAny>) -> PyResult<&'a [u8]> {
    match item.cast::<PyBytes>() {
        Ok(b) => Ok(b.as_bytes()),
        Err(_) => Err(PyTypeError::new_err(format!(
            "{} is not a byte",
            item.repr().map(|r| r.to_string()).unwrap_or_default()
        ))),
    }
}

enum EnvironError {
    Py(PyErr),
    /// The request path does not start with SCRIPT_NAME.
    ScriptName(String),
}

impl From<PyErr> for EnvironError {
    fn from(e: PyErr) -> Self {
        EnvironError::Py(e)
    }
}

/// gunicorn's `wsgi.create`, key by key.
fn build_environ<'py>(
    py: Python<'py>,
    app: &WsgiApp,
    parts: &http::request::Parts,
    raw_uri: &str,
    input: &Py<Input>,
) -> Result<Bound<'py, PyDict>, EnvironError> {
    let env = app.base.bind(py).copy()?;
    let addrs = parts
        .extensions
        .get::<ConnAddrs>()
        .copied()
        .unwrap_or_default();
    env.set_item(intern!(py, "wsgi.input"), input)?;
    env.set_item(intern!(py, "REQUEST_METHOD"), parts.method.as_str())?;
    let line = SentLine::of_parts(parts);
    let raw_head = line.raw();
    let split = line.parts();
    let raw_path = split.path;
    env.set_item(intern!(py, "QUERY_STRING"), latin1(split.query))?;
    env.set_item(intern!(py, "RAW_URI"), raw_uri)?;
    env.set_item(intern!(py, "SERVER_PROTOCOL"), line.protocol())?;
    if parts.version == http::Version::HTTP_2 {
        // As gunicorn's HTTP/2 workers mark it.
        env.set_item(intern!(py, "HTTP_VERSION"), "2")?;
    }

    let mut host: Option<String> = None;
    let mut script_name_header: Option<String> = None;
    for name in parts.headers.keys() {
        let mut values = parts.headers.get_all(name).iter();
        let first = values
            .next()
            .map(|v| latin1(v.as_bytes()))
            .unwrap_or_default();
        let upper = name.as_str().to_ascii_uppercase();
        match upper.as_str() {
            "HOST" => host = Some(first.clone()),
            // gunicorn takes the last one.
            "SCRIPT_NAME" => {
                script_name_header = parts
                    .headers
                    .get_all(name)
                    .iter()
                    .next_back()
                    .map(|v| latin1(v.as_bytes()))
            }
            "CONTENT-TYPE" => {
                env.set_item(intern!(py, "CONTENT_TYPE"), first)?;
                continue;
            }
            "CONTENT-LENGTH" => {
                // The digits as sent (`007`), as gunicorn.
                let sent = raw_head.and_then(|r| r.content_length.as_deref());
                match sent {
                    Some(digits) => env.set_item(intern!(py, "CONTENT_LENGTH"), latin1(digits))?,
                    None => env.set_item(intern!(py, "CONTENT_LENGTH"), first)?,
                }
                continue;
            }
            _ => {}
        }
        let mut value = first;
        for v in values {
            value.push(',');
            value.push_str(&latin1(v.as_bytes()));
        }
        env.set_item(format!("HTTP_{}", upper.replace('-', "_")), value)?;
    }

    let trusted = app.limits.trusts_forwarder(addrs.peer.map(|p| p.ip()));
    let scheme = url_scheme(&app.limits, trusted, &parts.headers, addrs.tls);
    env.set_item(intern!(py, "wsgi.url_scheme"), scheme)?;

    match addrs.client() {
        Some(peer) => {
            env.set_item(intern!(py, "REMOTE_ADDR"), peer.ip().to_string())?;
            env.set_item(intern!(py, "REMOTE_PORT"), peer.port().to_string())?;
        }
        None => env.set_item(intern!(py, "REMOTE_ADDR"), "")?,
    }
    // gunicorn's proxy_environ. Where a LOCAL/UNSPEC header names no
    // addresses gunicorn puts None in the environ; PEP 3333 wants strings,
    // so those keys keep the socket's values or are left out.
    if let Some(info) = addrs.proxy {
        env.set_item(intern!(py, "PROXY_PROTOCOL"), info.proto)?;
        if let (Some(ip), Some(port)) = (info.proxy_addr, info.proxy_port) {
            env.set_item(intern!(py, "PROXY_ADDR"), ip.to_string())?;
            env.set_item(intern!(py, "PROXY_PORT"), port.to_string())?;
        }
    }

    let (server_name, server_port) = match addrs.server {
        Some(s) => (s.ip().to_string(), s.port().to_string()),
        // A unix socket: from the Host header, as gunicorn does.
        None => match &host {
            Some(h) => {
                let mut parts: Vec<String> = h.split(':').map(str::to_string).collect();
                if parts.len() == 1 {
                    parts.push(if scheme == "https" { "443" } else { "80" }.into());
                }
                (parts[0].clone(), parts[1].clone())
            }
            None => (String::new(), String::new()),
        },
    };
    env.set_item(intern!(py, "SERVER_NAME"), server_name)?;
    env.set_item(intern!(py, "SERVER_PORT"), server_port)?;

    // SCRIPT_NAME: a trusted proxy's header, else the environment
    // variable (gunicorn 27 applies `root_path` to ASGI apps only);
    // PATH_INFO is the rest of the path, decoded.
    let (script_name, path_info): (String, &[u8]) = match script_name_header
        .or_else(|| (!app.script_name_env.is_empty()).then(|| app.script_name_env.clone()))
    {
        Some(script) if !script.is_empty() => match raw_path.strip_prefix(script.as_bytes()) {
            Some(rest) => (script, rest),
            None => {
                return Err(EnvironError::ScriptName(format!(
                    "Request path {} does not start with SCRIPT_NAME {}",
                    py_repr(py, &latin1(raw_path)),
                    py_repr(py, &script)
                )))
            }
        },
        _ => (String::new(), raw_path),
    };
    env.set_item(intern!(py, "PATH_INFO"), latin1(&percent_decode(path_info)))?;
    env.set_item(intern!(py, "SCRIPT_NAME"), script_name)?;
    Ok(env)
}

fn py_repr(py: Python<'_>, s: &str) -> String {
    PyString::new(py, s)
        .repr()
        .map(|r| r.to_string())
        .unwrap_or_else(|_| format!("'{s}'"))
}

/// `https` on a TLS connection, else `http`; a trusted peer's first
/// `secure_scheme_headers` header decides over both (gunicorn's order;
/// contradictions were already refused by the request gate).
fn url_scheme(limits: &Limits, trusted: bool, headers: &HeaderMap, tls: bool) -> &'static str {
    if trusted {
        for (name, want) in &limits.secure_scheme_headers {
            if let Some(v) = headers.get(name.as_str()) {
                return if v.as_bytes() == want.as_bytes() {
                    "https"
                } else {
                    "http"
                };
            }
        }
    }
    if tls {
        "https"
    } else {
        "http"
    }
}

/// The response head the app gave `start_response`.
struct Head {
    status: StatusCode,
    reason: Option<hyper::ext::ReasonPhrase>,
    headers: HeaderMap,
    content_length: Option<u64>,
}

type Chunk = Result<Bytes, BoxError>;
type ChunkSender = mpsc::Sender<Chunk>;

/// Where the response is.
enum Phase {
    /// Nothing sent yet.
    Pending(oneshot::Sender<Response<ResponseBody>>),
    /// Head sent; the body goes through this channel.
    Streaming(ChunkSender),
    /// All sent, or the client is gone.
    Done,
}

struct RespState {
    head: Option<Head>,
    /// start_response was called (the head may have been sent since).
    started: bool,
    phase: Phase,
    /// Bytes still allowed by the app's Content-Length.
    remaining: Option<u64>,
    /// The request's environ, for `post_request` (gunicorn passes it).
    environ: Option<AppEnviron>,
}

/// The response of one request, shared by the app thread, the
/// `start_response`/`write` callables and whatever thread the app uses.
struct Shared {
    state: Mutex<RespState>,
    /// See [`WsgiApp::green`].
    green: bool,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, RespState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn pending(&self) -> bool {
        matches!(self.lock().phase, Phase::Pending(_))
    }

    /// The response to send as it is now (head taken).
    fn response(state: &mut RespState, body: ResponseBody) -> PyResult<Response<ResponseBody>> {
        let head = state
            .head
            .take()
            .ok_or_else(|| PyAssertionError::new_err("start_response() was not called"))?;
        let mut resp = Response::new(body);
        *resp.status_mut() = head.status;
        *resp.headers_mut() = head.headers;
        if let Some(reason) = head.reason {
            resp.extensions_mut().insert(reason);
        }
        if let Some(environ) = state.environ.take() {
            resp.extensions_mut().insert(environ);
        }
        Ok(resp)
    }

    /// Cut `data` to what Content-Length still allows.
    fn limit(state: &mut RespState, mut data: Bytes) -> Bytes {
        if let Some(rem) = state.remaining.as_mut() {
            if (data.len() as u64) > *rem {
                data.truncate(*rem as usize);
            }
            *rem -= data.len() as u64;
        }
        data
    }

    /// The whole body at once (a list response): one message, no channel.
    fn send_all(&self, py: Python<'_>, data: Bytes) -> PyResult<()> {
        let mut st = self.lock();
        if !matches!(st.phase, Phase::Pending(_)) {
            drop(st);
            return self.send(py, data).map(|_| ());
        }
        let data = Shared::limit(&mut st, data);
        let resp = Shared::response(&mut st, full(data))?;
        if let Phase::Pending(reply) = std::mem::replace(&mut st.phase, Phase::Done) {
            let _ = reply.send(resp);
        }
        Ok(())
    }

    /// Send one body chunk (the head first if it has not gone out).
    /// `Ok(false)`: the client is gone.
    fn send(&self, py: Python<'_>, data: Bytes) -> PyResult<bool> {
        let tx = {
            let mut st = self.lock();
            if !st.started {
                return Err(PyAssertionError::new_err(
                    "write() or a body before start_response()",
                ));
            }
            let data = Shared::limit(&mut st, data);
            match &st.phase {
                Phase::Done => return Ok(false),
                Phase::Pending(_) => {
                    // A body whose Content-Length this chunk completes goes
                    // out whole; anything else is streamed from here on.
                    let complete = st.remaining == Some(0);
                    let (body, tx) = if complete {
                        (full(data), None)
                    } else {
                        let (tx, rx) = mpsc::channel(RESPONSE_CHANNEL);
                        (
                            crate::app::FlushBeforeError::new(StreamBody {
                                first: Some(data),
                                rx,
                            })
                            .boxed_unsync(),
                            Some(tx),
                        )
                    };
                    let resp = Shared::response(&mut st, body)?;
                    let Phase::Pending(reply) = std::mem::replace(&mut st.phase, Phase::Done)
                    else {
                        unreachable!()
                    };
                    if reply.send(resp).is_err() {
                        return Ok(false);
                    }
                    if let Some(tx) = tx {
                        st.phase = Phase::Streaming(tx);
                    }
                    return Ok(true);
                }
                Phase::Streaming(tx) => {
                    if data.is_empty() {
                        return Ok(true);
                    }
                    (tx.clone(), data)
                }
            }
        };
        let (tx, data) = tx;
        // Never block with the lock held or while attached.
        let sent = match tx.try_send(Ok(data)) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(item)) => self.wait_send(py, tx, item)?,
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        };
        if !sent {
            self.lock().phase = Phase::Done;
        }
        Ok(sent)
    }

    /// Send `item` once the channel has room: the thread detached, or the
    /// greenlet parked. `Ok(false)`: the client is gone.
    fn wait_send(&self, py: Python<'_>, tx: ChunkSender, item: Chunk) -> PyResult<bool> {
        if self.green {
            let permit = crate::python::gevent::block_on(py, tx.reserve_owned())?;
            Ok(permit.map(|p| p.send(item)).is_ok())
        } else {
            Ok(py.detach(|| tx.blocking_send(item)).is_ok())
        }
    }

    /// The iterable is exhausted: send what is still pending, end the stream.
    fn finish(&self, py: Python<'_>, label: &str) {
        let mut st = self.lock();
        match std::mem::replace(&mut st.phase, Phase::Done) {
            Phase::Pending(reply) => match Shared::response(&mut st, full(Bytes::new())) {
                Ok(resp) => {
                    let _ = reply.send(resp);
                }
                Err(e) => {
                    st.phase = Phase::Pending(reply);
                    drop(st);
                    self.fail(py, label, &e);
                }
            },
            // Dropping the sender ends the body.
            Phase::Streaming(_) | Phase::Done => {}
        }
    }

    /// The app failed: gunicorn's 500 if nothing was sent, else the
    /// connection is aborted; the traceback goes to the error log.
    fn fail(&self, py: Python<'_>, label: &str, err: &PyErr) {
        let mut st = self.lock();
        match std::mem::replace(&mut st.phase, Phase::Done) {
            Phase::Pending(reply) => {
                drop(st);
                crate::python::hooks::log_exception(
                    py,
                    &format!("Error handling request {label}"),
                    err,
                );
                let _ = reply.send(internal_error());
            }
            Phase::Streaming(tx) => {
                drop(st);
                crate::python::hooks::log_exception(py, "Error handling request", err);
                // The error (not the end of the stream) must reach hyper, so
                // that the connection is aborted instead of the response
                // looking complete: wait for room, detached.
                let abort: BoxError = "the WSGI app failed while streaming its response".into();
                let _ = self.wait_send(py, tx, Err(abort));
            }
            Phase::Done => {
                drop(st);
                crate::python::hooks::log_exception(py, "Error handling request", err);
            }
        }
    }

    /// gunicorn's error page for a request refused before the app ran.
    fn send_raw_error(&self, status: u16, reason: &str, msg: &str) {
        let mut st = self.lock();
        if let Phase::Pending(reply) = std::mem::replace(&mut st.phase, Phase::Done) {
            let resp = crate::app::error_response(status, reason, msg);
            let _ = reply.send(resp);
        }
    }
}

/// A streamed response body: the first chunk, then the channel.
struct StreamBody {
    first: Option<Bytes>,
    rx: mpsc::Receiver<Result<Bytes, BoxError>>,
}

impl http_body::Body for StreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(first) = self.first.take().filter(|f| !f.is_empty()) {
            return Poll::Ready(Some(Ok(Frame::data(first))));
        }
        self.rx
            .poll_recv(cx)
            .map(|item| item.map(|r| r.map(Frame::data)))
    }
}

/// gunicorn's hop-by-hop headers (`util.is_hoppish`): not passed on.
fn is_hop_by_hop(lower: &str) -> bool {
    matches!(
        lower,
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailers"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// RFC 9110 token characters.
fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c))
}

/// gunicorn's HEADER_VALUE_RE and STATUS_RE reason characters.
fn is_field_char(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\x21'..='\x7e' | '\u{80}'..='\u{ff}')
}

fn repr_of(v: &Bound<'_, PyAny>) -> String {
    v.repr().map(|r| r.to_string()).unwrap_or_default()
}

/// The `status` and `headers` of `start_response`, checked as gunicorn
/// checks them.
fn parse_head(status: &Bound<'_, PyAny>, headers: &Bound<'_, PyAny>) -> PyResult<Head> {
    let status: String = match status.cast::<PyString>() {
        Ok(s) => s.to_string(),
        Err(_) => {
            return Err(PyTypeError::new_err(format!(
                "{} is not a string",
                repr_of(status)
            )))
        }
    };
    let invalid = || PyValueError::new_err(format!("Invalid status '{status}'"));
    let code_part = status.get(..3).ok_or_else(invalid)?;
    if !code_part.bytes().all(|c| c.is_ascii_digit()) {
        return Err(invalid());
    }
    let reason_part = &status[3..];
    let reason = match reason_part.strip_prefix(' ') {
        None if reason_part.is_empty() => "",
        None => return Err(invalid()),
        Some(r) if r.chars().all(is_field_char) => r,
        Some(_) => return Err(invalid()),
    };
    let code: u16 = code_part.parse().map_err(|_| invalid())?;
    let status_code = StatusCode::from_u16(code).map_err(|_| invalid())?;
    let reason = if status_code.canonical_reason() == Some(reason) {
        None
    } else {
        let bytes: Vec<u8> = reason.chars().map(|c| c as u32 as u8).collect();
        hyper::ext::ReasonPhrase::try_from(bytes).ok()
    };

    let mut map = HeaderMap::new();
    let mut content_length = None;
    for item in headers.try_iter()? {
        let item = item?;
        let (name, value): (Bound<'_, PyAny>, Bound<'_, PyAny>) = item.extract()?;
        let name = match name.cast::<PyString>() {
            Ok(n) => n.to_string(),
            Err(_) => {
                return Err(PyTypeError::new_err(format!(
                    "{} is not a string",
                    repr_of(&name)
                )))
            }
        };
        if !is_token(&name) {
            return Err(PyValueError::new_err(format!(
                "Invalid response header name {}",
                py_repr(headers.py(), &name)
            )));
        }
        let value = match value.cast::<PyString>() {
            Ok(v) => v.to_string(),
            Err(_) => {
                return Err(PyTypeError::new_err(format!(
                    "{} is not a string",
                    repr_of(&value)
                )))
            }
        };
        if !value.chars().all(is_field_char) {
            return Err(PyValueError::new_err(format!(
                "Invalid response header {}",
                py_repr(headers.py(), &name)
            )));
        }
        let value = value.trim_matches([' ', '\t']);
        let lower = name.to_ascii_lowercase();
        if lower == "content-length" {
            let n: u64 = value.parse().map_err(|_| {
                PyValueError::new_err(format!(
                    "invalid literal for int() with base 10: {}",
                    py_repr(headers.py(), value)
                ))
            })?;
            content_length = Some(n);
        } else if is_hop_by_hop(&lower) {
            continue;
        }
        let bytes: Vec<u8> = value.chars().map(|c| c as u32 as u8).collect();
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(&bytes),
        ) else {
            return Err(PyValueError::new_err(format!(
                "Invalid response header {}",
                py_repr(headers.py(), &name)
            )));
        };
        map.append(name, value);
    }
    Ok(Head {
        status: status_code,
        reason,
        headers: map,
        content_length,
    })
}

/// `start_response` (callable) with its `write`.
#[pyclass(frozen, module = "rgunicorn")]
struct Responder {
    shared: Arc<Shared>,
}

#[pymethods]
impl Responder {
    #[pyo3(signature = (status, headers, exc_info=None))]
    fn __call__<'py>(
        slf: &Bound<'py, Self>,
        status: &Bound<'py, PyAny>,
        headers: &Bound<'py, PyAny>,
        exc_info: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let shared = &slf.get().shared;
        let exc_info = exc_info.filter(|e| e.is_truthy().unwrap_or(false));
        {
            let st = shared.lock();
            match exc_info {
                Some(info) if st.started && !matches!(st.phase, Phase::Pending(_)) => {
                    // Too late to change the head: re-raise.
                    drop(st);
                    let value = info.get_item(1)?;
                    return Err(PyErr::from_value(value));
                }
                Some(_) => {}
                None if st.started => {
                    return Err(PyAssertionError::new_err("Response headers already set!"))
                }
                None => {}
            }
        }
        let head = parse_head(status, headers)?;
        let mut st = shared.lock();
        st.remaining = head.content_length;
        st.head = Some(head);
        st.started = true;
        drop(st);
        slf.getattr(intern!(py, "write"))
    }

    /// PEP 3333's `write(data)`: sent at once (the head first).
    fn write(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let data = chunk_bytes(data)?;
        self.shared.send(py, Bytes::copy_from_slice(data))?;
        Ok(())
    }
}

/// `wsgi.input`: the request body, read from the channel the tokio side
/// fills; the GIL is released while waiting.
#[pyclass(module = "rgunicorn")]
struct Input {
    rx: Option<mpsc::Receiver<BodyChunk>>,
    buf: BytesMut,
    /// See [`WsgiApp::green`].
    green: bool,
}

impl Input {
    fn new(rx: Option<mpsc::Receiver<BodyChunk>>, green: bool) -> Input {
        Input {
            rx,
            buf: BytesMut::new(),
            green,
        }
    }

    /// One more chunk into the buffer; false at the end of the body.
    fn fill(&mut self, py: Python<'_>) -> PyResult<bool> {
        let Some(rx) = self.rx.as_mut() else {
            return Ok(false);
        };
        let next = match rx.try_recv() {
            Ok(item) => Some(item),
            Err(mpsc::error::TryRecvError::Disconnected) => None,
            Err(mpsc::error::TryRecvError::Empty) if self.green => {
                crate::python::gevent::block_on(py, std::future::poll_fn(|cx| rx.poll_recv(cx)))?
            }
            Err(mpsc::error::TryRecvError::Empty) => py.detach(|| rx.blocking_recv()),
        };
        match next {
            Some(Ok(data)) => {
                self.buf.extend_from_slice(&data);
                Ok(true)
            }
            Some(Err(e)) => {
                self.rx = None;
                Err(PyOSError::new_err(format!(
                    "error reading the request body: {e}"
                )))
            }
            None => {
                self.rx = None;
                Ok(false)
            }
        }
    }

    fn take(&mut self, py: Python<'_>, n: usize) -> Py<PyBytes> {
        let n = n.min(self.buf.len());
        PyBytes::new(py, &self.buf.split_to(n)).unbind()
    }
}

/// gunicorn's `Body.getsize`: None or negative = everything.
fn getsize(size: Option<&Bound<'_, PyAny>>) -> PyResult<usize> {
    match size {
        None => Ok(usize::MAX),
        Some(s) if s.is_none() => Ok(usize::MAX),
        Some(s) => {
            if !s.is_instance_of::<pyo3::types::PyInt>() {
                return Err(PyTypeError::new_err("size must be an integral type"));
            }
            let n: i64 = s.extract().unwrap_or(i64::MAX);
            Ok(if n < 0 { usize::MAX } else { n as usize })
        }
    }
}

#[pymethods]
impl Input {
    #[pyo3(signature = (size=None))]
    fn read(&mut self, py: Python<'_>, size: Option<&Bound<'_, PyAny>>) -> PyResult<Py<PyBytes>> {
        let size = getsize(size)?;
        while self.buf.len() < size && self.fill(py)? {}
        Ok(self.take(py, size))
    }

    #[pyo3(signature = (size=None))]
    fn readline(
        &mut self,
        py: Python<'_>,
        size: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyBytes>> {
        let size = getsize(size)?;
        let mut searched = 0;
        loop {
            let window = self.buf.len().min(size);
            if let Some(i) = self.buf[searched..window].iter().position(|&c| c == b'\n') {
                return Ok(self.take(py, searched + i + 1));
            }
            if self.buf.len() >= size {
                return Ok(self.take(py, size));
            }
            searched = window;
            if !self.fill(py)? {
                let n = self.buf.len();
                return Ok(self.take(py, n));
            }
        }
    }

    #[pyo3(signature = (hint=None))]
    fn readlines(
        &mut self,
        py: Python<'_>,
        hint: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Vec<Py<PyBytes>>> {
        let hint = getsize(hint)?;
        let mut lines = Vec::new();
        let mut total = 0usize;
        loop {
            let line = self.readline(py, None)?;
            let n = line.bind(py).as_bytes().len();
            if n == 0 {
                return Ok(lines);
            }
            total += n;
            lines.push(line);
            if hint != 0 && total >= hint {
                return Ok(lines);
            }
        }
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&mut self, py: Python<'_>) -> PyResult<Option<Py<PyBytes>>> {
        let line = self.readline(py, None)?;
        Ok((!line.bind(py).as_bytes().is_empty()).then_some(line))
    }
}

/// Behind `wsgi.errors`: what the app writes goes as is to the error
/// log's stream (stderr, or the `errorlog` file, opened per write so that
/// a rotated log is followed), as gunicorn's `WSGIErrorsWrapper`.
#[pyclass(frozen, module = "rgunicorn")]
struct ErrorSink {
    path: Option<String>,
}

#[pymethods]
impl ErrorSink {
    fn __call__(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let bytes: Vec<u8> = if let Ok(s) = data.cast::<PyString>() {
            s.to_str()?.as_bytes().to_vec()
        } else if let Ok(b) = data.cast::<PyBytes>() {
            b.as_bytes().to_vec()
        } else {
            return Err(PyTypeError::new_err(format!(
                "write() argument must be str, not {}",
                data.get_type().name()?
            )));
        };
        let path = self.path.clone();
        py.detach(move || match path {
            None => {
                let _ = std::io::stderr().write_all(&bytes);
            }
            Some(p) => {
                if let Ok(mut f) = std::fs::OpenOptions::new()
                    .append(true)
                    .create(true)
                    .open(p)
                {
                    let _ = f.write_all(&bytes);
                }
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unquote_as_python() {}

    #[test]
    fn tokens() {
        assert!(is_token("X-Custom_1"));
        assert!(!is_token("bad name"));
        assert!(!is_token(""));
    }
}
