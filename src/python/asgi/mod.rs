//! Serving the user's Python ASGI 3.0 application from a Rust worker.
//!
//! This module owns the ASGI side of a worker: the asyncio thread and its
//! event loop (uvloop when `asgi_loop` asks for it and it is installed),
//! the `lifespan` protocol (`asgi_lifespan`: auto/on/off; a failed startup
//! exits the worker with status 3), the HTTP scope (as uvicorn builds it),
//! `receive`/`send` with streaming both ways, `http.disconnect`, the 500
//! for a failing app, websockets ([`websocket`]), and the heartbeat that
//! proves the asyncio loop turns ([`WorkerInfo::watch_loop`]).
//!
//! Threads: the worker's tokio thread never takes the GIL. Per request it
//! queues a [`Job`] (pure Rust) on the [`Bridge`] and writes one byte to a
//! socketpair only when the asyncio thread is not already signalled, so one
//! wake-up of the asyncio thread picks up every request queued meanwhile.
//! The asyncio thread holds the GIL while it runs Python and releases it
//! while its loop waits in epoll. Responses go back through a oneshot (a
//! whole response) or a per-request buffer polled by hyper (streaming),
//! both filled on the asyncio thread; request bodies come the other way
//! through the same per-request buffer, filled by a tokio pump task.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use pyo3::exceptions::{PyRuntimeError, PyStopIteration};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};
use tokio::sync::{oneshot, Notify};
use tower::util::BoxCloneService;

use crate::app::{full, internal_error, AppFactory, BoxApp, BoxError, ConnAddrs, ResponseBody};
use crate::app::{LoopBeat, WorkerInfo};
use crate::http::gate::Limits;
use crate::log;
use crate::python::import;
use crate::python::worker_class::UvicornOptions;

use crate::boot::BootError;

mod websocket;

/// Request body bytes buffered ahead of the app before the pump pauses.
const BODY_HIGH_WATER: usize = 256 * 1024;
/// Response bytes buffered for hyper before `send` makes the app wait...
const OUT_HIGH_WATER: usize = 256 * 1024;
/// ...until hyper has taken them down to this.
const OUT_LOW_WATER: usize = 64 * 1024;
/// How often the asyncio loop proves it turns (seconds).
const BEAT_EVERY: f64 = 0.5;
/// The `(host, port)` tuples of addresses kept for the next requests
/// (slots, chosen by port: a power of two).
const ADDR_SLOTS: usize = 256;
/// The capacity `Ctx::live` starts with.
const LIVE_ROOM: usize = 256;
/// The most messages the spare queue keeps room for.
const SPARE_MAX: usize = 1024;
/// How long a worker waits for the lifespan shutdown.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(30);

/// The Python half: the loop, the lifespan protocol, the websocket task.
const GLUE: &std::ffi::CStr = pyo3::ffi::c_str!(include_str!("asgi.py"));

/// `asgi_lifespan`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LifespanMode {
    Auto,
    On,
    Off,
}

/// What the ASGI side needs from the configuration, read in the master:
/// gunicorn's settings, overridden by a `UvicornWorker` class's
/// `CONFIG_KWARGS` where it sets them (as uvicorn's worker builds its
/// `Config` from both).
#[derive(Clone)]
pub struct Settings {
    root_path: String,
    lifespan: LifespanMode,
    loop_kind: String,
    /// Forwarded headers' trust (`forwarded_allow_ips`, or the class's).
    limits: Arc<Limits>,
    /// uvicorn's `proxy_headers`: read X-Forwarded-Proto/-For at all.
    proxy_headers: bool,
    websocket: websocket::Options,
    /// uvicorn's `limit_concurrency`: requests in progress in this worker
    /// above which it answers 503.
    limit_concurrency: Option<usize>,
    /// uvicorn's `headers`: sent ahead of the app's in every response.
    default_headers: Arc<Vec<(HeaderName, HeaderValue)>>,
}

impl Settings {
    /// The ASGI side of `settings`, with a UvicornWorker class's options
    /// over them.
    pub fn new(
        settings: &crate::settings::Settings,
        uvicorn: Option<&UvicornOptions>,
    ) -> anyhow::Result<Settings> {
        let o = uvicorn.cloned().unwrap_or_default();
        let python = &settings.python;
        let mut limits = Limits::clone(&settings.limits);
        if let Some(ips) = o.forwarded_allow_ips {
            limits.forwarded_allow_ips = ips;
        }
        let mut default_headers = Vec::new();
        for (name, value) in &o.headers {
            let header = HeaderName::from_bytes(name.as_bytes())
                .ok()
                .zip(HeaderValue::from_str(value).ok())
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "CONFIG_KWARGS[\"headers\"]: invalid header {name:?}: {value:?}"
                    )
                })?;
            default_headers.push(header);
        }
        let defaults = websocket::Options::default();
        Ok(Settings {
            root_path: o.root_path.unwrap_or_else(|| python.root_path.clone()),
            lifespan: match o
                .lifespan
                .or_else(|| python.asgi_lifespan.clone())
                .as_deref()
            {
                Some("on") => LifespanMode::On,
                Some("off") => LifespanMode::Off,
                _ => LifespanMode::Auto,
            },
            loop_kind: o.loop_kind.unwrap_or_else(|| python.asgi_loop.clone()),
            limits: Arc::new(limits),
            proxy_headers: o.proxy_headers.unwrap_or(true),
            websocket: websocket::Options {
                max_size: o.ws_max_size.unwrap_or(python.websocket_max_message_size),
                ping_interval: o.ws_ping_interval.unwrap_or(defaults.ping_interval),
                ping_timeout: o.ws_ping_timeout.unwrap_or(defaults.ping_timeout),
            },
            limit_concurrency: o.limit_concurrency,
            default_headers: Arc::new(default_headers),
        })
    }
}

/// The worker's app factory for the ASGI app `uri` (called in the master
/// at start; each worker imports the app after fork, as gunicorn does
/// without `preload_app`).
pub fn app_factory(
    settings: &crate::settings::Settings,
    uri: &str,
    uvicorn: Option<&UvicornOptions>,
) -> anyhow::Result<AppFactory> {
    let settings = Settings::new(settings, uvicorn)?;
    let uri = uri.to_string();
    Ok(Arc::new(move |info: &WorkerInfo| {
        // With `reload` on, an import that failed during the boot is
        // served as gunicorn's fail app.
        if let Some(app) = crate::python::reloader::fail_app_if_import_failed() {
            return Ok(app);
        }
        let app = Python::attach(|py| import::worker_app_or_status(py, &uri))?;
        serve_imported(&settings, app, info)
    }))
}

