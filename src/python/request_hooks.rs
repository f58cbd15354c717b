//! gunicorn's per-request hooks, `pre_request(worker, req)` and
//! `post_request(worker, req, environ, resp)`, for every kind of app.
//! They run only when the config sets them (no GIL is taken per request
//! otherwise), on tokio's blocking pool so the serving loop never waits for
//! the GIL; in a gevent worker, in a greenlet on the hub's thread (the
//! only thread that runs Python there). `req` and `resp` are shaped like gunicorn's; `environ` is the
//! WSGI app's own environ (as gunicorn's sync and gthread workers pass),
//! and for other apps the minimal WSGI-style one gunicorn 27's `asgi`
//! worker builds (REQUEST_METHOD, RAW_URI, PATH_INFO, QUERY_STRING,
//! SERVER_PROTOCOL, REMOTE_ADDR, HTTP_*). Errors as gunicorn's: a failing `pre_request`
//! fails the request with a 500 and `post_request(worker, req, {}, None)`
//! still runs; a failing `post_request` is logged and changes nothing.

use std::sync::Arc;

use http::Request;
use hyper::body::Incoming;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};

use crate::app::ConnAddrs;
use crate::python::hooks::PyWorker;

/// The configured hooks of one worker.
pub struct RequestHooks {
    pre: Option<Py<PyAny>>,
    /// The hook and how many arguments it takes (gunicorn accepts 2, 3, 4).
    post: Option<(Py<PyAny>, usize)>,
    worker: Py<PyWorker>,
}

/// What the hooks see of a request (taken on the serving loop, without
/// the GIL).
pub struct RequestInfo {
    method: String,
    uri: String,
    path: String,
    query: String,
    fragment: String,
    version: (u8, u8),
    headers: Vec<(String, String)>,
    scheme: &'static str,
    remote_addr: String,
    remote_port: u16,
    /// The `req` object, made for the first hook that runs and passed to
    /// the other: attributes `pre_request` sets (`req.start_time = ...`)
    /// are there in `post_request`, as with gunicorn's one `Request`.
    py_req: std::sync::OnceLock<Py<PyAny>>,
}

/// What `post_request` sees of the response.
pub struct ResponseInfo {
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub sent: u64,
    /// The WSGI app's environ, when the app is one.
    pub environ: Option<AppEnviron>,
}

/// The environ a WSGI app was called with, carried in its response's
/// extensions for `post_request`.
#[derive(Clone)]
pub struct AppEnviron(pub Arc<Py<PyDict>>);

impl RequestHooks {
    /// `None` when neither hook is set (the default no-ops).
    pub fn from_config(
        py: Python<'_>,
        cfg: &pyconf::Config,
        worker: Py<PyWorker>,
    ) -> Option<Arc<RequestHooks>> {
        let set = |name: &str| {
            cfg.hook_is_set(py, name)
                .then(|| cfg.hook(py, name).unbind())
        };
        let pre = set("pre_request");
        let post = set("post_request").map(|h| (h, cfg.hook_arity(py, "post_request")));
        (pre.is_some() || post.is_some()).then(|| Arc::new(RequestHooks { pre, post, worker }))
    }

    /// Run `pre_request`; `false` when it raised (the request gets a 500).
    pub async fn pre(self: &Arc<Self>, info: &Arc<RequestInfo>, nr: u64) -> bool {
        let Some(_) = &self.pre else {
            return true;
        };
        let (hooks, info) = (self.clone(), info.clone());
        let run = move |py: Python<'_>| hooks.run_pre(py, &info, nr);
        if crate::python::gevent::elsewhere() {
            // A gevent worker: on the hub's thread, in a greenlet.
            return crate::python::gevent::call(run).await.unwrap_or(false);
        }
        tokio::task::spawn_blocking(move || Python::attach(run))
            .await
            .unwrap_or(false)
    }

    fn run_pre(&self, py: Python<'_>, info: &RequestInfo, nr: u64) -> bool {
        self.worker.borrow_mut(py).nr = nr;
        let Some(pre) = &self.pre else { return true };
        let called = py_request(py, info)
            .and_then(|req| pre.bind(py).call1((self.worker.clone_ref(py), req)));
        match called {
            Ok(_) => true,
            Err(e) => {
                crate::python::hooks::log_exception(
                    py,
                    &format!("Error handling request {} {}", info.method, info.uri),
                    &e,
                );
                false
            }
        }
    }

    /// Run `post_request` in the background (the response is already
    /// sent); `resp` is `None` after a failed `pre_request`.
    pub fn post(self: &Arc<Self>, info: Arc<RequestInfo>, resp: Option<ResponseInfo>) {
        if self.post.is_none() {
            return;
        }
        let hooks = self.clone();
        let run = move |py: Python<'_>| hooks.run_post(py, &info, resp.as_ref());
        if crate::python::gevent::elsewhere() {
            crate::python::gevent::post(run);
            return;
        }
        // A body dropped when the runtime is already gone has no pool to
        // run on; its post_request is skipped.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn_blocking(move || Python::attach(run));
    }

