//! ASGI websockets: the opening handshake decided by the app, then a
//! session on the upgraded connection (tungstenite's codec) bridged to the
//! app's `receive`/`send` on the asyncio thread.
//!
//! The behaviour is uvicorn's (its `websockets-sansio` protocol, what
//! UvicornWorker uses by default), with gunicorn's handshake checks and
//! its `websocket_max_message_size`:
//!
//! - a GET over HTTP/1.1 with `Upgrade: websocket` and `Connection:
//!   upgrade` is a handshake ([`is_upgrade`]); a version other than 13
//!   gets 426, a malformed `Sec-WebSocket-Key` 400;
//! - the app gets `websocket.connect`; `websocket.accept` (subprotocol,
//!   headers) answers 101; `websocket.close` before that answers 403;
//!   `websocket.http.response.start`/`body` answer with the app's own
//!   response; an exception (or returning) before any of these gives the
//!   500;
//! - then `websocket.receive` (text or bytes) and `websocket.send`;
//!   pings are answered by the server, which also pings every 20 s and
//!   closes with 1011 when the pong is 20 s late (uvicorn's keepalive
//!   defaults); `websocket.close` (code, reason)
//!   closes, the client's close gives `websocket.disconnect` with its code
//!   and reason; a connection lost without a close gives 1006; a send once
//!   the client is gone raises `ClientDisconnected` (an `OSError`);
//! - a message larger than `websocket_max_message_size` (0: no limit)
//!   closes with 1009, invalid UTF-8 with 1007, a protocol error with
//!   1002;
//! - an app that raises after accepting closes with 1011 (uvicorn drops
//!   the connection without a close frame); one that returns without
//!   closing, with 1000;
//! - when the worker drains (TERM, HUP, max_requests), the session closes
//!   at once with 1012 (service restart) and the app gets that code, as
//!   uvicorn's shutdown does. Until then the connection counts as in
//!   flight, so the worker waits for it (see [`crate::app::AfterUpgrade`]).
//!
//! Threads: the session is a task of the connection on the tokio thread;
//! it never takes the GIL. The app's messages go through [`Shared`]:
//! the session is woken by a `Notify`, the asyncio side by the bridge's
//! `Wake`, as for HTTP requests.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use pyo3::exceptions::PyRuntimeError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{oneshot, watch, Notify};
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use super::{
    build_scope, message_headers, ready, resolve, wait_for_future, with_ctx, Bridge, Live, Msg,
    ScopeType, OUT_HIGH_WATER, OUT_LOW_WATER,
};
use crate::app::drained;
use crate::app::{error_response, full, internal_error, AfterUpgrade, ConnAddrs, ResponseBody};
use crate::log;

/// Messages from the client waiting for the app's `receive` before the
/// session stops reading (gunicorn's asgi worker stops at 32 too).
const INBOX_HIGH_WATER: usize = 32;
/// How long a close the server starts waits for the client's reply
/// (uvicorn waits 10 s, gunicorn 5 s).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// The same when the worker drains: a short wait, then the connection goes.
const GOING_AWAY_TIMEOUT: Duration = Duration::from_secs(1);
/// A session's limits and keepalive.
#[derive(Clone, Copy, Debug)]
pub(super) struct Options {
    /// `websocket_max_message_size` (uvicorn's `ws_max_size`; 0: none).
    pub max_size: usize,
    /// uvicorn's keepalive (`ws_ping_interval`, `ws_ping_timeout`): a ping
    /// after this long, and the connection failed with 1011 when its pong
    /// has not come this long after. A proxy in front sees traffic, and a
    /// client that vanished without a word is noticed. `None`: no pings,
    /// or no deadline for the pong.
    pub ping_interval: Option<Duration>,
    pub ping_timeout: Option<Duration>,
}

impl Default for Options {
    /// uvicorn's defaults.
    fn default() -> Options {
        Options {
            max_size: 16 * 1024 * 1024,
            ping_interval: Some(Duration::from_secs(20)),
            ping_timeout: Some(Duration::from_secs(20)),
        }
    }
}

