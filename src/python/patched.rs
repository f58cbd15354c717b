//! Parts of gunicorn that a config or an app replaced (monkey-patched) to
//! change what gunicorn does, which rgunicorn's Rust master and workers
//! never call. Real configs replace `gunicorn.http.wsgi.Response` to add
//! security headers to every response; serving without them would be
//! serving something wrong, so the start fails, naming the replacement.
//! A replaced `Arbiter` (metrics exporters do it) or `gunicorn.SERVER`
//! changes nothing that is served: a warning names it.
//!
//! Only modules already imported are looked at: a module nobody imported
//! was not patched, and gunicorn need not be installed.

use pyo3::prelude::*;
use pyo3::types::PyDict;

/// One of gunicorn's objects, and what took its place.
#[derive(Debug, PartialEq, Eq)]
pub struct Replaced {
    /// `gunicorn.http.wsgi.Response`, or one of its methods.
    pub what: String,
    /// `module.QualName` of the replacement.
    pub by: String,
}

impl Replaced {
    /// Why rgunicorn refuses to serve with this response writer.
    pub fn refusal(&self) -> String {
        format!(
            "{} was replaced by {}: rgunicorn writes responses in Rust and never calls it, so \
             what it adds or changes (headers, say) would be missing from every response; do \
             that in the app (a middleware) instead, or serve this app with gunicorn",
            self.what, self.by
        )
    }
}

/// `module.QualName` of a class or function, as far as it says.
fn origin(obj: &Bound<'_, PyAny>) -> (String, String) {
    let attr = |name: &str| {
        obj.getattr(name)
            .ok()
            .and_then(|v| v.extract::<String>().ok())
            .unwrap_or_default()
    };
    (attr("__module__"), attr("__qualname__"))
}

/// `sys.modules[name]`, if imported.
fn imported<'py>(py: Python<'py>, name: &str) -> Option<Bound<'py, PyAny>> {
    let modules = py.import("sys").ok()?.getattr("modules").ok()?;
    let modules = modules.cast_into::<PyDict>().ok()?;
    modules.get_item(name).ok().flatten()
}

/// `module.attr` when it is a class defined elsewhere than `module`.
fn replaced_class(py: Python<'_>, module: &str, attr: &str) -> Option<Replaced> {
    let class = imported(py, module)?.getattr(attr).ok()?;
    let (by_module, by_name) = origin(&class);
    (by_module != module || by_name != attr).then(|| Replaced {
        what: format!("{module}.{attr}"),
        by: format!("{by_module}.{by_name}"),
    })
}

/// gunicorn's response writer, `gunicorn.http.wsgi.Response`, or one of
/// its methods (`default_headers`, ...), replaced.
pub fn response_writer(py: Python<'_>) -> Option<Replaced> {
    const MODULE: &str = "gunicorn.http.wsgi";
    if let Some(r) = replaced_class(py, MODULE, "Response") {
        return Some(r);
    }
    let class = imported(py, MODULE)?.getattr("Response").ok()?;
    let members = class.getattr("__dict__").ok()?;
    for item in members.call_method0("items").ok()?.try_iter().ok()? {
        let Ok((name, value)) = item.and_then(|i| i.extract::<(String, Bound<'_, PyAny>)>()) else {
            continue;
        };
        if !value.is_callable() {
            continue;
        }
        let (by_module, by_name) = origin(&value);
        if by_module != MODULE {
            return Some(Replaced {
                what: format!("{MODULE}.Response.{name}"),
                by: format!("{by_module}.{by_name}"),
            });
        }
    }
    None
}

/// In the master, once the config is read: the start's verdict. A
/// replaced response writer is an error; a replaced Arbiter or
/// `gunicorn.SERVER` is a warning.
pub fn check_config(py: Python<'_>) -> Result<(), String> {
    if let Some(r) = response_writer(py) {
        return Err(r.refusal());
    }
    for module in ["gunicorn.arbiter", "gunicorn.app.base"] {
        if let Some(r) = replaced_class(py, module, "Arbiter") {
            crate::log::warning(&format!(
                "{} was replaced by {}: rgunicorn's master is Rust and never runs it; what it \
                 overrides (signal handlers, metrics) has no effect",
                r.what, r.by
            ));
        }
    }
    if let Some(server) = imported(py, "gunicorn")
        .and_then(|g| g.getattr("SERVER").ok())
        .and_then(|s| s.extract::<String>().ok())
        .filter(|s| s != "gunicorn")
    {
        crate::log::warning(&format!(
            "gunicorn.SERVER = {server:?} has no effect: rgunicorn's responses carry no Server \
             header"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake `gunicorn.http.wsgi` in `sys.modules`, patched by `patch`.
    fn with_fake_module(patch: &str) -> Option<Replaced> {
        pyo3::Python::initialize();
        Python::attach(|py| {
            let code = format!(
                "import sys, types\n\
                 m = types.ModuleType('gunicorn.http.wsgi')\n\
                 exec('class Response:\\n    def default_headers(self): return []\\n', m.__dict__)\n\
                 sys.modules['gunicorn.http.wsgi'] = m\n\
                 {patch}\n"
            );
            let code = std::ffi::CString::new(code).unwrap();
            py.run(&code, None, None).unwrap();
            let found = response_writer(py);
            py.run(
                c"import sys\ndel sys.modules['gunicorn.http.wsgi']\n",
                None,
                None,
            )
            .unwrap();
            found
        })
    }

    #[test]
    fn a_replaced_response_class_or_method_is_named() {
        assert_eq!(with_fake_module(""), None);
        let class = with_fake_module(
            "class Response(m.Response):\n    pass\nResponse.__module__ = 'site_conf'\nm.Response = Response",
        )
        .unwrap();
        assert_eq!(class.what, "gunicorn.http.wsgi.Response");
        assert_eq!(class.by, "site_conf.Response");
        let method = with_fake_module(
            "def extra(self): return []\nextra.__module__ = 'app.wsgi'\nm.Response.default_headers = extra",
        )
        .unwrap();
        assert_eq!(method.what, "gunicorn.http.wsgi.Response.default_headers");
        assert_eq!(method.by, "app.wsgi.extra");
        assert!(method.refusal().contains("never calls it"));
    }
}