/// In the worker, after fork: start the asyncio thread for `app`, run the
/// lifespan startup, and return the service. The error's reason is
/// already logged. May be called with or without the GIL.
pub fn serve_imported(
    settings: &Settings,
    app: Py<PyAny>,
    info: &WorkerInfo,
) -> Result<BoxApp, BootError> {
    let (wake_tx, wake_rx) = UnixStream::pair().map_err(|e| {
        log::error(&format!(
            "Exception in worker process: can't make the ASGI wake-up pipe: {e}"
        ));
        BootError::Worker
    })?;
    let _ = wake_tx.set_nonblocking(true);
    let _ = wake_rx.set_nonblocking(true);
    let bridge = Arc::new(Bridge {
        queue: Mutex::new(Vec::new()),
        notified: AtomicBool::new(false),
        wake: wake_tx,
        next_id: AtomicU64::new(1),
        stopping: AtomicBool::new(false),
    });
    let (started_tx, started_rx) = std_mpsc::channel::<bool>();
    let (stopped_tx, stopped_rx) = std_mpsc::channel::<()>();
    let beat = info.watch_loop();
    let settings_t = settings.clone();
    let bridge_t = bridge.clone();
    std::thread::Builder::new()
        .name("rgunicorn-asgi".into())
        .stack_size(8 << 20)
        .spawn(move || {
            asyncio_thread(settings_t, app, bridge_t, wake_rx, beat, started_tx);
            let _ = stopped_tx.send(());
        })
        .map_err(|e| {
            log::error(&format!(
                "Exception in worker process: can't start the asyncio thread: {e}"
            ));
            BootError::Worker
        })?;
    // The caller may hold the GIL: the asyncio thread needs it to start.
    let started = Python::attach(|py| py.detach(move || started_rx.recv().unwrap_or(false)));
    if !started {
        return Err(BootError::Worker);
    }
    let handle = Arc::new(Handle {
        bridge: bridge.clone(),
        stopped: Mutex::new(Some(stopped_rx)),
    });
    let ws = settings.websocket;
    // uvicorn's options cost nothing per request unless a class set them.
    let limit = settings
        .limit_concurrency
        .map(|max| (max as u64, Arc::new(AtomicU64::new(0))));
    let default_headers =
        (!settings.default_headers.is_empty()).then(|| settings.default_headers.clone());
    Ok(BoxCloneService::new(tower::service_fn(
        move |req: Request<Incoming>| {
            let handle = handle.clone();
            let default_headers = default_headers.clone();
            let count = limit
                .as_ref()
                .map(|(max, counter)| (InProgress::enter(counter), *max));
            async move {
                if count.as_ref().is_some_and(|(c, max)| c.now > *max) {
                    log::warning("Exceeded concurrency limit.");
                    return Ok(service_unavailable());
                }
                let mut resp = if websocket::is_upgrade(&req) {
                    websocket::call(&handle.bridge, req, ws).await
                } else {
                    call(&handle.bridge, req).await
                };
                drop(count);
                if let Some(default_headers) = default_headers {
                    // uvicorn sends its default headers ahead of the app's.
                    let app_headers = std::mem::take(resp.headers_mut());
                    let headers = resp.headers_mut();
                    for (name, value) in default_headers.iter() {
                        headers.append(name.clone(), value.clone());
                    }
                    for (name, value) in app_headers.iter() {
                        headers.append(name.clone(), value.clone());
                    }
                }
                Ok(resp)
            }
        },
    )))
}

/// One request counted in progress until dropped (uvicorn's
/// `limit_concurrency` counts its request tasks).
struct InProgress {
    counter: Arc<AtomicU64>,
    /// The count with this request in it.
    now: u64,
}

impl InProgress {
    fn enter(counter: &Arc<AtomicU64>) -> InProgress {
        let now = counter.fetch_add(1, Ordering::AcqRel) + 1;
        InProgress {
            counter: counter.clone(),
            now,
        }
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        self.counter.fetch_sub(1, Ordering::AcqRel);
    }
}

/// uvicorn's answer above `limit_concurrency`.
fn service_unavailable() -> Response<ResponseBody> {
    let mut resp = Response::new(full(Bytes::from_static(b"Service Unavailable")));
    *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// The requests and wake-ups queued for the asyncio thread.
struct Bridge {
    queue: Mutex<Vec<Msg>>,
    /// A byte is in the socketpair (or the asyncio thread is draining).
    notified: AtomicBool,
    wake: UnixStream,
    next_id: AtomicU64,
    /// The worker asked the loop to stop (any other stop is fatal).
    stopping: AtomicBool,
}

impl Bridge {
    /// Queue `msg` and wake the asyncio thread if it is not awake already.
    fn post(&self, msg: Msg) {
        if let Ok(mut q) = self.queue.lock() {
            q.push(msg);
        }
        if !self.notified.swap(true, Ordering::AcqRel) {
            let _ = (&self.wake).write(&[1]);
        }
    }
}

// Requests are most of the queue: boxing them would add an allocation each.
#[allow(clippy::large_enum_variant)]
enum Msg {
    Request(Job),
    /// A websocket handshake: the app decides.
    WebSocket(websocket::Job),
    /// Something changed for request `id`: body bytes, disconnect, drain.
    Wake(u64),
    /// The worker is stopping: run the lifespan shutdown, stop the loop.
    Shutdown,
}

/// One request for the asyncio thread.
struct Job {
    parts: http::request::Parts,
    shared: Arc<ReqShared>,
    reply: oneshot::Sender<Response<ResponseBody>>,
}

/// Stops the asyncio thread (lifespan shutdown) when the worker's app is
/// dropped, that is once the worker has drained.
struct Handle {
    bridge: Arc<Bridge>,
    stopped: Mutex<Option<std_mpsc::Receiver<()>>>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.bridge.stopping.store(true, Ordering::Release);
        self.bridge.post(Msg::Shutdown);
        if let Some(rx) = self.stopped.lock().ok().and_then(|mut s| s.take()) {
            let _ = rx.recv_timeout(SHUTDOWN_WAIT);
        }
    }
}

/// The per-request state both threads touch.
struct ReqShared {
    id: u64,
    bridge: Arc<Bridge>,
    st: Mutex<ReqState>,
    /// Wakes the body pump when the app took bytes or the request ended.
    pump: Notify,
}

#[derive(Default)]
struct ReqState {
    body: VecDeque<Bytes>,
    body_len: usize,
    body_end: bool,
    /// The client is gone (or the response was abandoned).
    disconnected: bool,
    /// The app's task is over: the pump stops.
    finished: bool,
    /// The asyncio side waits on receive / on send (drain): wake it.
    recv_waiting: bool,
    send_waiting: bool,
    /// The streamed response, polled by hyper.
    out: VecDeque<Bytes>,
    out_len: usize,
    out_end: bool,
    out_abort: bool,
    out_delivered: bool,
    out_waker: Option<Waker>,
}

impl ReqShared {
    /// Mark the client gone and wake the asyncio side if it waits.
    fn disconnect(&self) {
        let wake = match self.st.lock() {
            Ok(mut st) => {
                st.disconnected = true;
                let w = st.recv_waiting || st.send_waiting;
                st.recv_waiting = false;
                st.send_waiting = false;
                w
            }
            Err(_) => false,
        };
        self.pump.notify_one();
        if wake {
            self.bridge.post(Msg::Wake(self.id));
        }
    }
}

/// The service, on the tokio thread: no Python here.
async fn call(bridge: &Arc<Bridge>, req: Request<Incoming>) -> Response<ResponseBody> {
    let (parts, body) = req.into_parts();
    let id = bridge.next_id.fetch_add(1, Ordering::Relaxed);
    let end = http_body::Body::is_end_stream(&body);
    let shared = Arc::new(ReqShared {
        id,
        bridge: bridge.clone(),
        st: Mutex::new(ReqState {
            body_end: end,
            ..Default::default()
        }),
        pump: Notify::new(),
    });
    if !end {
        tokio::spawn(pump(body, shared.clone()));
    }
    let (reply, response) = oneshot::channel();
    bridge.post(Msg::Request(Job {
        parts,
        shared: shared.clone(),
        reply,
    }));
    // Dropped by hyper before the response: the client went away.
    let guard = GoneGuard(Some(shared));
    let resp = response.await.unwrap_or_else(|_| internal_error());
    let mut guard = guard;
    guard.0 = None;
    resp
}

struct GoneGuard(Option<Arc<ReqShared>>);

impl Drop for GoneGuard {
    fn drop(&mut self) {
        if let Some(shared) = self.0.take() {
            shared.disconnect();
        }
    }
}

