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
//! - `capture_output` (stdout and stderr into the `errorlog` file) and
//!   syslog (`syslog_addr` over UDP, TCP or a unix socket) as gunicorn's
//!   handlers, with gunicorn's format; USR1 reopens Python's file handlers
//!   as gunicorn's `reopen_files` does;
//! - under a UvicornWorker class, `uvicorn.error`/`uvicorn.access` take
//!   those handlers, as UvicornWorker's constructor does.
//!
//! When `gunicorn.error` or `gunicorn.access` end up handled otherwise than
//! as set up here (by those settings, or by code: a hook, the app), the
//! error lines and access records rgunicorn writes itself go through
//! Python's logging too, so that a JSON pipeline keeps parsing. That is
//! checked after each hook and after the app's import ([`refresh`]);
//! otherwise the Rust paths write directly, as before. The Python half is
//! `logging.py`.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyDict;

use crate::log::{self, Level};
use crate::observe::access_log::{self, Value};
use crate::settings::Logging;

const GLUE: &std::ffi::CStr = pyo3::ffi::c_str!(include_str!("logging.py"));

static MODULE: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

fn glue(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    MODULE
        .get_or_try_init(py, || {
            PyModule::from_code(py, GLUE, c"rgunicorn_logging.py", c"rgunicorn_logging")
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

/// Set Python's logging up (at start and on HUP), as gunicorn's
/// `Logger.setup`; `Err` is gunicorn's RuntimeError text (a bad
/// `logconfig_dict`, a missing `logconfig` file).
pub fn setup(py: Python<'_>, settings: &Logging) -> anyhow::Result<()> {
    log::configure_access(settings.accesslog.as_deref())?;
    let glue = glue(py)?;
    let syslog = match &settings.syslog {
        Some(syslog) => {
            let s = PyDict::new(py);
            s.set_item("addr", &syslog.addr)?;
            s.set_item("facility", &syslog.facility)?;
            s.set_item("prefix", &syslog.prefix)?;
            s.set_item("access", syslog.access)?;
            Some(s)
        }
        None => None,
    };
    let args = (
        &settings.loglevel,
        &settings.accesslog,
        settings.logconfig_dict.bind(py),
        settings.logconfig_json.bind(py),
        settings.logconfig.bind(py),
        wrap_pyfunction!(write_error, py)?,
        wrap_pyfunction!(write_access, py)?,
        &settings.capture_output,
        syslog,
    );
    if let Err(e) = glue.getattr("setup")?.call1(args) {
        if e.is_instance_of::<pyo3::exceptions::PyRuntimeError>(py) {
            anyhow::bail!("{}", e.value(py));
        }
        anyhow::bail!(pyconf::config::format_traceback(py, &e));
    }
    log::set_route(route_error, refresh_attached, reopen_attached);
    access_log::set_route(route_access);
    refresh(py);
    Ok(())
}

/// `logger_class`: a class other than gunicorn's own (which rgunicorn's
/// logging is) is instantiated with the hooks' `cfg` view, as gunicorn's
/// arbiter does, and from then on every line and access record goes to it
/// (`info()`..., `access(resp, req, environ, request_time)`).
pub fn install_logger_class(
    py: Python<'_>,
    settings: &Logging,
    view: &Bound<'_, PyAny>,
) -> anyhow::Result<()> {
    let installed = glue(py)?
        .getattr("install_logger_class")?
        .call1((settings.logger_class.bind(py), view));
    if let Err(e) = installed {
        if e.is_instance_of::<pyo3::exceptions::PyRuntimeError>(py) {
            anyhow::bail!("{}", e.value(py));
        }
        anyhow::bail!(pyconf::config::format_traceback(py, &e));
    }
    refresh(py);
    Ok(())
}

/// gunicorn's "Current configuration:" dump, logged at debug at start.
pub fn log_config_dump(py: Python<'_>, view: &Bound<'_, PyAny>) {
    if let Ok(text) = glue(py)
        .and_then(|g| g.getattr("config_dump"))
        .and_then(|f| f.call1((view,)))
        .and_then(|t| t.extract::<String>())
    {
        log::debug(&text);
    }
}

/// What hooks' `server.log` methods call: the custom logger of
/// `logger_class`, else the `gunicorn.error` logger.
pub fn error_logger(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    glue(py)?.getattr("error_logger")?.call0()
}

/// A custom `logger_class` is in use.
fn custom_logger(py: Python<'_>) -> bool {
    MODULE.get(py).is_some_and(|m| {
        m.bind(py)
            .getattr("custom_logger")
            .and_then(|f| f.call0())
            .is_ok_and(|l| !l.is_none())
    })
}

/// Under a UvicornWorker class: uvicorn's loggers as its worker sets them.
pub fn uvicorn_loggers(py: Python<'_>) -> PyResult<()> {
    glue(py)?.getattr("uvicorn_loggers")?.call0()?;
    Ok(())
}

/// gunicorn's `access_log_enabled`: `accesslog`, any `logconfig*`
/// setting, syslog with access lines, or a custom `logger_class` (its
/// `access()` decides, as gunicorn's worker always calls it).
pub fn access_log_enabled(py: Python<'_>, settings: &Logging) -> bool {
    settings.access_log_configured || custom_logger(py)
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
    crate::python::gevent::run_python(refresh);
}

/// USR1, as gunicorn's `reopen_files`: the captured output and Python's
/// file handlers (rgunicorn's own files are reopened by [`log::reopen`]).
fn reopen_attached() {
    crate::python::gevent::run_python(|py| {
        if let Some(glue) = MODULE.get(py) {
            if let Err(e) = glue
                .bind(py)
                .getattr("reopen_files")
                .and_then(|f| f.call0())
            {
                crate::python::hooks::log_exception(py, "Error reopening log files", &e);
            }
        }
    });
}

fn route_error(level: Level, msg: &str) -> bool {
    if crate::python::gevent::elsewhere() {
        // A gevent worker's handlers run on its hub's thread.
        let msg = msg.to_string();
        crate::python::gevent::post(move |py| {
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
    if crate::python::gevent::elsewhere() {
        let format = format.to_string();
        crate::python::gevent::post(move |py| {
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
