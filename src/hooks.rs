//! The Python objects handed to the user's hooks, shaped like gunicorn's:
//! `server` (the arbiter: `log`, `cfg`, `pid`, `num_workers`, `app`,
//! `WORKERS`, `proc_name`, ...), `worker` (`pid`, `ppid`, `age`, `nr`,
//! `alive`, `booted`, `aborted`, `max_requests`, `timeout`, `log`, `cfg`),
//! the `log` object and the read-only `cfg` view; and the hook calls.

use pyo3::exceptions::PyAttributeError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use pyo3::BoundObject;

use pyconf::{Config, SETTINGS};

use crate::log::{self, Level};

/// `server.log` / `worker.log`: gunicorn's logger methods, writing to the
/// error log in gunicorn's format (`msg % args`, as `logging` does).
#[pyclass(module = "rgunicorn", name = "Logger")]
pub struct PyLogger;

/// `msg % args`, as `logging` renders a record (a single argument is used
/// as is, so a dict works for `%(name)s`).
fn render(msg: &Bound<'_, PyAny>, args: &Bound<'_, PyTuple>) -> PyResult<String> {
    let text = msg.str()?;
    if args.is_empty() {
        return Ok(text.to_string());
    }
    let fmt_args = if args.len() == 1 {
        args.get_item(0)?
    } else {
        args.clone().into_any()
    };
    Ok(text
        .call_method1("__mod__", (fmt_args,))?
        .str()?
        .to_string())
}

/// One method per level, all with the signature of `logging.Logger`'s.
macro_rules! level_methods {
    ($($name:ident => $level:expr),* $(,)?) => {
        #[pymethods]
        impl PyLogger {
            $(
                #[pyo3(signature = (msg, *args, **_kwargs))]
                fn $name(
                    &self,
                    msg: &Bound<'_, PyAny>,
                    args: &Bound<'_, PyTuple>,
                    _kwargs: Option<&Bound<'_, PyDict>>,
                ) -> PyResult<()> {
                    log::log($level, &render(msg, args)?);
                    Ok(())
                }
            )*

            /// `log.exception(msg)`: the message and the traceback being handled.
            #[pyo3(signature = (msg, *args, **_kwargs))]
            fn exception(
                &self,
                py: Python<'_>,
                msg: &Bound<'_, PyAny>,
                args: &Bound<'_, PyTuple>,
                _kwargs: Option<&Bound<'_, PyDict>>,
            ) -> PyResult<()> {
                let tb: String = py.import("traceback")?.call_method0("format_exc")?.extract()?;
                log::log(Level::Error, &format!("{}\n{}", render(msg, args)?, tb.trim_end()));
                Ok(())
            }

            #[pyo3(signature = (lvl, msg, *args, **_kwargs))]
            fn log(
                &self,
                lvl: i64,
                msg: &Bound<'_, PyAny>,
                args: &Bound<'_, PyTuple>,
                _kwargs: Option<&Bound<'_, PyDict>>,
            ) -> PyResult<()> {
                let level = match lvl {
                    ..=10 => Level::Debug,
                    11..=20 => Level::Info,
                    21..=30 => Level::Warning,
                    31..=40 => Level::Error,
                    _ => Level::Critical,
                };
                log::log(level, &render(msg, args)?);
                Ok(())
            }

            fn reopen_files(&self) {
                log::reopen();
            }
        }
    };
}

level_methods! {
    debug => Level::Debug,
    info => Level::Info,
    warning => Level::Warning,
    error => Level::Error,
    critical => Level::Critical,
}

/// `server.cfg` / `worker.cfg`: every setting as a read-only attribute.
#[pyclass(module = "rgunicorn", name = "Config")]
pub struct PyCfg {
    values: Py<PyDict>,
}

impl PyCfg {
    pub fn new(py: Python<'_>, cfg: &Config) -> PyResult<Py<PyCfg>> {
        let values = PyDict::new(py);
        for s in SETTINGS {
            values.set_item(s.name, cfg.get(py, s.name))?;
        }
        Py::new(
            py,
            PyCfg {
                values: values.unbind(),
            },
        )
    }
}

#[pymethods]
impl PyCfg {
    fn __getattr__(&self, py: Python<'_>, name: &str) -> PyResult<Py<PyAny>> {
        let values = self.values.bind(py);
        // gunicorn's Config properties that shadow a setting of the same name.
        if name == "proc_name" {
            let pn = values.get_item("proc_name")?;
            if let Some(pn) = pn.filter(|v| !v.is_none()) {
                return Ok(pn.unbind());
            }
            return Ok(values
                .get_item("default_proc_name")?
                .map(|v| v.unbind())
                .unwrap_or_else(|| py.None()));
        }
        match values.get_item(name)? {
            Some(v) => Ok(v.unbind()),
            None => Err(PyAttributeError::new_err(format!(
                "No configuration setting for: {name}"
            ))),
        }
    }