/// Read the request body into the request's buffer, ahead of the app by
/// at most [`BODY_HIGH_WATER`] bytes.
async fn pump(mut body: Incoming, shared: Arc<ReqShared>) {
    loop {
        loop {
            let stop_or_full = match shared.st.lock() {
                Ok(st) => {
                    if st.finished || st.disconnected {
                        return;
                    }
                    st.body_len >= BODY_HIGH_WATER
                }
                Err(_) => return,
            };
            if !stop_or_full {
                break;
            }
            shared.pump.notified().await;
        }
        // Woken early when the app's task ends: look at the flags again.
        let frame = tokio::select! {
            f = body.frame() => f,
            _ = shared.pump.notified() => continue,
        };
        let (data, end) = match frame {
            None => (None, true),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(d) => (Some(d), false),
                Err(_) => continue,
            },
            Some(Err(_)) => {
                shared.disconnect();
                return;
            }
        };
        let wake = match shared.st.lock() {
            Ok(mut st) => {
                if let Some(d) = data.filter(|d| !d.is_empty()) {
                    st.body_len += d.len();
                    st.body.push_back(d);
                }
                st.body_end = end;
                std::mem::take(&mut st.recv_waiting)
            }
            Err(_) => return,
        };
        if wake {
            shared.bridge.post(Msg::Wake(shared.id));
        }
        if end {
            return;
        }
    }
}

/// A streamed response body: what the app sent, taken by hyper.
struct AsgiBody(Arc<ReqShared>);

impl http_body::Body for AsgiBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let shared = &self.0;
        let Ok(mut st) = shared.st.lock() else {
            return Poll::Ready(Some(Err("poisoned".into())));
        };
        if let Some(chunk) = st.out.pop_front() {
            st.out_len -= chunk.len();
            let wake = st.send_waiting && st.out_len <= OUT_LOW_WATER;
            if wake {
                st.send_waiting = false;
            }
            drop(st);
            if wake {
                shared.bridge.post(Msg::Wake(shared.id));
            }
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if st.out_abort {
            return Poll::Ready(Some(Err(
                "the ASGI app failed after the response started".into()
            )));
        }
        if st.out_end {
            st.out_delivered = true;
            return Poll::Ready(None);
        }
        st.out_waker = Some(cx.waker().clone());
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.0
            .st
            .lock()
            .map(|st| st.out_end && st.out.is_empty() && !st.out_abort)
            .unwrap_or(true)
    }
}

impl Drop for AsgiBody {
    fn drop(&mut self) {
        let delivered = self
            .0
            .st
            .lock()
            .map(|st| st.out_delivered || (st.out_end && st.out.is_empty()))
            .unwrap_or(true);
        if !delivered {
            self.0.disconnect();
        }
    }
}

// ---------------------------------------------------------------------------
// The asyncio thread.

/// What the asyncio thread keeps between callbacks (only it touches this).
struct Ctx {
    app: Py<PyAny>,
    /// The glue's `format_exception`, for an app that raised.
    format_exception: Py<PyAny>,
    wait: Py<PyAny>,
    create_task: Py<PyAny>,
    create_future: Py<PyAny>,
    call_soon: Py<PyAny>,
    flush_heads: Py<PyAny>,
    state: Py<PyDict>,
    root_path: Py<PyString>,
    root_path_str: String,
    asgi_version: Py<PyDict>,
    /// The websocket scope's `asgi` (uvicorn's spec_version 2.4).
    ws_asgi_version: Py<PyDict>,
    run_ws: Py<PyAny>,
    /// The glue's `ClientDisconnected`.
    client_disconnected: Py<PyAny>,
    limits: Arc<Limits>,
    /// uvicorn's `proxy_headers`.
    proxy_headers: bool,
    /// Requests and websockets whose app is running, by id.
    live: HashMap<u64, Live>,
    /// Responses started (headers sent by the app) but with no body yet,
    /// by a task other than the request's own (its own flushes them).
    pending_heads: Vec<u64>,
    /// [`Ctx::addr_tuple`]'s, in slots by port.
    addr_slots: Vec<Option<(std::net::SocketAddr, Py<PyAny>)>>,
    /// An HTTP scope's keys in uvicorn's order, with None values: a copy
    /// has its keys already (no inserts, no resize), `build_scope` sets
    /// the values.
    http_scope: Py<PyDict>,
}

/// A request or websocket whose app is running.
enum Live {
    Http(Py<Http>),
    Ws(Py<websocket::WebSocket>),
}

impl Live {
    fn clone_ref(&self, py: Python<'_>) -> Live {
        match self {
            Live::Http(h) => Live::Http(h.clone_ref(py)),
            Live::Ws(w) => Live::Ws(w.clone_ref(py)),
        }
    }

    /// Something changed on the tokio side: resolve what can be.
    fn poke(&self, py: Python<'_>) {
        match self {
            Live::Http(h) => Http::poke(h.bind(py)),
            Live::Ws(w) => websocket::WebSocket::poke(w.bind(py)),
        }
    }
}

thread_local! {
    static CTX: RefCell<Option<Ctx>> = const { RefCell::new(None) };
}

fn with_ctx<R>(f: impl FnOnce(&mut Ctx) -> R) -> Option<R> {
    CTX.with(|c| c.borrow_mut().as_mut().map(f))
}

