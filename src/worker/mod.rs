//! A worker process after fork: its own tokio runtime, the accept loops
//! over the inherited listeners, hyper HTTP/1.1 connections with
//! keep-alive, the connection cap, the heartbeat into the scoreboard,
//! `max_requests`, and the drain protocol:
//!
//! stop accepting -> slot `Draining` -> each connection finishes its
//! in-flight request; the next response on a kept-alive connection carries
//! `Connection: close`; a connection idle for the drain window is closed ->
//! exit when none is left, or at `graceful_timeout`.
//!
//! Connections are served `with_upgrades`: an app that answers `101
//! Switching Protocols` with an [`AfterUpgrade`] session (ASGI websockets)
//! gets the raw connection once hyper lets go of it; the framer stops
//! framing that connection, and the session counts as in flight until it
//! ends (it is told when the worker drains, and closes). A Rust app that
//! answers 101 by itself (an axum websocket, through hyper's `OnUpgrade`)
//! gets the raw connection too, but that connection no longer counts once
//! hyper lets go of it.
//!
//! Signals are taken by a dedicated thread with `sigwait`, so TERM, INT,
//! QUIT and ABRT (timeout) are handled even when the serving loop is
//! blocked by the app.

use std::convert::Infallible;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONNECTION};
use hyper::{Request, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use nix::sys::signal::Signal;
use tokio::sync::{mpsc, watch, Semaphore};
use tower::ServiceExt;

use crate::app::{drained, AfterUpgrade, AppFactory, BoxApp, ConnAddrs, Upgrade, WorkerInfo};
use crate::boot::{ServeError, SignalHooks};
use crate::http::gate::{GatedIo, Limits, ProxyInfo};
use crate::http::h2::H2Settings;
use crate::log;
use crate::observe::access_log::{AccessLog, Record};
use crate::python::request_hooks::{AppEnviron, RequestHooks, RequestInfo, ResponseInfo};
use crate::sys::scoreboard::{monotonic_ms, monotonic_us, RetireAsk, Scoreboard, SlotState};

/// Everything a worker needs, inherited across fork (no serialisation).
pub struct WorkerSetup {
    pub slot: usize,
    pub scoreboard: Arc<Scoreboard>,
    pub listener_fds: Vec<RawFd>,
    /// Requests after which this worker asks for its replacement
    /// (`u64::MAX`: never); shared with the hooks' `worker.max_requests`,
    /// so a hook running in this worker may change it.
    pub max_requests: Arc<AtomicU64>,
    /// Keep-alive, first-request and drain timings, the runtime's threads
    /// and `worker_connections` (`keepalive` is the worker class's own
    /// where it has one, as UvicornWorker's `timeout_keep_alive`).
    pub conn: crate::settings::Worker,
    pub ppid: i32,
    /// Called once in the worker, after fork, to make its app.
    pub app: AppFactory,
    /// gunicorn's request strictness, applied by [`GatedIo`] before hyper
    /// reads a byte.
    pub limits: Arc<Limits>,
    /// `pre_request` / `post_request`, when the config sets either.
    pub request_hooks: Option<Arc<RequestHooks>>,
    /// `accesslog` target and `access_log_format`, when the log is on
    /// (gunicorn's `access_log_enabled`); no target: a `logconfig*`
    /// setting turned it on, and Python's logging writes it.
    pub access_log: Option<(Option<String>, String)>,
    /// TLS on every connection (`certfile`/`keyfile` set), its rustls
    /// config built and checked by the master before fork.
    pub tls: Option<crate::http::tls::Tls>,
    /// HTTP/2, when `http_protocols` lists `h2`.
    pub http2: Option<H2Settings>,
    /// Count status classes and latency in the slot (`metrics_bind` or
    /// `statsd_host` set); off, the request path reads no clock for them.
    pub metrics: bool,
    /// gunicorn's per-request statsd metrics, sent by this worker.
    pub statsd: Option<crate::settings::Statsd>,
    /// The tokio threads yield to threads running Python
    /// ([`crate::sys::process::ThreadRole::Io`]): set for a Python app
    /// served by threads (WSGI, ASGI), whose I/O thread's wake-ups should
    /// not preempt the thread holding the GIL. Not for a Rust app, nor for
    /// gevent, whose I/O thread never waits for the hub's GIL: there a
    /// response waiting for its write is the latency to cut.
    pub io_yields_to_python: bool,
    /// `reload`: the reloader's report pipe, told the files this worker
    /// imported once its app is made.
    pub reload_report: Option<RawFd>,
}

/// The worker's app and what it knows of its worker.
#[derive(Clone)]
struct Served {
    app: BoxApp,
    info: WorkerInfo,
    access_log: Option<AccessLog>,
    /// Requests not yet sent to statsd (flushed once a second).
    statsd: Option<Arc<crate::observe::metrics::StatsdBatch>>,
    /// The worker's open connections (see [`Conns`]).
    conns: Arc<Conns>,
}

/// Events from the signal thread to the serving loop.
#[derive(Debug, Clone, Copy)]
enum Event {
    Drain,
    ReopenLogs,
}

/// How long a kept-alive connection may stay idle once draining started
/// before it is closed: long enough for a client that is about to send its
/// next request to get an answer with `Connection: close` instead of a reset.
const DRAIN_IDLE_WINDOW: Duration = Duration::from_millis(1000);

/// Serve until drained. Runs on the worker's main thread, GIL released.
/// Returns how many requests the worker received (`worker.nr`).
pub fn serve(setup: WorkerSetup, hooks: SignalHooks) -> Result<u64, ServeError> {
    let sigset = crate::sys::process::block_worker_signals();
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    std::thread::Builder::new()
        .name("rgunicorn-signals".into())
        .spawn(move || signal_thread(sigset, events_tx, hooks))?;
    let yields = setup.io_yields_to_python;
    if yields {
        // This thread runs the runtime (current_thread) and spawns the
        // Python threads (which set their own role).
        crate::sys::process::set_thread_role(crate::sys::process::ThreadRole::Io);
    }
    let runtime = match setup.conn.runtime_threads {
        0 | 1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .on_thread_start(move || {
                if yields {
                    crate::sys::process::set_thread_role(crate::sys::process::ThreadRole::Io);
                }
            })
            .enable_all()
            .build()?,
    };
    runtime.block_on(serve_async(setup, events_rx))
}

fn signal_thread(
    set: nix::sys::signal::SigSet,
    events: mpsc::UnboundedSender<Event>,
    hooks: SignalHooks,
) {
    loop {
        let Ok(sig) = set.wait() else { continue };
        match sig {
            Signal::SIGTERM => {
                (hooks.on_term)();
                let _ = events.send(Event::Drain);
            }
            Signal::SIGUSR1 => {
                let _ = events.send(Event::ReopenLogs);
            }
            Signal::SIGINT | Signal::SIGQUIT => {
                stop_accepting_now();
                (hooks.on_quit)();
                crate::sys::process::exit_now(0);
            }
            Signal::SIGABRT => {
                stop_accepting_now();
                answer_stuck_requests();
                (hooks.on_abort)();
                crate::sys::process::exit_now(1);
            }
            _ => {}
        }
    }
}

/// Sockets whose request is inside the app (the app has not returned a
/// response yet). When the master aborts this worker on timeout, the signal
/// thread answers each of them with gunicorn's 500 before the process goes,
/// as gunicorn's sync worker does, instead of leaving the client with a
/// closed connection.
static IN_APP: std::sync::Mutex<Vec<Arc<InAppEntry>>> = std::sync::Mutex::new(Vec::new());

/// A plaintext connection's entry in [`IN_APP`], for its whole life (so
/// that a request costs two atomic stores, not a lock).
struct InAppEntry {
    fd: RawFd,
    /// A request of this connection is inside the app now.
    inside: AtomicBool,
}

/// A connection's registration in [`IN_APP`]; removed on drop.
struct InAppRegistration(Option<Arc<InAppEntry>>);

impl InAppRegistration {
    /// `fd` < 0 (TLS or HTTP/2, where a plaintext 500 would be garbage)
    /// registers nothing.
    fn new(fd: RawFd) -> InAppRegistration {
        if fd < 0 {
            return InAppRegistration(None);
        }
        let entry = Arc::new(InAppEntry {
            fd,
            inside: AtomicBool::new(false),
        });
        if let Ok(mut v) = IN_APP.lock() {
            v.push(entry.clone());
        }
        InAppRegistration(Some(entry))
    }

    /// Marks the connection's request as inside the app until dropped.
    fn enter(&self) -> InApp<'_> {
        if let Some(e) = &self.0 {
            e.inside.store(true, Ordering::Release);
        }
        InApp(self)
    }
}

