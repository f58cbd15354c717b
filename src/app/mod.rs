//! How an application plugs into a worker: any [`tower::Service`] over
//! `http::Request<Incoming>` / `http::Response<B>` (an axum `Router` works
//! as is), made once per worker after fork by a factory that gets the
//! worker's [`WorkerInfo`], so pools and caches belong to the worker.
//!
//! ```no_run
//! use std::process::ExitCode;
//! fn main() -> ExitCode {
//!     rgunicorn::run(|_worker| {
//!         tower::service_fn(|_req| async {
//!             Ok::<_, std::convert::Infallible>(http::Response::new(
//!                 http_body_util::Full::new(bytes::Bytes::from("hello")),
//!             ))
//!         })
//!     })
//! }
//! ```
//!
//! The worker sees every app through one boxed type, [`BoxApp`]: a service
//! error or a panic becomes gunicorn's 500 and the worker goes on.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tower::util::BoxCloneService;
use tower::Service;

use crate::boot::BootError;
use crate::log;

pub mod health;

pub use crate::http::body::{full, BoxError, ResponseBody};
pub use crate::http::error::{error_response, internal_error};

/// An app as the worker holds it.
pub type BoxApp = BoxCloneService<Request<Incoming>, Response<ResponseBody>, Infallible>;

/// Makes a worker's app, in the worker, after fork. A failure (its reason
/// already logged) ends the worker with gunicorn's boot status.
pub type AppFactory = Arc<dyn Fn(&WorkerInfo) -> Result<BoxApp, BootError> + Send + Sync>;

/// What an app learns about the worker that serves it.
#[derive(Clone)]
pub struct WorkerInfo {
    inner: Arc<WorkerStats>,
}

pub(crate) struct WorkerStats {
    pid: u32,
    started: Instant,
    requests: AtomicU64,
    /// Loops of the app's own (an asyncio loop) whose turns count as the
    /// worker's heartbeat, each the monotonic ms of its last turn.
    loops: std::sync::Mutex<Vec<Arc<AtomicU64>>>,
    /// Thread pools of the app's (WSGI threads): not part of the heartbeat
    /// (a stuck request in a threaded worker is not a timeout, as in
    /// gunicorn), but a full one stops the worker accepting.
    pools: std::sync::Mutex<Vec<Arc<Capacity>>>,
    /// Something is registered in `loops` or `pools` (so a plain Rust app's
    /// accept loop never looks).
    watched: std::sync::atomic::AtomicBool,
}

/// How busy a pool of app threads is: [`Capacity::take`] when a thread
/// starts a request, [`Capacity::give`] when it is done.
pub(crate) struct Capacity {
    size: usize,
    busy: std::sync::atomic::AtomicUsize,
    /// When the last `take` began (the moment the pool filled up, when it
    /// is full: no `take` happens while it is).
    last_take_ms: AtomicU64,
}

impl Capacity {
    pub(crate) fn take(&self) {
        // Stored before the count rises, so that a reader who sees the pool
        // full also sees when it filled.
        self.last_take_ms
            .store(crate::sys::scoreboard::monotonic_ms(), Ordering::Release);
        self.busy.fetch_add(1, Ordering::AcqRel);
    }

    pub(crate) fn give(&self) {
        self.busy.fetch_sub(1, Ordering::AcqRel);
    }

    /// `now` while a thread is free, else when the pool filled up.
    fn free_at(&self, now: u64) -> u64 {
        if self.busy.load(Ordering::Acquire) < self.size {
            now
        } else {
            self.last_take_ms.load(Ordering::Acquire).min(now)
        }
    }
}

/// A loop of the app's own that must keep turning for the worker to count
/// as alive: call [`LoopBeat::beat`] from it at least every second or so;
/// when it stops for `timeout` seconds the master aborts the worker, as it
/// does when the worker's own serving loop blocks.
#[derive(Clone)]
pub struct LoopBeat(Arc<AtomicU64>);

impl LoopBeat {
    pub fn beat(&self) {
        self.0
            .store(crate::sys::scoreboard::monotonic_ms(), Ordering::Release);
    }
}