    fn run_post(&self, py: Python<'_>, info: &RequestInfo, resp: Option<&ResponseInfo>) {
        let Some((post, arity)) = &self.post else {
            return;
        };
        let called = (|| -> PyResult<()> {
            let req = py_request(py, info)?;
            let worker = self.worker.clone_ref(py).into_any();
            let environ = match resp {
                Some(ResponseInfo {
                    environ: Some(AppEnviron(env)),
                    ..
                }) => env.bind(py).clone(),
                Some(_) => environ(py, info)?,
                None => PyDict::new(py),
            };
            let resp_obj: Bound<'_, PyAny> = match resp {
                Some(r) => Py::new(py, py_response(r))?.into_bound(py).into_any(),
                None => py.None().into_bound(py),
            };
            let args: Bound<'_, PyTuple> = match arity {
                2 => PyTuple::new(py, [worker.into_bound(py), req])?,
                3 => PyTuple::new(py, [worker.into_bound(py), req, environ.into_any()])?,
                _ => PyTuple::new(
                    py,
                    [worker.into_bound(py), req, environ.into_any(), resp_obj],
                )?,
            };
            post.bind(py).call1(args)?;
            Ok(())
        })();
        if let Err(e) = called {
            crate::python::hooks::log_exception(py, "Exception in post_request hook", &e);
        }
    }
}

impl RequestInfo {
    /// Taken from the request before the app consumes it.
    pub fn new(req: &Request<Incoming>, addrs: Option<&ConnAddrs>) -> RequestInfo {
        let peer = addrs.and_then(|a| a.client());
        let line = crate::http::gate::SentLine::of_request(req);
        let split = line.parts();
        let latin1 = crate::http::text::latin1;
        RequestInfo {
            method: req.method().to_string(),
            uri: line.target().into_owned(),
            path: latin1(split.path),
            query: latin1(split.query),
            fragment: latin1(split.fragment),
            version: line.version(),
            headers: req
                .headers()
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_ascii_uppercase(),
                        crate::http::text::latin1(v.as_bytes()),
                    )
                })
                .collect(),
            scheme: if addrs.is_some_and(|a| a.tls) {
                "https"
            } else {
                "http"
            },
            remote_addr: peer.map(|p| p.ip().to_string()).unwrap_or_default(),
            remote_port: peer.map(|p| p.port()).unwrap_or(0),
            py_req: std::sync::OnceLock::new(),
        }
    }
}

/// gunicorn's `Request` as the hooks use it; hooks may set attributes of
/// their own on it (`dict`).
#[pyclass(module = "rgunicorn", name = "Request", get_all, dict)]
struct PyRequest {
    method: String,
    uri: String,
    path: String,
    query: String,
    fragment: String,
    version: (u8, u8),
    headers: Py<PyList>,
    trailers: Py<PyList>,
    scheme: String,
    remote_addr: (String, u16),
    peer_addr: (String, u16),
}

#[pymethods]
impl PyRequest {
    fn __repr__(&self) -> String {
        format!("<rgunicorn.Request {} {}>", self.method, self.uri)
    }
}

/// The request's `req` object: the same one for both hooks.
fn py_request<'py>(py: Python<'py>, info: &RequestInfo) -> PyResult<Bound<'py, PyAny>> {
    if let Some(req) = info.py_req.get() {
        return Ok(req.bind(py).clone());
    }
    let req = new_py_request(py, info)?;
    // Hooks of one request run one after the other, never at once: the
    // first made it, so `set` succeeds.
    let _ = info.py_req.set(req.clone().unbind());
    Ok(req)
}

fn new_py_request<'py>(py: Python<'py>, info: &RequestInfo) -> PyResult<Bound<'py, PyAny>> {
    let headers = PyList::empty(py);
    for (k, v) in &info.headers {
        headers.append((k, v))?;
    }
    let addr = (info.remote_addr.clone(), info.remote_port);
    Ok(Py::new(
        py,
        PyRequest {
            method: info.method.clone(),
            uri: info.uri.clone(),
            path: crate::http::text::percent_decode_latin1(&info.path),
            query: info.query.clone(),
            fragment: info.fragment.clone(),
            version: info.version,
            headers: headers.unbind(),
            trailers: PyList::empty(py).unbind(),
            scheme: info.scheme.to_string(),
            remote_addr: addr.clone(),
            peer_addr: addr,
        },
    )?
    .into_bound(py)
    .into_any())
}

/// gunicorn's `Response` as `post_request` uses it.
#[pyclass(module = "rgunicorn", name = "Response", get_all)]
struct PyResponse {
    status: String,
    status_code: u16,
    headers: Vec<(String, String)>,
    sent: u64,
    response_length: Option<u64>,
}

fn py_response(r: &ResponseInfo) -> PyResponse {
    PyResponse {
        status: format!("{} {}", r.status, r.reason),
        status_code: r.status,
        headers: r.headers.clone(),
        sent: r.sent,
        response_length: r
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok()),
    }
}

/// The minimal environ of gunicorn 27's `asgi` worker.
fn environ<'py>(py: Python<'py>, info: &RequestInfo) -> PyResult<Bound<'py, PyDict>> {
    let env = PyDict::new(py);
    env.set_item("REQUEST_METHOD", &info.method)?;
    env.set_item("RAW_URI", &info.uri)?;
    env.set_item(
        "PATH_INFO",
        crate::http::text::percent_decode_latin1(&info.path),
    )?;
    env.set_item("QUERY_STRING", &info.query)?;
    env.set_item(
        "SERVER_PROTOCOL",
        format!("HTTP/{}.{}", info.version.0, info.version.1),
    )?;
    env.set_item("REMOTE_ADDR", &info.remote_addr)?;
    for (k, v) in &info.headers {
        let key = format!("HTTP_{}", k.replace('-', "_"));
        let joined = match env.get_item(&key)? {
            Some(prev) => format!("{},{v}", prev.extract::<String>()?),
            None => v.clone(),
        };
        env.set_item(key, joined)?;
    }
    Ok(env)
}