impl Drop for InAppRegistration {
    fn drop(&mut self) {
        let Some(entry) = self.0.take() else { return };
        if let Ok(mut v) = IN_APP.lock() {
            if let Some(i) = v.iter().position(|e| Arc::ptr_eq(e, &entry)) {
                v.swap_remove(i);
            }
        }
    }
}

/// A request inside the app (see [`InAppRegistration::enter`]).
struct InApp<'a>(&'a InAppRegistration);

impl Drop for InApp<'_> {
    fn drop(&mut self) {
        if let Some(e) = &self.0 .0 {
            e.inside.store(false, Ordering::Release);
        }
    }
}

/// On abort: a 500 to every request still inside the app. The runtime
/// thread is stuck (that is why the master aborts us), so nothing else
/// writes to these sockets.
fn answer_stuck_requests() {
    let fds: Vec<RawFd> = match IN_APP.try_lock() {
        Ok(v) => v
            .iter()
            .filter(|e| e.inside.load(Ordering::Acquire))
            .map(|e| e.fd)
            .collect(),
        Err(_) => return,
    };
    let resp = crate::http::error::response(500, "Internal Server Error", "");
    for fd in fds {
        // The connection that owns the fd cannot be dropped meanwhile: the
        // runtime thread is stuck, and the process exits right after this.
        let _ = nix::sys::socket::send(fd, &resp, nix::sys::socket::MsgFlags::MSG_NOSIGNAL);
        let _ = nix::sys::socket::shutdown(fd, nix::sys::socket::Shutdown::Both);
    }
}

/// This worker's listening fds, for [`stop_accepting_now`].
static LISTENER_FDS: std::sync::Mutex<Vec<RawFd>> = std::sync::Mutex::new(Vec::new());

/// Before a quick exit (INT/QUIT, or ABRT on timeout): make this process's
/// listener fds point at /dev/null, so that the still-running serving loop
/// (a Python app's thread may be the stuck part) accepts no connection it
/// would then drop. dup2 rather than close: the fd numbers cannot be reused
/// by another socket meanwhile.
fn stop_accepting_now() {
    let Ok(null) = std::fs::File::open("/dev/null") else {
        return;
    };
    let fds = LISTENER_FDS
        .try_lock()
        .map(|v| v.clone())
        .unwrap_or_default();
    for fd in fds {
        // A listener closed when draining began may have had its number
        // reused by a connection: only a listening socket is replaced (the
        // process exits right after; the accept loop then sees errors).
        if crate::sys::fd::is_listening(fd) {
            crate::sys::fd::replace_with(&null, fd);
        }
    }
}

/// What a connection's service needs for each request, shared by them
/// all (one reference count per request, not one per part).
struct ConnCtx {
    state: ConnState,
    /// The gate's protocol switch (HTTP/1 only).
    raw: Option<Arc<AtomicBool>>,
    /// Requests come through a [`GatedIo`], which shows hyper a CONNECT
    /// under another name ([`crate::http::gate::restore_method`]).
    gated: bool,
    in_app: InAppRegistration,
    /// This connection's own handle on the app, called in place when it
    /// is ready (rather than a clone per request).
    app: std::sync::Mutex<BoxApp>,
    addrs: ConnAddrs,
    proxy: Option<Arc<OnceLock<ProxyInfo>>>,
    setup: Arc<WorkerSetup>,
    /// [`Served`] but its app (in `app`).
    info: WorkerInfo,
    access_log: Option<AccessLog>,
    statsd: Option<Arc<crate::observe::metrics::StatsdBatch>>,
    drain: watch::Receiver<bool>,
}

/// The app's answer to a request, or the request until the app is called.
enum AppCall {
    Called(AppFuture),
    Later(Box<Request<Incoming>>),
}

type AppFuture = futures_util::future::Either<
    <BoxApp as tower::Service<Request<Incoming>>>::Future,
    std::pin::Pin<Box<tower::util::Oneshot<BoxApp, Request<Incoming>>>>,
>;

impl ConnCtx {
    /// The app's answer to `req`.
    fn call_app(&self, req: Request<Incoming>) -> AppFuture {
        use tower::Service;
        let mut app = self.app.lock().unwrap_or_else(|e| e.into_inner());
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        if let std::task::Poll::Ready(Ok(())) = app.poll_ready(&mut cx) {
            futures_util::future::Either::Left(app.call(req))
        } else {
            // Not ready now (an app with back-pressure): a clone waits.
            futures_util::future::Either::Right(Box::pin(app.clone().oneshot(req)))
        }
    }
}