impl WorkerInfo {
    pub(crate) fn new() -> WorkerInfo {
        WorkerInfo {
            inner: Arc::new(WorkerStats {
                pid: std::process::id(),
                started: Instant::now(),
                requests: AtomicU64::new(0),
                loops: std::sync::Mutex::new(Vec::new()),
                pools: std::sync::Mutex::new(Vec::new()),
                watched: Default::default(),
            }),
        }
    }

    /// The worker's process id.
    pub fn pid(&self) -> u32 {
        self.inner.pid
    }

    /// Time since the worker started serving.
    pub fn uptime(&self) -> Duration {
        self.inner.started.elapsed()
    }

    /// Requests this worker has received (the current one included).
    pub fn requests_served(&self) -> u64 {
        self.inner.requests.load(Ordering::Relaxed)
    }

    /// Register a loop of the app's own in the heartbeat (see [`LoopBeat`]).
    pub fn watch_loop(&self) -> LoopBeat {
        let beat = Arc::new(AtomicU64::new(crate::sys::scoreboard::monotonic_ms()));
        if let Ok(mut loops) = self.inner.loops.lock() {
            loops.push(beat.clone());
        }
        self.inner.watched.store(true, Ordering::Release);
        LoopBeat(beat)
    }

    /// Register a pool of `size` app threads (see [`Capacity`]).
    pub(crate) fn watch_pool(&self, size: usize) -> Arc<Capacity> {
        let pool = Arc::new(Capacity {
            size,
            busy: Default::default(),
            last_take_ms: AtomicU64::new(crate::sys::scoreboard::monotonic_ms()),
        });
        if let Ok(mut pools) = self.inner.pools.lock() {
            pools.push(pool.clone());
        }
        self.inner.watched.store(true, Ordering::Release);
        pool
    }

    /// Whether any app loop or thread pool is watched.
    pub(crate) fn watches_app(&self) -> bool {
        self.inner.watched.load(Ordering::Acquire)
    }

    /// Since when the app has been unable to take a request: `now` when
    /// it can, else the last turn of its slowest loop or the moment a
    /// pool of its threads filled up, whichever is older.
    pub(crate) fn app_ready_at(&self, now: u64) -> u64 {
        let pools = self
            .inner
            .pools
            .lock()
            .map(|pools| pools.iter().map(|p| p.free_at(now)).fold(now, u64::min))
            .unwrap_or(now);
        self.heartbeat(now).min(pools)
    }

    /// The heartbeat to publish now: `now`, or the last turn of the
    /// slowest watched loop if that is older.
    pub(crate) fn heartbeat(&self, now: u64) -> u64 {
        self.inner
            .loops
            .lock()
            .map(|loops| {
                loops
                    .iter()
                    .map(|b| b.load(Ordering::Acquire))
                    .fold(now, u64::min)
            })
            .unwrap_or(now)
    }

    /// Count one more request; returns the new count.
    pub(crate) fn count_request(&self) -> u64 {
        self.inner.requests.fetch_add(1, Ordering::AcqRel) + 1
    }
}

/// The addresses of the connection a request arrived on. The worker puts
/// one in each request's extensions; without it REMOTE_ADDR is empty and
/// SERVER_NAME/SERVER_PORT come from the Host header (gunicorn's unix
/// socket case).
#[derive(Clone, Copy, Debug, Default)]
pub struct ConnAddrs {
    /// The client (`None` on a unix socket).
    pub peer: Option<SocketAddr>,
    /// The address the listener is bound to (`getsockname` of the
    /// listening socket, as gunicorn's `SERVER_NAME`/`SERVER_PORT`:
    /// `0.0.0.0` for a wildcard bind); `None` on a unix socket.
    pub server: Option<SocketAddr>,
    /// The connection is TLS (`certfile` set): `wsgi.url_scheme` is
    /// `https` unless a trusted proxy's `secure_scheme_headers` say otherwise.
    pub tls: bool,
    /// What a PROXY protocol header from a trusted proxy said
    /// (`proxy_protocol`): the real client is [`ConnAddrs::client`].
    pub proxy: Option<crate::http::gate::ProxyInfo>,
}

impl ConnAddrs {
    /// The client as the app should see it: the one a PROXY protocol header
    /// named, else the socket's peer. A `LOCAL`/`UNSPEC` header names no
    /// client (the proxy's own connection): the peer stays.
    pub fn client(&self) -> Option<SocketAddr> {
        match self.proxy {
            Some(crate::http::gate::ProxyInfo {
                client_addr: Some(ip),
                client_port: Some(port),
                ..
            }) => Some(SocketAddr::new(ip, port)),
            _ => self.peer,
        }
    }
}

