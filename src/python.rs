//! Embedding CPython in the `rgunicorn` binary: the interpreter is set up
//! so that a binary inside a virtualenv's `bin/` sees that venv's packages
//! (as its `python` would), and so that Python installs no signal handlers
//! (the master owns signals). Under the pip-installed console script the
//! interpreter already exists and this is skipped.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use pyo3::ffi;

/// The `python` beside the running executable (`venv/bin/python`), if any:
/// an embedded interpreter works out `sys.prefix` from its executable.
fn sibling_python() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    ["python3", "python"]
        .iter()
        .map(|name| dir.join(name))
        .find(|p| p.exists())
}

/// Start the embedded interpreter (once) with `argv` as `sys.argv`, then
/// release the GIL so that `Python::attach` works from here on.
pub fn initialize_embedded(argv: &[String]) -> Result<(), String> {
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
    let executable = sibling_python().map(|p| CString::new(p.as_os_str().as_bytes()).unwrap());
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
                std::ffi::CStr::from_ptr(status.err_msg)
                    .to_string_lossy()
                    .into_owned()
            };
            return Err(format!(
                "could not start the embedded Python interpreter: {msg}"
            ));
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
