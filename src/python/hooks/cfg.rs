//! `server.cfg` / `worker.cfg`: gunicorn's `Config` as hooks use it. Every
//! setting is an attribute and an entry of `cfg.settings` (name ->
//! [`PySetting`], with `.value`, `.get()`, `.set()`, `.section`, `.cli`,
//! `.default`, ...); gunicorn's computed properties (`worker_class`,
//! `worker_class_str`, `address`, `uid`, `gid`, `proc_name`, `is_ssl`,
//! `ssl_options`, `env`, `sendfile`, `reuse_port`, `paste_global_conf`,
//! `logger_class`) are computed from them when read. As in gunicorn,
//! assigning a setting's name raises `AttributeError("Invalid access!")`
//! and any other attribute is stored on the object. The view is a copy:
//! `cfg.set()` changes the view, not the running server.

use pyo3::exceptions::{PyAttributeError, PyModuleNotFoundError, PyRuntimeError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};

use pyconf::validate::{parse_address, Address};
use pyconf::{Config, SETTINGS};

/// One entry of `cfg.settings` (gunicorn's `Setting`): the static facts
/// come from the settings table, `value` is this view's.
#[pyclass(module = "rgunicorn", name = "Setting")]
pub struct PySetting {
    index: usize,
    #[pyo3(get, set)]
    value: Py<PyAny>,
}

#[pymethods]
impl PySetting {
    #[getter]
    fn name(&self) -> &'static str {
        SETTINGS[self.index].name
    }

    #[getter]
    fn section(&self) -> &'static str {
        SETTINGS[self.index].section
    }

    /// The command-line flags, None for a setting of the config file only.
    #[getter]
    fn cli(&self) -> Option<Vec<&'static str>> {
        let flags = SETTINGS[self.index].flags;
        (!flags.is_empty()).then(|| flags.to_vec())
    }

    #[getter]
    fn meta(&self) -> Option<&'static str> {
        SETTINGS[self.index].meta
    }

    #[getter]
    fn short(&self) -> &'static str {
        SETTINGS[self.index].short
    }

    /// The position in the settings table (gunicorn's order).
    #[getter]
    fn order(&self) -> usize {
        self.index
    }

    /// The default before validation, as gunicorn's class attribute.
    #[getter]
    fn default(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(pyconf::config::default_object(py, self.index)?
            .map(Bound::unbind)
            .unwrap_or_else(|| py.None()))
    }

    fn get(&self, py: Python<'_>) -> Py<PyAny> {
        self.value.clone_ref(py)
    }

    /// Validate and store, as gunicorn's `Setting.set` (this view only).
    fn set(&mut self, py: Python<'_>, val: &Bound<'_, PyAny>) -> PyResult<()> {
        let v = pyconf::validate::validate(py, SETTINGS[self.index].validator, val)
            .map_err(pyconf::validate::to_pyerr)?;
        self.value = v.unbind();
        Ok(())
    }

    /// gunicorn sorts settings by section, then order.
    fn __lt__(&self, other: PyRef<'_, Self>) -> bool {
        SETTINGS[self.index].section == SETTINGS[other.index].section && self.index < other.index
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "<rgunicorn.Setting {} with value {}>",
            self.name(),
            self.value.bind(py).repr()?
        ))
    }
}

/// The `cfg` object of the hooks.
#[pyclass(module = "rgunicorn", name = "Config", dict)]
pub struct PyCfg {
    /// name -> [`PySetting`], every setting of the table.
    settings: Py<PyDict>,
}

/// What gunicorn maps `sync` to when `threads` > 1.
const GTHREAD: &str = "gunicorn.workers.gthread.ThreadWorker";
const DEFAULT_LOGGER: &str = "gunicorn.glogging.Logger";