/// What runs on a connection an app switched to another protocol: set on
/// a `101 Switching Protocols` response (ASGI websockets) by
/// [`AfterUpgrade::new`]. The worker takes it, waits for hyper to hand
/// the connection over, and runs it on the raw connection; meanwhile the
/// connection counts as open and in flight, so a draining worker waits for
/// it. The session gets the worker's drain signal (true once draining) and
/// should close soon after it.
#[derive(Clone)]
pub(crate) struct AfterUpgrade(Arc<std::sync::Mutex<Option<Upgrade>>>);

/// A session on an upgraded connection (see [`AfterUpgrade`]).
pub(crate) type UpgradeFn = Box<
    dyn FnOnce(
            hyper::upgrade::Upgraded,
            tokio::sync::watch::Receiver<bool>,
        ) -> Pin<Box<dyn Future<Output = ()> + Send>>
        + Send,
>;

/// Resolves once the worker's drain signal (the receiver an upgraded
/// session gets) says draining has started; the watch guard is dropped
/// inside, so callers stay `Send`.
pub(crate) async fn drained(rx: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|d| *d).await.map(|_| ());
}

pub(crate) struct Upgrade {
    /// hyper's side of the switch, taken from the request.
    pub on_upgrade: hyper::upgrade::OnUpgrade,
    pub run: UpgradeFn,
}

impl AfterUpgrade {
    pub(crate) fn new(on_upgrade: hyper::upgrade::OnUpgrade, run: UpgradeFn) -> AfterUpgrade {
        AfterUpgrade(Arc::new(std::sync::Mutex::new(Some(Upgrade {
            on_upgrade,
            run,
        }))))
    }

    /// The session, once (the worker takes it from the response).
    pub(crate) fn take(&self) -> Option<Upgrade> {
        self.0.lock().ok().and_then(|mut u| u.take())
    }
}

/// Turn a factory of any suitable services into the worker's [`AppFactory`].
pub fn factory<F, S, B>(make_app: F) -> AppFactory
where
    F: Fn(&WorkerInfo) -> S + Send + Sync + 'static,
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    Arc::new(move |worker| {
        Ok(BoxCloneService::new(AppService {
            app: make_app(worker),
            not_ready: None,
        }))
    })
}

/// A Rust app as the worker calls it: its readiness passed through; an
/// error or a panic (from `poll_ready`, `call` or its future) answered
/// with gunicorn's 500 and logged; the body boxed. The app is called in
/// place (no per-request clone, no `Oneshot`: its future is all that
/// waits).
#[derive(Clone)]
struct AppService<S> {
    app: S,
    /// Why the app's `poll_ready` failed: the next call answers 500.
    not_ready: Option<String>,
}

impl<S, R, B> Service<R> for AppService<S>
where
    S: Service<R, Response = Response<B>>,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = AppFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        let app = &mut self.app;
        let polled = std::panic::catch_unwind(AssertUnwindSafe(|| app.poll_ready(cx)));
        match polled {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(Ok(()))) => Poll::Ready(Ok(())),
            Ok(Poll::Ready(Err(e))) => {
                let e: BoxError = e.into();
                self.not_ready = Some(e.to_string());
                Poll::Ready(Ok(()))
            }
            Err(panic) => {
                self.not_ready = Some(panicked(&panic));
                Poll::Ready(Ok(()))
            }
        }
    }

    fn call(&mut self, req: R) -> Self::Future {
        if let Some(e) = self.not_ready.take() {
            log_failure(&e);
            return AppFuture::Failed;
        }
        let app = &mut self.app;
        match std::panic::catch_unwind(AssertUnwindSafe(|| app.call(req))) {
            Ok(inner) => AppFuture::Running {
                inner: CatchUnwind { inner },
            },
            Err(panic) => {
                log_failure(&panicked(&panic));
                AppFuture::Failed
            }
        }
    }
}

/// gunicorn's log line for a request the app failed (answered 500).
fn log_failure(why: &dyn std::fmt::Display) {
    log::error(&format!("Error handling request: {why}"));
}