/// Per-connection state shared with its service.
struct ConnState {
    in_flight: std::sync::atomic::AtomicU32,
    /// When the connection was accepted (its age, for [`Conns::reclaim_one`]).
    accepted_ms: u64,
    /// When the last response was made (or the connection accepted).
    last_active_ms: AtomicU64,
    /// A response was made: from then on the connection is kept alive for
    /// `keepalive`; before, the client has `header_read_timeout`.
    responded: std::sync::atomic::AtomicBool,
    /// The app switched protocols and serves the connection on: its
    /// session, run once hyper has handed the connection over.
    upgrade: std::sync::Mutex<Option<Upgrade>>,
    /// Wakes the connection's driver: its first response was made (the
    /// idle deadline moves from `header_read_timeout` to `keepalive`), or
    /// `reclaim` was set.
    poke: tokio::sync::Notify,
    /// The accept loop asks the connection to close if it has no request
    /// in progress, to make room for a waiting one.
    reclaim: AtomicBool,
    /// The client has sent a byte ([`GatedIo::heard`]; `None` when no gate
    /// frames the connection).
    heard: Option<Arc<AtomicBool>>,
}

/// A worker's open connections, so that a worker at `worker_connections`
/// can free a slot for a connection waiting in the accept queue (as nginx
/// reuses idle keep-alive connections): a client that holds a slot while
/// sending nothing, or trickling a head, must not lock others out.
#[derive(Default)]
struct Conns {
    live: std::sync::Mutex<std::collections::HashMap<u64, Arc<ConnCtx>>>,
    next_id: AtomicU64,
}

/// A connection's entry in [`Conns`]; removed on drop.
struct ConnRegistration {
    conns: Arc<Conns>,
    id: u64,
}

impl Drop for ConnRegistration {
    fn drop(&mut self) {
        if let Ok(mut live) = self.conns.live.lock() {
            live.remove(&self.id);
        }
    }
}

impl Conns {
    fn register(self: &Arc<Self>, ctx: Arc<ConnCtx>) -> ConnRegistration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut live) = self.live.lock() {
            live.insert(id, ctx);
        }
        ConnRegistration {
            conns: self.clone(),
            id,
        }
    }

    /// Ask one connection with no request in progress to close: the idle
    /// kept-alive connection whose last response is the oldest, else the
    /// oldest connection still without its first request: one that sent
    /// part of a head, or nothing for [`FIRST_REQUEST_GRACE`]. Returns
    /// whether there was one. (It closes unless a request began meanwhile.)
    fn reclaim_one(&self) -> bool {
        let Ok(live) = self.live.lock() else {
            return false;
        };
        let now = monotonic_ms();
        let grace = FIRST_REQUEST_GRACE.as_millis() as u64;
        // (still without a first request, since when): idle ones sort first.
        let mut best: Option<((bool, u64), &Arc<ConnCtx>)> = None;
        for ctx in live.values() {
            let s = &ctx.state;
            if s.reclaim.load(Ordering::Acquire) || s.in_flight.load(Ordering::Acquire) != 0 {
                continue;
            }
            let key = if s.responded.load(Ordering::Acquire) {
                (false, s.last_active_ms.load(Ordering::Acquire))
            } else if s.heard.as_ref().is_some_and(|h| h.load(Ordering::Relaxed))
                || now.saturating_sub(s.accepted_ms) >= grace
            {
                (true, s.accepted_ms)
            } else {
                continue;
            };
            if best.as_ref().is_none_or(|(k, _)| key < *k) {
                best = Some((key, ctx));
            }
        }
        let Some((_, ctx)) = best else {
            return false;
        };
        ctx.state.reclaim.store(true, Ordering::Release);
        ctx.state.poke.notify_one();
        true
    }
}

/// A connection closed to make room: counted in the slot, logged.
fn note_reclaimed(ctx: &ConnCtx, why: crate::sys::scoreboard::Reclaimed) {
    let slot = ctx.setup.scoreboard.slot(ctx.setup.slot);
    slot.reclaimed[why as usize].fetch_add(1, Ordering::Relaxed);
    let what = match why {
        crate::sys::scoreboard::Reclaimed::Idle => "an idle keep-alive connection",
        crate::sys::scoreboard::Reclaimed::SlowHead => "a connection without a complete request",
    };
    let peer = ctx.addrs.peer.map(|p| p.to_string()).unwrap_or_default();
    log::debug(&format!(
        "Closed {what} from {peer}: worker_connections reached and connections are waiting"
    ));
}

async fn serve_async(
    setup: WorkerSetup,
    mut events: mpsc::UnboundedReceiver<Event>,
) -> Result<u64, ServeError> {
    let setup = Arc::new(setup);
    let slot_index = setup.slot;
    let board = setup.scoreboard.clone();
    let slot = || board.slot(slot_index);
    let info = WorkerInfo::new();
    // Built inside the runtime, so an app may start tasks or pools here.
    let access_log = match &setup.access_log {
        Some((target, format)) => match AccessLog::start(target.as_deref(), format) {
            Ok(log) => Some(log),
            Err(e) => {
                log::error(&format!(
                    "can't open the access log {}: {e}",
                    target.as_deref().unwrap_or("-")
                ));
                None
            }
        },
        None => None,
    };
    // statsd: requests are batched and sent once a second (and at exit),
    // never on the request path itself.
    let statsd = setup
        .statsd
        .as_ref()
        .and_then(crate::observe::metrics::Statsd::connect)
        .map(|client| {
            (
                Arc::new(crate::observe::metrics::StatsdBatch::default()),
                Arc::new(client),
            )
        });
    let mut flush_statsd = {
        let statsd = statsd.clone();
        let mut log_counts = crate::observe::metrics::LogCountsSent::now();
        let mut reclaimed = crate::observe::metrics::ReclaimedSent::default();
        let setup = setup.clone();
        move || {
            if let Some((batch, client)) = &statsd {
                batch.flush(client);
                let mut lines = log_counts.lines(client);
                lines.extend(reclaimed.lines(client, setup.scoreboard.slot(setup.slot)));
                client.send(&lines);
            }
        }
    };
    let served = Served {
        app: {
            let app = (setup.app)(&info)?;
            // The app's import may have changed Python's log handlers.
            log::refresh_routing();
            if let Some(fd) = setup.reload_report {
                crate::python::reloader::report_modules(fd);
            }
            app
        },
        info,
        access_log,
        statsd: statsd.as_ref().map(|(b, _)| b.clone()),
        conns: Default::default(),
    };
    let (drain_tx, drain_rx) = watch::channel(false);
    let conn_cap = Arc::new(Semaphore::new(setup.conn.worker_connections));

    for &fd in &setup.listener_fds {
        // This process's inherited copy of a master listener, its only
        // owner here. The accept loop closes it when draining starts: once
        // every worker and the master have closed theirs, new connections
        // are refused at once instead of waiting in a queue nobody serves.
        let owned = crate::sys::fd::adopt_inherited(fd);
        if let Ok(mut fds) = LISTENER_FDS.lock() {
            fds.push(fd);
        }
        spawn_accept_loop(
            owned,
            setup.clone(),
            served.clone(),
            drain_rx.clone(),
            conn_cap.clone(),
        )?;
    }

    slot().beat();
    slot().set_state(SlotState::Serving);
    let beat_every = Duration::from_millis(500);
    let mut ticker = tokio::time::interval(beat_every);
    let mut ticks = 0u64;
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                ticks += 1;
                if ticks.is_multiple_of(2) {
                    flush_statsd();
                }
                // The app's own loops (asyncio) count too: a blocked one
                // stalls the heartbeat as a blocked serving loop does.
                slot().beat_at(served.info.heartbeat(monotonic_ms()));
                if nix::unistd::getppid().as_raw() != setup.ppid {
                    log::info(&format!("Parent changed, shutting down: <Worker {}>", served.info.pid()));
                    break;
                }
            }
            ev = events.recv() => match ev {
                Some(Event::Drain) | None => break,
                Some(Event::ReopenLogs) => {
                    log::reopen();
                    if let Some(access) = &served.access_log {
                        access.reopen();
                    }
                }
            },
        }
    }

    // Drain: stop accepting, let connections finish, bounded by graceful_timeout.
    slot().set_state(SlotState::Draining);
    let _ = drain_tx.send(true);
    crate::python::hooks::release_listener_copies();
    let deadline = tokio::time::Instant::now() + setup.conn.graceful_timeout;
    while slot().connections.load(Ordering::Acquire) > 0 && tokio::time::Instant::now() < deadline {
        slot().beat();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    flush_statsd();
    if let Some(access) = &served.access_log {
        access.flush(Duration::from_secs(2));
    }
    Ok(served.info.requests_served())
}