fn asyncio_thread(
    settings: Settings,
    app: Py<PyAny>,
    bridge: Arc<Bridge>,
    wake_rx: UnixStream,
    beat: LoopBeat,
    started: std_mpsc::Sender<bool>,
) {
    crate::sys::process::set_thread_role(crate::sys::process::ThreadRole::App);
    Python::attach(|py| {
        let boot = |e: PyErr| {
            crate::python::hooks::log_exception(py, "Exception in worker process", &e);
            let _ = started.send(false);
        };
        let glue = match PyModule::from_code(py, GLUE, c"rgunicorn_asgi.py", c"rgunicorn_asgi") {
            Ok(g) => g,
            Err(e) => return boot(e),
        };
        let app = match glue.getattr("asgi3").and_then(|f| f.call1((app.bind(py),))) {
            Ok(a) => a.unbind(),
            Err(e) => return boot(e),
        };
        let setup = || -> PyResult<(Bound<'_, PyAny>, Option<Bound<'_, PyAny>>)> {
            glue.getattr("register")?.call1((py.get_type::<Ready>(),))?;
            glue.getattr("register")?
                .call1((py.get_type::<HttpTask>(),))?;
            let warn = Py::new(py, LogFn(log::Level::Warning))?;
            let (lp, kind): (Bound<'_, PyAny>, String) = glue
                .getattr("new_loop")?
                .call1((&settings.loop_kind, warn))?
                .extract()?;
            log::debug(&format!("Using {kind} event loop"));
            py.import("asyncio")?
                .call_method1("set_event_loop", (&lp,))?;
            let pump = Py::new(
                py,
                Pump {
                    bridge: bridge.clone(),
                    rx: wake_rx,
                    spare: Mutex::new(Vec::new()),
                },
            )?;
            let fd = pump.borrow(py).rx.as_raw_fd();
            lp.call_method1("add_reader", (fd, pump))?;
            glue.getattr("heartbeat")?
                .call1((&lp, Py::new(py, Beat(beat))?, BEAT_EVERY))?;
            let lifespan = if settings.lifespan == LifespanMode::Off {
                None
            } else {
                let mode = if settings.lifespan == LifespanMode::On {
                    "on"
                } else {
                    "auto"
                };
                Some(glue.getattr("Lifespan")?.call1((
                    app.bind(py),
                    mode,
                    Py::new(py, LogFn(log::Level::Info))?,
                    Py::new(py, LogFn(log::Level::Error))?,
                ))?)
            };
            Ok((lp, lifespan))
        };
        let (lp, lifespan) = match setup() {
            Ok(v) => v,
            Err(e) => return boot(e),
        };
        let state = match &lifespan {
            Some(l) => {
                let ok = l
                    .call_method0("startup")
                    .and_then(|c| lp.call_method1("run_until_complete", (c,)))
                    .and_then(|r| r.is_truthy());
                match ok {
                    Ok(true) => {}
                    Ok(false) => {
                        let _ = started.send(false);
                        return;
                    }
                    Err(e) => return boot(e),
                }
                l.getattr("state")
                    .and_then(|s| s.cast_into::<PyDict>().map_err(Into::into))
                    .map(|s| s.unbind())
                    .unwrap_or_else(|_| PyDict::new(py).unbind())
            }
            None => PyDict::new(py).unbind(),
        };
        let ctx = (|| -> PyResult<Ctx> {
            let asgi = PyDict::new(py);
            asgi.set_item("version", "3.0")?;
            asgi.set_item("spec_version", "2.3")?;
            let ws_asgi = PyDict::new(py);
            ws_asgi.set_item("version", "3.0")?;
            ws_asgi.set_item("spec_version", "2.4")?;
            Ok(Ctx {
                app: app.clone_ref(py),
                format_exception: glue.getattr("format_exception")?.unbind(),
                wait: glue.getattr("wait")?.unbind(),
                create_task: lp.getattr("create_task")?.unbind(),
                create_future: lp.getattr("create_future")?.unbind(),
                call_soon: lp.getattr("call_soon")?.unbind(),
                flush_heads: Py::new(py, FlushHeads)?.into_any(),
                state,
                root_path: PyString::new(py, &settings.root_path).unbind(),
                root_path_str: settings.root_path.clone(),
                asgi_version: asgi.unbind(),
                ws_asgi_version: ws_asgi.unbind(),
                run_ws: glue.getattr("run_ws")?.unbind(),
                client_disconnected: glue.getattr("ClientDisconnected")?.unbind(),
                limits: settings.limits.clone(),
                proxy_headers: settings.proxy_headers,
                // Room to spare: removals leave tombstones, and a full
                // table rehashes (a small one, every few requests).
                live: HashMap::with_capacity(LIVE_ROOM),
                pending_heads: Vec::new(),
                addr_slots: (0..ADDR_SLOTS).map(|_| None).collect(),
                http_scope: {
                    let d = PyDict::new(py);
                    for k in HTTP_SCOPE_KEYS {
                        // Interned, as `build_scope`'s keys: found by identity.
                        d.set_item(PyString::intern(py, k), py.None())?;
                    }
                    d.unbind()
                },
            })
        })();
        match ctx {
            Ok(ctx) => CTX.with(|c| *c.borrow_mut() = Some(ctx)),
            Err(e) => return boot(e),
        }
        let _ = started.send(true);
        if let Err(e) = lp.call_method0("run_forever") {
            crate::python::hooks::log_exception(py, "The asyncio loop failed", &e);
        }
        if !bridge.stopping.load(Ordering::Acquire) {
            // Nobody would answer the requests queued from now on.
            log::error("The asyncio loop stopped while the worker serves: the worker exits");
            crate::sys::process::exit_now(1);
        }
        if let Some(l) = &lifespan {
            let done = l
                .call_method0("shutdown")
                .and_then(|c| lp.call_method1("run_until_complete", (c,)));
            if let Err(e) = done {
                crate::python::hooks::log_exception(py, "ASGI lifespan shutdown error", &e);
            }
        }
        // Python objects go while this thread holds the GIL.
        CTX.with(|c| c.borrow_mut().take());
    });
}

/// The loop's reader callback on the wake-up socket: take everything
/// queued and start or advance each request.
#[pyclass(module = "rgunicorn")]
struct Pump {
    bridge: Arc<Bridge>,
    rx: UnixStream,
    /// An empty queue, swapped in for the one taken: the queue keeps an
    /// allocation instead of growing from nothing for each batch.
    spare: Mutex<Vec<Msg>>,
}

#[pymethods]
impl Pump {
    fn __call__(&self, py: Python<'_>) -> PyResult<()> {
        let mut buf = [0u8; 64];
        while matches!((&self.rx).read(&mut buf), Ok(n) if n > 0) {}
        self.bridge.notified.store(false, Ordering::Release);
        let mut batch = self
            .spare
            .lock()
            .map(|mut s| std::mem::take(&mut *s))
            .unwrap_or_default();
        match self.bridge.queue.lock() {
            Ok(mut q) => std::mem::swap(&mut *q, &mut batch),
            Err(_) => return Ok(()),
        }
        for msg in batch.drain(..) {
            match msg {
                Msg::Request(job) => start_request(py, job),
                Msg::WebSocket(job) => websocket::start(py, job),
                Msg::Wake(id) => {
                    let live = with_ctx(|c| c.live.get(&id).map(|l| l.clone_ref(py))).flatten();
                    if let Some(live) = live {
                        live.poke(py);
                    }
                }
                // The worker has drained: requests still live have lost
                // their connections (their disconnects came first in this
                // queue), so stop now and run the lifespan shutdown.
                Msg::Shutdown => stop_loop(py),
            }
        }
        if batch.capacity() > SPARE_MAX {
            batch.shrink_to(SPARE_MAX);
        }
        if let Ok(mut s) = self.spare.lock() {
            *s = batch;
        }
        Ok(())
    }
}

fn stop_loop(py: Python<'_>) {
    let r = py
        .import("asyncio")
        .and_then(|a| a.call_method0("get_event_loop"))
        .and_then(|l| l.call_method0("stop"));
    if let Err(e) = r {
        crate::python::hooks::log_exception(py, "can't stop the asyncio loop", &e);
    }
}

/// `LoopBeat::beat` for the loop's periodic callback.
#[pyclass(module = "rgunicorn", frozen)]
struct Beat(LoopBeat);

#[pymethods]
impl Beat {
    fn __call__(&self) {
        self.0.beat();
    }
}

/// The error log at one level, for the Python glue.
#[pyclass(module = "rgunicorn", frozen)]
struct LogFn(log::Level);

#[pymethods]
impl LogFn {
    fn __call__(&self, msg: &str) {
        log::log(self.0, msg);
    }
}

/// The loop callback that sends the heads of responses started without a
/// body yet (an app that streams later, as SSE does).
#[pyclass(module = "rgunicorn", frozen)]
struct FlushHeads;

#[pymethods]
impl FlushHeads {
    fn __call__(&self, py: Python<'_>) {
        let ids = with_ctx(|c| std::mem::take(&mut c.pending_heads)).unwrap_or_default();
        for id in ids {
            let live = with_ctx(|c| c.live.get(&id).map(|l| l.clone_ref(py))).flatten();
            if let Some(Live::Http(http)) = live {
                http.bind(py).borrow_mut().open_stream();
            }
        }
    }
}

/// An awaitable already done: `await` gives its value without a trip
/// through the loop. Registered as a `collections.abc.Coroutine`, so
/// `asyncio.create_task(receive())` works as with uvicorn's coroutines.
#[pyclass(module = "rgunicorn")]
struct Ready(Option<Py<PyAny>>);

#[pymethods]
impl Ready {
    fn __await__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }
    fn __next__(&mut self) -> PyResult<Option<Py<PyAny>>> {
        match self.0.take() {
            None => Ok(None),
            Some(v) => Err(PyStopIteration::new_err((v,))),
        }
    }
    fn send(&mut self, _value: Bound<'_, PyAny>) -> PyResult<Option<Py<PyAny>>> {
        match self.0.take() {
            None => Err(PyStopIteration::new_err(())),
            Some(v) => Err(PyStopIteration::new_err((v,))),
        }
    }
    #[pyo3(signature = (typ, val=None, _tb=None))]
    fn throw(
        &mut self,
        typ: Bound<'_, PyAny>,
        val: Option<Bound<'_, PyAny>>,
        _tb: Option<Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        self.0 = None;
        let exc = match val {
            Some(v) if !v.is_none() => v,
            _ => typ,
        };
        Err(PyErr::from_value(exc))
    }
    fn close(&mut self) {
        self.0 = None;
    }
}