fn panicked(panic: &Box<dyn std::any::Any + Send>) -> String {
    format!("the app panicked: {}", panic_message(panic))
}

pin_project_lite::pin_project! {
    /// [`AppService`]'s answer: the app's future, or a 500 (the failure
    /// already logged).
    #[project = AppFutureProj]
    enum AppFuture<F> {
        Running { #[pin] inner: CatchUnwind<F> },
        Failed,
    }
}

impl<F, B, E> Future for AppFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Output = Result<Response<ResponseBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let called = match self.project() {
            AppFutureProj::Failed => return Poll::Ready(Ok(internal_error())),
            AppFutureProj::Running { inner } => std::task::ready!(inner.poll(cx)),
        };
        Poll::Ready(Ok(match called {
            Ok(Ok(resp)) => {
                resp.map(|b| FlushBeforeError::new(b.map_err(Into::into)).boxed_unsync())
            }
            Ok(Err(e)) => {
                let e: BoxError = e.into();
                log_failure(&e);
                internal_error()
            }
            Err(panic) => {
                log_failure(&panicked(&panic));
                internal_error()
            }
        }))
    }
}

pin_project_lite::pin_project! {
    /// A response body whose error, right after data, waits one turn:
    /// hyper's HTTP/1 dispatcher drops what it has not written yet when a
    /// body fails, so the data the app sent before failing would never
    /// reach the client. Returning `Pending` once (woken at once) lets
    /// hyper write it first; then the error cuts the connection, as from
    /// gunicorn. Every app's response body goes through it (Rust apps,
    /// WSGI and ASGI streams).
    pub struct FlushBeforeError<B: http_body::Body> {
        #[pin]
        inner: B,
        // Data went to hyper since it last had to wait.
        sent_data: bool,
        // The failure, held for that turn.
        failed: Option<B::Error>,
    }
}

impl<B: http_body::Body> FlushBeforeError<B> {
    pub fn new(inner: B) -> Self {
        FlushBeforeError {
            inner,
            sent_data: false,
            failed: None,
        }
    }
}

