//! How rgunicorn starts: the same [`run`] behind both entry points, the
//! cargo-built binary (which embeds CPython) and the `rgunicorn` console
//! script of a pip install (which runs inside the venv's `python`).
//! Order as gunicorn's `Application.run`: load the configuration, then
//! `--print-config` / `--check-config`, then the master.

use std::process::ExitCode;

use pyo3::prelude::*;

use pyconf::cli::CliError;
use pyconf::{Config, LoadError};

use crate::app::AppFactory;
use crate::master::AppSource;
use crate::python::import::{self, BUILTIN_HEALTH_APP};
use crate::settings::Settings;

/// rgunicorn's version and what it is compatible with, for `--version`.
pub fn version_line(prog: &str) -> String {
    format!(
        "{prog} (version {}, gunicorn 27.0.1 settings, Python {})",
        env!("CARGO_PKG_VERSION"),
        crate::python::embed::python_version()
    )
}

/// Entry point of the cargo-built binary.
pub fn main_binary() -> ExitCode {
    main_with(None)
}

/// Entry point of a Rust application's own binary: the full rgunicorn
/// command line and config, with the app made by `app` (once per worker,
/// after fork) served whatever APP_MODULE says. See [`crate::app`].
pub fn run_app(app: AppFactory) -> ExitCode {
    main_with(Some(app))
}

fn main_with(app: Option<AppFactory>) -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    if let Err(e) = crate::python::embed::initialize_embedded(&argv) {
        eprintln!("Error: {e}");
        return ExitCode::from(1);
    }
    // USR2 re-executes the same file (a binary replaced on disk since the
    // start is the upgrade), so resolve it now.
    let program = std::env::current_exe()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|_| argv[0].clone());
    let reexec = std::iter::once(program)
        .chain(argv.iter().skip(1).cloned())
        .collect();
    ExitCode::from(report(run(argv, app, reexec)))
}

fn report(result: anyhow::Result<u8>) -> u8 {
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("\nError: {e:#}\n");
            1
        }
    }
}

/// Entry point once an interpreter exists (the console script,
/// `python -m rgunicorn`): returns the exit status. `prog`, when given,
/// replaces `argv[0]` as the program's name.
pub fn run_in_python(argv: Vec<String>, prog: Option<String>) -> u8 {
    // USR2 runs `sys.executable` with `sys.argv` again, as gunicorn does.
    let executable: Option<String> =
        Python::attach(|py| py.import("sys")?.getattr("executable")?.extract()).ok();
    let reexec = executable.into_iter().chain(argv.iter().cloned()).collect();
    let argv = match prog {
        Some(prog) => std::iter::once(prog)
            .chain(argv.into_iter().skip(1))
            .collect(),
        None => argv,
    };
    report(run(argv, None, reexec))
}

/// What gunicorn prints when the configuration does not load (or for
/// `--help` and `--version`); returns the exit status.
fn report_load_error(err: &LoadError, argv: &[String]) -> u8 {
    match err {
        LoadError::Cli(CliError::Help(text)) => print!("{text}"),
        LoadError::Cli(CliError::Version) => {
            println!("{}", version_line(&crate::settings::prog_name(argv)))
        }
        other => eprint!("{other}"),
    }
    err.exit_code()
}

/// `argv` is what the configuration is parsed from; `reexec` the command
/// line a USR2 upgrade executes.
fn run(argv: Vec<String>, rust_app: Option<AppFactory>, reexec: Vec<String>) -> anyhow::Result<u8> {
    Python::attach(|py| {
        // CPython 3.10-3.12 take whichever thread first imports `threading`
        // for the main thread, and fork keeps the forking thread as the
        // child's. Imported first on a worker's asyncio thread, it would
        // make uvloop (and asyncio's signal code) believe it runs on the
        // main thread, and uvloop's set_wakeup_fd then fails every worker.
        py.import("threading")?;
        let cfg = match crate::settings::read_config(py, &argv) {
            Ok(cfg) => cfg,
            Err(err) => return Ok(report_load_error(&err, &argv)),
        };
        let settings = Settings::load(py, &cfg);
        let start = &settings.start;
        if start.print_config {
            println!("{}", cfg.print_config(py, false));
        }
        if start.print_config || start.check_config {
            return Ok(check_app(
                py,
                &settings,
                cfg.app_uri.as_deref(),
                rust_app.is_some(),
            ));
        }
        refuse_unserved(&settings)?;
        // A USR2 child is already detached (gunicorn skips it too).
        if start.daemon && std::env::var_os("GUNICORN_FD").is_none() {
            crate::sys::process::daemonize(py, start.enable_stdio_inheritance)
                .map_err(|e| anyhow::anyhow!("can't daemonize: {e}"))?;
        }
        // The error log from here on, so that start-up warnings land where
        // the rest of the log does (a failure to open it is reported by the
        // master, as before).
        let _ = crate::log::configure(
            settings.logging.errorlog.as_deref(),
            &settings.logging.loglevel,
        );
        crate::python::logging::setup(py, &settings.logging)?;
        crate::python::embed::use_setproctitle_if_installed(py);
        for (name, reason) in cfg.unsupported_in_use(py) {
            crate::log::warning(&match reason {
                None => format!(
                    "setting `{name}` is accepted but not implemented yet by rgunicorn; it has no effect."
                ),
                Some(why) => format!("setting `{name}` has no effect in rgunicorn: {why}"),
            });
        }
        crate::python::patched::check_config(py).map_err(anyhow::Error::msg)?;
        add_pythonpath(py, &settings.start)?;
        let app = match (rust_app, cfg.app_uri.as_deref()) {
            (Some(app), uri) => {
                crate::log::info(&format!(
                    "Serving the Rust app of this binary (APP_MODULE {} is not imported)",
                    uri.unwrap_or("-")
                ));
                crate::python::wsgi::log_ignored_worker_class(py, &settings.python);
                AppSource::Rust(app)
            }
            (None, Some(BUILTIN_HEALTH_APP)) => {
                crate::python::wsgi::log_ignored_worker_class(py, &settings.python);
                AppSource::Rust(crate::app::health::app())
            }
            // A Python app: the interface from worker_class (or detected),
            // imported in each worker after fork.
            (None, Some(uri)) => {
                let class = crate::python::worker_class::resolve(py, &settings.python)?;
                if class.is_uvicorn() {
                    crate::python::logging::uvicorn_loggers(py)?;
                }
                AppSource::Python {
                    uri: uri.to_string(),
                    class,
                }
            }
            (None, None) => {
                anyhow::bail!("PasteDeploy applications (--paste) are not supported by rgunicorn")
            }
        };
        serve(py, argv, reexec, cfg, settings, app)
    })
}