/// The task of one request, stepped by asyncio's Task as a coroutine (it
/// is registered as one): the first step calls the app, each step passes
/// on to the app's coroutine, and the outcome goes straight to [`Http`].
/// A Python wrapper coroutine would cost a frame per request, and the
/// loop callback that sent a started response's head, a loop turn.
#[pyclass(module = "rgunicorn")]
struct HttpTask {
    http: Py<Http>,
    /// The app's scope, until the first step calls it.
    scope: Option<Py<PyDict>>,
    /// The app's coroutine, until it ends.
    coro: Option<Py<PyAny>>,
}

/// What one step of the app's coroutine gave.
enum Step {
    Yield(Py<PyAny>),
    Return(Py<PyAny>),
    Raise(PyErr),
}

impl HttpTask {
    /// Send `value` into the app's coroutine, or throw `exc` into it.
    fn advance(
        &mut self,
        py: Python<'_>,
        value: &Bound<'_, PyAny>,
        exc: Option<Throw<'_>>,
    ) -> Step {
        let coro = match &self.coro {
            Some(c) => c.bind(py).clone(),
            None => {
                let Some(scope) = self.scope.take() else {
                    return Step::Raise(PyRuntimeError::new_err("the request's task is over"));
                };
                if let Some(t) = exc {
                    // Thrown in before the app started: it never runs.
                    return Step::Raise(t.into_err());
                }
                let http = self.http.bind(py);
                let called = (|| {
                    let (app, wait) = with_ctx(|c| (c.app.clone_ref(py), c.wait.clone_ref(py)))
                        .ok_or_else(|| PyRuntimeError::new_err("the ASGI loop is gone"))?;
                    let receive = http.getattr(intern!(py, "receive"))?;
                    let send = http.getattr(intern!(py, "send"))?;
                    let aw = app.bind(py).call1((scope, receive, send))?;
                    // SAFETY: the GIL is held and `aw` is a live object.
                    if unsafe { pyo3::ffi::PyCoro_CheckExact(aw.as_ptr()) } != 0 {
                        Ok(aw)
                    } else {
                        // Any other awaitable: stepped through a coroutine
                        // that awaits it, as `await` would.
                        wait.bind(py).call1((aw,))
                    }
                })();
                match called {
                    Ok(c) => {
                        self.coro = Some(c.clone().unbind());
                        c
                    }
                    Err(e) => return Step::Raise(e),
                }
            }
        };
        if let Some(t) = exc {
            let r = match (t.val, t.tb) {
                (None, None) => coro.call_method1(intern!(py, "throw"), (t.typ,)),
                (val, tb) => coro.call_method1(intern!(py, "throw"), (t.typ, val, tb)),
            };
            return match r {
                Ok(v) => Step::Yield(v.unbind()),
                Err(e) if e.is_instance_of::<PyStopIteration>(py) => Step::Return(
                    e.value(py)
                        .getattr(intern!(py, "value"))
                        .map(Bound::unbind)
                        .unwrap_or_else(|_| py.None()),
                ),
                Err(e) => Step::Raise(e),
            };
        }
        let mut result: *mut pyo3::ffi::PyObject = std::ptr::null_mut();
        // SAFETY: the GIL is held, `coro` and `value` are live objects and
        // `result` is a valid place for the new reference PyIter_Send puts
        // there (NULL when it fails).
        let status = unsafe { pyo3::ffi::PyIter_Send(coro.as_ptr(), value.as_ptr(), &mut result) };
        match status {
            pyo3::ffi::PySendResult::PYGEN_ERROR => Step::Raise(PyErr::fetch(py)),
            // SAFETY: on NEXT and RETURN `result` is a new reference.
            pyo3::ffi::PySendResult::PYGEN_NEXT => {
                Step::Yield(unsafe { Bound::from_owned_ptr(py, result) }.unbind())
            }
            // SAFETY: as above.
            pyo3::ffi::PySendResult::PYGEN_RETURN => {
                Step::Return(unsafe { Bound::from_owned_ptr(py, result) }.unbind())
            }
        }
    }

    /// One step of the task: what the Task awaits next, or None at the end.
    fn step(
        &mut self,
        py: Python<'_>,
        value: &Bound<'_, PyAny>,
        exc: Option<Throw<'_>>,
    ) -> Option<Py<PyAny>> {
        if self.coro.is_none() && self.scope.is_none() {
            return None;
        }
        self.http.bind(py).borrow_mut().in_step = true;
        let step = self.advance(py, value, exc);
        let mut http = self.http.bind(py).borrow_mut();
        http.in_step = false;
        match step {
            Step::Yield(v) => {
                // The app awaits something else: a started response's head
                // goes to hyper now (an SSE stream's head before its events).
                if http.head.is_some() {
                    http.open_stream();
                }
                return Some(v);
            }
            Step::Return(result) => http.done(result.into_bound(py)),
            Step::Raise(e) => {
                let tb = with_ctx(|c| c.format_exception.clone_ref(py))
                    .and_then(|f| {
                        // The traceback apart: in 3.11 an exception not yet
                        // caught by Python code has no __traceback__.
                        f.bind(py)
                            .call1((e.get_type(py), e.value(py), e.traceback(py)))
                            .ok()
                    })
                    .and_then(|t| t.extract::<String>().ok())
                    .unwrap_or_else(|| e.to_string());
                http.failed(&tb);
            }
        }
        self.coro = None;
        None
    }
}

/// What `throw` got.
struct Throw<'py> {
    typ: Bound<'py, PyAny>,
    val: Option<Bound<'py, PyAny>>,
    tb: Option<Bound<'py, PyAny>>,
}

impl Throw<'_> {
    fn into_err(self) -> PyErr {
        match self.val {
            Some(v) if !v.is_none() => PyErr::from_value(v),
            _ => PyErr::from_value(self.typ),
        }
    }
}

#[pymethods]
impl HttpTask {
    /// For asyncio's repr of the Task (not borrowing: the Task's repr may
    /// be asked for during its step).
    #[getter]
    fn __name__(_slf: &Bound<'_, Self>) -> &'static str {
        "HttpTask"
    }
    #[getter]
    fn __qualname__(_slf: &Bound<'_, Self>) -> &'static str {
        "HttpTask"
    }
    fn __await__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }
    fn __next__(&mut self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.step(py, &py.None().into_bound(py), None)
    }
    fn send(&mut self, value: Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        self.step(value.py(), &value, None)
            .ok_or_else(|| PyStopIteration::new_err(()))
    }
    #[pyo3(signature = (typ, val=None, tb=None))]
    fn throw(
        &mut self,
        typ: Bound<'_, PyAny>,
        val: Option<Bound<'_, PyAny>>,
        tb: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let py = typ.py();
        let exc = Throw { typ, val, tb };
        if self.coro.is_none() && self.scope.is_none() {
            // Over already: as a finished coroutine, raise it here.
            return Err(exc.into_err());
        }
        self.step(py, &py.None().into_bound(py), Some(exc))
            .ok_or_else(|| PyStopIteration::new_err(()))
    }
    fn close(&mut self, py: Python<'_>) -> PyResult<()> {
        let live = self.scope.take().is_some() | self.coro.is_some();
        let closed = match self.coro.take() {
            Some(coro) => coro.bind(py).call_method0(intern!(py, "close")).map(drop),
            None => Ok(()),
        };
        if live {
            // Closed before the app returned (the loop is going away): the
            // request ends as if the app had raised.
            self.http.bind(py).borrow_mut().failed("GeneratorExit");
        }
        closed
    }
}

fn ready(py: Python<'_>, value: Option<Py<PyAny>>) -> PyResult<Bound<'_, PyAny>> {
    // A Ready with no value has no state (every method leaves it empty):
    // one serves every `send`.
    static NONE: PyOnceLock<Py<Ready>> = PyOnceLock::new();
    match value {
        None => Ok(NONE
            .get_or_try_init(py, || Py::new(py, Ready(None)))?
            .bind(py)
            .clone()
            .into_any()),
        Some(v) => Ok(Bound::new(py, Ready(Some(v)))?.into_any()),
    }
}

/// `message[key]`, or None when it has no such key (or fails to give
/// it). A dict is asked directly: no KeyError made and dropped.
fn optional_item<'py>(
    message: &Bound<'py, PyAny>,
    key: &Bound<'py, PyString>,
) -> Option<Bound<'py, PyAny>> {
    match message.cast_exact::<PyDict>() {
        Ok(d) => d.get_item(key).ok().flatten(),
        Err(_) => message.get_item(key).ok(),
    }
}