/// An instant `d` from now, or one that never comes.
fn after(d: Option<Duration>) -> tokio::time::Instant {
    // A year stands for never: tokio's timer takes no infinite deadline.
    let d = d.unwrap_or(Duration::from_secs(365 * 24 * 3600));
    tokio::time::Instant::now() + d
}
/// Per connection, allocated up front by tungstenite (its default is 128 KiB).
const READ_BUFFER: usize = 16 * 1024;

/// Close codes (RFC 6455 7.4.1).
const NORMAL: u16 = 1000;
const NO_STATUS: u16 = 1005;
const ABNORMAL: u16 = 1006;
const INTERNAL_ERROR: u16 = 1011;
const SERVICE_RESTART: u16 = 1012;

/// A websocket opening handshake (RFC 6455 4.1): a GET over HTTP/1.1 with
/// `Upgrade: websocket` and `upgrade` among the `Connection` tokens.
pub(super) fn is_upgrade(req: &Request<Incoming>) -> bool {
    req.method() == Method::GET
        && req.version() == Version::HTTP_11
        && has_token(req.headers(), header::UPGRADE, "websocket")
        && has_token(req.headers(), header::CONNECTION, "upgrade")
}

fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.as_bytes()
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

/// `Sec-WebSocket-Key`: base64 of 16 bytes (RFC 6455 4.2.1), as gunicorn
/// checks it (Python's `b64decode(validate=True)`).
fn valid_key(key: &[u8]) -> bool {
    key.len() == 24
        && key.ends_with(b"==")
        && key[..22]
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || c == b'+' || c == b'/')
}

/// One handshake for the asyncio thread.
pub(super) struct Job {
    parts: http::request::Parts,
    shared: Arc<Shared>,
    reply: oneshot::Sender<Decision>,
}

/// What the app made of the handshake.
enum Decision {
    Accept {
        subprotocol: Option<HeaderValue>,
        headers: HeaderMap,
    },
    /// Refused: 403, the 500, or the app's own response.
    Respond(Response<ResponseBody>),
}

/// The state both threads touch.
pub(super) struct Shared {
    id: u64,
    bridge: Arc<Bridge>,
    st: Mutex<State>,
    /// Wakes the session: the app sent, closed or ended, or took messages.
    wake: Notify,
}

#[derive(Default)]
struct State {
    /// From the client, for the app's `receive`.
    inbox: VecDeque<FromClient>,
    /// The connection is over for the app: its `websocket.disconnect`.
    gone: Option<Disconnect>,
    /// The asyncio side waits on receive / on send (back-pressure).
    recv_waiting: bool,
    send_waiting: bool,
    /// From the app, for the client.
    outbox: VecDeque<Message>,
    out_len: usize,
    /// The app sent `websocket.close` (code, reason).
    close: Option<(u16, String)>,
    /// The app's task ended: whether it raised.
    app_ended: Option<bool>,
}

enum FromClient {
    Text(String),
    Bytes(Bytes),
}

#[derive(Clone)]
struct Disconnect {
    code: u16,
    reason: Option<String>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// From the session: a message for the app.
    fn deliver(&self, m: FromClient) {
        let wake = {
            let mut st = self.lock();
            st.inbox.push_back(m);
            std::mem::take(&mut st.recv_waiting)
        };
        if wake {
            self.bridge.post(Msg::Wake(self.id));
        }
    }

    /// The connection is over for the app (the first reason stays).
    fn gone(&self, code: u16, reason: Option<String>) {
        let wake = {
            let mut st = self.lock();
            if st.gone.is_none() {
                st.gone = Some(Disconnect { code, reason });
            }
            let w = st.recv_waiting || st.send_waiting;
            st.recv_waiting = false;
            st.send_waiting = false;
            w
        };
        if wake {
            self.bridge.post(Msg::Wake(self.id));
        }
    }

