//! A resolved configuration: one validated Python object per setting of
//! the table, and the loading procedure that produces it the way gunicorn's
//! `Application.load_config` does (defaults < config file <
//! `GUNICORN_CMD_ARGS` < command line).

use std::path::Path;

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyList, PyString};

use crate::cli::{self, CliError, CliValue, ParsedArgs};
use crate::computed::Computed;
use crate::table::{index_of, CliType, DefaultValue, Origin, Support, Validator, SETTINGS};
use crate::validate::{self, py_str, Invalid};

/// Everything that stops loading, with what gunicorn prints and its exit code.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Cli(#[from] CliError),
    /// "Error: ..." and exit 1 (bad CLI/env value, missing file, no app).
    #[error("\nError: {0}\n")]
    Fatal(String),
    /// The config file raised (syntax error included): its traceback.
    #[error("Failed to read config file: {path}\n{traceback}")]
    ConfigFile { path: String, traceback: String },
    /// A module-level name of the config file failed its validator.
    #[error("Invalid value for {name}: {value}\n\n\nError: {message}\n")]
    FileValue {
        name: String,
        value: String,
        message: String,
    },
}

impl LoadError {
    pub fn exit_code(&self) -> u8 {
        match self {
            LoadError::Cli(CliError::Help(_)) | LoadError::Cli(CliError::Version) => 0,
            LoadError::Cli(CliError::Usage { .. }) => 2,
            _ => 1,
        }
    }
}

/// The settings, each a validated Python object, in [`SETTINGS`] order.
pub struct Config {
    values: Vec<Py<PyAny>>,
    /// APP_MODULE (first positional, else `wsgi_app`).
    pub app_uri: Option<String>,
    /// The config file that was executed, if any.
    pub config_file: Option<String>,
}

/// The text of a Python exception with its traceback, as `traceback.print_exc()` shows it.
pub fn format_traceback(py: Python<'_>, err: &PyErr) -> String {
    py.import("traceback")
        .and_then(|tb| {
            tb.call_method1(
                "format_exception",
                (err.get_type(py), err.value(py), err.traceback(py)),
            )
        })
        .and_then(|lines| lines.extract::<Vec<String>>())
        .map(|lines| lines.concat())
        .unwrap_or_else(|_| format!("{err}\n"))
}

fn computed_to_py<'py>(py: Python<'py>, c: Computed) -> PyResult<Bound<'py, PyAny>> {
    Ok(match c {
        Computed::Int(i) => i.into_pyobject(py)?.into_any(),
        Computed::Str(s) => PyString::new(py, &s).into_any(),
        Computed::StrList(l) => PyList::new(py, l)?.into_any(),
    })
}

/// A no-op hook with gunicorn's qualified name, so `--print-config` shows
/// `<OnStarting.on_starting()>` as gunicorn does.
fn default_hook<'py>(
    py: Python<'py>,
    name: &str,
    class: &str,
    params: &str,
    body: &str,
) -> PyResult<Bound<'py, PyAny>> {
    let src = format!("def {name}({params}):\n    {body}\n");
    let ns = PyDict::new(py);
    py.run(&std::ffi::CString::new(src)?, Some(&ns), None)?;
    let func = ns.get_item(name)?.expect("hook defined");
    func.setattr("__qualname__", format!("{class}.{name}"))?;
    func.setattr("__module__", "rgunicorn.config")?;
    Ok(func)
}

/// A setting's default as a Python object (before validation, as
/// gunicorn's `Setting.default`), or None when gunicorn leaves it
/// unvalidated.
pub fn default_object<'py>(py: Python<'py>, i: usize) -> PyResult<Option<Bound<'py, PyAny>>> {
    let s = &SETTINGS[i];
    Ok(Some(match s.default {
        DefaultValue::None => return Ok(None),
        DefaultValue::Bool(b) => PyBool::new(py, b).to_owned().into_any(),
        DefaultValue::Int(n) => n.into_pyobject(py)?.into_any(),
        DefaultValue::Str(v) => PyString::new(py, v).into_any(),
        DefaultValue::StrList(l) => PyList::new(py, l)?.into_any(),
        DefaultValue::PyExpr(e) => py.eval(&std::ffi::CString::new(e)?, None, None)?,
        DefaultValue::Computed(f) => computed_to_py(py, f())?,
        DefaultValue::Hook {
            class,
            params,
            body,
        } => default_hook(py, s.name, class, params, body)?,
    }))
}