/// Start the app for one request (asyncio thread, GIL held).
fn start_request(py: Python<'_>, job: Job) {
    let Job {
        parts,
        shared,
        reply,
    } = job;
    let started = with_ctx(|c| -> PyResult<()> {
        let scope = build_scope(py, c, &parts, ScopeType::Http)?;
        let id = shared.id;
        let http = Py::new(
            py,
            Http {
                shared,
                reply: Some(reply),
                head: None,
                is_head: parts.method == http::Method::HEAD,
                response_started: false,
                response_complete: false,
                request_complete: false,
                recv_waiter: None,
                send_waiter: None,
                in_step: false,
            },
        )?;
        let task = Py::new(
            py,
            HttpTask {
                http: http.clone_ref(py),
                scope: Some(scope.unbind()),
                coro: None,
            },
        )?;
        c.create_task.bind(py).call1((task,))?;
        c.live.insert(id, Live::Http(http));
        Ok(())
    });
    if let Some(Err(e)) = started {
        crate::python::hooks::log_exception(py, "Exception in ASGI application", &e);
    }
}

/// The scope's `client`: the connection's, or an X-Forwarded-For host.
enum Client {
    Addr(std::net::SocketAddr),
    Forwarded(String),
}

impl Ctx {
    /// `(host, port)` for a socket address, made once per address: the
    /// server's is the same for every request, a client's for each request
    /// of its connection (tuples are immutable, so sharing them is unseen).
    fn addr_tuple<'py>(
        &mut self,
        py: Python<'py>,
        a: std::net::SocketAddr,
    ) -> PyResult<Bound<'py, PyAny>> {
        // One slot per port (no hashing; another address evicts).
        let slot = &mut self.addr_slots[usize::from(a.port()) & (ADDR_SLOTS - 1)];
        if let Some((addr, t)) = slot {
            if *addr == a {
                return Ok(t.bind(py).clone());
            }
        }
        let t = (a.ip().to_string(), a.port()).into_pyobject(py)?.into_any();
        *slot = Some((a, t.clone().unbind()));
        Ok(t)
    }
}

/// The keys of an HTTP scope, in the order `build_scope` sets them.
const HTTP_SCOPE_KEYS: [&str; 13] = [
    "type",
    "asgi",
    "http_version",
    "server",
    "client",
    "scheme",
    "root_path",
    "headers",
    "state",
    "method",
    "path",
    "raw_path",
    "query_string",
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum ScopeType {
    Http,
    WebSocket,
}

/// The HTTP or websocket scope, as uvicorn builds it. A websocket scope
/// has no `method`, the `ws`/`wss` schemes, `subprotocols` and the
/// `websocket.http.response` extension.
fn build_scope<'py>(
    py: Python<'py>,
    c: &mut Ctx,
    parts: &http::request::Parts,
    ty: ScopeType,
) -> PyResult<Bound<'py, PyDict>> {
    let ws = ty == ScopeType::WebSocket;
    let scope = if ws {
        PyDict::new(py)
    } else {
        c.http_scope.bind(py).copy()?
    };
    if ws {
        scope.set_item(intern!(py, "type"), intern!(py, "websocket"))?;
        scope.set_item(intern!(py, "asgi"), c.ws_asgi_version.bind(py).copy()?)?;
    } else {
        scope.set_item(intern!(py, "type"), intern!(py, "http"))?;
        scope.set_item(intern!(py, "asgi"), c.asgi_version.bind(py).copy()?)?;
    }
    let line = crate::http::gate::SentLine::of_parts(parts);
    let raw_head = line.raw();
    match line.version() {
        _ if line.is_http2() => scope.set_item(intern!(py, "http_version"), intern!(py, "2"))?,
        (1, 1) => scope.set_item(intern!(py, "http_version"), intern!(py, "1.1"))?,
        (1, 0) => scope.set_item(intern!(py, "http_version"), intern!(py, "1.0"))?,
        (major, minor) => {
            scope.set_item(intern!(py, "http_version"), format!("{major}.{minor}"))?
        }
    }
    let addrs = parts
        .extensions
        .get::<ConnAddrs>()
        .copied()
        .unwrap_or_default();
    let server = match addrs.server {
        Some(a) => c.addr_tuple(py, a)?,
        None => py.None().into_bound(py),
    };
    scope.set_item(intern!(py, "server"), server)?;
    let peer = addrs.peer;
    let trusted = c.proxy_headers && c.limits.trusts_forwarder(peer.map(|a| a.ip()));
    // A PROXY protocol header names the client (gunicorn's asgi worker);
    // forwarded headers are trusted, or not, by the socket's peer.
    let mut client = addrs.client().map(Client::Addr);
    let mut scheme = Cow::Borrowed(match (ws, addrs.tls) {
        (false, false) => "http",
        (false, true) => "https",
        (true, false) => "ws",
        (true, true) => "wss",
    });
    if trusted {
        if let Some(proto) = parts
            .headers
            .get("x-forwarded-proto")
            .and_then(|v| std::str::from_utf8(v.as_bytes().trim_ascii()).ok())
        {
            // As uvicorn's proxy headers: a websocket's http(s) is ws(s).
            let p = proto.to_ascii_lowercase();
            if matches!(p.as_str(), "http" | "https" | "ws" | "wss") {
                scheme = Cow::Owned(if ws { p.replace("http", "ws") } else { p });
            }
        }
        if let Some(fwd) = parts
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
        {
            // The first untrusted host from the right, as uvicorn.
            let hosts: Vec<&str> = fwd.split(',').map(str::trim_ascii).collect();
            let pick = hosts
                .iter()
                .rev()
                .find(|h| {
                    let ip = h.parse::<std::net::IpAddr>().ok();
                    ip.is_none() || !c.limits.trusts_forwarder(ip)
                })
                .or(hosts.first());
            if let Some(h) = pick.filter(|h| !h.is_empty()) {
                client = Some(Client::Forwarded(h.to_string()));
            }
        }
    }
    match client {
        Some(Client::Addr(a)) => scope.set_item(intern!(py, "client"), c.addr_tuple(py, a)?)?,
        Some(Client::Forwarded(h)) => scope.set_item(intern!(py, "client"), (h, 0))?,
        None => scope.set_item(intern!(py, "client"), py.None())?,
    }
    match scheme {
        Cow::Borrowed("http") => scope.set_item(intern!(py, "scheme"), intern!(py, "http"))?,
        Cow::Borrowed("https") => scope.set_item(intern!(py, "scheme"), intern!(py, "https"))?,
        other => scope.set_item(intern!(py, "scheme"), other.as_ref())?,
    }
    scope.set_item(intern!(py, "root_path"), c.root_path.bind(py))?;
    let headers = PyList::empty(py);
    // `Content-Length` as sent (`007`), as uvicorn passes it.
    let sent_length = raw_head.and_then(|r| r.content_length.as_deref());
    for (name, value) in parts.headers.iter() {
        let value = match sent_length {
            Some(digits) if name == http::header::CONTENT_LENGTH => digits,
            _ => value.as_bytes(),
        };
        let t = PyTuple::new(
            py,
            [
                PyBytes::new(py, name.as_str().as_bytes()),
                PyBytes::new(py, value),
            ],
        )?;
        headers.append(t)?;
    }
    scope.set_item(intern!(py, "headers"), headers)?;
    scope.set_item(intern!(py, "state"), c.state.bind(py).copy()?)?;
    if ws {
        // Every Sec-WebSocket-Protocol header, split at commas.
        let subprotocols = PyList::empty(py);
        for v in parts.headers.get_all(http::header::SEC_WEBSOCKET_PROTOCOL) {
            for p in v.as_bytes().split(|&c| c == b',') {
                subprotocols.append(crate::http::text::latin1(p.trim_ascii()))?;
            }
        }
        scope.set_item(intern!(py, "subprotocols"), subprotocols)?;
        let extensions = PyDict::new(py);
        extensions.set_item("websocket.http.response", PyDict::new(py))?;
        scope.set_item(intern!(py, "extensions"), extensions)?;
    } else {
        let method = match parts.method {
            http::Method::GET => intern!(py, "GET").clone(),
            http::Method::POST => intern!(py, "POST").clone(),
            http::Method::HEAD => intern!(py, "HEAD").clone(),
            _ => PyString::new(py, parts.method.as_str()),
        };
        scope.set_item(intern!(py, "method"), method)?;
    }
    let split = line.parts();
    let (raw, query) = (split.path, split.query);
    let decoded;
    let path = if raw.contains(&b'%') {
        decoded = crate::http::text::percent_decode(raw);
        String::from_utf8_lossy(&decoded)
    } else {
        String::from_utf8_lossy(raw)
    };
    if c.root_path_str.is_empty() {
        scope.set_item(intern!(py, "path"), path.as_ref())?;
        scope.set_item(intern!(py, "raw_path"), PyBytes::new(py, raw))?;
    } else {
        scope.set_item(intern!(py, "path"), format!("{}{path}", c.root_path_str))?;
        let mut full_raw = c.root_path_str.as_bytes().to_vec();
        full_raw.extend_from_slice(raw);
        scope.set_item(intern!(py, "raw_path"), PyBytes::new(py, &full_raw))?;
    }
    scope.set_item(intern!(py, "query_string"), PyBytes::new(py, query))?;
    Ok(scope)
}