    /// The session wrote `len` bytes of the app's.
    fn sent(&self, len: usize) {
        let wake = {
            let mut st = self.lock();
            st.out_len = st.out_len.saturating_sub(len);
            let w = st.send_waiting && st.out_len <= OUT_LOW_WATER;
            if w {
                st.send_waiting = false;
            }
            w
        };
        if wake {
            self.bridge.post(Msg::Wake(self.id));
        }
    }
}

/// Dropped before its end was disarmed: the connection is gone (the
/// client left during the handshake, or the session ended or never ran).
struct GoneGuard(Option<Arc<Shared>>);

impl Drop for GoneGuard {
    fn drop(&mut self) {
        if let Some(shared) = self.0.take() {
            shared.gone(ABNORMAL, None);
        }
    }
}

/// The service for a handshake, on the tokio thread: no Python here.
pub(super) async fn call(
    bridge: &Arc<Bridge>,
    mut req: Request<Incoming>,
    options: Options,
) -> Response<ResponseBody> {
    let headers = req.headers();
    let version = headers.get(header::SEC_WEBSOCKET_VERSION);
    if version.map(|v| v.as_bytes().trim_ascii()) != Some(b"13") {
        // RFC 6455 4.2.2: the version we speak.
        let mut resp = error_response(426, "Upgrade Required", "");
        resp.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        return resp;
    }
    let accept = match headers.get(header::SEC_WEBSOCKET_KEY) {
        Some(k) if valid_key(k.as_bytes()) => derive_accept_key(k.as_bytes()),
        _ => return error_response(400, "Bad Request", "Invalid Sec-WebSocket-Key"),
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let (parts, _) = req.into_parts();
    let who = who(&parts);
    let shared = Arc::new(Shared {
        id: bridge
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        bridge: bridge.clone(),
        st: Mutex::default(),
        wake: Notify::new(),
    });
    let (reply, decision) = oneshot::channel();
    bridge.post(Msg::WebSocket(Job {
        parts,
        shared: shared.clone(),
        reply,
    }));
    // Dropped by hyper before the app decides: the client went away.
    let mut guard = GoneGuard(Some(shared.clone()));
    let decision = decision.await;
    guard.0 = None;
    match decision {
        Ok(Decision::Accept {
            subprotocol,
            headers,
        }) => {
            log::info(&format!("{who} [accepted]"));
            let mut resp = Response::new(full(Bytes::new()));
            *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            let h = resp.headers_mut();
            h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
            if let Ok(v) = HeaderValue::from_str(&accept) {
                h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
            }
            if let Some(p) = subprotocol {
                h.insert(header::SEC_WEBSOCKET_PROTOCOL, p);
            }
            h.extend(headers);
            // Until it runs, the guard stands for the session: dropped
            // unrun (the 101 never went out), the app hears of it.
            let guard = GoneGuard(Some(shared));
            let run: crate::app::UpgradeFn = Box::new(move |io, drain| {
                Box::pin(session(guard, io, drain, options))
                    as Pin<Box<dyn Future<Output = ()> + Send>>
            });
            resp.extensions_mut()
                .insert(AfterUpgrade::new(on_upgrade, run));
            resp
        }
        Ok(Decision::Respond(resp)) => {
            if resp.status() != StatusCode::INTERNAL_SERVER_ERROR {
                log::info(&format!("{who} {}", resp.status().as_u16()));
            }
            resp
        }
        Err(_) => {
            shared.gone(ABNORMAL, None);
            internal_error()
        }
    }
}

/// uvicorn's `client - "WebSocket /path?query"` for its log lines.
fn who(parts: &http::request::Parts) -> String {
    let client = parts
        .extensions
        .get::<ConnAddrs>()
        .and_then(|a| a.peer)
        .map(|p| p.to_string())
        .unwrap_or_default();
    let target = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    format!("{client} - \"WebSocket {target}\"")
}

/// How a session ends.
enum End {
    /// The client closed; its close is answered on the way out.
    ClientClosed,
    /// The connection broke.
    Lost,
    /// The server closes (code, reason) and waits that long for the reply.
    Close(u16, String, Duration),
    /// A bad frame from the client: the close goes out, then the
    /// connection (the frame stream can't be read further).
    Fail(u16, &'static str),
}

/// The session on the upgraded connection, until it closes.
async fn session(
    guard: GoneGuard,
    io: hyper::upgrade::Upgraded,
    mut drain: watch::Receiver<bool>,
    options: Options,
) {
    let Some(shared) = guard.0.clone() else {
        return;
    };
    let limit = (options.max_size > 0).then_some(options.max_size);
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .max_message_size(limit)
        .max_frame_size(limit);
    let mut ws =
        WebSocketStream::from_raw_socket(TokioIo::new(io), Role::Server, Some(config)).await;
    let mut next_ping = after(options.ping_interval);
    // The keepalive ping in flight: its payload and the pong's deadline.
    let mut ping: Option<(Bytes, tokio::time::Instant)> = None;
    let end = 'session: loop {
        // What the app sent, in order.
        loop {
            let Some(msg) = shared.lock().outbox.pop_front() else {
                break;
            };
            let len = msg.len();
            let sent = tokio::select! {
                r = ws.send(msg) => r,
                // A client that doesn't read holds no drain back.
                _ = drained(&mut drain) => {
                    shared.gone(SERVICE_RESTART, None);
                    break 'session End::Lost;
                }
            };
            shared.sent(len);
            if sent.is_err() {
                break 'session End::Lost;
            }
        }
        let (close, ended, paused) = {
            let st = shared.lock();
            (
                st.close.clone(),
                st.app_ended,
                st.inbox.len() >= INBOX_HIGH_WATER,
            )
        };
        if let Some((code, reason)) = close {
            break End::Close(code, reason, CLOSE_TIMEOUT);
        }
        if let Some(failed) = ended {
            let code = if failed { INTERNAL_ERROR } else { NORMAL };
            break End::Close(code, String::new(), CLOSE_TIMEOUT);
        }
        let keepalive_at = ping.as_ref().map_or(next_ping, |(_, deadline)| *deadline);
        tokio::select! {
            m = ws.next(), if !paused => match m {
                Some(Ok(Message::Text(t))) => shared.deliver(FromClient::Text(t.as_str().to_owned())),
                Some(Ok(Message::Binary(b))) => shared.deliver(FromClient::Bytes(b)),
                Some(Ok(Message::Close(frame))) => {
                    let (code, reason) = frame
                        .map(|f| (u16::from(f.code), f.reason.as_str().to_owned()))
                        .unwrap_or((NO_STATUS, String::new()));
                    shared.gone(code, Some(reason));
                    break End::ClientClosed;
                }
                Some(Ok(Message::Pong(p))) => {
                    if ping.as_ref().is_some_and(|(payload, _)| *payload == p) {
                        ping = None;
                        next_ping = after(options.ping_interval);
                    }
                }
                // Pings are answered by tungstenite.
                Some(Ok(_)) => {}
                Some(Err(WsError::Capacity(_))) => break End::Fail(1009, "Message too big"),
                Some(Err(WsError::Utf8(_))) => break End::Fail(1007, "Invalid UTF-8"),
                // EOF without a close frame: the connection is lost.
                Some(Err(WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake))) => {
                    break End::Lost
                }
                Some(Err(WsError::Protocol(_))) => break End::Fail(1002, "Protocol error"),
                Some(Err(_)) | None => break End::Lost,
            },
            _ = shared.wake.notified() => {}
            _ = tokio::time::sleep_until(keepalive_at) => {
                if ping.is_some() {
                    break End::Fail(INTERNAL_ERROR, "keepalive ping timeout");
                }
                let payload = Bytes::copy_from_slice(&rand::random::<u32>().to_be_bytes());
                if ws.send(Message::Ping(payload.clone())).await.is_err() {
                    break End::Lost;
                }
                ping = Some((payload, after(options.ping_timeout)));
            }
            _ = drained(&mut drain) => {
                // uvicorn's shutdown: 1012 to the app and to the client.
                shared.gone(SERVICE_RESTART, None);
                break End::Close(SERVICE_RESTART, String::new(), GOING_AWAY_TIMEOUT);
            }
        }
    };
    match end {
        End::ClientClosed => {
            // Reading on sends the reply and sees the end.
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
                while let Some(Ok(_)) = ws.next().await {}
            })
            .await;
        }
        End::Lost => {}
        End::Close(code, mut reason, wait) => {
            // A control frame holds 125 bytes: the code and 123 of reason.
            let mut cut = reason.len().min(123);
            while !reason.is_char_boundary(cut) {
                cut -= 1;
            }
            reason.truncate(cut);
            let frame = CloseFrame {
                code: CloseCode::from(code),
                reason: reason.into(),
            };
            let _ = tokio::time::timeout(wait, async {
                if ws.close(Some(frame)).await.is_ok() {
                    // Until the client's close (messages after ours are dropped).
                    while let Some(Ok(_)) = ws.next().await {}
                }
            })
            .await;
        }
        End::Fail(code, reason) => {
            shared.gone(code, Some(reason.to_string()));
            let frame = CloseFrame {
                code: CloseCode::from(code),
                reason: reason.into(),
            };
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
                if ws.close(Some(frame)).await.is_ok() {
                    // Read what the client still sends (the rest of an
                    // oversized message) until it closes, so that closing
                    // with unread bytes does not reset the connection
                    // before the client has read our close.
                    let io = ws.get_mut();
                    let _ = io.shutdown().await;
                    let mut buf = vec![0u8; 16 * 1024];
                    while matches!(io.read(&mut buf).await, Ok(n) if n > 0) {}
                }
            })
            .await;
        }
    }
    // The app learns of a connection that ended without a close (1006).
    drop(guard);
}