impl Config {
    /// Every setting at its default (gunicorn's `Config()`).
    pub fn defaults(py: Python<'_>) -> Result<Config, LoadError> {
        let mut values = Vec::with_capacity(SETTINGS.len());
        for (i, s) in SETTINGS.iter().enumerate() {
            let obj = default_object(py, i)
                .map_err(|e| LoadError::Fatal(format!("default of {}: {e}", s.name)))?;
            let value = match obj {
                None => py.None(),
                Some(obj) => validate::validate(py, s.validator, &obj)
                    .map_err(|e| LoadError::Fatal(format!("{e}")))?
                    .unbind(),
            };
            values.push(value);
        }
        Ok(Config {
            values,
            app_uri: None,
            config_file: None,
        })
    }

    /// `cfg.set(name, value)`: validate and store.
    pub fn set(
        &mut self,
        py: Python<'_>,
        name: &str,
        value: &Bound<'_, PyAny>,
    ) -> Result<(), Invalid> {
        let i = index_of(name)
            .ok_or_else(|| Invalid(format!("No configuration setting for: {name}")))?;
        self.values[i] = validate::validate(py, SETTINGS[i].validator, value)?.unbind();
        Ok(())
    }

    /// The validated object of a setting.
    pub fn get<'py>(&self, py: Python<'py>, name: &str) -> Bound<'py, PyAny> {
        let i = index_of(name).unwrap_or_else(|| panic!("unknown setting {name}"));
        self.values[i].bind(py).clone()
    }

    pub fn int(&self, py: Python<'_>, name: &str) -> i64 {
        self.get(py, name).extract().unwrap_or(0)
    }

    pub fn bool(&self, py: Python<'_>, name: &str) -> bool {
        self.get(py, name).is_truthy().unwrap_or(false)
    }

    /// A string setting; None when unset.
    pub fn string(&self, py: Python<'_>, name: &str) -> Option<String> {
        let v = self.get(py, name);
        (!v.is_none()).then(|| py_str(&v))
    }

    pub fn list(&self, py: Python<'_>, name: &str) -> Vec<String> {
        self.get(py, name).extract().unwrap_or_default()
    }

    /// A hook callable (always set: a no-op by default).
    pub fn hook<'py>(&self, py: Python<'py>, name: &str) -> Bound<'py, PyAny> {
        debug_assert!(SETTINGS[index_of(name).unwrap()].is_hook());
        self.get(py, name)
    }

    /// The hook `name` is set by the configuration (not the default no-op).
    pub fn hook_is_set(&self, py: Python<'_>, name: &str) -> bool {
        !is_default_hook(&self.hook(py, name))
    }

    /// How many positional parameters a hook takes (`post_request`: 2, 3 or 4).
    pub fn hook_arity(&self, py: Python<'_>, name: &str) -> usize {
        validate::arity(py, &self.hook(py, name)).unwrap_or(0)
    }

    /// `str(cfg)`: every setting sorted by name, `name = value`, names
    /// padded to one column, callables as `<qualname()>`. `only_gunicorn`
    /// leaves out rgunicorn's own settings.
    pub fn print_config(&self, py: Python<'_>, only_gunicorn: bool) -> String {
        let mut order: Vec<usize> = (0..SETTINGS.len())
            .filter(|&i| !only_gunicorn || SETTINGS[i].origin == Origin::Gunicorn)
            .collect();
        order.sort_by_key(|&i| SETTINGS[i].name);
        let width = order
            .iter()
            .map(|&i| SETTINGS[i].name.len())
            .max()
            .unwrap_or(0);
        let mut lines = Vec::with_capacity(order.len());
        for i in order {
            let s = &SETTINGS[i];
            let v = self.values[i].bind(py);
            let shown = if v.is_callable() {
                if s.validator == Validator::PostRequest && validate::arity(py, v).unwrap_or(4) != 4
                {
                    // gunicorn wraps 2- and 3-parameter post_request hooks in a lambda.
                    "<validate_post_request.<locals>.<lambda>()>".to_string()
                } else {
                    let qualname = v
                        .getattr("__qualname__")
                        .map(|q| py_str(&q))
                        .unwrap_or_default();
                    format!("<{qualname}()>")
                }
            } else {
                py_str(v)
            };
            lines.push(format!("{:width$} = {}", s.name, shown));
        }
        lines.join("\n")
    }

    /// Settings set to a non-default value that rgunicorn does not act on
    /// (yet): each is named in a warning at start.
    pub fn unsupported_in_use(&self, py: Python<'_>) -> Vec<(&'static str, Option<&'static str>)> {
        let Ok(defaults) = Config::defaults(py) else {
            return Vec::new();
        };
        SETTINGS
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let reason = match s.support {
                    Support::Done => return None,
                    Support::Later => None,
                    Support::Never(why) => Some(why),
                };
                let current = self.values[i].bind(py);
                let default = defaults.values[i].bind(py);
                let same = if s.is_hook() {
                    is_default_hook(current)
                } else {
                    current.eq(default).unwrap_or(false)
                };
                (!same).then_some((s.name, reason))
            })
            .collect()
    }

    /// `cfg.env`: `raw_env` as (key, value) pairs; an entry without `=` is an error.
    pub fn env(&self, py: Python<'_>) -> Result<Vec<(String, String)>, String> {
        self.list(py, "raw_env")
            .into_iter()
            .map(|e| match e.split_once('=') {
                Some((k, v)) => Ok((k.to_string(), v.to_string())),
                None => Err(format!("environment setting '{e}' invalid")),
            })
            .collect()
    }

    fn apply_cli(
        &mut self,
        py: Python<'_>,
        prog: &str,
        parsed: &ParsedArgs,
    ) -> Result<(), LoadError> {
        for (i, value) in &parsed.values {
            let s = &SETTINGS[*i];
            let obj = cli_value_to_py(py, prog, s.flags, value)?;
            self.values[*i] = validate::validate(py, s.validator, &obj)
                .map_err(|e| LoadError::Fatal(e.0))?
                .unbind();
        }
        Ok(())
    }

    /// Run a config file (`PATH`, `file:PATH`) or module (`python:MOD`) and
    /// apply every module-level name that is a setting.
    fn load_file(&mut self, py: Python<'_>, location: &str) -> Result<(), LoadError> {
        let namespace = if let Some(module) = location.strip_prefix("python:") {
            py.import(module)
                .map(|m| m.dict())
                .map_err(|e| LoadError::Fatal(py_str(e.value(py))))?
        } else {
            let path = location.strip_prefix("file:").unwrap_or(location);
            self.config_file = Some(path.to_string());
            exec_config_file(py, path)?
        };
        for (k, v) in namespace.iter() {
            let Ok(name) = k.extract::<String>() else {
                continue;
            };
            if index_of(&name).is_none() {
                continue;
            }
            if let Err(e) = self.set(py, &name, &v) {
                return Err(LoadError::FileValue {
                    name,
                    value: py_str(&v),
                    message: e.0,
                });
            }
        }
        Ok(())
    }

    /// `Application.chdir()`: move to `chdir` and put it first on `sys.path`.
    fn chdir(&self, py: Python<'_>) -> Result<(), LoadError> {
        let dir = self.string(py, "chdir").unwrap_or_else(|| ".".into());
        std::env::set_current_dir(&dir)
            .map_err(|e| LoadError::Fatal(format!("can't chdir to '{dir}': {e}")))?;
        let path = py
            .import("sys")
            .and_then(|sys| sys.getattr("path"))
            .map_err(|e| LoadError::Fatal(e.to_string()))?;
        if !path.contains(&dir).unwrap_or(true) {
            path.call_method1("insert", (0, &dir))
                .map_err(|e| LoadError::Fatal(e.to_string()))?;
        }
        Ok(())
    }

    /// gunicorn's `Config.validate()`: settings checked as a whole.
    fn validate_whole(&self, py: Python<'_>) -> Result<(), LoadError> {
        // gunicorn also refuses h2 without the Python `h2` package; rgunicorn
        // serves HTTP/2 itself (hyper), so that check is left out.
        if self.list(py, "http_protocols").iter().any(|p| p == "h2") {
            let is_ssl =
                self.string(py, "certfile").is_some() || self.string(py, "keyfile").is_some();
            if !is_ssl && self.string(py, "http2_cleartext").as_deref() == Some("off") {
                eprintln!("Warning: http_protocols includes h2 but there is no TLS and http2_cleartext is off, so HTTP/2 will never be negotiated.");
            }
        }
        Ok(())
    }
}