/// One request as the app sees it: `receive` and `send`.
#[pyclass(module = "rgunicorn")]
struct Http {
    shared: Arc<ReqShared>,
    /// Until the response (whole or its head) is handed to hyper.
    reply: Option<oneshot::Sender<Response<ResponseBody>>>,
    /// Status and headers sent by the app, not yet handed to hyper.
    head: Option<(StatusCode, HeaderMap)>,
    is_head: bool,
    response_started: bool,
    response_complete: bool,
    /// The last `http.request` (more_body False) was returned.
    request_complete: bool,
    recv_waiter: Option<Py<PyAny>>,
    send_waiter: Option<Py<PyAny>>,
    /// Its [`HttpTask`] is taking a step (a `send` is the app's own).
    in_step: bool,
}

impl Http {
    /// A message for `receive` if one is ready; else registers the wait.
    fn try_receive(&mut self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        let mut st = self
            .shared
            .st
            .lock()
            .map_err(|_| PyRuntimeError::new_err("poisoned"))?;
        if st.disconnected || self.response_complete {
            drop(st);
            return Ok(Some(disconnect_msg(py)?));
        }
        if !self.request_complete && (!st.body.is_empty() || st.body_end) {
            let body = match st.body.len() {
                0 => PyBytes::new(py, b""),
                1 => {
                    let b = st.body.pop_front().unwrap_or_default();
                    PyBytes::new(py, &b)
                }
                _ => {
                    let mut all = BytesMut::with_capacity(st.body_len);
                    for b in st.body.drain(..) {
                        all.extend_from_slice(&b);
                    }
                    PyBytes::new(py, &all)
                }
            };
            st.body_len = 0;
            let more = !st.body_end;
            drop(st);
            self.shared.pump.notify_one();
            if !more {
                self.request_complete = true;
            }
            let msg = PyDict::new(py);
            msg.set_item(intern!(py, "type"), intern!(py, "http.request"))?;
            msg.set_item(intern!(py, "body"), body)?;
            msg.set_item(intern!(py, "more_body"), more)?;
            return Ok(Some(msg.into_any().unbind()));
        }
        st.recv_waiting = true;
        Ok(None)
    }

    /// A wake-up from the tokio side: resolve what can be resolved.
    fn poke(this: &Bound<'_, Http>) {
        let py = this.py();
        let mut me = this.borrow_mut();
        if me.recv_waiter.is_some() {
            match me.try_receive(py) {
                Ok(Some(msg)) => {
                    if let Some(f) = me.recv_waiter.take() {
                        resolve(f.bind(py), msg.bind(py));
                    }
                }
                Ok(None) => {}
                Err(e) => crate::python::hooks::log_exception(py, "Exception in ASGI receive", &e),
            }
        }
        if me.send_waiter.is_some() {
            let go = me
                .shared
                .st
                .lock()
                .map(|mut st| {
                    let go = st.disconnected || st.out_len <= OUT_LOW_WATER;
                    if !go {
                        st.send_waiting = true;
                    }
                    go
                })
                .unwrap_or(true);
            if go {
                if let Some(f) = me.send_waiter.take() {
                    resolve(f.bind(py), &py.None().into_bound(py));
                }
            }
        }
    }

    /// Hand the head to hyper with a streamed body (more to come).
    fn open_stream(&mut self) {
        if let (Some(reply), Some((status, headers))) = (self.reply.take(), self.head.take()) {
            let mut resp = Response::new(
                crate::app::FlushBeforeError::new(AsgiBody(self.shared.clone())).boxed_unsync(),
            );
            *resp.status_mut() = status;
            *resp.headers_mut() = headers;
            if reply.send(resp).is_err() {
                self.shared.disconnect();
            }
        }
    }

    /// Push one chunk of a streamed body; true when the app must wait.
    fn push(&mut self, data: &[u8], more: bool) -> bool {
        let Ok(mut st) = self.shared.st.lock() else {
            return false;
        };
        if !data.is_empty() {
            st.out_len += data.len();
            st.out.push_back(Bytes::copy_from_slice(data));
        }
        if !more {
            st.out_end = true;
        }
        if let Some(w) = st.out_waker.take() {
            w.wake();
        }
        let wait = more && st.out_len > OUT_HIGH_WATER && !st.disconnected;
        if wait {
            st.send_waiting = true;
        }
        wait
    }

    /// The response is over: wake a `receive` waiting for disconnect.
    fn complete(&mut self, py: Python<'_>) -> PyResult<()> {
        self.response_complete = true;
        if let Some(f) = self.recv_waiter.take() {
            resolve(f.bind(py), disconnect_msg(py)?.bind(py));
        }
        Ok(())
    }

