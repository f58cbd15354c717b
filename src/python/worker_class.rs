//! `worker_class` resolved as gunicorn 27 resolves it, and turned into the
//! interface rgunicorn's Rust workers serve the Python app with.
//!
//! Short names and the classes rgunicorn knows (`sync`, `gthread`, `asgi`,
//! uvicorn's workers) are classified without an import; any other dotted
//! path is imported in the master, as gunicorn's arbiter imports it, and
//! classified by the nearest known class it derives from. A subclass of
//! uvicorn's `UvicornWorker` brings its `CONFIG_KWARGS` ([`UvicornOptions`]);
//! what rgunicorn does not act on (other keys, overridden methods) is
//! named in one warning. gevent's classes (and their subclasses) are served
//! with greenlets ([`crate::python::gevent`]); a subclass that overrides `patch()`
//! gets it called. tornado's class and gevent-websocket's worker are
//! refused by name. The Python half is `worker_class.py`.

use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use crate::settings::PythonApp;

use crate::log;

const GLUE: &std::ffi::CStr = pyo3::ffi::c_str!(include_str!("worker_class.py"));

/// The interface the Python app is served with.
#[derive(Clone, Debug, PartialEq)]
pub enum Interface {
    /// `worker_class` left at `sync`: look at the app.
    Detect,
    /// WSGI; `threaded` for gunicorn's ThreadWorker (gthread) and its
    /// subclasses.
    Wsgi { threaded: bool },
    /// ASGI; uvicorn's options when the class is one of uvicorn's.
    Asgi(Option<Box<UvicornOptions>>),
    /// WSGI served by greenlets on gevent's hub (gunicorn's GeventWorker,
    /// GeventPyWSGIWorker and their subclasses).
    Gevent(GeventClass),
}

/// A gevent class: the subclass whose own `patch()` replaces gunicorn's
/// `monkey.patch_all()`, if it overrides it.
#[derive(Clone, Default)]
pub struct GeventClass {
    pub patch_override: Option<std::sync::Arc<Py<PyAny>>>,
}

impl std::fmt::Debug for GeventClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeventClass")
            .field("patch_override", &self.patch_override.is_some())
            .finish()
    }
}

