//! `rgunicorn._rgunicorn`, the extension module inside the `rgunicorn`
//! Python package that `pip install` puts in a virtualenv (the package's
//! Python half is `pyext/python/rgunicorn`: it re-exports these and adds
//! `__main__` for `python -m rgunicorn`). Its `main()` is the `rgunicorn`
//! console script: it runs the same master code as the cargo-built binary,
//! inside the venv's own `python` process, so the interpreter, its
//! `sys.prefix` and its packages are already right. Its `ctl_main()` is the
//! `rgunicornc` console script (the control socket's client).

use pyo3::prelude::*;

/// Entry point of the `rgunicorn` console script: runs rgunicorn with
/// `sys.argv` and exits the process with its status. `prog` names the
/// program in `--version`/`--help` when `sys.argv[0]` does not
/// (`python -m rgunicorn`, where it is `__main__.py`).
#[pyfunction]
#[pyo3(signature = (prog=None))]
fn main(py: Python<'_>, prog: Option<String>) -> PyResult<()> {
    let argv: Vec<String> = py.import("sys")?.getattr("argv")?.extract()?;
    let code = py.detach(|| rgunicorn_core::entry::run_in_python(argv, prog));
    std::process::exit(i32::from(code));
}

/// Entry point of the `rgunicornc` console script (the control socket's
/// client): the same code as the cargo-built `rgunicornc`.
#[pyfunction]
fn ctl_main(py: Python<'_>) -> PyResult<()> {
    let argv: Vec<String> = py.import("sys")?.getattr("argv")?.extract()?;
    let code = py.detach(|| rgunicorn_core::control::client::main(argv));
    std::process::exit(code);
}

#[pymodule]
fn _rgunicorn(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(main, m)?)?;
    m.add_function(wrap_pyfunction!(ctl_main, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