fn spawn_accept_loop(
    fd: OwnedFd,
    setup: Arc<WorkerSetup>,
    served: Served,
    mut drain: watch::Receiver<bool>,
    cap: Arc<Semaphore>,
) -> std::io::Result<()> {
    let is_unix =
        nix::sys::socket::getsockname::<nix::sys::socket::UnixAddr>(fd.as_raw_fd()).is_ok();
    let acceptor = if is_unix {
        let l = std::os::unix::net::UnixListener::from(fd);
        l.set_nonblocking(true)?;
        Acceptor::Unix(tokio::net::UnixListener::from_std(l)?)
    } else {
        let l = std::net::TcpListener::from(fd);
        l.set_nonblocking(true)?;
        Acceptor::Tcp(tokio::net::TcpListener::from_std(l)?)
    };
    // SERVER_NAME/SERVER_PORT of a WSGI environ: the listener's own address.
    let server_addr = match &acceptor {
        Acceptor::Tcp(l) => l.local_addr().ok(),
        Acceptor::Unix(_) => None,
    };
    tokio::spawn(async move {
        loop {
            let permit = match cap.clone().try_acquire_owned() {
                Ok(p) => p,
                Err(_) => tokio::select! {
                    p = wait_for_slot(&cap, &acceptor, &served.conns) => match p {
                        Some(p) => p,
                        None => return,
                    },
                    _ = drained(&mut drain) => return,
                },
            };
            wait_for_fair_share(&setup, &acceptor).await;
            tokio::select! {
                _ = wait_for_app_loops(&served.info) => {}
                _ = drained(&mut drain) => return,
            }
            let accepted = tokio::select! {
                a = async {
                    match &acceptor {
                        Acceptor::Tcp(l) => l.accept().await.map(|(s, _)| {
                            let _ = s.set_nodelay(true);
                            Conn::Tcp(s)
                        }),
                        Acceptor::Unix(l) => l.accept().await.map(|(s, _)| Conn::Unix(s)),
                    }
                } => a,
                // The app stalled while this loop waited: leave the next
                // connection to a sibling (looked at again above).
                _ = app_stalls(&served.info), if served.info.watches_app() => continue,
                _ = drained(&mut drain) => return,
            };
            match accepted {
                Ok(conn) => {
                    // Counted before the next accept, so that the fair-share
                    // check of the next turn sees it.
                    let slot = setup.scoreboard.slot(setup.slot);
                    slot.connections.fetch_add(1, Ordering::AcqRel);
                    let (setup, served, drain) = (setup.clone(), served.clone(), drain.clone());
                    tokio::spawn(async move {
                        let slot = setup.scoreboard.slot(setup.slot);
                        match conn {
                            Conn::Tcp(s) => {
                                let addrs = ConnAddrs {
                                    peer: s.peer_addr().ok(),
                                    server: server_addr,
                                    tls: false,
                                    proxy: None,
                                };
                                serve_stream(s, addrs, setup.clone(), served, drain).await
                            }
                            Conn::Unix(s) => {
                                let addrs = ConnAddrs::default();
                                serve_stream(s, addrs, setup.clone(), served, drain).await
                            }
                        }
                        slot.connections.fetch_sub(1, Ordering::AcqRel);
                        drop(permit);
                    });
                }
                Err(e) => {
                    log::debug(&format!("accept failed: {e}"));
                    if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) {
                        // Out of descriptors below `worker_connections`:
                        // the same room-making as at the cap.
                        served.conns.reclaim_one();
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    });
    Ok(())
}

/// Serve one accepted connection, through a TLS handshake first when TLS
/// is on (bounded by `header_read_timeout`; a failed one is logged and
/// closes the connection).
async fn serve_stream<S>(
    stream: S,
    mut addrs: ConnAddrs,
    setup: Arc<WorkerSetup>,
    served: Served,
    drain: watch::Receiver<bool>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + AsRawFd + Unpin + Send + 'static,
{
    let limits = setup.limits.clone();
    let peer = addrs.peer.map(|a| a.ip());
    match &setup.tls {
        None => {
            if let Some(h2) = setup
                .http2
                .as_ref()
                .filter(|h2| h2.prior_knowledge && limits.trusts_forwarder(peer))
            {
                // A trusted peer on a prior-knowledge port must speak
                // HTTP/2 (gunicorn's rule: no silent downgrade).
                let mut stream = stream;
                match crate::http::h2::read_preface(&mut stream).await {
                    Ok(preface) => {
                        let io = TokioIo::new(crate::http::h2::Rewind::new(preface, stream));
                        let proto = Proto::H2(h2.clone());
                        Connection {
                            io,
                            fd: -1,
                            proto,
                            addrs,
                            proxy: None,
                        }
                        .run(setup.clone(), served, drain)
                        .await
                    }
                    Err(got) => crate::http::h2::refuse_preface(&mut stream, &got, peer).await,
                }
                return;
            }
            let fd = stream.as_raw_fd();
            #[cfg(feature = "bench-ungated")]
            {
                // Benchmark-only build (see Cargo.toml): no request checks.
                let io = TokioIo::new(stream);
                let proto = Proto::H1 {
                    raw: Default::default(),
                    gated: false,
                    heard: None,
                };
                return Connection {
                    io,
                    fd,
                    proto,
                    addrs,
                    proxy: None,
                }
                .run(setup, served, drain)
                .await;
            }
            #[allow(unreachable_code)]
            let io = GatedIo::new(TokioIo::new(stream), limits, peer);
            Connection::gated(io, fd, addrs)
                .run(setup, served, drain)
                .await
        }
        Some(tls) => {
            let remote = peer.map(|ip| ip.to_string()).unwrap_or_default();
            let Some(stream) = tls
                .accept(stream, setup.conn.header_read_timeout, &remote)
                .await
            else {
                return;
            };
            addrs.tls = true;
            if let Some(h2) = setup.http2.as_ref() {
                if stream.alpn_protocol() == Some(b"h2") {
                    let io = TokioIo::new(stream);
                    let proto = Proto::H2(h2.clone());
                    return Connection {
                        io,
                        fd: -1,
                        proto,
                        addrs,
                        proxy: None,
                    }
                    .run(setup.clone(), served, drain)
                    .await;
                }
            }
            let io = GatedIo::new(TokioIo::new(stream), limits, peer);
            // No fd: on abort the signal thread can't answer inside TLS.
            Connection::gated(io, -1, addrs)
                .run(setup, served, drain)
                .await
        }
    }
}

/// The protocol a connection speaks.
enum Proto {
    /// `raw` is the framer's switch to pass bytes through untouched once
    /// the app switches protocols ([`GatedIo::raw_switch`]); `gated` says
    /// that a [`GatedIo`] frames the connection (all but the
    /// benchmark-only ungated build).
    H1 {
        raw: Arc<AtomicBool>,
        gated: bool,
        /// [`GatedIo::heard`] (`None` ungated).
        heard: Option<Arc<AtomicBool>>,
    },
    H2(H2Settings),
}

/// A future polled only when its own waker fired (or the task's waker
/// changed), not on every wake-up of the task that holds it: `drive`'s
/// drain signal and idle timer, beside a connection that wakes the task
/// for every read and write.
struct WokenOnly<F> {
    fut: std::pin::Pin<Box<F>>,
    flag: Arc<WakeFlag>,
    /// The waker `fut` was last polled with, made from `flag`.
    own: std::task::Waker,
    /// The task's waker at that poll.
    task: Option<std::task::Waker>,
}

struct WakeFlag {
    woken: AtomicBool,
    task: std::sync::Mutex<Option<std::task::Waker>>,
}

impl std::task::Wake for WakeFlag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref()
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        if let Ok(task) = self.task.lock() {
            if let Some(w) = task.as_ref() {
                w.wake_by_ref();
            }
        }
    }
}

impl<F: std::future::Future> WokenOnly<F> {
    fn new(fut: F) -> Self {
        let flag = Arc::new(WakeFlag {
            woken: AtomicBool::new(true),
            task: std::sync::Mutex::new(None),
        });
        WokenOnly {
            fut: Box::pin(fut),
            own: std::task::Waker::from(flag.clone()),
            flag,
            task: None,
        }
    }
}

impl<F: std::future::Future> std::future::Future for WokenOnly<F> {
    type Output = F::Output;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        let same_task = self.task.as_ref().is_some_and(|t| t.will_wake(cx.waker()));
        if same_task && !self.flag.woken.swap(false, Ordering::AcqRel) {
            return std::task::Poll::Pending;
        }
        if !same_task {
            if let Ok(mut task) = self.flag.task.lock() {
                *task = Some(cx.waker().clone());
            }
            self.task = Some(cx.waker().clone());
            self.flag.woken.store(false, Ordering::Release);
        }
        let this = &mut *self;
        this.fut
            .as_mut()
            .poll(&mut std::task::Context::from_waker(&this.own))
    }
}

enum Conn {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

/// A listening socket of the worker's.
enum Acceptor {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener),
}

impl std::os::fd::AsFd for Acceptor {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        match self {
            Acceptor::Tcp(l) => l.as_fd(),
            Acceptor::Unix(l) => l.as_fd(),
        }
    }
}

