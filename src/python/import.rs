//! Loading the user's Python application from APP_MODULE, as gunicorn's
//! `util.import_app`: `module` (attribute `application`), `module:name`,
//! `module:factory()` with literal arguments. An [`AppError::NotFound`] is
//! gunicorn's `AppImportError` (a worker exits 4); anything raised while
//! importing is [`AppError::Import`] (exit 3).

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};

use crate::boot::BootError;
use pyconf::config::format_traceback;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The module imported but the app object could not be found or built.
    #[error("{0}")]
    NotFound(String),
    /// An exception while importing or calling the factory: its traceback.
    #[error("{0}")]
    Import(String),
}

/// The name rgunicorn serves its built-in Rust health app under.
pub const BUILTIN_HEALTH_APP: &str = "rgunicorn:health";

/// Positional and keyword arguments of a `module:factory(...)` call.
type FactoryArgs<'py> = (Bound<'py, PyTuple>, Bound<'py, PyDict>);

pub fn import_app<'py>(py: Python<'py>, uri: &str) -> Result<Py<PyAny>, AppError> {
    let (module, expr) = match uri.split_once(':') {
        Some((m, e)) => (m, e),
        None => (uri, "application"),
    };
    let tb = |e: PyErr| {
        crate::python::reloader::note_failed_files(py, &e);
        AppError::Import(format_traceback(py, &e))
    };
    let not_found = |m: String| AppError::NotFound(m);
    let repr = |s: &str| {
        pyo3::types::PyString::new(py, s)
            .repr()
            .map(|r| r.to_string())
            .unwrap_or_default()
    };

    let module_obj = match py.import(module) {
        Ok(m) => m,
        Err(e) => {
            if e.is_instance_of::<pyo3::exceptions::PyImportError>(py)
                && module.ends_with(".py")
                && std::path::Path::new(module).exists()
            {
                let stem = module.rsplit_once('.').map(|(s, _)| s).unwrap_or(module);
                return Err(AppError::Import(format!(
                    "ImportError: Failed to find application, did you mean '{stem}:{expr}'?\n"
                )));
            }
            return Err(tb(e));
        }
    };

    let ast = py.import("ast").map_err(tb)?;
    let parse_fail = || {
        not_found(format!(
            "Failed to parse {} as an attribute name or function call.",
            repr(expr)
        ))
    };
    let kwargs = PyDict::new(py);
    kwargs.set_item("mode", "eval").map_err(tb)?;
    let body = ast
        .call_method("parse", (expr,), Some(&kwargs))
        .and_then(|tree| tree.getattr("body"))
        .map_err(|_| parse_fail())?;
    let is = |node: &Bound<'_, PyAny>, kind: &str| -> bool {
        ast.getattr(kind)
            .and_then(|k| node.is_instance(&k))
            .unwrap_or(false)
    };

    let (name, call): (String, Option<FactoryArgs<'py>>) = if is(&body, "Name") {
        (
            body.getattr("id").and_then(|i| i.extract()).map_err(tb)?,
            None,
        )
    } else if is(&body, "Call") {
        let func = body.getattr("func").map_err(tb)?;
        if !is(&func, "Name") {
            return Err(not_found(format!(
                "Function reference must be a simple name: {}",
                repr(expr)
            )));
        }
        let literal = |node: Bound<'py, PyAny>| ast.call_method1("literal_eval", (node,));
        let lit_fail = || {
            not_found(format!(
                "Failed to parse arguments as literal values: {}",
                repr(expr)
            ))
        };
        let args = PyList::empty(py);
        for arg in body
            .getattr("args")
            .and_then(|a| a.try_iter())
            .map_err(tb)?
        {
            args.append(literal(arg.map_err(tb)?).map_err(|_| lit_fail())?)
                .map_err(tb)?;
        }
        let kw = PyDict::new(py);
        for k in body
            .getattr("keywords")
            .and_then(|a| a.try_iter())
            .map_err(tb)?
        {
            let k = k.map_err(tb)?;
            let key = k.getattr("arg").map_err(tb)?;
            let value = literal(k.getattr("value").map_err(tb)?).map_err(|_| lit_fail())?;
            kw.set_item(key, value).map_err(tb)?;
        }
        let name = func.getattr("id").and_then(|i| i.extract()).map_err(tb)?;
        (name, Some((args.to_tuple(), kw)))
    } else {
        return Err(parse_fail());
    };

    let mut app = module_obj.getattr(name.as_str()).map_err(|_| {
        not_found(format!(
            "Failed to find attribute {} in {}.",
            repr(&name),
            repr(module)
        ))
    })?;
    if let Some((args, kw)) = call {
        app = match app.call(args, Some(&kw)) {
            Ok(a) => a,
            Err(e)
                if e.is_instance_of::<pyo3::exceptions::PyTypeError>(py)
                    && called_with_wrong_args(py, &e) =>
            {
                return Err(not_found(format!("TypeError: {}", e.value(py))));
            }
            Err(e) => return Err(tb(e)),
        };
    }
    if app.is_none() {
        return Err(not_found(format!(
            "Failed to find application object: {}",
            repr(expr)
        )));
    }
    if !app.is_callable() {
        return Err(not_found("Application object must be callable.".into()));
    }
    Ok(app.unbind())
}