    fn __setattr__(&self, _name: &str, _value: Py<PyAny>) -> PyResult<()> {
        Err(PyAttributeError::new_err("Invalid access!"))
    }

    /// `cfg.set(name, value)` is accepted for compatibility but changes
    /// only this view (rgunicorn's settings are fixed until the next HUP).
    fn set(&self, py: Python<'_>, name: &str, value: Py<PyAny>) -> PyResult<()> {
        let i = pyconf::table::index_of(name).ok_or_else(|| {
            PyAttributeError::new_err(format!("No configuration setting for: {name}"))
        })?;
        let v = pyconf::validate::validate(py, SETTINGS[i].validator, value.bind(py))
            .map_err(pyconf::validate::to_pyerr)?;
        self.values.bind(py).set_item(name, v)
    }

    fn __repr__(&self) -> String {
        "<rgunicorn.Config>".into()
    }
}

/// The `server` argument of hooks (gunicorn's Arbiter).
#[pyclass(module = "rgunicorn", name = "Arbiter")]
pub struct PyServer {
    #[pyo3(get, set)]
    pub pid: Py<PyAny>,
    #[pyo3(get)]
    pub cfg: Py<PyCfg>,
    #[pyo3(get)]
    pub log: Py<PyLogger>,
    #[pyo3(get)]
    pub num_workers: usize,
    #[pyo3(get, name = "WORKERS")]
    pub workers: Py<PyDict>,
    #[pyo3(get)]
    pub app: Py<PyAny>,
    #[pyo3(get)]
    pub proc_name: String,
    #[pyo3(get)]
    pub master_name: String,
    #[pyo3(get)]
    pub timeout: u64,
    #[pyo3(get)]
    pub worker_age: u64,
    #[pyo3(get)]
    pub reexec_pid: i32,
    #[pyo3(get)]
    pub master_pid: i32,
}

#[pymethods]
impl PyServer {
    fn __repr__(&self) -> String {
        format!("<rgunicorn.Arbiter {}>", self.master_name)
    }
}

/// The `worker` argument of hooks.
#[pyclass(module = "rgunicorn", name = "Worker")]
pub struct PyWorker {
    /// `"[booting]"` in `pre_fork`, the pid afterwards.
    #[pyo3(get, set)]
    pub pid: Py<PyAny>,
    #[pyo3(get, set)]
    pub ppid: i32,
    #[pyo3(get)]
    pub age: u64,
    #[pyo3(get, set)]
    pub nr: u64,
    #[pyo3(get, set)]
    pub alive: bool,
    #[pyo3(get, set)]
    pub booted: bool,
    #[pyo3(get, set)]
    pub aborted: bool,
    #[pyo3(get)]
    pub max_requests: u64,
    /// `cfg.timeout / 2`, as gunicorn hands its workers.
    #[pyo3(get)]
    pub timeout: f64,
    #[pyo3(get)]
    pub cfg: Py<PyCfg>,
    #[pyo3(get)]
    pub log: Py<PyLogger>,
    #[pyo3(get, set)]
    pub app: Py<PyAny>,
}

#[pymethods]
impl PyWorker {
    fn __str__(&self, py: Python<'_>) -> String {
        format!("<Worker {}>", self.pid.bind(py))
    }
    fn __repr__(&self, py: Python<'_>) -> String {
        self.__str__(py)
    }
}

/// Call hook `name` of the configuration with `args`.
pub fn call<'py>(
    py: Python<'py>,
    cfg: &Config,
    name: &str,
    args: impl IntoPyObject<'py, Target = PyTuple>,
) -> PyResult<()> {
    let hook = cfg.hook(py, name);
    let args: Bound<'py, PyTuple> = args.into_pyobject(py).map_err(Into::into)?.into_bound();
    let result = hook.call1(args);
    // The hook may have changed Python's log handlers.
    crate::pylog::refresh(py);
    result?;
    Ok(())
}

/// Log a hook's exception with its traceback (hooks whose errors gunicorn
/// logs and ignores, such as `worker_exit`).
pub fn log_exception(py: Python<'_>, msg: &str, err: &PyErr) {
    log_exception_at(py, Level::Error, msg, err)
}

/// [`log_exception`] at another level (`worker_exit`'s is a warning).
pub fn log_exception_at(py: Python<'_>, level: Level, msg: &str, err: &PyErr) {
    log::exception(
        level,
        &format!(
            "{msg}\n{}",
            pyconf::config::format_traceback(py, err).trim_end()
        ),
    );
}
