//! gevent workers (`worker_class` gevent, gevent_wsgi, gevent_pywsgi and
//! their subclasses): the WSGI app served by greenlets on gevent's hub.
//!
//! The worker's main thread (the one that forked, Python's main thread)
//! runs the hub and every Python call of the worker: the app, the request
//! hooks, `worker_int`/`worker_abort`/`worker_exit`, records for Python's
//! logging handlers. After `monkey.patch_all()` Python's locks are gevent's,
//! and Python called from a second OS thread would block that thread's own
//! hub or raise. tokio runs on another thread ("rgunicorn-io") and never
//! takes the GIL, as for the other interfaces.
//!
//! Crossing from tokio to the hub: an inbox (a mutex-guarded set of
//! queues) and an eventfd the hub watches (`loop.io`). A post writes the
//! eventfd only when the inbox was empty since the hub last took it, so a
//! burst of requests costs one wake-up. Each request gets its own greenlet
//! (at most `worker_connections` at once); wakes of greenlets parked in
//! Rust come through the same inbox. From the hub back to tokio: the
//! response channels of the WSGI path (no GIL needed to receive).
//!
//! A greenlet that must wait for the tokio side (`wsgi.input` waiting for
//! body bytes, a streamed response waiting for the client) polls the
//! future with a waker that posts its token to the inbox, then parks in a
//! gevent `Waiter` until the hub switches back to it ([`block_on`]).
//! Greenlets switch by copying C stacks, so the futures polled there live
//! on the heap: the tokio thread may write to a waiter registered in them
//! while the greenlet's stack is swapped out.
//!
//! The heartbeat is a hub timer (every 0.5 s): a greenlet that keeps the
//! hub busy (a CPU loop, a blocking call gevent did not patch) stops it,
//! and the master aborts the worker after `timeout`, as gunicorn's gevent
//! worker. The abort's hooks then run on the main thread through CPython's
//! pending calls, which the blocked greenlet's own bytecode loop runs.
//!
//! The Python half is `gevent.py`.

use std::collections::VecDeque;
use std::ffi::c_void;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Wake, Waker};

use http::{Request, Response};
use hyper::body::Incoming;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use tokio::sync::oneshot;
use tower::util::BoxCloneService;

use crate::app::{internal_error, AppFactory, BoxApp, LoopBeat, ResponseBody, WorkerInfo};
use crate::boot::BootError;
use crate::boot::{ServeError, SignalHooks};
use crate::log;
use crate::python::hooks::PyWorker;
use crate::python::wsgi::{self, Job, WsgiApp};
use crate::sys::fd::EventFd;

const GLUE: &std::ffi::CStr = pyo3::ffi::c_str!(include_str!("gevent.py"));

static MODULE: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
static PARK: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

fn glue(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    MODULE
        .get_or_try_init(py, || {
            PyModule::from_code(py, GLUE, c"rgunicorn_gevent.py", c"rgunicorn_gevent")
                .map(Bound::unbind)
        })
        .map(|m| m.bind(py))
}

/// What a gevent worker needs, decided in the master at start and on HUP.
pub struct Plan {
    pub(crate) settings: wsgi::Settings,
    /// The worker class, when it overrides `patch()`.
    patch_override: Option<Arc<Py<PyAny>>>,
}

/// The plan of the current settings (a worker keeps the one it was forked
/// with).
static PLAN: Mutex<Option<Arc<Plan>>> = Mutex::new(None);

/// The gevent plan of this process, if `worker_class` is a gevent class.
pub fn plan() -> Option<Arc<Plan>> {
    lock(&PLAN).clone()
}

/// Record the plan (in the master, before any fork: at start and on HUP)
/// and return the factory the tokio side calls for the worker's service.
pub(crate) fn app_factory(
    settings: wsgi::Settings,
    patch_override: Option<Arc<Py<PyAny>>>,
) -> AppFactory {
    *lock(&PLAN) = Some(Arc::new(Plan {
        settings,
        patch_override,
    }));
    Arc::new(service)
}

impl Plan {
    /// In the worker, right after `post_fork`: gunicorn's
    /// `GeventWorker.patch()` or the class's override, then `hub.reinit()`.
    pub fn patch(&self, py: Python<'_>, worker: &Py<PyWorker>) -> PyResult<()> {
        let cls = match &self.patch_override {
            Some(c) => c.clone_ref(py).into_bound(py),
            None => py.None().into_bound(py),
        };
        glue(py)?.getattr("patch")?.call1((cls, worker))?;
        Ok(())
    }
}