    /// End of the app's task: the response is sent or abandoned.
    fn finish(&mut self, error: Option<&str>) {
        if let Some(msg) = error {
            log::error(msg);
        }
        if !self.response_complete {
            if let Some(reply) = self.reply.take() {
                // Nothing reached the client yet: gunicorn's 500.
                self.head = None;
                let _ = reply.send(internal_error());
            } else if let Ok(mut st) = self.shared.st.lock() {
                // The head is out: close the connection.
                st.out_abort = true;
                if let Some(w) = st.out_waker.take() {
                    w.wake();
                }
            }
        }
        if let Ok(mut st) = self.shared.st.lock() {
            st.finished = true;
        }
        self.shared.pump.notify_one();
        self.recv_waiter = None;
        self.send_waiter = None;
        let id = self.shared.id;
        with_ctx(|c| c.live.remove(&id));
    }
}

fn disconnect_msg(py: Python<'_>) -> PyResult<Py<PyAny>> {
    let msg = PyDict::new(py);
    msg.set_item(intern!(py, "type"), intern!(py, "http.disconnect"))?;
    Ok(msg.into_any().unbind())
}

fn resolve(fut: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>) {
    let py = fut.py();
    if fut
        .call_method0(intern!(py, "done"))
        .and_then(|d| d.is_truthy())
        .unwrap_or(true)
    {
        return;
    }
    let _ = fut.call_method1(intern!(py, "set_result"), (value,));
}

/// A future of the running loop, wrapped in a coroutine.
fn wait_for_future<'py>(py: Python<'py>) -> PyResult<(Py<PyAny>, Bound<'py, PyAny>)> {
    let (fut, wait) = with_ctx(|c| {
        c.create_future
            .bind(py)
            .call0()
            .map(|f| (f.unbind(), c.wait.clone_ref(py)))
    })
    .ok_or_else(|| PyRuntimeError::new_err("the ASGI loop is gone"))??;
    let coro = wait.bind(py).call1((fut.bind(py),))?;
    Ok((fut, coro))
}

#[pymethods]
impl Http {
    fn receive<'py>(slf: Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let mut me = slf.borrow_mut();
        if let Some(msg) = me.try_receive(py)? {
            return ready(py, Some(msg));
        }
        let (fut, coro) = wait_for_future(py)?;
        me.recv_waiter = Some(fut);
        Ok(coro)
    }

    fn send<'py>(slf: Bound<'py, Self>, message: Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let mut me = slf.borrow_mut();
        let disconnected = me.shared.st.lock().map(|s| s.disconnected).unwrap_or(true);
        if disconnected {
            return ready(py, None);
        }
        let kind = message.get_item(intern!(py, "type"))?;
        let kind = kind.cast::<PyString>()?.to_str()?;
        if !me.response_started {
            if kind != "http.response.start" {
                return Err(PyRuntimeError::new_err(format!(
                    "Expected ASGI message 'http.response.start', but got '{kind}'."
                )));
            }
            let status: u16 = message.get_item(intern!(py, "status"))?.extract()?;
            let status = StatusCode::from_u16(status).map_err(|_| {
                PyRuntimeError::new_err(format!("Invalid HTTP status code '{status}'."))
            })?;
            let headers = message_headers(&message)?;
            me.response_started = true;
            me.head = Some((status, headers));
            // Sent with the first body message, or when the app awaits
            // something else first: its task hands the head over when the
            // step ends; sent from another task, at the loop's next turn.
            if me.in_step {
                return ready(py, None);
            }
            let id = me.shared.id;
            let schedule = with_ctx(|c| {
                c.pending_heads.push(id);
                (c.pending_heads.len() == 1)
                    .then(|| (c.call_soon.clone_ref(py), c.flush_heads.clone_ref(py)))
            })
            .flatten();
            drop(me);
            if let Some((call_soon, flush)) = schedule {
                call_soon.bind(py).call1((flush,))?;
            }
            return ready(py, None);
        }
        if me.response_complete {
            return Err(PyRuntimeError::new_err(format!(
                "Unexpected ASGI message '{kind}' sent, after response already completed."
            )));
        }
        if kind != "http.response.body" {
            return Err(PyRuntimeError::new_err(format!(
                "Expected ASGI message 'http.response.body', but got '{kind}'."
            )));
        }
        let more = match optional_item(&message, intern!(py, "more_body")) {
            Some(m) => m.is_truthy()?,
            None => false,
        };
        let body_obj = optional_item(&message, intern!(py, "body"));
        let owned;
        let data: &[u8] = match &body_obj {
            None => b"",
            Some(b) => match b.cast::<PyBytes>() {
                Ok(b) => b.as_bytes(),
                Err(_) => {
                    owned = b
                        .call_method0(intern!(py, "__bytes__"))
                        .or_else(|_| py.get_type::<PyBytes>().call1((b,)))?;
                    owned.cast::<PyBytes>()?.as_bytes()
                }
            },
        };
        let data: &[u8] = if me.is_head { b"" } else { data };
        if !more && me.head.is_some() {
            // The whole response at once.
            let Some((status, headers)) = me.head.take() else {
                return ready(py, None);
            };
            let mut resp = Response::new(full(data.to_vec()));
            *resp.status_mut() = status;
            *resp.headers_mut() = headers;
            if let Some(reply) = me.reply.take() {
                let _ = reply.send(resp);
            }
            me.complete(py)?;
            return ready(py, None);
        }
        me.open_stream();
        let wait = me.push(data, more);
        if !more {
            me.complete(py)?;
        }
        if wait {
            let (fut, coro) = wait_for_future(py)?;
            me.send_waiter = Some(fut);
            return Ok(coro);
        }
        ready(py, None)
    }

    /// The app returned `result`.
    fn done(&mut self, result: Bound<'_, PyAny>) {
        let disconnected = self
            .shared
            .st
            .lock()
            .map(|s| s.disconnected)
            .unwrap_or(true);
        let error = if !result.is_none() {
            Some(format!(
                "ASGI callable should return None, but returned '{}'.",
                result.str().map(|s| s.to_string()).unwrap_or_default()
            ))
        } else if !self.response_started && !disconnected {
            Some("ASGI callable returned without starting response.".into())
        } else if !self.response_complete && !disconnected {
            Some("ASGI callable returned without completing response.".into())
        } else {
            None
        };
        self.finish(error.as_deref());
    }

    /// The app raised: `tb` is the traceback.
    fn failed(&mut self, tb: &str) {
        let msg = format!("Exception in ASGI application\n{}", tb.trim_end());
        self.finish(Some(&msg));
    }
}

/// The `headers` of an ASGI message: [name, value] pairs of bytes.
fn message_headers(message: &Bound<'_, PyAny>) -> PyResult<HeaderMap> {
    let py = message.py();
    let mut headers = HeaderMap::new();
    if let Some(hs) = optional_item(message, intern!(py, "headers")) {
        for item in hs.try_iter()? {
            let item = item?;
            let name = item.get_item(0)?;
            let value = item.get_item(1)?;
            let name = HeaderName::from_bytes(bytes_of(&name)?)
                .map_err(|_| PyRuntimeError::new_err("Invalid HTTP header name."))?;
            let value = HeaderValue::from_bytes(bytes_of(&value)?)
                .map_err(|_| PyRuntimeError::new_err("Invalid HTTP header value."))?;
            headers.append(name, value);
        }
    }
    Ok(headers)
}

fn bytes_of<'a>(v: &'a Bound<'_, PyAny>) -> PyResult<&'a [u8]> {
    if let Ok(b) = v.cast::<PyBytes>() {
        return Ok(b.as_bytes());
    }
    if let Ok(s) = v.cast::<PyString>() {
        return s.to_str().map(str::as_bytes);
    }
    Err(PyRuntimeError::new_err(
        "ASGI header names and values must be bytes",
    ))
}
