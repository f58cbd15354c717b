//! Python's `logging` wired as gunicorn wires it, in the master (at start
//! and on each HUP; workers inherit it across fork):
//!
//! - `gunicorn.error` and `gunicorn.access` get gunicorn's levels,
//!   `propagate = False` and handlers that write through rgunicorn's own
//!   error and access logs ([`crate::log`]), so that code copying their
//!   handlers (`app.logger.handlers = logging.getLogger("gunicorn.error")
//!   .handlers`) logs where gunicorn's would;
//! - `logconfig_dict`, `logconfig_json` and `logconfig` are applied as
//!   gunicorn applies them (its `CONFIG_DEFAULTS` merged);
//! - under a UvicornWorker class, `uvicorn.error`/`uvicorn.access` take
//!   those handlers, as UvicornWorker's constructor does.
//!
//! When `gunicorn.error` or `gunicorn.access` end up handled otherwise than
//! as set up here (by those settings, or by code: a hook, the app), the
//! error lines and access records rgunicorn writes itself go through
//! Python's logging too, so that a JSON pipeline keeps parsing. That is
//! checked after each hook and after the app's import ([`refresh`]);
//! otherwise the Rust paths write directly, as before. The Python half is
//! `pylog.py`.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyDict;

use pyconf::Config;

use crate::access_log::{self, Value};
use crate::log::{self, Level};

const GLUE: &str = include_str!("pylog.py");

static MODULE: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

fn glue(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    MODULE
        .get_or_try_init(py, || {
            let code = std::ffi::CString::new(GLUE).expect("no NUL in pylog.py");
            PyModule::from_code(py, &code, c"rgunicorn_logging.py", c"rgunicorn_logging")
                .map(Bound::unbind)
        })
        .map(|m| m.bind(py))
}

/// `gunicorn.error`'s handler writes here.
#[pyfunction]
fn write_error(line: &str) {
    log::write_line(line);
}

/// `gunicorn.access`'s handler writes here.
#[pyfunction]
fn write_access(line: &str) {
    log::write_access_line(line);
}

/// Set Python's logging up from `cfg` (at start and on HUP), as gunicorn's
/// `Logger.setup`; `Err` is gunicorn's RuntimeError text (a bad
/// `logconfig_dict`, a missing `logconfig` file).
pub fn setup(py: Python<'_>, cfg: &Config) -> anyhow::Result<()> {
    log::configure_access(cfg.string(py, "accesslog").as_deref())?;
    let glue = glue(py)?;
    let args = (
        cfg.string(py, "loglevel").unwrap_or_default(),
        cfg.string(py, "accesslog"),
        cfg.get(py, "logconfig_dict"),
        cfg.get(py, "logconfig_json"),
        cfg.get(py, "logconfig"),
        wrap_pyfunction!(write_error, py)?,
        wrap_pyfunction!(write_access, py)?,
    );
    if let Err(e) = glue.getattr("setup")?.call1(args) {
        if e.is_instance_of::<pyo3::exceptions::PyRuntimeError>(py) {
            anyhow::bail!("{}", e.value(py));
        }
        anyhow::bail!(pyconf::config::format_traceback(py, &e));
    }
    log::set_route(route_error, refresh_attached);
    access_log::set_route(route_access);
    refresh(py);
    Ok(())
}

/// Under a UvicornWorker class: uvicorn's loggers as its worker sets them.
pub fn uvicorn_loggers(py: Python<'_>) -> PyResult<()> {
    glue(py)?.getattr("uvicorn_loggers")?.call0()?;
    Ok(())
}

/// gunicorn's `access_log_enabled`: `accesslog`, or any `logconfig*`
/// setting (or syslog, which rgunicorn does not have yet).
pub fn access_log_enabled(py: Python<'_>, cfg: &Config) -> bool {
    cfg.string(py, "accesslog").is_some()
        || ["logconfig", "logconfig_dict", "logconfig_json"]
            .iter()
            .any(|name| cfg.get(py, name).is_truthy().unwrap_or(false))
}

/// Look at the handlers again: route rgunicorn's lines through Python's
/// logging if they were changed. Cheap: a few attribute reads.
pub fn refresh(py: Python<'_>) {
    let Some(glue) = MODULE.get(py) else {
        return;
    };
    let routing = glue
        .bind(py)
        .getattr("routing")
        .and_then(|f| f.call0())
        .and_then(|r| r.extract::<(bool, bool)>());
    if let Ok((error, access)) = routing {
        log::set_routed(error);
        access_log::set_routed(access);
    }
}

fn refresh_attached() {
    crate::gevent::run_python(refresh);
}

fn route_error(level: Level, msg: &str) -> bool {
    if crate::gevent::elsewhere() {
        // A gevent worker's handlers run on its hub's thread.
        let msg = msg.to_string();
        crate::gevent::post(move |py| {
            route_error_attached(py, level, &msg);
        });
        return true;
    }
    Python::attach(|py| route_error_attached(py, level, msg))
}

fn route_error_attached(py: Python<'_>, level: Level, msg: &str) -> bool {
    let Some(glue) = MODULE.get(py) else {
        return false;
    };
    glue.bind(py)
        .getattr("route_error")
        .and_then(|f| f.call1((level as i32, msg)))
        .is_ok()
}

fn route_access(format: &str, atoms: Vec<(String, Value)>) -> bool {
    if crate::gevent::elsewhere() {
        let format = format.to_string();
        crate::gevent::post(move |py| {
            route_access_attached(py, &format, atoms);
        });
        return true;
    }
    Python::attach(|py| route_access_attached(py, format, atoms))
}

fn route_access_attached(py: Python<'_>, format: &str, atoms: Vec<(String, Value)>) -> bool {
    let Some(glue) = MODULE.get(py) else {
        return false;
    };
    let dict = PyDict::new(py);
    for (key, value) in atoms {
        let set = match value {
            Value::Str(s) => dict.set_item(key, s),
            Value::Int(n) => dict.set_item(key, n),
            Value::None => dict.set_item(key, py.None()),
        };
        if set.is_err() {
            return false;
        }
    }
    glue.bind(py)
        .getattr("route_access")
        .and_then(|f| f.call1((format, dict)))
        .is_ok()
}