impl PyCfg {
    pub fn new(py: Python<'_>, cfg: &Config) -> PyResult<Py<PyCfg>> {
        let settings = PyDict::new(py);
        for (index, s) in SETTINGS.iter().enumerate() {
            let value = cfg.get(py, s.name).unbind();
            settings.set_item(s.name, Py::new(py, PySetting { index, value })?)?;
        }
        Py::new(
            py,
            PyCfg {
                settings: settings.unbind(),
            },
        )
    }

    /// `self.settings[name].get()`, as gunicorn's `__getattr__`.
    fn value<'py>(&self, py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyAny>> {
        match self.settings.bind(py).get_item(name)? {
            Some(setting) => setting.call_method0("get"),
            None => Err(PyAttributeError::new_err(format!(
                "No configuration setting for: {name}"
            ))),
        }
    }

    /// `worker_class` is `sync` (by name or class path) and `threads` > 1:
    /// gunicorn serves it with gthread.
    fn threaded_sync(&self, py: Python<'_>, uri: &Bound<'_, PyAny>) -> PyResult<bool> {
        let Ok(uri) = uri.extract::<String>() else {
            return Ok(false);
        };
        let threads: i64 = self.value(py, "threads")?.extract().unwrap_or(1);
        Ok((uri.ends_with("SyncWorker") || uri == "sync") && threads > 1)
    }
}

/// `object.__setattr__(obj, name, value)` (`None`: `__delattr__`): the
/// instance dict and the class's descriptors. Called at the C level:
/// Python refuses `object.__setattr__` on a class that overrides it.
fn generic_setattr(
    obj: &Bound<'_, PyAny>,
    name: &str,
    value: Option<&Bound<'_, PyAny>>,
) -> PyResult<()> {
    let py = obj.py();
    let name = PyString::new(py, name);
    let value = value.map_or(std::ptr::null_mut(), |v| v.as_ptr());
    // SAFETY: obj and name are live objects borrowed for the call; value is
    // one too, or NULL, which the C API defines as deletion.
    let rc = unsafe { pyo3::ffi::PyObject_GenericSetAttr(obj.as_ptr(), name.as_ptr(), value) };
    if rc < 0 {
        return Err(PyErr::fetch(py));
    }
    Ok(())
}