/// Whether connections wait in `listener`'s accept queue (it polls
/// readable then).
fn connections_waiting(listener: &Acceptor) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut fds = [PollFd::new(
        std::os::fd::AsFd::as_fd(listener),
        PollFlags::POLLIN,
    )];
    poll(&mut fds, PollTimeout::ZERO).is_ok_and(|n| n > 0)
        && fds[0]
            .revents()
            .is_some_and(|r| r.contains(PollFlags::POLLIN))
}

/// How long a new connection that has sent nothing may wait before it
/// may be closed to make room ([`Conns::reclaim_one`]): a worker accepting
/// a burst reaches its cap before the clients' requests have all arrived
/// (on a loaded machine, over a second for some of 5,000), and a
/// connection closed then is a client that gets no answer. One that sent
/// part of a head and stopped (slowloris) may be closed at once.
const FIRST_REQUEST_GRACE: Duration = Duration::from_secs(2);

/// How often a worker at `worker_connections` looks at its accept queue.
const RECLAIM_EVERY: Duration = Duration::from_millis(25);

/// At `worker_connections`: a slot, once one frees up. Meanwhile, while
/// connections wait in the accept queue, one connection that holds a slot
/// with no request in progress is asked to close for each (see
/// [`Conns::reclaim_one`]). `None` if the cap was closed.
async fn wait_for_slot(
    cap: &Arc<Semaphore>,
    listener: &Acceptor,
    conns: &Conns,
) -> Option<tokio::sync::OwnedSemaphorePermit> {
    loop {
        if connections_waiting(listener) {
            conns.reclaim_one();
        }
        tokio::select! {
            p = cap.clone().acquire_owned() => return p.ok(),
            _ = tokio::time::sleep(RECLAIM_EVERY) => {}
        }
    }
}

/// hyper's HTTP/1 header count limit when none is set.
const HYPER_DEFAULT_MAX_HEADERS: usize = 100;

/// How long an app loop (the asyncio loop, a single WSGI thread) may go
/// without a turn, or every thread of a WSGI pool stay busy, before the
/// worker stops taking new connections: a loop beats every 0.5 s when it
/// turns at all.
const APP_LOOP_STALLED_MS: u64 = 1000;