/// gunicorn's `_called_with_wrong_args`: the TypeError came from the call
/// itself (its traceback has no frame inside the factory).
fn called_with_wrong_args(py: Python<'_>, err: &PyErr) -> bool {
    match err.traceback(py) {
        None => true,
        Some(tb) => tb.getattr("tb_next").map(|n| n.is_none()).unwrap_or(true),
    }
}

/// The app imported in the master by `preload_app`, shared by every worker
/// forked afterwards (a HUP keeps it: preloaded code is not reloaded, as in
/// gunicorn).
static PRELOADED: std::sync::OnceLock<Py<PyAny>> = std::sync::OnceLock::new();

/// `preload_app`: import the app in the master, before any fork.
pub fn preload(py: Python<'_>, uri: &str) -> Result<(), AppError> {
    if PRELOADED.get().is_none() {
        let app = import_app(py, uri)?;
        let _ = PRELOADED.set(app);
    }
    Ok(())
}

/// The app a worker imported during its boot ([`import_in_worker`]);
/// empty in the master, so each forked worker starts without one.
static WORKER_APP: std::sync::OnceLock<Py<PyAny>> = std::sync::OnceLock::new();

/// In a worker: the preloaded app, the one imported during its boot, or
/// the app imported now (after fork).
pub fn worker_app(py: Python<'_>, uri: &str) -> Result<Py<PyAny>, AppError> {
    match PRELOADED.get().or_else(|| WORKER_APP.get()) {
        Some(app) => Ok(app.clone_ref(py)),
        None => import_app(py, uri),
    }
}

/// In a worker's boot, before `post_worker_init` (gunicorn's
/// `load_wsgi`): import the app once; the interface's factory then takes
/// it. The error's reason is logged.
pub fn import_in_worker(py: Python<'_>, uri: &str) -> Result<Py<PyAny>, BootError> {
    let app = worker_app_or_status(py, uri)?;
    // The app's own import may have replaced gunicorn's response writer
    // (the config's replacement ended the start in the master).
    if let Some(replaced) = crate::python::patched::response_writer(py) {
        crate::log::error(&format!(
            "Exception in worker process\n{}",
            replaced.refusal()
        ));
        return Err(BootError::Worker);
    }
    let _ = WORKER_APP.set(app.clone_ref(py));
    Ok(app)
}

/// [`worker_app`] as a worker's boot needs it: a failure is logged as
/// gunicorn logs it and becomes the boot's error (the app object is not
/// there, or an exception while importing).
pub fn worker_app_or_status(py: Python<'_>, uri: &str) -> Result<Py<PyAny>, BootError> {
    worker_app(py, uri).map_err(|e| match e {
        AppError::NotFound(msg) => {
            crate::python::reloader::note_import_failure(&msg);
            // gunicorn prints an AppImportError as is, on stderr.
            crate::log::debug("Exception while loading the application");
            eprintln!("{msg}");
            BootError::AppLoad
        }
        AppError::Import(tb) => {
            crate::python::reloader::note_import_failure(&tb);
            crate::log::error(&format!("Exception in worker process\n{}", tb.trim_end()));
            BootError::Worker
        }
    })
}