impl PartialEq for GeventClass {
    fn eq(&self, other: &Self) -> bool {
        match (&self.patch_override, &other.patch_override) {
            (None, None) => true,
            (Some(a), Some(b)) => std::sync::Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

/// The resolved class: its name for the logs, and its interface.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkerClass {
    /// `module.QualName` of the class (or the short name `sync`).
    pub name: String,
    pub interface: Interface,
}

impl WorkerClass {
    /// One of uvicorn's worker classes (or a subclass).
    pub fn is_uvicorn(&self) -> bool {
        matches!(self.interface, Interface::Asgi(Some(_)))
    }

    /// The class's `timeout_keep_alive`, which replaces `keepalive` (as
    /// uvicorn's worker lets CONFIG_KWARGS override the setting).
    pub fn keepalive(&self) -> Option<Duration> {
        match &self.interface {
            Interface::Asgi(Some(o)) => o.timeout_keep_alive,
            _ => None,
        }
    }
}

/// The `CONFIG_KWARGS` of a `UvicornWorker` class that rgunicorn honours,
/// each `None` when the class leaves uvicorn's default.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct UvicornOptions {
    /// `loop`: auto, asyncio or uvloop (uvicorn's `none` is asyncio).
    pub loop_kind: Option<String>,
    /// `lifespan`: auto, on or off.
    pub lifespan: Option<String>,
    pub root_path: Option<String>,
    /// `proxy_headers` (uvicorn's default: on).
    pub proxy_headers: Option<bool>,
    pub forwarded_allow_ips: Option<Vec<String>>,
    pub timeout_keep_alive: Option<Duration>,
    /// `ws_ping_interval` / `ws_ping_timeout`: `Some(None)` turns pings off.
    pub ws_ping_interval: Option<Option<Duration>>,
    pub ws_ping_timeout: Option<Option<Duration>>,
    pub ws_max_size: Option<usize>,
    /// Requests in progress above which a worker answers 503.
    pub limit_concurrency: Option<usize>,
    /// Default response headers, in order.
    pub headers: Vec<(String, String)>,
}

/// The keys uvicorn's `Config` takes that rgunicorn acts on; `http` is
/// moot (the HTTP is Rust's) and needs no warning.
const HONOURED: &[&str] = &[
    "loop",
    "lifespan",
    "root_path",
    "proxy_headers",
    "forwarded_allow_ips",
    "timeout_keep_alive",
    "ws_ping_interval",
    "ws_ping_timeout",
    "ws_max_size",
    "limit_concurrency",
    "headers",
    "http",
];

/// Resolve `worker_class`; `Err` is the message a start fails with.
pub fn resolve(py: Python<'_>, settings: &PythonApp) -> anyhow::Result<WorkerClass> {
    let value = settings.worker_class.bind(py);
    if value.extract::<String>().is_ok_and(|s| s == "sync") {
        return Ok(WorkerClass {
            name: "sync".into(),
            interface: Interface::Detect,
        });
    }
    // What the user wrote, for the messages.
    let given = value
        .extract::<String>()
        .unwrap_or_else(|_| value.to_string());
    let glue = glue(py)?;
    let classified = glue.getattr("classify")?.call1((&value,));
    let (kind, name, kwargs, mut overridden): (
        Option<String>,
        String,
        Bound<'_, PyAny>,
        Vec<String>,
    ) = match classified {
        Ok(t) => t.extract()?,
        // gunicorn's RuntimeError text (with the import's traceback).
        Err(e) => anyhow::bail!("{}", e.value(py)),
    };
    if matches!(kind.as_deref(), Some("sync" | "gthread" | "gevent")) {
        let taken: Vec<String> = glue
            .getattr("takes_over_connections")?
            .call1((&value,))?
            .extract()?;
        if !taken.is_empty() {
            anyhow::bail!(
                "worker_class {given:?} ({name}) overrides {} without calling gunicorn's: it \
                 serves each connection its own way, and rgunicorn's connections are served by \
                 its Rust HTTP workers, which never call it; serve this app with gunicorn",
                taken
                    .iter()
                    .map(|m| format!("{m}()"))
                    .collect::<Vec<_>>()
                    .join(" and ")
            );
        }
    }
    let mut ignored: Vec<String> = Vec::new();
    let interface = match kind.as_deref() {
        Some("sync") => Interface::Wsgi { threaded: false },
        Some("gthread") => Interface::Wsgi { threaded: true },
        Some("asgi") => Interface::Asgi(None),
        Some("uvicorn") => {
            let kwargs = kwargs.cast_into::<PyDict>().map_err(|e| {
                anyhow::anyhow!("{name}.CONFIG_KWARGS is not a dict: {}", e.into_inner())
            })?;
            let (options, unknown) = uvicorn_options(&name, &kwargs)?;
            ignored.extend(unknown.into_iter().map(|k| format!("CONFIG_KWARGS[{k:?}]")));
            Interface::Asgi(Some(Box::new(options)))
        }
        Some("gevent") => {
            // The override is honoured: it runs in each worker, after fork.
            let patch_override = if overridden.iter().any(|m| m == "patch") {
                overridden.retain(|m| m != "patch");
                Some(std::sync::Arc::new(
                    glue.getattr("load")?.call1((&value,))?.unbind(),
                ))
            } else {
                None
            };
            Interface::Gevent(GeventClass { patch_override })
        }
        Some("geventwebsocket") => anyhow::bail!(
            "worker_class {given:?} ({name}) is not supported by rgunicorn: gevent-websocket's \
             handler takes over the client's socket, and rgunicorn's HTTP is Rust; use \
             gevent (plain WSGI, greenlets; Flask-SocketIO falls back to long-polling) or an \
             ASGI app with uvicorn.workers.UvicornWorker for websockets"
        ),
        Some(_) => anyhow::bail!(
            "worker_class {given:?} ({name}) is not supported by rgunicorn: use sync or \
             gthread (WSGI), uvicorn.workers.UvicornWorker, uvicorn_worker.UvicornWorker or \
             asgi (ASGI), or leave it unset to detect the interface from the app"
        ),
        None => anyhow::bail!(
            "worker_class {given:?} is not supported by rgunicorn: it derives from none of \
             gunicorn's SyncWorker, ThreadWorker, ASGIWorker or uvicorn's UvicornWorker, and \
             rgunicorn's workers are Rust; use sync or gthread (WSGI), \
             uvicorn.workers.UvicornWorker or asgi (ASGI), or leave it unset to detect the \
             interface from the app"
        ),
    };
    ignored.extend(overridden.into_iter().map(|m| format!("{m}()")));
    if !ignored.is_empty() {
        log::warning(&format!(
            "worker_class {name}: rgunicorn's Rust workers do not run the class's code, so \
             these have no effect: {}",
            ignored.join(", ")
        ));
    }
    Ok(WorkerClass { name, interface })
}

fn glue(py: Python<'_>) -> PyResult<Bound<'_, PyModule>> {
    PyModule::from_code(
        py,
        GLUE,
        c"rgunicorn_worker_class.py",
        c"rgunicorn_worker_class",
    )
}

/// Read `CONFIG_KWARGS`: the options rgunicorn honours (checked as
/// uvicorn's `Config` would take them) and the keys it does not.
fn uvicorn_options(
    class: &str,
    kwargs: &Bound<'_, PyDict>,
) -> anyhow::Result<(UvicornOptions, Vec<String>)> {
    let mut o = UvicornOptions::default();
    let mut unknown = Vec::new();
    let bad = |key: &str, what: &str, v: &Bound<'_, PyAny>| {
        anyhow::anyhow!(
            "{class}.CONFIG_KWARGS[{key:?}] must be {what}, not {}",
            v.repr().map(|r| r.to_string()).unwrap_or_default()
        )
    };
    let seconds = |key: &str, v: &Bound<'_, PyAny>| -> anyhow::Result<Duration> {
        v.extract::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(Duration::from_secs_f64)
            .ok_or_else(|| bad(key, "a number of seconds", v))
    };
    for (k, v) in kwargs.iter() {
        let key: String = k.str()?.to_string();
        match key.as_str() {
            "loop" => {
                let s: String = v.extract().map_err(|_| bad(&key, "a string", &v))?;
                o.loop_kind = Some(match s.as_str() {
                    "none" => "asyncio".into(),
                    "auto" | "asyncio" | "uvloop" => s,
                    _ => {
                        unknown.push(format!("loop={s}"));
                        "auto".into()
                    }
                });
            }
            "lifespan" => {
                let s: String = v.extract().map_err(|_| bad(&key, "a string", &v))?;
                if !matches!(s.as_str(), "auto" | "on" | "off") {
                    return Err(bad(&key, "'auto', 'on' or 'off'", &v));
                }
                o.lifespan = Some(s);
            }
            "root_path" => {
                o.root_path = Some(v.extract().map_err(|_| bad(&key, "a string", &v))?);
            }
            "proxy_headers" => o.proxy_headers = Some(v.is_truthy()?),
            "forwarded_allow_ips" => {
                // uvicorn takes a comma-separated string or a list.
                let list: Vec<String> = if let Ok(s) = v.extract::<String>() {
                    s.split(',').map(|p| p.trim().to_string()).collect()
                } else if v.is_none() {
                    continue;
                } else {
                    v.extract()
                        .map_err(|_| bad(&key, "a string or a list of strings", &v))?
                };
                o.forwarded_allow_ips = Some(list.into_iter().filter(|p| !p.is_empty()).collect());
            }
            "timeout_keep_alive" => o.timeout_keep_alive = Some(seconds(&key, &v)?),
            "ws_ping_interval" | "ws_ping_timeout" => {
                let d = if v.is_none() {
                    None
                } else {
                    Some(seconds(&key, &v)?)
                };
                if key == "ws_ping_interval" {
                    o.ws_ping_interval = Some(d);
                } else {
                    o.ws_ping_timeout = Some(d);
                }
            }
            "ws_max_size" => {
                o.ws_max_size = Some(v.extract().map_err(|_| bad(&key, "an integer", &v))?);
            }
            "limit_concurrency" => {
                if !v.is_none() {
                    o.limit_concurrency =
                        Some(v.extract().map_err(|_| bad(&key, "an integer", &v))?);
                }
            }
            "headers" => {
                if v.is_none() {
                    continue;
                }
                let list = v
                    .cast::<PyList>()
                    .map_err(|_| bad(&key, "a list of [name, value] pairs", &v))?;
                for pair in list.iter() {
                    let pair: Vec<String> = pair
                        .extract()
                        .ok()
                        .filter(|p: &Vec<String>| p.len() == 2)
                        .ok_or_else(|| bad(&key, "a list of [name, value] pairs", &v))?;
                    let [name, value] = <[String; 2]>::try_from(pair).expect("two items");
                    o.headers.push((name, value));
                }
            }
            _ if HONOURED.contains(&key.as_str()) => {}
            _ => unknown.push(key),
        }
    }
    Ok((o, unknown))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classify(code: &str, uri: &str) -> PyResult<(Option<String>, String)> {
        Python::attach(|py| {
            let m = glue(py)?;
            let code = std::ffi::CString::new(code).unwrap();
            let user = PyModule::from_code(py, &code, c"user_workers.py", c"user_workers")?;
            py.import("sys")?
                .getattr("modules")?
                .set_item("user_workers", user)?;
            let (kind, name, _, _): (Option<String>, String, Bound<'_, PyAny>, Vec<String>) =
                m.getattr("classify")?.call1((uri,))?.extract()?;
            Ok((kind, name))
        })
    }

    #[test]
    fn short_names_and_known_paths_need_no_import() {
        pyo3::Python::initialize();
        for (uri, kind) in [
            ("gthread", "gthread"),
            ("#gthread", "gthread"),
            ("asgi", "asgi"),
            (
                "geventwebsocket.gunicorn.workers.GeventWebSocketWorker",
                "geventwebsocket",
            ),
            ("uvicorn.workers.UvicornWorker", "uvicorn"),
            ("uvicorn_worker.UvicornH11Worker", "uvicorn"),
        ] {
            let (k, _) = classify("", uri).unwrap();
            assert_eq!(k.as_deref(), Some(kind), "{uri}");
        }
    }

    #[test]
    fn a_gevent_class_needs_gevent_as_gunicorn_says() {
        pyo3::Python::initialize();
        let has_gevent = Python::attach(|py| py.import("gevent").is_ok());
        match classify("", "#gevent_pywsgi") {
            Ok((k, name)) => {
                assert!(has_gevent);
                assert_eq!(
                    (k.as_deref(), name.as_str()),
                    (
                        Some("gevent"),
                        "gunicorn.workers.ggevent.GeventPyWSGIWorker"
                    )
                );
            }
            Err(err) => {
                assert!(!has_gevent);
                let text = Python::attach(|py| err.value(py).to_string());
                assert!(
                    text.starts_with("class uri 'gevent_pywsgi' invalid or not found: \n\n[")
                        && text.contains(
                            "RuntimeError: gevent worker requires gevent 24.10.1 or higher"
                        ),
                    "{text}"
                );
            }
        }
    }

    #[test]
    fn unknown_names_fail_with_gunicorns_message() {
        pyo3::Python::initialize();
        for uri in ["egg:gunicorn#sync", "eventlet", "nosuch.Worker"] {
            let err = classify("", uri).unwrap_err();
            let text = Python::attach(|py| err.value(py).to_string());
            assert!(
                text.starts_with(
                    &format!("class uri {uri:?} invalid or not found: \n\n[").replace('"', "'")
                ),
                "{text}"
            );
        }
    }

    #[test]
    fn a_subclass_is_classified_by_its_nearest_known_base() {
        pyo3::Python::initialize();
        // Stand-ins with the known classes' module and name.
        let code = "class UvicornWorker:\n    CONFIG_KWARGS = {'loop': 'auto'}\n\
                    UvicornWorker.__module__ = 'uvicorn.workers'\n\
                    class Mine(UvicornWorker):\n    CONFIG_KWARGS = {'root_path': '/x'}\n\
                    \x20   def init_process(self):\n        pass\n\
                    class Plain:\n    pass\n";
        let (k, name) = classify(code, "user_workers.Mine").unwrap();
        assert_eq!(
            (k.as_deref(), name.as_str()),
            (Some("uvicorn"), "user_workers.Mine")
        );
        let (k, _) = classify(code, "user_workers.Plain").unwrap();
        assert_eq!(k, None);
    }

    #[test]
    fn a_handler_override_that_never_calls_gunicorns_takes_over_connections() {
        pyo3::Python::initialize();
        // A stand-in for gunicorn's SyncWorker, then: an RPC server's
        // handle(), a metrics wrapper with super(), one naming its base.
        let code = "class SyncWorker:\n    def handle(self, *a): pass\n\
                    \x20   def handle_request(self, *a): pass\n\
                    SyncWorker.__module__ = 'gunicorn.workers.sync'\n\
                    class Rpc(SyncWorker):\n    def handle(self, listener, client, addr):\n\
                    \x20       self.wsgi.handler(client, addr)\n\
                    class Counting(SyncWorker):\n\
                    \x20   def handle_request(self, *a):\n        return super().handle_request(*a)\n\
                    class Named(SyncWorker):\n\
                    \x20   def handle(self, *a):\n        SyncWorker.handle(self, *a)\n";
        let taken = |class: &str| -> Vec<String> {
            Python::attach(|py| {
                let m = glue(py).unwrap();
                let code = std::ffi::CString::new(code).unwrap();
                let user =
                    PyModule::from_code(py, &code, c"user_workers.py", c"user_workers").unwrap();
                py.import("sys")
                    .unwrap()
                    .getattr("modules")
                    .unwrap()
                    .set_item("user_workers", user)
                    .unwrap();
                m.getattr("takes_over_connections")
                    .unwrap()
                    .call1((format!("user_workers.{class}"),))
                    .unwrap()
                    .extract()
                    .unwrap()
            })
        };
        assert_eq!(taken("Rpc"), ["handle"]);
        assert!(taken("Counting").is_empty());
        assert!(taken("Named").is_empty());
    }
}