/// Convert a command-line value to what argparse would hand the validator:
/// `type=int` through Python's `int()`, `auto_int` with its octal rule.
fn cli_value_to_py<'py>(
    py: Python<'py>,
    prog: &str,
    flags: &[&str],
    value: &CliValue,
) -> Result<Bound<'py, PyAny>, LoadError> {
    let fatal = |e: PyErr| LoadError::Fatal(e.to_string());
    Ok(match value {
        CliValue::Str(s) => PyString::new(py, s).into_any(),
        CliValue::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        CliValue::List(l) => PyList::new(py, l).map_err(fatal)?.into_any(),
        CliValue::Int(s, ty) => {
            let int = py.get_type::<pyo3::types::PyInt>();
            let converted = match ty {
                CliType::AutoInt => {
                    // gunicorn's auto_int: "0NN" is octal, then int(x, 0).
                    let x = if s.len() > 1 && s.starts_with('0') && s.as_bytes()[1].is_ascii_digit()
                    {
                        format!("0o{}", &s[1..])
                    } else {
                        s.clone()
                    };
                    int.call1((x, 0))
                }
                _ => int.call1((s,)),
            };
            converted.map_err(|_| {
                let tname = if *ty == CliType::AutoInt {
                    "auto_int"
                } else {
                    "int"
                };
                LoadError::Cli(CliError::Usage {
                    usage: cli::usage_line(prog),
                    prog: prog.to_string(),
                    message: format!("argument {}: invalid {tname} value: '{s}'", flags.join("/")),
                })
            })?
        }
    })
}

