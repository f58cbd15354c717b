//! Embedding CPython in the `rgunicorn` binary. The interpreter runs in the
//! virtual environment a user means, exactly as that venv's own `python`
//! would: the venv whose `bin/` holds the binary, else the activated one
//! (`VIRTUAL_ENV`), else none (the interpreter the binary was built
//! against). A venv of another Python minor version than the linked
//! libpython is refused with both versions named. Python installs no signal
//! handlers (the master owns signals). Under the pip-installed console
//! script the interpreter already exists and all of this is skipped.

use std::ffi::{CStr, CString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use pyo3::ffi;

/// Why the interpreter could not be set up (a venv of another Python, say).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct EmbedError(pub String);

impl From<String> for EmbedError {
    fn from(message: String) -> Self {
        EmbedError(message)
    }
}

impl From<&str> for EmbedError {
    fn from(message: &str) -> Self {
        EmbedError(message.to_string())
    }
}

/// A virtual environment to run in: its directory, its `python` (what the
/// interpreter is told its executable is), and how it was chosen.
struct Venv {
    dir: PathBuf,
    python: PathBuf,
    /// For messages: "VIRTUAL_ENV=<dir>" or "<dir> (this binary's venv)".
    named: String,
}

/// The venv's `python` (what `python` runs in an activated shell), else
/// its `python3`, if it has either.
fn venv_python(dir: &Path) -> Option<PathBuf> {
    ["python", "python3"]
        .iter()
        .map(|name| dir.join("bin").join(name))
        .find(|p| p.exists())
}

/// The venv whose `bin/` holds the running executable: the binary belongs
/// to that venv as its `python` does, whatever is activated (the pip
/// console script behaves the same way).
fn own_venv() -> Option<Venv> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?.parent()?;
    if !dir.join("pyvenv.cfg").is_file() {
        return None;
    }
    Some(Venv {
        dir: dir.to_path_buf(),
        python: venv_python(dir)?,
        named: format!("{} (this binary's venv)", dir.display()),
    })
}

/// The activated venv (`VIRTUAL_ENV`, as `activate` sets it). A variable
/// that names no venv is an error rather than silently the base
/// interpreter's packages.
fn active_venv() -> Result<Option<Venv>, String> {
    let Some(value) = std::env::var_os("VIRTUAL_ENV").filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let dir = std::path::absolute(&value).map_err(|e| format!("VIRTUAL_ENV: {e}"))?;
    let named = format!("VIRTUAL_ENV={}", dir.display());
    if !dir.join("pyvenv.cfg").is_file() {
        return Err(format!(
            "{named} is not a virtual environment (it has no pyvenv.cfg): activate a venv or unset VIRTUAL_ENV"
        ));
    }
    let python = venv_python(&dir)
        .ok_or_else(|| format!("{named} has no bin/python (a broken virtual environment)"))?;
    Ok(Some(Venv { dir, python, named }))
}

/// `(major, minor)` at the start of a version string ("3.11.7",
/// "3.12.1.final.0", "3.11.7 (main, ...)").
fn major_minor(version: &str) -> Option<(u32, u32)> {
    let mut parts = version.trim().split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// The Python version a `pyvenv.cfg` records: `version` (the venv module)
/// or `version_info` (virtualenv, uv).
fn cfg_version(pyvenv_cfg: &str) -> Option<(u32, u32)> {
    pyvenv_cfg.lines().find_map(|line| {
        let (key, value) = line.split_once('=')?;
        match key.trim().to_ascii_lowercase().as_str() {
            "version" | "version_info" => major_minor(value),
            _ => None,
        }
    })
}

/// The venv's Python version: from its pyvenv.cfg, else from its one
/// `lib/pythonX.Y` directory; `None` when neither says.
fn venv_version(dir: &Path) -> Option<(u32, u32)> {
    if let Some(v) = std::fs::read_to_string(dir.join("pyvenv.cfg"))
        .ok()
        .as_deref()
        .and_then(cfg_version)
    {
        return Some(v);
    }
    let mut found = std::fs::read_dir(dir.join("lib"))
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name();
            major_minor(name.to_str()?.strip_prefix("python")?)
        });
    let v = found.next()?;
    found.next().is_none().then_some(v)
}