/// `gunicorn.util`, or None when gunicorn is not installed (rgunicorn does
/// not need it).
fn gunicorn_util(py: Python<'_>) -> PyResult<Option<Bound<'_, PyModule>>> {
    match py.import("gunicorn.util") {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.is_instance_of::<PyModuleNotFoundError>(py) => {
            let name: Option<String> = e.value(py).getattr("name")?.extract()?;
            if name.as_deref() == Some("gunicorn") {
                Ok(None)
            } else {
                Err(e)
            }
        }
        Err(e) => Err(e),
    }
}

fn is_class(py: Python<'_>, obj: &Bound<'_, PyAny>) -> PyResult<bool> {
    py.import("inspect")?
        .call_method1("isclass", (obj,))?
        .is_truthy()
}

/// gunicorn's error for a `KEY=VALUE` entry (`raw_env`,
/// `raw_paste_global_conf`) without its `=`.
fn invalid_entry(py: Python<'_>, entry: &str) -> PyErr {
    let shown = PyString::new(py, entry)
        .repr()
        .map(|r| r.to_string())
        .unwrap_or_else(|_| entry.to_string());
    PyRuntimeError::new_err(format!("environment setting {shown} invalid"))
}

#[pymethods]
impl PyCfg {
    #[getter]
    fn settings(&self, py: Python<'_>) -> Py<PyDict> {
        self.settings.clone_ref(py)
    }

    /// A setting's value (properties come first, as in gunicorn).
    fn __getattr__<'py>(&self, py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyAny>> {
        self.value(py, name)
    }

    /// gunicorn's `Config.__setattr__`: a setting's name is refused,
    /// anything else is stored as `object.__setattr__` would.
    fn __setattr__(slf: &Bound<'_, Self>, name: &str, value: Bound<'_, PyAny>) -> PyResult<()> {
        if name != "settings" && slf.borrow().settings.bind(slf.py()).contains(name)? {
            return Err(PyAttributeError::new_err("Invalid access!"));
        }
        generic_setattr(slf.as_any(), name, Some(&value))
    }

    fn __delattr__(slf: &Bound<'_, Self>, name: &str) -> PyResult<()> {
        generic_setattr(slf.as_any(), name, None)
    }

    /// `cfg.set(name, value)` is accepted for compatibility but changes
    /// only this view (rgunicorn's settings are fixed until the next HUP).
    fn set(&self, py: Python<'_>, name: &str, value: Bound<'_, PyAny>) -> PyResult<()> {
        match self.settings.bind(py).get_item(name)? {
            Some(setting) => {
                setting.call_method1("set", (value,))?;
                Ok(())
            }
            None => Err(PyAttributeError::new_err(format!(
                "No configuration setting for: {name}"
            ))),
        }
    }

    #[getter]
    fn worker_class_str(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let uri = self.value(py, "worker_class")?;
        if uri.is_instance_of::<PyString>() {
            if self.threaded_sync(py, &uri)? {
                return Ok(PyString::new(py, "gthread").into_any().unbind());
            }
            return Ok(uri.unbind());
        }
        Ok(uri.getattr("__name__")?.unbind())
    }

    /// The worker class as gunicorn loads it (`util.load_class`, `sync`
    /// with threads > 1 as gthread) when gunicorn is installed; without
    /// it, the name `worker_class_str` gives. gunicorn also calls the
    /// class's `setup()` here (only its tornado worker has one); rgunicorn
    /// does not: its workers are not that class.
    #[getter]
    fn worker_class(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let mut uri = self.value(py, "worker_class")?;
        if self.threaded_sync(py, &uri)? {
            uri = PyString::new(py, GTHREAD).into_any();
        }
        match gunicorn_util(py)? {
            Some(util) => Ok(util.call_method1("load_class", (uri,))?.unbind()),
            None if is_class(py, &uri)? => Ok(uri.unbind()),
            None => self.worker_class_str(py),
        }
    }

    /// As `worker_class`: gunicorn's `logger_class` property when gunicorn
    /// is installed (without the class's `install()`), else the name. A
    /// class other than gunicorn's own is what rgunicorn's logging uses
    /// (`crate::python::logging::install_logger_class`).
    #[getter]
    fn logger_class(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let mut uri = self.value(py, "logger_class")?;
        if uri.extract::<String>().is_ok_and(|u| u == "simple") {
            uri = PyString::new(py, DEFAULT_LOGGER).into_any();
        }
        if uri.extract::<String>().is_ok_and(|u| u == DEFAULT_LOGGER)
            && !self.value(py, "statsd_host")?.is_none()
        {
            uri = PyString::new(py, "gunicorn.instrument.statsd.Statsd").into_any();
        }
        match gunicorn_util(py)? {
            Some(util) => {
                let kwargs = PyDict::new(py);
                kwargs.set_item("default", DEFAULT_LOGGER)?;
                kwargs.set_item("section", "gunicorn.loggers")?;
                Ok(util
                    .call_method("load_class", (uri,), Some(&kwargs))?
                    .unbind())
            }
            None => Ok(uri.unbind()),
        }
    }

    /// `bind` parsed: `(host, port)` tuples, unix paths, fd numbers.
    #[getter]
    fn address(&self, py: Python<'_>) -> PyResult<Py<PyList>> {
        let binds: Vec<String> = self.value(py, "bind")?.extract()?;
        let out = PyList::empty(py);
        for bind in binds {
            match parse_address(&bind, "8000").map_err(|e| PyRuntimeError::new_err(e.0))? {
                Address::Tcp(host, port) => out.append(PyTuple::new(
                    py,
                    [
                        host.into_pyobject(py)?.into_any(),
                        port.into_pyobject(py)?.into_any(),
                    ],
                )?)?,
                Address::Unix(path) => out.append(path)?,
                Address::Fd(fd) => out.append(fd)?,
            }
        }
        Ok(out.unbind())
    }

    #[getter]
    fn uid<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.value(py, "user")
    }

    #[getter]
    fn gid<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.value(py, "group")
    }

    #[getter]
    fn proc_name<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let pn = self.value(py, "proc_name")?;
        if !pn.is_none() {
            return Ok(pn);
        }
        self.value(py, "default_proc_name")
    }

    /// `certfile or keyfile`, as gunicorn (a path, not a bool).
    #[getter]
    fn is_ssl<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let certfile = self.value(py, "certfile")?;
        if certfile.is_truthy()? {
            return Ok(certfile);
        }
        self.value(py, "keyfile")
    }

    /// Every setting of the SSL section by name.
    #[getter]
    fn ssl_options(&self, py: Python<'_>) -> PyResult<Py<PyDict>> {
        let opts = PyDict::new(py);
        for s in SETTINGS.iter().filter(|s| s.section == "SSL") {
            opts.set_item(s.name, self.value(py, s.name)?)?;
        }
        Ok(opts.unbind())
    }

    /// `raw_env` as a dict.
    #[getter]
    fn env(&self, py: Python<'_>) -> PyResult<Py<PyDict>> {
        let env = PyDict::new(py);
        let raw = self.value(py, "raw_env")?;
        if raw.is_truthy()? {
            for entry in raw.extract::<Vec<String>>()? {
                let (k, v) = entry
                    .split_once('=')
                    .ok_or_else(|| invalid_entry(py, &entry))?;
                env.set_item(k, v)?;
            }
        }
        Ok(env.unbind())
    }

    /// gunicorn 27's property, as written: False once `sendfile` is set
    /// (to anything), else `SENDFILE` from the environment, else True.
    #[getter]
    fn sendfile(&self, py: Python<'_>) -> PyResult<bool> {
        if !self.value(py, "sendfile")?.is_none() {
            return Ok(false);
        }
        Ok(match std::env::var("SENDFILE") {
            Ok(v) => matches!(v.to_lowercase().as_str(), "y" | "1" | "yes" | "true"),
            Err(_) => true,
        })
    }

    #[getter]
    fn reuse_port<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.value(py, "reuse_port")
    }

    /// `raw_paste_global_conf` as a dict (split at the first `=` not
    /// escaped as `\=`), None when unset.
    #[getter]
    fn paste_global_conf(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let raw = self.value(py, "raw_paste_global_conf")?;
        if raw.is_none() {
            return Ok(py.None());
        }
        let conf = PyDict::new(py);
        for entry in raw.extract::<Vec<String>>()? {
            let at = entry
                .char_indices()
                .find(|&(i, c)| c == '=' && !entry[..i].ends_with('\\'))
                .map(|(i, _)| i)
                .ok_or_else(|| invalid_entry(py, &entry))?;
            let unescape = |s: &str| s.replace("\\=", "=");
            conf.set_item(unescape(&entry[..at]), unescape(&entry[at + 1..]))?;
        }
        Ok(conf.into_any().unbind())
    }

    /// gunicorn's `str(cfg)`: `name = value` sorted by name, callables as
    /// `<qualname()>`.
    fn __str__(&self, py: Python<'_>) -> PyResult<String> {
        let settings = self.settings.bind(py);
        let mut names: Vec<String> = settings.keys().extract()?;
        names.sort();
        let width = names.iter().map(String::len).max().unwrap_or(0);
        let mut lines = Vec::with_capacity(names.len());
        for name in names {
            let v = self.value(py, &name)?;
            let shown = if v.is_callable() {
                format!("<{}()>", v.getattr("__qualname__")?)
            } else {
                v.str()?.to_string()
            };
            lines.push(format!("{name:width$} = {shown}"));
        }
        Ok(lines.join("\n"))
    }

    fn __repr__(&self) -> String {
        "<rgunicorn.Config>".into()
    }
}