/// Execute a config file as module `__config__` (in `sys.modules`, with
/// `__file__`), as gunicorn does, and return its namespace.
fn exec_config_file<'py>(py: Python<'py>, path: &str) -> Result<Bound<'py, PyDict>, LoadError> {
    if !Path::new(path).exists() {
        let repr = PyString::new(py, path)
            .repr()
            .map(|r| r.to_string())
            .unwrap_or_default();
        return Err(LoadError::Fatal(format!("{repr} doesn't exist")));
    }
    let ext = Path::new(path)
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("");
    let valid_ext = ext == "py" || ext == "pyc";
    if !valid_ext {
        eprintln!(
            "!!!\n!!! WARNING: configuration file should have a valid Python extension.\n!!!\n"
        );
    }
    let run = || -> PyResult<Bound<'py, PyDict>> {
        let util = py.import("importlib.util")?;
        let spec = if valid_ext {
            util.call_method1("spec_from_file_location", ("__config__", path))?
        } else {
            let loader = py
                .import("importlib.machinery")?
                .getattr("SourceFileLoader")?
                .call1(("__config__", path))?;
            let kwargs = PyDict::new(py);
            kwargs.set_item("loader", loader)?;
            util.call_method(
                "spec_from_file_location",
                ("__config__", path),
                Some(&kwargs),
            )?
        };
        let module = util.call_method1("module_from_spec", (&spec,))?;
        py.import("sys")?
            .getattr("modules")?
            .set_item("__config__", &module)?;
        spec.getattr("loader")?
            .call_method1("exec_module", (&module,))?;
        Ok(module.getattr("__dict__")?.cast_into::<PyDict>()?)
    };
    run().map_err(|e| LoadError::ConfigFile {
        path: path.to_string(),
        traceback: format_traceback(py, &e),
    })
}

/// Where the configuration comes from: argv after the program name, and
/// the environment as it was at start (`GUNICORN_CMD_ARGS`).
pub struct Sources<'a> {
    pub prog: &'a str,
    pub version: &'a str,
    pub args: &'a [String],
    pub cmd_args_env: Option<&'a str>,
}

/// Default hooks are the no-ops made by `default_hook`, whose module is
/// `rgunicorn.config`.
fn is_default_hook(hook: &Bound<'_, PyAny>) -> bool {
    hook.getattr("__module__")
        .map(|m| py_str(&m) == "rgunicorn.config")
        .unwrap_or(false)
}

/// gunicorn's `Application.load_config` + `WSGIApplication`: the whole
/// resolution, run at start and again on every HUP.
pub fn load(py: Python<'_>, src: &Sources<'_>) -> Result<Config, LoadError> {
    let args = cli::parse(src.prog, src.version, src.args)?;
    let mut cfg = Config::defaults(py)?;
    let fatal = |e: Invalid| LoadError::Fatal(e.0);

    // WSGIApplication.init: the app URI names the processes.
    if let Some(app) = args.positionals.first() {
        cfg.set(py, "default_proc_name", &PyString::new(py, app))
            .map_err(fatal)?;
        cfg.app_uri = Some(app.clone());
    }
    cfg.chdir(py)?;

    let env_args = match src.cmd_args_env {
        Some(text) => {
            let words: Vec<String> = py
                .import("shlex")
                .and_then(|shlex| shlex.call_method1("split", (text,)))
                .and_then(|w| w.extract())
                .map_err(|e| LoadError::Fatal(py_str(e.value(py))))?;
            cli::parse(src.prog, src.version, &words)?
        }
        None => ParsedArgs::default(),
    };

    let explicit = match (args.get("config"), env_args.get("config")) {
        (Some(CliValue::Str(c)), _) | (None, Some(CliValue::Str(c))) => Some(c.clone()),
        _ => None,
    };
    match explicit {
        Some(location) => cfg.load_file(py, &location)?,
        None => {
            let default = std::env::current_dir()
                .unwrap_or_default()
                .join("gunicorn.conf.py");
            if default.exists() {
                cfg.load_file(py, &default.to_string_lossy())?;
            }
        }
    }

    cfg.apply_cli(py, src.prog, &env_args)?;
    cfg.apply_cli(py, src.prog, &args)?;
    cfg.chdir(py)?;

    if cfg.app_uri.is_none() {
        match cfg.string(py, "wsgi_app") {
            Some(app) => cfg.app_uri = Some(app),
            None if cfg.string(py, "paste").is_some() => {}
            None => return Err(LoadError::Fatal("No application module specified.".into())),
        }
    }
    cfg.validate_whole(py)?;
    Ok(cfg)
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