/// Settings whose values rgunicorn would serve wrongly if it only warned:
/// the start fails, naming them (`--check-config` reports the same).
fn refuse_unserved(settings: &Settings) -> anyhow::Result<()> {
    if settings.start.uwsgi_protocol {
        anyhow::bail!(
            "protocol = \"uwsgi\" is not supported by rgunicorn: its workers speak HTTP, and a \
             front end using uwsgi_pass would get HTTP answers; use proxy_pass (HTTP) in front \
             of rgunicorn, or gunicorn for the uwsgi protocol"
        );
    }
    if settings.start.dirty_workers > 0 {
        anyhow::bail!(
            "dirty_workers = {} with dirty_apps set: gunicorn would start a dirty arbiter, \
             which rgunicorn does not have; the dirty apps would not be served",
            settings.start.dirty_workers
        );
    }
    Ok(())
}

/// Run the master with `app` as every worker's application.
fn serve(
    py: Python<'_>,
    argv: Vec<String>,
    reexec: Vec<String>,
    cfg: Config,
    settings: Settings,
    app: AppSource,
) -> anyhow::Result<u8> {
    use crate::master::{Master, MasterError};
    let factory = app.factory(&settings)?;
    let master = Master::new(py, argv, reexec, cfg, settings, app, factory)?;
    match master.run() {
        Ok(code) => Ok(code),
        Err(MasterError::Startup(msg)) => {
            crate::log::error(&msg);
            eprintln!("\nError: {msg}\n");
            Ok(1)
        }
        Err(MasterError::StartupHook(tb)) => {
            eprint!("{tb}");
            Ok(1)
        }
        Err(MasterError::Exit(code, message)) => {
            if let Some(message) = message {
                eprintln!("{message}");
            }
            Ok(code)
        }
    }
}

/// `pythonpath`: comma-separated directories put first on `sys.path`
/// (after `--print-config`/`--check-config`, as gunicorn does).
fn add_pythonpath(py: Python<'_>, start: &crate::settings::Start) -> anyhow::Result<()> {
    if start.pythonpath.is_empty() {
        return Ok(());
    }
    let sys_path = py.import("sys")?.getattr("path")?;
    for p in &start.pythonpath {
        let abs = std::path::absolute(p)?.to_string_lossy().into_owned();
        if !sys_path.contains(&abs)? {
            sys_path.call_method1("insert", (0, abs))?;
        }
    }
    Ok(())
}

/// `--check-config` / `--print-config`: what a start would refuse before
/// serving (settings, TLS files, the worker class), then import the app in
/// this process as gunicorn does.
fn check_app(
    py: Python<'_>,
    settings: &Settings,
    app_uri: Option<&str>,
    rust_app_binary: bool,
) -> u8 {
    let python_app = app_uri.filter(|uri| *uri != BUILTIN_HEALTH_APP && !rust_app_binary);
    let refused = refuse_unserved(settings)
        .and_then(|()| crate::python::patched::check_config(py).map_err(anyhow::Error::msg))
        .and_then(|()| crate::http::tls::load(&settings.tls).map_err(anyhow::Error::from))
        .and_then(|_| match python_app {
            Some(_) => crate::python::worker_class::resolve(py, &settings.python).map(drop),
            None => Ok(()),
        });
    if let Err(e) = refused {
        eprintln!("\nError: {e:#}\n");
        return 1;
    }
    let Some(uri) = python_app else {
        return 0;
    };
    match import::import_app(py, uri) {
        // The app's import may replace gunicorn's response writer too.
        Ok(_) => match crate::python::patched::response_writer(py) {
            Some(replaced) => {
                eprintln!("\nError: {}\n", replaced.refusal());
                1
            }
            None => 0,
        },
        Err(e) => {
            eprintln!("\nError while loading the application:\n");
            eprint!("{e}");
            if !e.to_string().ends_with('\n') {
                eprintln!();
            }
            1
        }
    }
}