// ---------------------------------------------------------------------------
// The asyncio side.

/// Where the app is in the protocol.
enum Phase {
    /// Before `websocket.accept` (or a refusal).
    Handshake,
    /// Refusing with the app's own response: what it sent so far.
    Responding {
        status: StatusCode,
        headers: HeaderMap,
        body: Vec<u8>,
    },
    /// Refused (403, 500, the app's response): `receive` gives 1006.
    Refused,
    Open,
    /// The app sent `websocket.close`: `receive` gives its code.
    Closed {
        code: u16,
        reason: String,
    },
}

/// One websocket as the app sees it: `receive` and `send`.
#[pyclass(module = "rgunicorn")]
pub(super) struct WebSocket {
    shared: Arc<Shared>,
    /// Until the app decides the handshake.
    reply: Option<oneshot::Sender<Decision>>,
    phase: Phase,
    connect_sent: bool,
    recv_waiter: Option<Py<PyAny>>,
    send_waiter: Option<Py<PyAny>>,
}

/// Start the app for one handshake (asyncio thread, GIL held).
pub(super) fn start(py: Python<'_>, job: Job) {
    let Job {
        parts,
        shared,
        reply,
    } = job;
    let started = with_ctx(|c| -> PyResult<()> {
        let scope = build_scope(py, c, &parts, ScopeType::WebSocket)?;
        let id = shared.id;
        let ws = Py::new(
            py,
            WebSocket {
                shared,
                reply: Some(reply),
                phase: Phase::Handshake,
                connect_sent: false,
                recv_waiter: None,
                send_waiter: None,
            },
        )?;
        let coro = c
            .run_ws
            .bind(py)
            .call1((c.app.bind(py), scope, ws.bind(py)))?;
        c.create_task.bind(py).call1((coro,))?;
        c.live.insert(id, Live::Ws(ws));
        Ok(())
    });
    if let Some(Err(e)) = started {
        crate::python::hooks::log_exception(py, "Exception in ASGI application", &e);
    }
}

