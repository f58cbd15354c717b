//! `log.increment()` and the other statsd methods of gunicorn's `Statsd`
//! logger, which gunicorn uses as the logger whenever `statsd_host` is
//! set: configs call them from hooks (`worker.log.increment("busy", 1)` in
//! `pre_request`). Without `statsd_host` gunicorn's logger has no such
//! methods, so here too they are not there (`AttributeError`,
//! `hasattr()` false). Lines are gunicorn's, byte for byte, with the same
//! prefix and dogstatsd tags as rgunicorn's own metrics; each process
//! connects its own socket on first use.

use std::sync::{Arc, Mutex};

use pyo3::exceptions::{PyAttributeError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::observe::metrics::Statsd;
use crate::settings::Statsd as StatsdSettings;

/// The statsd side of one `log` object.
pub(super) struct StatsdLog {
    settings: Option<StatsdSettings>,
    /// This process's socket, connected on first use: (pid, socket).
    /// `None` inside when connecting failed (gunicorn then sends
    /// nothing); a socket made before a fork is the parent's, so a child
    /// connects its own.
    sock: Mutex<Option<(u32, Option<Statsd>)>>,
}

impl StatsdLog {
    pub(super) fn new(settings: Option<StatsdSettings>) -> StatsdLog {
        StatsdLog {
            settings,
            sock: Mutex::new(None),
        }
    }

    /// Send one metric of `kind` on this process's socket, in gunicorn's
    /// line format (`rate`: `increment` and `decrement`'s sampling rate).
    fn send(&self, kind: Kind, name: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>, rate: &str) {
        let Some(settings) = &self.settings else {
            return;
        };
        let (Ok(name), Ok(value)) = (name.str(), value.str()) else {
            return;
        };
        let pid = std::process::id();
        let mut sock = self.sock.lock().unwrap_or_else(|e| e.into_inner());
        if !matches!(&*sock, Some((p, _)) if *p == pid) {
            *sock = Some((pid, Statsd::connect(settings)));
        }
        let Some((_, Some(statsd))) = &*sock else {
            return;
        };
        let value = value.to_string_lossy();
        let line = match kind {
            Kind::Gauge => statsd.line(&name.to_string_lossy(), value, "g"),
            Kind::Increment => statsd.line(&name.to_string_lossy(), value, &format!("c|@{rate}")),
            Kind::Decrement => statsd.line(
                &name.to_string_lossy(),
                format!("-{value}"),
                &format!("c|@{rate}"),
            ),
            Kind::Timer => statsd.line(&name.to_string_lossy(), value, "ms"),
            Kind::Histogram => statsd.line(&name.to_string_lossy(), value, "h"),
        };
        statsd.send(&[line]);
    }

    /// `log.<name>` when it is one of gunicorn's statsd methods and
    /// statsd is on.
    pub(super) fn method(self: &Arc<Self>, py: Python<'_>, name: &str) -> PyResult<Py<PyAny>> {
        let kind = match name {
            "gauge" => Kind::Gauge,
            "increment" => Kind::Increment,
            "decrement" => Kind::Decrement,
            "timer" => Kind::Timer,
            "histogram" => Kind::Histogram,
            _ => return Err(no_attribute(name)),
        };
        if self.settings.is_none() {
            return Err(no_attribute(name));
        }
        let log = self.clone();
        Ok(Py::new(py, StatsdMethod { log, kind })?.into_any())
    }

    /// gunicorn's `Statsd.log()` for `info`, `debug` and `log`: an
    /// `extra={"metric": ..., "value": ..., "mtype": ...}` sends that
    /// metric. Returns whether the message is to be logged (only when it
    /// is not empty, with statsd on).
    pub(super) fn log_extra(
        &self,
        msg: &Bound<'_, PyAny>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<bool> {
        if self.settings.is_none() {
            return Ok(true);
        }
        let extra = match kwargs.map(|k| k.get_item("extra")).transpose()?.flatten() {
            Some(extra) if !extra.is_none() => Some(extra),
            _ => None,
        };
        if let Some(extra) = extra {
            let get = |key: &str| -> PyResult<Option<Bound<'_, PyAny>>> {
                let v = extra.call_method1("get", (key,))?;
                Ok((!v.is_none()).then_some(v))
            };
            if let (Some(metric), Some(value), Some(mtype)) =
                (get("metric")?, get("value")?, get("mtype")?)
            {
                if metric.is_truthy()? && mtype.is_truthy()? {
                    let kind = match mtype.extract::<String>().as_deref() {
                        Ok("gauge") => Some(Kind::Gauge),
                        Ok("counter") => Some(Kind::Increment),
                        Ok("histogram") => Some(Kind::Histogram),
                        Ok("timer") => Some(Kind::Timer),
                        _ => None,
                    };
                    if let Some(kind) = kind {
                        self.send(kind, &metric, &value, "1.0");
                    }
                }
            }
        }
        msg.is_truthy()
    }
}

fn no_attribute(name: &str) -> PyErr {
    PyAttributeError::new_err(format!("'Logger' object has no attribute '{name}'"))
}

#[derive(Clone, Copy)]
enum Kind {
    Gauge,
    Increment,
    Decrement,
    Timer,
    Histogram,
}

/// `log.increment` and the others, bound to their logger.
#[pyclass(module = "rgunicorn", name = "StatsdMethod")]
struct StatsdMethod {
    log: Arc<StatsdLog>,
    kind: Kind,
}

#[pymethods]
impl StatsdMethod {
    /// `(name, value)`; `increment` and `decrement` also take
    /// `sampling_rate` (default 1.0), as gunicorn's.
    #[pyo3(signature = (name, value, sampling_rate=None))]
    fn __call__(
        &self,
        name: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
        sampling_rate: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let rate = match (self.kind, sampling_rate) {
            (Kind::Increment | Kind::Decrement, Some(r)) => r.str()?.to_string_lossy().into_owned(),
            (Kind::Increment | Kind::Decrement, None) => "1.0".to_string(),
            (_, None) => String::new(),
            (_, Some(_)) => {
                return Err(PyTypeError::new_err(
                    "takes 2 positional arguments but 3 were given",
                ))
            }
        };
        self.log.send(self.kind, name, value, &rate);
        Ok(())
    }
}