impl<B: http_body::Body> http_body::Body for FlushBeforeError<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        let this = self.project();
        if let Some(e) = this.failed.take() {
            return Poll::Ready(Some(Err(e)));
        }
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Err(e))) if *this.sent_data => {
                *this.sent_data = false;
                *this.failed = Some(e);
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Poll::Ready(frame) => {
                *this.sent_data = matches!(frame, Some(Ok(_)));
                Poll::Ready(frame)
            }
            Poll::Pending => {
                *this.sent_data = false;
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.failed.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

pin_project_lite::pin_project! {
    /// A future that turns a panic while polling into an error.
    struct CatchUnwind<F> {
        #[pin]
        inner: F,
    }
}

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn std::any::Any + Send>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.project().inner;
        match std::panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}

/// A response body that reports, once it is done (ended or dropped), how
/// many body bytes went out.
pub struct OnDone<B> {
    inner: B,
    sent: u64,
    done: Option<Box<dyn FnOnce(u64) + Send>>,
}

impl<B> OnDone<B> {
    pub fn new(inner: B, done: impl FnOnce(u64) + Send + 'static) -> Self {
        OnDone {
            inner,
            sent: 0,
            done: Some(Box::new(done)),
        }
    }
}

impl<B: http_body::Body + Unpin> http_body::Body for OnDone<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        use bytes::Buf;
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if let std::task::Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                self.sent += data.remaining() as u64;
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for OnDone<B> {
    fn drop(&mut self) {
        if let Some(done) = self.done.take() {
            done(self.sent);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;

    type Req = Request<()>;

    fn ok_body(resp: Response<ResponseBody>) -> (u16, Bytes) {
        let status = resp.status().as_u16();
        let body = futures_util::FutureExt::now_or_never(resp.into_body().collect())
            .expect("a whole body")
            .expect("no error")
            .to_bytes();
        (status, body)
    }

    fn answer<S>(svc: S) -> (u16, Bytes)
    where
        S: Service<Req, Response = Response<Full<Bytes>>>,
        S::Error: Into<BoxError>,
    {
        let mut app = AppService {
            app: svc,
            not_ready: None,
        };
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(matches!(app.poll_ready(&mut cx), Poll::Ready(Ok(()))));
        let fut = app.call(Request::new(()));
        let resp = futures_util::FutureExt::now_or_never(fut)
            .expect("ready")
            .unwrap_or_else(|never| match never {});
        ok_body(resp)
    }

    #[test]
    fn answers_pass_through_and_failures_are_500() {
        let ok = tower::service_fn(|_: Req| async {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"hi"))))
        });
        assert_eq!(answer(ok), (200, Bytes::from_static(b"hi")));

        let err = tower::service_fn(|_: Req| async {
            Err::<Response<Full<Bytes>>, BoxError>("nope".into())
        });
        assert_eq!(answer(err).0, 500);

        let panics_in_future = tower::service_fn(|_: Req| async {
            if true {
                panic!("in the future");
            }
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
        });
        assert_eq!(answer(panics_in_future).0, 500);
    }

    /// Frames given in order, one per poll.
    struct Frames(std::collections::VecDeque<Result<Bytes, BoxError>>);

    impl http_body::Body for Frames {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
            Poll::Ready(self.0.pop_front().map(|r| r.map(http_body::Frame::data)))
        }
    }

    #[test]
    fn an_error_right_after_data_waits_one_turn() {
        use http_body::Body;
        let frames = [Ok(Bytes::from_static(b"a")), Err("boom".into())];
        let mut body = std::pin::pin!(FlushBeforeError::new(Frames(frames.into())));
        let woken = std::sync::Arc::new(WakeCount::default());
        let waker = std::task::Waker::from(woken.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(matches!(
            body.as_mut().poll_frame(&mut cx),
            Poll::Ready(Some(Ok(_)))
        ));
        // hyper's turn to write "a"; the task is woken for the error.
        assert!(body.as_mut().poll_frame(&mut cx).is_pending());
        assert_eq!(woken.0.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(matches!(
            body.as_mut().poll_frame(&mut cx),
            Poll::Ready(Some(Err(_)))
        ));
        // An error with no data before it is not held.
        let mut first = std::pin::pin!(FlushBeforeError::new(Frames([Err("x".into())].into())));
        assert!(matches!(
            first.as_mut().poll_frame(&mut cx),
            Poll::Ready(Some(Err(_)))
        ));
    }

    #[derive(Default)]
    struct WakeCount(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for WakeCount {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// A service whose `poll_ready` or `call` fails as told.
    #[derive(Clone)]
    struct Faulty {
        ready_error: bool,
        ready_panic: bool,
        call_panic: bool,
    }

    impl Service<Req> for Faulty {
        type Response = Response<Full<Bytes>>;
        type Error = BoxError;
        type Future = std::future::Ready<Result<Self::Response, BoxError>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
            if self.ready_panic {
                panic!("in poll_ready");
            }
            if self.ready_error {
                return Poll::Ready(Err("not ready".into()));
            }
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: Req) -> Self::Future {
            if self.call_panic {
                panic!("in call");
            }
            std::future::ready(Ok(Response::new(Full::new(Bytes::from_static(b"ok")))))
        }
    }

    #[test]
    fn readiness_and_call_failures_are_500_and_the_next_request_is_served() {
        let faulty = |ready_error, ready_panic, call_panic| Faulty {
            ready_error,
            ready_panic,
            call_panic,
        };
        assert_eq!(answer(faulty(false, false, false)).0, 200);
        assert_eq!(answer(faulty(true, false, false)).0, 500);
        assert_eq!(answer(faulty(false, true, false)).0, 500);
        assert_eq!(answer(faulty(false, false, true)).0, 500);
        // A failed readiness answers one request only.
        let mut app = AppService {
            app: faulty(true, false, false),
            not_ready: None,
        };
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(app.poll_ready(&mut cx).is_ready());
        app.app.ready_error = false;
        let first = futures_util::FutureExt::now_or_never(app.call(Request::new(())));
        assert!(app.poll_ready(&mut cx).is_ready());
        let second = futures_util::FutureExt::now_or_never(app.call(Request::new(())));
        let status = |r: Option<Result<Response<ResponseBody>, Infallible>>| {
            r.expect("ready").map(|r| r.status().as_u16()).unwrap_or(0)
        };
        assert_eq!((status(first), status(second)), (500, 200));
    }
}