fn message<'py>(py: Python<'py>, kind: &str) -> PyResult<Bound<'py, PyDict>> {
    let m = PyDict::new(py);
    m.set_item(intern!(py, "type"), kind)?;
    Ok(m)
}

fn disconnect_msg(py: Python<'_>, code: u16, reason: Option<&str>) -> PyResult<Py<PyAny>> {
    let m = message(py, "websocket.disconnect")?;
    m.set_item(intern!(py, "code"), code)?;
    if let Some(r) = reason {
        m.set_item(intern!(py, "reason"), r)?;
    }
    Ok(m.into_any().unbind())
}

/// `message[key]`, or `None` when missing.
fn get_opt<'py>(message: &Bound<'py, PyAny>, key: &str) -> Option<Bound<'py, PyAny>> {
    message.get_item(key).ok().filter(|v| !v.is_none())
}

/// Bytes of a `bytes`-like value (bytes, bytearray, memoryview).
fn to_bytes(v: &Bound<'_, PyAny>) -> PyResult<Bytes> {
    if let Ok(b) = v.cast::<PyBytes>() {
        return Ok(Bytes::copy_from_slice(b.as_bytes()));
    }
    let b = v.py().get_type::<PyBytes>().call1((v,))?;
    Ok(Bytes::copy_from_slice(b.cast::<PyBytes>()?.as_bytes()))
}