/// Don't take a connection the app can't serve now: while a watched app
/// loop is blocked (an `async def` that blocks; a sync WSGI request), or
/// all the WSGI threads are busy, new connections stay in the shared queue
/// for a sibling worker, as they do in gunicorn when its worker process is
/// busy, instead of waiting here for the master's `timeout` to end them
/// with a 500 (or behind requests that hold every thread).
async fn wait_for_app_loops(info: &WorkerInfo) {
    if !info.watches_app() {
        return;
    }
    loop {
        let now = monotonic_ms();
        if now.saturating_sub(info.app_ready_at(now)) < APP_LOOP_STALLED_MS {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Resolves once the app stalls as [`wait_for_app_loops`] sees it (waking
/// only when a stall could have begun, not on a fixed tick).
async fn app_stalls(info: &WorkerInfo) {
    loop {
        let now = monotonic_ms();
        let stalls_at = info.app_ready_at(now) + APP_LOOP_STALLED_MS;
        if now >= stalls_at {
            return;
        }
        tokio::time::sleep(Duration::from_millis(stalls_at - now)).await;
    }
}

/// Spread connections over workers that share one accept queue: a worker
/// holding more than its fair share of the connections, open and waiting
/// in the queue, steps back briefly so that a sibling takes the next one.
/// Nothing is lost: the connection waits in the shared queue, not in a
/// per-worker one. Counting the queue lets each worker take its half of a
/// burst at once instead of in turns; the step back ends early once a
/// millisecond passes in which no sibling took a connection (they are
/// busy, or the queue is empty).
async fn wait_for_fair_share(setup: &WorkerSetup, listener: &Acceptor) {
    let board = &setup.scoreboard;
    let me = board.slot(setup.slot);
    let mut seen_total = None;
    for _ in 0..20 {
        let (serving, total) = board.load();
        if serving <= 1 {
            return;
        }
        let queued = crate::sys::sock::accept_queue_len(std::os::fd::AsFd::as_fd(listener));
        let mine = me.connections.load(Ordering::Relaxed);
        if !over_share(mine, serving, total + queued.unwrap_or(0))
            || seen_total.is_some_and(|seen| total <= seen)
        {
            return;
        }
        seen_total = Some(total);
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Whether a worker holding `mine` of `total` connections (open on the
/// `serving` workers, or waiting to be accepted) is above the even split.
/// With the queue counted, no slack is needed for a burst: each worker's
/// share of it is known before it has been accepted.
fn over_share(mine: u32, serving: u32, total: u32) -> bool {
    if serving <= 1 {
        return false;
    }
    let fair = total.div_ceil(serving);
    mine > fair
}

/// What, besides its own I/O and idle timer, a connection's driver waits for.
enum ConnEvent {
    /// The worker began draining.
    Drain,
    /// [`ConnState::poke`].
    Poke,
}

/// The next [`ConnEvent`] (no `Drain` unless `watch_drain`).
async fn conn_event(
    drain: &mut watch::Receiver<bool>,
    watch_drain: bool,
    poke: &tokio::sync::Notify,
) -> ConnEvent {
    tokio::select! {
        biased;
        _ = drained(drain), if watch_drain => ConnEvent::Drain,
        _ = poke.notified() => ConnEvent::Poke,
    }
}

/// Wait for a connection to end, closing it when it has been idle too
/// long, when the accept loop reclaims its slot, or once draining: HTTP/1
/// after the drain window, HTTP/2 by GOAWAY at once (its streams in flight
/// still finish). A macro, not a generic function, so that each connection
/// type is driven as its concrete self (a generic driver defeats the
/// compiler's Send proof for hyper's HTTP/2 connection).
macro_rules! drive {
    ($conn:ident, $is_h2:expr, $ctx:ident, $setup:ident, $drain:ident) => {{
        let state = &$ctx.state;
        let drain_window_ms = DRAIN_IDLE_WINDOW.as_millis() as u64;
        let mut drain_started: Option<u64> = None;
        // How long the connection may sit with no request in the app: until
        // the first request, `header_read_timeout` (a client trickling its
        // head is cut off); after each response, `keepalive`.
        let idle_limit_ms = || {
            if state.responded.load(Ordering::Acquire) {
                $setup.conn.keepalive.as_millis() as u64
            } else {
                $setup.conn.header_read_timeout.as_millis() as u64
            }
        };
        loop {
            // Sleep until the connection could be closed for idleness, or
            // at the end of the drain window once draining. (A response
            // only moves the deadline later, except the first one, which
            // pokes this loop.)
            let mut close_at = state.last_active_ms.load(Ordering::Acquire) + idle_limit_ms();
            if let Some(t) = drain_started {
                close_at = close_at.min(t + drain_window_ms);
            }
            let now = monotonic_ms();
            let wait = if close_at > now {
                Duration::from_millis(close_at - now)
            } else {
                // Past the deadline with a request still running: look again shortly.
                Duration::from_millis(100)
            };
            // Some(reclaimed) when the connection is to be closed now.
            let close = tokio::select! {
                // The connection first, and no random start: it is what
                // woke this task nearly every time.
                biased;
                _ = $conn.as_mut() => break,
                // Drain and pokes in one future: one check per wake-up.
                ev = WokenOnly::new(conn_event(&mut $drain, drain_started.is_none(), &state.poke)) => match ev {
                    ConnEvent::Drain => {
                        drain_started = Some(monotonic_ms());
                        if $is_h2 {
                            $conn.as_mut().graceful_shutdown();
                        }
                        None
                    }
                    ConnEvent::Poke => {
                        // A first response (the deadline is recomputed), or
                        // the accept loop wants the slot: given up only with
                        // no request in progress.
                        let reclaim = state.reclaim.swap(false, Ordering::AcqRel);
                        (reclaim && state.in_flight.load(Ordering::Acquire) == 0).then_some(true)
                    }
                },
                _ = WokenOnly::new(tokio::time::sleep(wait)) => {
                    let idle = state.in_flight.load(Ordering::Acquire) == 0;
                    let now = monotonic_ms();
                    let idle_for = now.saturating_sub(state.last_active_ms.load(Ordering::Acquire));
                    let drain_expired =
                        drain_started.is_some_and(|t| now.saturating_sub(t) >= drain_window_ms);
                    (idle && (idle_for >= idle_limit_ms() || drain_expired)).then_some(false)
                }
            };
            let Some(reclaimed) = close else { continue };
            let why = if state.responded.load(Ordering::Acquire) {
                crate::sys::scoreboard::Reclaimed::Idle
            } else {
                crate::sys::scoreboard::Reclaimed::SlowHead
            };
            // hyper closes at once a connection between requests (or
            // before its first: the gate holds back an incomplete head);
            // one still writing a response finishes it, then closes.
            $conn.as_mut().graceful_shutdown();
            let closed_now = futures_util::FutureExt::now_or_never($conn.as_mut()).is_some();
            if closed_now {
                if reclaimed {
                    note_reclaimed(&$ctx, why);
                }
            } else if $is_h2 {
                let _ = tokio::time::timeout(Duration::from_secs(1), $conn.as_mut()).await;
            } else {
                let _ = $conn.as_mut().await;
            }
            break;
        }
    }};
}

/// One accepted connection, its protocol known: served by
/// [`Connection::run`].
struct Connection<I> {
    io: I,
    /// Where the signal thread may write gunicorn's 500 on abort (-1: not
    /// on this connection, whose bytes are TLS or HTTP/2).
    fd: RawFd,
    proto: Proto,
    addrs: ConnAddrs,
    /// What a PROXY protocol header said, once the gate has read it.
    proxy: Option<Arc<OnceLock<ProxyInfo>>>,
}

impl<T> Connection<GatedIo<T>> {
    /// An HTTP/1 connection framed by the gate.
    fn gated(io: GatedIo<T>, fd: RawFd, addrs: ConnAddrs) -> Self {
        let proto = Proto::H1 {
            raw: io.raw_switch(),
            gated: true,
            heard: Some(io.heard()),
        };
        let proxy = io.proxy_info_sink();
        Connection {
            io,
            fd,
            proto,
            addrs,
            proxy,
        }
    }
}

impl<I> Connection<I>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    /// Serve the connection's requests until it closes, is idle too long,
    /// or the worker drains.
    async fn run(self, setup: Arc<WorkerSetup>, served: Served, mut drain: watch::Receiver<bool>) {
        let Connection {
            io,
            fd,
            proto,
            addrs,
            proxy,
        } = self;
        let accepted_ms = monotonic_ms();
        let conns = served.conns.clone();
        let ctx = Arc::new(ConnCtx {
            state: ConnState {
                in_flight: Default::default(),
                accepted_ms,
                last_active_ms: AtomicU64::new(accepted_ms),
                responded: Default::default(),
                upgrade: Default::default(),
                poke: Default::default(),
                reclaim: Default::default(),
                heard: match &proto {
                    Proto::H1 { heard, .. } => heard.clone(),
                    Proto::H2(_) => None,
                },
            },
            raw: match &proto {
                Proto::H1 { raw, .. } => Some(raw.clone()),
                Proto::H2(_) => None,
            },
            gated: matches!(proto, Proto::H1 { gated: true, .. }),
            in_app: InAppRegistration::new(fd),
            app: std::sync::Mutex::new(served.app),
            addrs,
            proxy,
            setup: setup.clone(),
            info: served.info,
            access_log: served.access_log,
            statsd: served.statsd,
            drain: drain.clone(),
        });
        let service = {
            let ctx = ctx.clone();
            hyper::service::service_fn(move |mut req: Request<Incoming>| {
                let connect = ctx.gated && crate::http::gate::restore_method(&mut req);
                if ctx.gated {
                    crate::http::gate::restore_raw_head(&mut req);
                }
                let mut addrs = ctx.addrs;
                // The PROXY header, if any, came before the first request head.
                addrs.proxy = ctx.proxy.as_ref().and_then(|p| p.get()).copied();
                req.extensions_mut().insert(addrs);
                let is_h2 = req.version() == hyper::Version::HTTP_2;
                let refused = if is_h2 {
                    let peer = addrs.peer.map(|p| p.ip());
                    let trusted = ctx.setup.limits.trusts_forwarder(peer);
                    crate::http::h2::prepare(&mut req, &ctx.setup.limits, trusted)
                        .inspect_err(|r| {
                            log::warning(&format!(
                                "Invalid request from ip={}: {}",
                                peer.map(|p| p.to_string()).unwrap_or_default(),
                                r.message
                            ))
                        })
                        .err()
                        .map(Box::new)
                } else {
                    None
                };
                // Only what the access log needs, and only when it is on.
                // (Boxed, as the other rare parts below: the future is moved
                // a few times per request, so its size is paid for.)
                let logged = ctx
                    .access_log
                    .as_ref()
                    .map(|_| Box::new((access_record(&req, &addrs), std::time::Instant::now())));
                // The same for the request hooks.
                let hook_info = ctx
                    .setup
                    .request_hooks
                    .as_ref()
                    .map(|_| Arc::new(RequestInfo::new(&req, Some(&addrs))));
                // Without a pre_request hook the app is called now: its future
                // is a pointer, where the request would make this one large.
                // (Calling only makes the future: the app runs when awaited.)
                let app_call = match (&refused, &hook_info) {
                    (None, None) => AppCall::Called(ctx.call_app(req)),
                    _ => AppCall::Later(Box::new(req)),
                };
                let ctx = ctx.clone();
                let fut = async move {
                    let (state, setup) = (&ctx.state, &ctx.setup);
                    if let Some(refusal) = refused {
                        return Ok(refusal.response());
                    }
                    let started = setup.metrics.then(monotonic_us);
                    state.in_flight.fetch_add(1, Ordering::AcqRel);
                    let slot = setup.scoreboard.slot(setup.slot);
                    slot.in_flight.fetch_add(1, Ordering::AcqRel);
                    let nr = ctx.info.count_request();
                    slot.requests.store(nr, Ordering::Release);
                    // `>=`, as gunicorn: a hook may lower the threshold below
                    // the count; the state change makes it happen once.
                    if nr >= setup.max_requests.load(Ordering::Relaxed)
                        && slot.ask_retire(RetireAsk::MaxRequests)
                    {
                        log::info("Autorestarting worker after current request.");
                        // The master starts a replacement, then sends TERM.
                        // Wake the master now rather than at its next poll.
                        crate::sys::process::wake_master();
                    }
                    // Owned, not borrowed from `setup`: a borrow held across the
                    // awaits below defeats the Send proof hyper's HTTP/2 executor needs.
                    let hooks: Option<(Arc<RequestHooks>, Arc<RequestInfo>)> =
                        setup.request_hooks.clone().zip(hook_info);
                    let pre_ok = match hooks.clone() {
                        Some((hooks, info)) => {
                            Box::pin(async move { hooks.pre(&info, nr).await }).await
                        }
                        None => true,
                    };
                    let mut resp = if pre_ok {
                        let in_app = ctx.in_app.enter();
                        let called = match app_call {
                            AppCall::Called(called) => called,
                            AppCall::Later(req) => ctx.call_app(*req),
                        };
                        let resp = match called.await {
                            Ok(resp) => resp,
                            Err(never) => match never {},
                        };
                        drop(in_app);
                        resp
                    } else {
                        // gunicorn: the request fails, post_request still runs.
                        if let Some((hooks, info)) = &hooks {
                            hooks.post(info.clone(), None);
                        }
                        crate::app::internal_error()
                    };
                    if let (true, Some((hooks, info))) = (pre_ok, hooks) {
                        let status = resp.status();
                        let reason = resp
                            .extensions()
                            .get::<hyper::ext::ReasonPhrase>()
                            .map(|r| String::from_utf8_lossy(r.as_bytes()).into_owned())
                            .or_else(|| status.canonical_reason().map(str::to_string))
                            .unwrap_or_default();
                        let headers = header_list(resp.headers());
                        let environ = resp.extensions_mut().remove::<AppEnviron>();
                        resp = resp.map(|body| {
                            crate::app::OnDone::new(body, move |sent| {
                                let done = ResponseInfo {
                                    status: status.as_u16(),
                                    reason,
                                    headers,
                                    sent,
                                    environ,
                                };
                                hooks.post(info, Some(done));
                            })
                            .boxed_unsync()
                        });
                    }
                    // A session after a switch stays in flight until it ends.
                    let mut upgrading = false;
                    if let (StatusCode::SWITCHING_PROTOCOLS, Some(raw)) = (resp.status(), &ctx.raw)
                    {
                        // From the 101 on, the bytes on the wire are the new
                        // protocol's: the framer must not read them as HTTP.
                        raw.store(true, Ordering::Release);
                        let session = resp
                            .extensions()
                            .get::<AfterUpgrade>()
                            .and_then(|a| a.take());
                        if let (Some(session), Ok(mut pending)) = (session, state.upgrade.lock()) {
                            *pending = Some(session);
                            upgrading = true;
                        }
                    } else if connect || (!is_h2 && *ctx.drain.borrow()) {
                        // gunicorn closes after a CONNECT, whatever the answer.
                        // (HTTP/2 drains by GOAWAY instead.)
                        resp.headers_mut()
                            .insert(CONNECTION, HeaderValue::from_static("close"));
                    }
                    // With metrics on, one clock read serves the latency and
                    // the connection's idle clock; without, the coarse clock
                    // (idle deadlines are in seconds).
                    let now_ms = match started {
                        Some(started) => {
                            let now_us = monotonic_us();
                            let (status, micros) =
                                (resp.status().as_u16(), now_us.saturating_sub(started));
                            slot.record_response(status, micros);
                            if let Some(batch) = &ctx.statsd {
                                batch.record(status, micros);
                            }
                            now_us / 1000
                        }
                        None => crate::sys::scoreboard::coarse_monotonic_ms(),
                    };
                    if !upgrading {
                        slot.in_flight.fetch_sub(1, Ordering::AcqRel);
                        state.in_flight.fetch_sub(1, Ordering::AcqRel);
                    }
                    state.last_active_ms.store(now_ms, Ordering::Release);
                    if !state.responded.load(Ordering::Relaxed) {
                        // The driver's deadline was `header_read_timeout`;
                        // from now on it is `keepalive` after each response.
                        state.responded.store(true, Ordering::Release);
                        state.poke.notify_one();
                    }
                    let resp = match (logged, &ctx.access_log) {
                        (Some(logged), Some(access)) => {
                            let (mut record, started) = *logged;
                            record.status = resp.status().as_u16();
                            record.response_headers = header_list(resp.headers());
                            resp.map(|body| {
                                access.log_when_done(body, record, started).boxed_unsync()
                            })
                        }
                        _ => resp,
                    };
                    Ok::<_, Infallible>(resp)
                };
                fut
            })
        };
        let _registered = conns.register(ctx.clone());
        let state = &ctx.state;
        match proto {
            Proto::H1 { .. } => {
                let mut builder = hyper::server::conn::http1::Builder::new();
                builder
                    .timer(TokioTimer::new())
                    // keepalive = 0 is gunicorn's "no keep-alive".
                    .keep_alive(!setup.conn.keepalive.is_zero())
                    .half_close(true)
                    // Idle and slow-client deadlines are `drive`'s: hyper's
                    // would also cut idle keep-alive connections.
                    .header_read_timeout(None)
                    // hyper's own limits must not be stricter than gunicorn's,
                    // which the gate has already applied.
                    .max_buf_size(setup.limits.hyper_max_buf_size());
                // Only when it differs from hyper's own 100: set at all, hyper
                // fills a header array per request (3-4% of a worker's time).
                let max_headers = setup.limits.hyper_max_headers();
                if max_headers != HYPER_DEFAULT_MAX_HEADERS {
                    builder.max_headers(max_headers);
                }
                let conn = builder.serve_connection(io, service).with_upgrades();
                tokio::pin!(conn);
                drive!(conn, false, ctx, setup, drain);
                run_upgraded(state, &setup, drain.clone()).await
            }
            Proto::H2(h2) => {
                let conn = h2.builder().serve_connection(io, service);
                tokio::pin!(conn);
                drive!(conn, true, ctx, setup, drain)
            }
        }
    }
}

/// After hyper is done with a connection: the app's session on it, if the
/// app switched protocols (see [`AfterUpgrade`]), then the connection's
/// in-flight count goes.
async fn run_upgraded(state: &ConnState, setup: &WorkerSetup, drain: watch::Receiver<bool>) {
    let Some(up) = state.upgrade.lock().ok().and_then(|mut u| u.take()) else {
        return;
    };
    // hyper hands the connection over as its future ends; an error (the
    // 101 could not be written) drops the session, which tells the app.
    if let Ok(io) = up.on_upgrade.await {
        (up.run)(io, drain).await;
    }
    let slot = setup.scoreboard.slot(setup.slot);
    slot.in_flight.fetch_sub(1, Ordering::AcqRel);
    state.in_flight.fetch_sub(1, Ordering::AcqRel);
}

/// The request's part of an access-log record.
fn access_record(req: &Request<Incoming>, addrs: &ConnAddrs) -> Record {
    let line = crate::http::gate::SentLine::of_request(req);
    Record {
        remote_addr: addrs
            .client()
            .map(|p| p.ip().to_string())
            .unwrap_or_default(),
        method: req.method().to_string(),
        raw_uri: line.target().into_owned(),
        protocol: line.protocol(),
        status: 0,
        request_headers: header_list(req.headers()),
        response_headers: Vec::new(),
        sent: None,
        request_time: Duration::ZERO,
        pid: std::process::id(),
    }
}

/// Headers as (lowercase name, value) pairs; non-UTF-8 bytes as latin-1.
fn header_list(headers: &hyper::HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                crate::http::text::latin1(v.as_bytes()),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::over_share;

    #[test]
    fn a_lone_worker_is_never_over_its_share() {
        assert!(!over_share(500, 1, 500));
        assert!(!over_share(0, 0, 0));
    }

    #[test]
    fn a_worker_steps_back_only_above_the_even_split() {
        // 200 connections on 2 workers, open or queued: 100 each.
        assert!(!over_share(100, 2, 200));
        assert!(over_share(101, 2, 200));
        // A burst of 64 just arrived (all still queued): each may take 32
        // before its sibling has taken any.
        assert!(!over_share(31, 2, 64));
        assert!(over_share(33, 2, 64));
        // An odd count: the larger half.
        assert!(!over_share(2, 2, 3));
        assert!(over_share(3, 2, 3));
    }
}