/// The version of the libpython this process runs ("3.11.7").
fn linked_version() -> String {
    // SAFETY: Py_GetVersion may be called before the interpreter is
    // initialised; it returns a static NUL-terminated string.
    let full = unsafe { CStr::from_ptr(ffi::Py_GetVersion()) };
    let full = full.to_string_lossy();
    full.split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// The venv to run in, checked against the linked libpython.
fn choose_venv() -> Result<Option<Venv>, String> {
    let venv = match own_venv() {
        Some(v) => v,
        None => match active_venv()? {
            Some(v) => v,
            None => return Ok(None),
        },
    };
    let linked = linked_version();
    match (venv_version(&venv.dir), major_minor(&linked)) {
        (Some(want), Some(have)) if want != have => Err(format!(
            "{} is a Python {}.{} virtual environment, but this rgunicorn binary was built against Python {linked}: \
             use a Python {}.{} venv, or build rgunicorn with this venv's Python (PYO3_PYTHON={} cargo build --release)",
            venv.named,
            want.0,
            want.1,
            have.0,
            have.1,
            venv.python.display()
        )),
        _ => Ok(Some(venv)),
    }
}

/// Start the embedded interpreter (once) with `argv` as `sys.argv`, then
/// release the GIL so that `Python::attach` works from here on.
pub fn initialize_embedded(argv: &[String]) -> Result<(), EmbedError> {
    // SAFETY: Py_IsInitialized may be called at any time.
    if unsafe { ffi::Py_IsInitialized() } != 0 {
        return Ok(());
    }
    let c_args: Vec<CString> = argv
        .iter()
        .map(|a| CString::new(a.as_bytes()).map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    let c_ptrs: Vec<*mut std::os::raw::c_char> =
        c_args.iter().map(|c| c.as_ptr() as *mut _).collect();
    // The venv's python as `executable`: CPython's path computation then
    // finds its pyvenv.cfg and sets sys.prefix, site-packages and
    // include-system-site-packages as that python does.
    let executable = match choose_venv()? {
        Some(venv) => Some(
            CString::new(venv.python.as_os_str().as_bytes())
                .map_err(|_| format!("{}: a NUL byte in the path", venv.named))?,
        ),
        None => None,
    };
    // SAFETY: PyConfig is a plain C struct that PyConfig_InitPythonConfig
    // fully initialises before any field is read; the strings handed to
    // PyConfig_SetBytes* are copied by CPython; the config is cleared after
    // use, and all of this runs on the main thread before any other Python
    // call.
    unsafe {
        let mut config: ffi::PyConfig = std::mem::zeroed();
        ffi::PyConfig_InitPythonConfig(&mut config);
        config.install_signal_handlers = 0;
        config.parse_argv = 0;
        let mut status =
            ffi::PyConfig_SetBytesArgv(&mut config, c_ptrs.len() as _, c_ptrs.as_ptr() as *mut _);
        if ffi::PyStatus_Exception(status) == 0 {
            if let Some(exe) = &executable {
                status =
                    ffi::PyConfig_SetBytesString(&mut config, &mut config.executable, exe.as_ptr());
            }
        }
        if ffi::PyStatus_Exception(status) == 0 {
            status = ffi::Py_InitializeFromConfig(&config);
        }
        ffi::PyConfig_Clear(&mut config);
        if ffi::PyStatus_Exception(status) != 0 {
            let msg = if status.err_msg.is_null() {
                "unknown error".to_string()
            } else {
                CStr::from_ptr(status.err_msg)
                    .to_string_lossy()
                    .into_owned()
            };
            return Err(format!("could not start the embedded Python interpreter: {msg}").into());
        }
        // Py_InitializeFromConfig leaves this thread attached; detach so
        // that pyo3's Python::attach can take the GIL as usual.
        ffi::PyEval_SaveThread();
    }
    Ok(())
}

/// `sys.version` of the interpreter in use, short form ("3.11.7").
pub fn python_version() -> String {
    pyo3::Python::attach(|py| {
        let v = py.version_info();
        format!("{}.{}.{}", v.major, v.minor, v.patch)
    })
}

/// Set (or with `None` remove) an environment variable through Python's
/// `os.environ`, which also changes the C environment: `std::env` alone
/// would leave `os.environ`, read once at start-up, out of date for the
/// app (`raw_env` must reach `os.environ[...]` as under gunicorn).
pub fn set_env(py: pyo3::Python<'_>, key: &str, value: Option<&str>) {
    use pyo3::prelude::*;
    let done = py.import("os").and_then(|os| {
        let environ = os.getattr("environ")?;
        match value {
            Some(v) => environ.set_item(key, v),
            None => environ.call_method1("pop", (key, py.None())).map(drop),
        }
    });
    if done.is_err() {
        // SAFETY (of set_var/remove_var): called where the process runs no
        // other thread (the master, a worker before it serves).
        match value {
            Some(v) => std::env::set_var(key, v),
            None => std::env::remove_var(key),
        }
    }
}

/// When the `setproctitle` module is installed, process titles go through
/// it, as gunicorn's do: an app or a hook that calls it too then finds the
/// title it expects, where rgunicorn's own writes to the argument area
/// would leave the module's copy stale.
pub fn use_setproctitle_if_installed(py: pyo3::Python<'_>) {
    use pyo3::prelude::*;
    if py.import("setproctitle").is_ok() {
        crate::sys::process::set_title_with(|title| {
            Python::attach(|py| {
                py.import("setproctitle")
                    .and_then(|m| m.call_method1("setproctitle", (title,)))
                    .is_ok()
            })
        });
    }
}

/// The worker's own Python-level SIGTERM handler: the drain is rgunicorn's
/// (its signal thread takes TERM), so a handler that wraps this one and
/// calls it through adds its work before the drain, as under gunicorn.
const SIGTERM_STANDIN: &std::ffi::CStr = pyo3::ffi::c_str!(include_str!("sigterm.py"));

/// Install [`SIGTERM_STANDIN`] (in a worker's boot, on its main thread)
/// unless code has installed a handler already.
pub fn install_sigterm_standin(py: pyo3::Python<'_>) -> pyo3::PyResult<()> {
    use pyo3::prelude::*;
    let signal = py.import("signal")?;
    let term = signal.getattr("SIGTERM")?;
    let current = signal.call_method1("getsignal", (&term,))?;
    if current.is_callable() {
        return Ok(());
    }
    let standin = PyModule::from_code(
        py,
        SIGTERM_STANDIN,
        c"rgunicorn_signals.py",
        c"rgunicorn_signals",
    )?
    .getattr("handle_exit")?;
    signal.call_method1("signal", (&term, &standin))?;
    Ok(())
}

/// On TERM in a worker: the Python-level SIGTERM handler, if code replaced
/// the stand-in, called as Python would call it (`handler(signum, None)`);
/// an exception is logged.
pub fn call_sigterm_handler() {
    use pyo3::prelude::*;
    Python::attach(|py| {
        let called = (|| -> PyResult<()> {
            let signal = py.import("signal")?;
            let term = signal.getattr("SIGTERM")?;
            let handler = signal.call_method1("getsignal", (&term,))?;
            let ours = handler.getattr("__module__").is_ok_and(|m| {
                m.extract::<String>()
                    .is_ok_and(|m| m == "rgunicorn_signals")
            });
            if handler.is_callable() && !ours {
                handler.call1((&term, py.None()))?;
            }
            Ok(())
        })();
        if let Err(e) = called {
            crate::python::hooks::log_exception(py, "Exception in the SIGTERM handler", &e);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_as_written_by_venv_virtualenv_and_uv() {
        let venv = "home = /usr/bin\ninclude-system-site-packages = false\nversion = 3.11.7\n";
        assert_eq!(cfg_version(venv), Some((3, 11)));
        let virtualenv =
            "home = /usr/bin\nimplementation = CPython\nversion_info = 3.12.1.final.0\n";
        assert_eq!(cfg_version(virtualenv), Some((3, 12)));
        let uv = "home = /x/bin\nVersion_Info = 3.13.0\n";
        assert_eq!(cfg_version(uv), Some((3, 13)));
        assert_eq!(cfg_version("home = /usr/bin\n"), None);
        assert_eq!(
            major_minor("3.11.7 (main, Jan  1 2024) [GCC 12]"),
            Some((3, 11))
        );
    }
}