/// 403, as uvicorn refuses a handshake the app closed.
fn forbidden() -> Response<ResponseBody> {
    let mut resp = Response::new(full(Bytes::new()));
    *resp.status_mut() = StatusCode::FORBIDDEN;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

impl WebSocket {
    /// A message for `receive` if one is ready; else registers the wait.
    fn try_receive(&mut self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        if !self.connect_sent {
            self.connect_sent = true;
            return Ok(Some(message(py, "websocket.connect")?.into_any().unbind()));
        }
        match &self.phase {
            Phase::Refused => return disconnect_msg(py, ABNORMAL, None).map(Some),
            Phase::Closed { code, reason } => {
                return disconnect_msg(py, *code, Some(reason)).map(Some)
            }
            _ => {}
        }
        let mut st = self.shared.lock();
        if matches!(self.phase, Phase::Open) {
            if let Some(m) = st.inbox.pop_front() {
                let was_full = st.inbox.len() + 1 >= INBOX_HIGH_WATER;
                drop(st);
                if was_full {
                    self.shared.wake.notify_one();
                }
                let msg = message(py, "websocket.receive")?;
                match m {
                    FromClient::Text(t) => msg.set_item(intern!(py, "text"), t)?,
                    FromClient::Bytes(b) => {
                        msg.set_item(intern!(py, "bytes"), PyBytes::new(py, &b))?
                    }
                }
                return Ok(Some(msg.into_any().unbind()));
            }
        }
        if let Some(g) = st.gone.clone() {
            drop(st);
            return disconnect_msg(py, g.code, g.reason.as_deref()).map(Some);
        }
        st.recv_waiting = true;
        Ok(None)
    }

    /// A wake-up from the tokio side: resolve what can be resolved.
    pub(super) fn poke(this: &Bound<'_, WebSocket>) {
        let py = this.py();
        let mut me = this.borrow_mut();
        me.wake_receiver(py);
        if me.send_waiter.is_some() {
            let go = {
                let mut st = me.shared.lock();
                let go = st.gone.is_some() || st.out_len <= OUT_LOW_WATER;
                if !go {
                    st.send_waiting = true;
                }
                go
            };
            if go {
                if let Some(f) = me.send_waiter.take() {
                    resolve(f.bind(py), &py.None().into_bound(py));
                }
            }
        }
    }

    /// Give a waiting `receive` its message, if one is ready now.
    fn wake_receiver(&mut self, py: Python<'_>) {
        if self.recv_waiter.is_none() {
            return;
        }
        match self.try_receive(py) {
            Ok(Some(msg)) => {
                if let Some(f) = self.recv_waiter.take() {
                    resolve(f.bind(py), msg.bind(py));
                }
            }
            Ok(None) => {}
            Err(e) => crate::python::hooks::log_exception(py, "Exception in ASGI receive", &e),
        }
    }

    /// Hand the handshake's outcome to the tokio side, once.
    fn decide(&mut self, decision: Decision) {
        if let Some(reply) = self.reply.take() {
            // The client is gone when nobody waits: the guard said so.
            let _ = reply.send(decision);
        }
    }

    /// `websocket.send` or `websocket.close` once accepted.
    fn send_open(&mut self, message: &Bound<'_, PyAny>, kind: &str) -> PyResult<bool> {
        let py = message.py();
        match kind {
            "websocket.send" => {
                let msg = if let Some(b) = get_opt(message, "bytes") {
                    Message::Binary(to_bytes(&b)?)
                } else if let Some(t) = get_opt(message, "text") {
                    Message::Text(t.cast::<PyString>()?.to_str()?.to_owned().into())
                } else {
                    return Ok(false);
                };
                let wait = {
                    let mut st = self.shared.lock();
                    st.out_len += msg.len();
                    st.outbox.push_back(msg);
                    let wait = st.out_len > OUT_HIGH_WATER;
                    if wait {
                        st.send_waiting = true;
                    }
                    wait
                };
                self.shared.wake.notify_one();
                Ok(wait)
            }
            "websocket.close" => {
                let code: u16 = match get_opt(message, "code") {
                    Some(c) => c.extract()?,
                    None => NORMAL,
                };
                let reason: String = match get_opt(message, "reason") {
                    Some(r) => r.extract()?,
                    None => String::new(),
                };
                self.shared.lock().close = Some((code, reason.clone()));
                self.shared.wake.notify_one();
                self.phase = Phase::Closed { code, reason };
                self.wake_receiver(py);
                Ok(false)
            }
            _ => Err(PyRuntimeError::new_err(format!(
                "Expected ASGI message 'websocket.send' or 'websocket.close', but got '{kind}'."
            ))),
        }
    }

    /// `websocket.accept`, `websocket.close` or `websocket.http.response.*`
    /// before the handshake is decided.
    fn send_handshake(&mut self, message: &Bound<'_, PyAny>, kind: &str) -> PyResult<()> {
        let py = message.py();
        match (&mut self.phase, kind) {
            (Phase::Handshake, "websocket.accept") => {
                let subprotocol = match get_opt(message, "subprotocol") {
                    Some(p) => Some(
                        HeaderValue::from_str(p.cast::<PyString>()?.to_str()?)
                            .map_err(|_| PyRuntimeError::new_err("Invalid subprotocol."))?,
                    ),
                    None => None,
                };
                let headers = message_headers(message)?;
                self.phase = Phase::Open;
                self.decide(Decision::Accept {
                    subprotocol,
                    headers,
                });
            }
            (Phase::Handshake, "websocket.close") => {
                self.phase = Phase::Refused;
                self.decide(Decision::Respond(forbidden()));
            }
            (Phase::Handshake, "websocket.http.response.start") => {
                let status: u16 = message.get_item(intern!(py, "status"))?.extract()?;
                let status = StatusCode::from_u16(status)
                    .ok()
                    .filter(|s| s.as_u16() >= 100)
                    .ok_or_else(|| {
                        PyRuntimeError::new_err(format!(
                            "Invalid HTTP status code '{status}' in response."
                        ))
                    })?;
                self.phase = Phase::Responding {
                    status,
                    headers: message_headers(message)?,
                    body: Vec::new(),
                };
            }
            (Phase::Handshake, _) => {
                return Err(PyRuntimeError::new_err(format!(
                    "Expected ASGI message 'websocket.accept', 'websocket.close' or \
                     'websocket.http.response.start' but got '{kind}'."
                )))
            }
            (Phase::Responding { body, .. }, "websocket.http.response.body") => {
                if let Some(b) = get_opt(message, "body") {
                    body.extend_from_slice(&to_bytes(&b)?);
                }
                let more = match get_opt(message, "more_body") {
                    Some(m) => m.is_truthy()?,
                    None => false,
                };
                if !more {
                    let Phase::Responding {
                        status,
                        mut headers,
                        body,
                    } = std::mem::replace(&mut self.phase, Phase::Refused)
                    else {
                        return Ok(());
                    };
                    // uvicorn's defaults for the app's response.
                    headers
                        .entry(header::CONNECTION)
                        .or_insert(HeaderValue::from_static("close"));
                    headers
                        .entry(header::CONTENT_TYPE)
                        .or_insert(HeaderValue::from_static("text/plain; charset=utf-8"));
                    let mut resp = Response::new(full(body));
                    *resp.status_mut() = status;
                    *resp.headers_mut() = headers;
                    self.decide(Decision::Respond(resp));
                }
            }
            (Phase::Responding { .. }, _) => {
                return Err(PyRuntimeError::new_err(format!(
                    "Expected ASGI message 'websocket.http.response.body' but got '{kind}'."
                )))
            }
            _ => {}
        }
        self.wake_receiver(py);
        Ok(())
    }

    /// The app's task is over.
    fn finish(&mut self, failed: bool) {
        match self.phase {
            Phase::Handshake | Phase::Responding { .. } => {
                // Nothing reached the client yet: gunicorn's 500.
                self.phase = Phase::Refused;
                self.decide(Decision::Respond(internal_error()));
            }
            _ => {
                self.shared.lock().app_ended = Some(failed);
                self.shared.wake.notify_one();
            }
        }
        self.recv_waiter = None;
        self.send_waiter = None;
        let id = self.shared.id;
        with_ctx(|c| c.live.remove(&id));
    }
}

#[pymethods]
impl WebSocket {
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
        if me.shared.lock().gone.is_some() {
            let cls = with_ctx(|c| c.client_disconnected.clone_ref(py))
                .ok_or_else(|| PyRuntimeError::new_err("the ASGI loop is gone"))?;
            return Err(PyErr::from_value(cls.bind(py).call0()?));
        }
        let kind = message.get_item(intern!(py, "type"))?;
        let kind = kind.cast::<PyString>()?.to_str()?;
        let wait = match me.phase {
            Phase::Handshake | Phase::Responding { .. } => {
                me.send_handshake(&message, kind)?;
                false
            }
            Phase::Open => me.send_open(&message, kind)?,
            Phase::Refused | Phase::Closed { .. } => {
                return Err(PyRuntimeError::new_err(format!(
                    "Unexpected ASGI message '{kind}', after sending 'websocket.close'."
                )))
            }
        };
        if wait {
            let (fut, coro) = wait_for_future(py)?;
            me.send_waiter = Some(fut);
            return Ok(coro);
        }
        ready(py, None)
    }

    /// The app returned `result`.
    fn done(&mut self, result: Bound<'_, PyAny>) {
        let gone = self.shared.lock().gone.is_some();
        if !result.is_none() {
            log::error(&format!(
                "ASGI callable should return None, but returned '{}'.",
                result.str().map(|s| s.to_string()).unwrap_or_default()
            ));
        } else if matches!(self.phase, Phase::Handshake | Phase::Responding { .. }) && !gone {
            log::error("ASGI callable returned without completing handshake.");
        }
        self.finish(false);
    }

    /// The app raised: `tb` is the traceback.
    fn failed(&mut self, tb: &str) {
        log::error(&format!("Exception in ASGI application\n{}", tb.trim_end()));
        self.finish(true);
    }
}