/// The hub of this worker process (set once it serves).
static HUB: OnceLock<Arc<Hub>> = OnceLock::new();

thread_local! {
    static ON_HUB: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// A Python call posted to the hub (it runs in a greenlet of its own).
type Call = Box<dyn FnOnce(Python<'_>) + Send>;

#[derive(Default)]
struct Inbox {
    /// The eventfd was written since the hub last took the inbox.
    armed: bool,
    wakes: Vec<u64>,
    requests: VecDeque<Job>,
    calls: VecDeque<Call>,
    stop: bool,
}

struct Hub {
    inbox: Mutex<Inbox>,
    /// The eventfd the hub watches.
    efd: EventFd,
    next_token: AtomicU64,
    /// The hub's heartbeat, registered by the tokio side's service.
    beat: OnceLock<LoopBeat>,
}

impl Hub {
    fn new() -> std::io::Result<Hub> {
        Ok(Hub {
            inbox: Mutex::new(Inbox::default()),
            efd: EventFd::new()?,
            next_token: AtomicU64::new(1),
            beat: OnceLock::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inbox> {
        self.inbox.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Change the inbox; wake the hub unless it already has been.
    fn post(&self, change: impl FnOnce(&mut Inbox)) {
        let poke = {
            let mut inbox = self.lock();
            change(&mut inbox);
            !std::mem::replace(&mut inbox.armed, true)
        };
        if poke {
            self.poke();
        }
    }

    fn poke(&self) {
        self.efd.post();
    }

    /// Serve one request from the tokio side: queue it for a greenlet and
    /// wait for the response head.
    async fn call(&self, req: Request<Incoming>) -> Response<ResponseBody> {
        let (parts, body) = req.into_parts();
        let body = (!http_body::Body::is_end_stream(&body)).then(|| wsgi::pump(body));
        let (reply, response) = oneshot::channel();
        self.post(|i| i.requests.push_back(Job { parts, body, reply }));
        // A dropped reply (the worker stopping, a panic) is a 500.
        response.await.unwrap_or_else(|_| internal_error())
    }
}

/// The worker's service (on the tokio thread): every request goes to the
/// hub. Registers the hub's heartbeat with the worker.
fn service(info: &WorkerInfo) -> Result<BoxApp, BootError> {
    let hub = HUB
        .get()
        .expect("a gevent worker's hub is set before it serves")
        .clone();
    let _ = hub.beat.set(info.watch_loop());
    Ok(BoxCloneService::new(tower::service_fn(
        move |req: Request<Incoming>| {
            let hub = hub.clone();
            async move { Ok(hub.call(req).await) }
        },
    )))
}

/// True in a gevent worker on any thread but the hub's: Python must be
/// posted to the hub instead of called here.
pub fn elsewhere() -> bool {
    HUB.get().is_some() && !ON_HUB.with(|h| h.get())
}

/// Run `f` on the hub, in a greenlet of its own.
pub fn post(f: impl FnOnce(Python<'_>) + Send + 'static) {
    if let Some(hub) = HUB.get() {
        hub.post(|i| i.calls.push_back(Box::new(f)));
    }
}

/// Run `f` on the hub and get its result.
pub fn call<R: Send + 'static>(
    f: impl FnOnce(Python<'_>) -> R + Send + 'static,
) -> oneshot::Receiver<R> {
    let (tx, rx) = oneshot::channel();
    post(move |py| {
        let _ = tx.send(f(py));
    });
    rx
}

/// Python work from any thread of a gevent worker: posted to the hub from
/// other threads, run at once on the hub's (and in every other worker).
pub fn run_python(f: impl FnOnce(Python<'_>) + Send + 'static) {
    if elsewhere() {
        post(f);
    } else {
        Python::attach(f);
    }
}

/// A wake-up of one parked greenlet, from whatever thread polls the
/// future it waits for.
struct Token {
    hub: Arc<Hub>,
    token: u64,
}

impl Wake for Token {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let token = self.token;
        self.hub.post(|i| i.wakes.push(token));
    }
}

/// Wait for `fut` in a greenlet on the hub: the other greenlets run
/// meanwhile. An exception thrown into the greenlet while it waits
/// (`gevent.Timeout`, `GreenletExit`) is returned, the future dropped.
pub(crate) fn block_on<F: Future>(py: Python<'_>, fut: F) -> PyResult<F::Output> {
    let Some(hub) = HUB.get() else {
        return Err(pyo3::exceptions::PyRuntimeError::new_err(
            "no gevent hub in this worker",
        ));
    };
    let park = PARK.get_or_try_init(py, || glue(py)?.getattr("park").map(Bound::unbind))?;
    // On the heap: see the module's note on greenlet stacks.
    let mut fut = Box::pin(fut);
    loop {
        let token = hub.next_token.fetch_add(1, Ordering::Relaxed);
        let waker = Waker::from(Arc::new(Token {
            hub: hub.clone(),
            token,
        }));
        if let Poll::Ready(v) = fut.as_mut().poll(&mut Context::from_waker(&waker)) {
            return Ok(v);
        }
        park.call1(py, (token,))?;
    }
}

/// The hub's view of the inbox, handed to `gevent.py`'s loop.
#[pyclass(frozen, module = "rgunicorn")]
struct Inlet {
    hub: Arc<Hub>,
    app: Arc<WsgiApp>,
    /// Requests taken from the inbox, waiting for a greenlet.
    ready: Mutex<VecDeque<Job>>,
    calls: Mutex<VecDeque<Call>>,
}

#[pymethods]
impl Inlet {
    /// Empty the inbox: (tokens to wake, new requests, new calls, stop).
    fn take(&self) -> (Vec<u64>, usize, usize, bool) {
        // Reset before the inbox is emptied, so a post made after that
        // finds `armed` false and writes again.
        self.hub.efd.take();
        let mut inbox = self.hub.lock();
        inbox.armed = false;
        let wakes = std::mem::take(&mut inbox.wakes);
        let requests = std::mem::take(&mut inbox.requests);
        let calls = std::mem::take(&mut inbox.calls);
        let stop = inbox.stop;
        drop(inbox);
        let (n_requests, n_calls) = (requests.len(), calls.len());
        lock(&self.ready).extend(requests);
        lock(&self.calls).extend(calls);
        (wakes, n_requests, n_calls, stop)
    }

    /// Serve the next ready request (in its own greenlet).
    fn run_request(&self, py: Python<'_>) {
        let Some(job) = lock(&self.ready).pop_front() else {
            return;
        };
        if job.reply.is_closed() {
            // The client went away while the request was queued.
            return;
        }
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wsgi::handle(py, &self.app, job)
        }));
        if caught.is_err() {
            log::error("Error handling request: panic in the WSGI app's greenlet");
        }
    }

    /// Run the next posted call (in its own greenlet).
    fn run_call(&self, py: Python<'_>) {
        let Some(call) = lock(&self.calls).pop_front() else {
            return;
        };
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| call(py))).is_err() {
            log::error("panic in a call on the gevent hub");
        }
    }

    /// The hub timer's heartbeat.
    fn beat(&self) {
        if let Some(beat) = self.hub.beat.get() {
            beat.beat();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Serve as a gevent worker: called on the main thread after boot (the
/// patching done), returns when the worker has drained. `io` is the
/// worker's serving loop (tokio, the HTTP side), run on a thread of its
/// own with the signal hooks it must call; at most `limit` requests run
/// in greenlets at once (`worker_connections`).
pub fn serve<Io>(
    py: Python<'_>,
    plan: &Plan,
    limit: usize,
    hooks: SignalHooks,
    io: Io,
) -> Result<u64, ServeError>
where
    Io: FnOnce(SignalHooks) -> Result<u64, ServeError> + Send + 'static,
{
    // With `reload` on, an import that failed during the boot is served
    // as gunicorn's fail app, by the plain worker: there is no app to run
    // on a hub (and no second import to try).
    if crate::python::reloader::import_failed() {
        return py.detach(|| io(hooks));
    }
    let app = Arc::new(wsgi::load_green(py, &plan.settings).map_err(ServeError::Boot)?);
    // The app's import may have changed Python's log handlers.
    crate::python::logging::refresh(py);
    let hub = Arc::new(Hub::new()?);
    if HUB.set(hub.clone()).is_err() {
        return Err(std::io::Error::other("a gevent hub is already set").into());
    }
    ON_HUB.with(|h| h.set(true));
    let limit = limit.max(1);
    let hooks = SignalHooks {
        on_quit: quit_on_hub(hooks.on_quit),
        on_abort: abort_on_hub(hooks.on_abort),
        on_term: term_on_hub(hooks.on_term),
    };
    let io = {
        let hub = hub.clone();
        std::thread::Builder::new()
            .name("rgunicorn-io".into())
            .spawn(move || {
                let served = io(hooks);
                hub.post(|i| i.stop = true);
                served
            })?
    };
    let inlet = Py::new(
        py,
        Inlet {
            hub: hub.clone(),
            app,
            ready: Mutex::new(VecDeque::new()),
            calls: Mutex::new(VecDeque::new()),
        },
    )
    .map_err(|e| std::io::Error::other(e.to_string()))?;
    let served = glue(py)
        .and_then(|g| g.getattr("serve"))
        .and_then(|serve| serve.call1((inlet.clone_ref(py), hub.efd.as_raw_fd(), limit)));
    if let Err(e) = served {
        crate::python::hooks::log_exception(
            py,
            "Exception in worker process: the gevent hub failed",
            &e,
        );
        crate::sys::process::exit_now(1);
    }
    // Log records posted while the loop stopped, in the order posted:
    // those the hub had taken first, then those still in the inbox.
    let inlet = inlet.get();
    while let Some(call) = lock(&inlet.calls).pop_front() {
        call(py);
    }
    let leftover = std::mem::take(&mut hub.lock().calls);
    for call in leftover {
        call(py);
    }
    py.detach(|| io.join())
        .unwrap_or_else(|_| Err(std::io::Error::other("the I/O thread panicked").into()))
}

/// TERM: the Python-level SIGTERM handler runs on the hub, as Python
/// runs signal handlers on the main thread; the drain does not wait for it.
fn term_on_hub(hook: Box<dyn Fn() + Send>) -> Box<dyn Fn() + Send> {
    let hook = Arc::new(Mutex::new(hook));
    Box::new(move || {
        let hook = hook.clone();
        post(move |_py| (lock(&hook))());
    })
}

/// INT/QUIT: `worker_int` and `worker_exit` in a greenlet on the hub (as
/// gunicorn's gevent worker spawns one for them), then exit 0.
fn quit_on_hub(hook: Box<dyn Fn() + Send>) -> Box<dyn Fn() + Send> {
    let hook = Mutex::new(Some(hook));
    Box::new(move || {
        if let Some(hook) = lock(&hook).take() {
            post(move |_py| {
                hook();
                crate::sys::process::exit_now(0);
            });
        }
        // The process exits from the hub.
        loop {
            std::thread::park();
        }
    })
}

/// What the abort's pending call runs.
static ABORT: Mutex<Option<Box<dyn Fn() + Send>>> = Mutex::new(None);

extern "C" fn run_abort(_: *mut c_void) -> libc::c_int {
    let hook = lock(&ABORT).take();
    if let Some(hook) = hook {
        hook();
    }
    crate::sys::process::exit_now(1)
}

/// ABRT (timeout): the hub may be stuck in a greenlet, so `worker_abort`
/// and `worker_exit` run as a CPython pending call: the main thread runs
/// it between two bytecodes of whatever it executes (or as soon as the
/// eventfd wakes an idle hub), then exits 1. Stuck in C for longer, the
/// master's SIGKILL a second later ends it.
fn abort_on_hub(hook: Box<dyn Fn() + Send>) -> Box<dyn Fn() + Send> {
    let hook = Mutex::new(Some(hook));
    Box::new(move || {
        if let Some(hook) = lock(&hook).take() {
            *lock(&ABORT) = Some(hook);
            // SAFETY: Py_AddPendingCall needs no thread state: from a
            // thread without one it queues for the main interpreter, whose
            // main thread (the hub's) runs `run_abort`, a plain function.
            unsafe { pyo3::ffi::Py_AddPendingCall(Some(run_abort), std::ptr::null_mut()) };
            // CPython (3.11) marks pending calls for the main thread's
            // bytecode loop only when the main thread itself takes the GIL
            // again: asking for the GIL here makes a busy main thread hand
            // it over and take it back. No Python runs on this thread.
            Python::attach(|_| {});
            if let Some(hub) = HUB.get() {
                hub.poke();
            }
        }
        loop {
            std::thread::park();
        }
    })
}
