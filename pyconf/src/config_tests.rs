//! Unit tests of [`load`]: the precedence defaults < config file <
//! `GUNICORN_CMD_ARGS` < command line, as gunicorn 27.0.1's
//! `Application.load_config` applies it.
//!
//! `load()` changes the process's working directory: every test that calls
//! it holds [`LOCK`] and passes `--chdir <its scratch dir>` (and, unless it
//! tests the lookup of `./gunicorn.conf.py`, an explicit `-c`), so that no
//! test depends on where another one left the process.

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

use pyo3::prelude::*;
use pyo3::types::PyString;

use super::*;
use crate::cli::CliError;
use crate::computed::{self, Computed};

static LOCK: Mutex<()> = Mutex::new(());

fn lock() -> MutexGuard<'static, ()> {
    // A failed test must not fail every later one.
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A fresh directory under the system temp dir, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("pyconf-config-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir.canonicalize().unwrap())
    }

    fn dir(&self) -> String {
        self.0.to_string_lossy().into_owned()
    }

    /// Write `text` to `name` in the scratch dir; its absolute path.
    fn file(&self, name: &str, text: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_string_lossy().into_owned()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn with_py<R>(f: impl FnOnce(Python<'_>) -> R) -> R {
    Python::initialize();
    Python::attach(f)
}

/// `load()` with `--chdir <scratch>` in front of `args`.
fn load_in(
    py: Python<'_>,
    scratch: &Scratch,
    args: &[&str],
    env: Option<&str>,
) -> Result<Config, LoadError> {
    let mut argv = vec!["--chdir".to_string(), scratch.dir()];
    argv.extend(args.iter().map(|a| a.to_string()));
    load(
        py,
        &Sources {
            prog: "rgunicorn",
            version: "test",
            args: &argv,
            cmd_args_env: env,
        },
    )
}

#[track_caller]
fn loaded(res: Result<Config, LoadError>) -> Config {
    match res {
        Ok(cfg) => cfg,
        Err(e) => panic!("load failed: {e:?}"),
    }
}

#[track_caller]
fn load_err(res: Result<Config, LoadError>) -> LoadError {
    match res {
        Ok(_) => panic!("load succeeded"),
        Err(e) => e,
    }
}

/// The value part of `name`'s line in `print_config` output.
#[track_caller]
fn shown<'a>(printed: &'a str, name: &str) -> &'a str {
    printed
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .and_then(|l| l.split_once(" = "))
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("{name} not in print_config"))
}

#[test]
fn defaults() {
    let _g = lock();
    let s = Scratch::new("defaults");
    let conf = s.file("empty.py", "");
    with_py(|py| {
        let cfg = loaded(load_in(py, &s, &["-c", &conf, "app:app"], None));
        assert_eq!(cfg.int(py, "timeout"), 30);
        assert_eq!(cfg.int(py, "backlog"), 2048);
        assert_eq!(cfg.int(py, "threads"), 1);
        assert!(!cfg.bool(py, "daemon"));
        assert!(cfg.get(py, "sendfile").is_none());
        assert_eq!(cfg.string(py, "worker_class").as_deref(), Some("sync"));
        assert_eq!(cfg.string(py, "loglevel").as_deref(), Some("info"));
        assert_eq!(cfg.string(py, "errorlog").as_deref(), Some("-"));
        assert_eq!(cfg.string(py, "accesslog"), None);
        assert_eq!(cfg.string(py, "proxy_protocol").as_deref(), Some("off"));
        assert_eq!(cfg.list(py, "http_protocols"), vec!["h1".to_string()]);
        assert_eq!(
            cfg.list(py, "forwarder_headers"),
            vec!["SCRIPT_NAME".to_string(), "PATH_INFO".to_string()]
        );
        assert_eq!(cfg.list(py, "raw_env"), Vec::<String>::new());
        assert_eq!(cfg.string(py, "chdir").unwrap(), s.dir());
        assert_eq!(cfg.config_file.as_deref(), Some(conf.as_str()));
        assert_eq!(
            py_str(&cfg.get(py, "secure_scheme_headers")),
            "{'X-FORWARDED-PROTOCOL': 'ssl', 'X-FORWARDED-PROTO': 'https', 'X-FORWARDED-SSL': 'on'}"
        );

        // Computed defaults, with the environment as it is.
        match computed::bind() {
            Computed::StrList(l) => assert_eq!(cfg.list(py, "bind"), l),
            other => panic!("{other:?}"),
        }
        if let Computed::Int(n) = computed::workers() {
            assert_eq!(cfg.int(py, "workers"), n);
        }
        match computed::forwarded_allow_ips() {
            Computed::Str(v) => assert_eq!(
                cfg.list(py, "forwarded_allow_ips"),
                v.split(',')
                    .filter(|p| !p.is_empty())
                    .map(|p| p.trim().to_string())
                    .collect::<Vec<_>>()
            ),
            other => panic!("{other:?}"),
        }
        assert_eq!(computed::euid(), Computed::Int(cfg.int(py, "user")), "user");
        assert_eq!(
            computed::egid(),
            Computed::Int(cfg.int(py, "group")),
            "group"
        );
        match computed::control_socket() {
            Computed::Str(v) => assert_eq!(cfg.string(py, "control_socket").unwrap(), v),
            other => panic!("{other:?}"),
        }

        // Everything else is exactly Config::defaults() (the cwd is now the
        // scratch dir, so the computed chdir default agrees too).
        let defaults = Config::defaults(py).unwrap();
        let (a, b) = (
            cfg.print_config(py, false),
            defaults.print_config(py, false),
        );
        for (la, lb) in a.lines().zip(b.lines()) {
            // Set by the positional and by -c.
            if la.starts_with("default_proc_name ") || la.starts_with("config ") {
                continue;
            }
            assert_eq!(la, lb);
        }
        assert_eq!(a.lines().count(), b.lines().count());
        // Only -c and the positional moved settings off their defaults.
        let used: Vec<&str> = cfg.unsupported_in_use(py).iter().map(|(n, _)| *n).collect();
        let moved: Vec<&str> = ["config", "default_proc_name"]
            .into_iter()
            .filter(|n| support(n) != Support::Done)
            .collect();
        assert_eq!(used, moved);
    });
}

#[test]
fn computed_defaults_follow_the_environment() {
    // Read, never set, the environment: other tests run concurrently.
    let bind = match std::env::var("PORT") {
        Ok(port) => vec![format!("0.0.0.0:{port}")],
        Err(_) => vec!["127.0.0.1:8000".to_string()],
    };
    assert_eq!(computed::bind(), Computed::StrList(bind));
    match std::env::var("WEB_CONCURRENCY") {
        Ok(v) => match v.trim().parse::<i64>() {
            Ok(n) => assert_eq!(computed::workers(), Computed::Int(n)),
            Err(_) => assert_eq!(computed::workers(), Computed::Str(v)),
        },
        Err(_) => assert_eq!(computed::workers(), Computed::Int(1)),
    }
    assert_eq!(
        computed::forwarded_allow_ips(),
        Computed::Str(
            std::env::var("FORWARDED_ALLOW_IPS").unwrap_or_else(|_| "127.0.0.1,::1".into())
        )
    );
    assert_eq!(
        computed::euid(),
        Computed::Int(nix::unistd::geteuid().as_raw() as i64)
    );
    assert_eq!(
        computed::egid(),
        Computed::Int(nix::unistd::getegid().as_raw() as i64)
    );
    match computed::control_socket() {
        Computed::Str(p) => assert!(p.ends_with("/gunicorn.ctl"), "{p}"),
        other => panic!("{other:?}"),
    }
    let _g = lock();
    match computed::chdir() {
        Computed::Str(p) => assert!(std::path::Path::new(&p).is_absolute(), "{p}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_file_overrides_defaults() {
    let _g = lock();
    let s = Scratch::new("file");
    let conf = s.file(
        "conf.py",
        "workers = 5\n\
         bind = 'unix:/tmp/x.sock'\n\
         timeout = '0x10'\n\
         preload_app = 'true'\n\
         raw_env = ['A=1']\n\
         proc_name = '  named  '\n",
    );
    with_py(|py| {
        let cfg = loaded(load_in(py, &s, &["-c", &conf, "app:app"], None));
        assert_eq!(cfg.int(py, "workers"), 5);
        // The legacy single-string bind becomes a list.
        assert_eq!(cfg.list(py, "bind"), vec!["unix:/tmp/x.sock".to_string()]);
        assert_eq!(cfg.int(py, "timeout"), 16);
        assert!(cfg.bool(py, "preload_app"));
        assert_eq!(cfg.list(py, "raw_env"), vec!["A=1".to_string()]);
        assert_eq!(cfg.string(py, "proc_name").as_deref(), Some("named"));
        assert_eq!(cfg.int(py, "graceful_timeout"), 30);
        assert_eq!(cfg.config_file.as_deref(), Some(conf.as_str()));
    });
}

#[test]
fn file_prefix_is_accepted() {
    let _g = lock();
    let s = Scratch::new("fileprefix");
    let conf = s.file("conf.py", "workers = 6\n");
    with_py(|py| {
        let location = format!("file:{conf}");
        let cfg = loaded(load_in(py, &s, &["-c", &location, "app:app"], None));
        assert_eq!(cfg.int(py, "workers"), 6);
        assert_eq!(cfg.config_file.as_deref(), Some(conf.as_str()));
    });
}

#[test]
fn python_module_config() {
    let _g = lock();
    let s = Scratch::new("pymod");
    let module = format!("pyconf_test_conf_{}", std::process::id());
    s.file(&format!("{module}.py"), "workers = 7\n");
    let empty = s.file("empty.py", "");
    with_py(|py| {
        // As in gunicorn, the module is looked up from the cwd at start (put
        // on sys.path by the first chdir), not from --chdir: move there first.
        loaded(load_in(py, &s, &["-c", &empty, "app:app"], None));
        let location = format!("python:{module}");
        let cfg = loaded(load_in(py, &s, &["-c", &location, "app:app"], None));
        assert_eq!(cfg.int(py, "workers"), 7);
        assert_eq!(cfg.config_file, None);
    });
}

#[test]
fn a_missing_config_file_is_fatal() {
    let _g = lock();
    let s = Scratch::new("missing");
    let conf = format!("{}/nope.py", s.dir());
    with_py(
        |py| match load_err(load_in(py, &s, &["-c", &conf, "app:app"], None)) {
            LoadError::Fatal(m) => assert_eq!(m, format!("'{conf}' doesn't exist")),
            e => panic!("{e:?}"),
        },
    );
}

#[test]
fn gunicorn_cmd_args_override_the_file() {
    let _g = lock();
    let s = Scratch::new("env");
    let conf = s.file("conf.py", "workers = 2\ntimeout = 10\n");
    with_py(|py| {
        let cfg = loaded(load_in(
            py,
            &s,
            &["-c", &conf, "app:app"],
            Some("--workers 3 --env 'A=hello world'"),
        ));
        assert_eq!(cfg.int(py, "workers"), 3);
        // Not in GUNICORN_CMD_ARGS: the file's value stays.
        assert_eq!(cfg.int(py, "timeout"), 10);
        // shlex splitting.
        assert_eq!(cfg.list(py, "raw_env"), vec!["A=hello world".to_string()]);
    });
}

#[test]
fn the_command_line_overrides_gunicorn_cmd_args() {
    let _g = lock();
    let s = Scratch::new("cli");
    let conf = s.file("conf.py", "workers = 2\ntimeout = 10\nbacklog = 5\n");
    with_py(|py| {
        let cfg = loaded(load_in(
            py,
            &s,
            &["-c", &conf, "-w", "4", "--timeout", "12", "app:app"],
            Some("--workers 3 --backlog 6"),
        ));
        assert_eq!(cfg.int(py, "workers"), 4);
        assert_eq!(cfg.int(py, "timeout"), 12);
        assert_eq!(cfg.int(py, "backlog"), 6);
    });
}

#[test]
fn a_repeated_bind_replaces_the_file_list() {
    let _g = lock();
    let s = Scratch::new("bind");
    let conf = s.file("conf.py", "bind = ['a:1', 'b:2']\n");
    with_py(|py| {
        let cfg = loaded(load_in(py, &s, &["-c", &conf, "app:app"], None));
        assert_eq!(cfg.list(py, "bind"), vec!["a:1", "b:2"]);
        let cfg = loaded(load_in(
            py,
            &s,
            &["-c", &conf, "-b", "c:3", "-b", "d:4", "app:app"],
            None,
        ));
        assert_eq!(cfg.list(py, "bind"), vec!["c:3", "d:4"]);
        // GUNICORN_CMD_ARGS's list is replaced by the command line's too.
        let cfg = loaded(load_in(
            py,
            &s,
            &["-c", &conf, "--bind", "e:5", "app:app"],
            Some("-b x:1 -b y:2"),
        ));
        assert_eq!(cfg.list(py, "bind"), vec!["e:5"]);
        let cfg = loaded(load_in(
            py,
            &s,
            &["-c", &conf, "app:app"],
            Some("-b x:1 -b y:2"),
        ));
        assert_eq!(cfg.list(py, "bind"), vec!["x:1", "y:2"]);
    });
}

#[test]
fn config_from_gunicorn_cmd_args_when_the_cli_has_none() {
    let _g = lock();
    let s = Scratch::new("envconf");
    let from_env = s.file("env.py", "timeout = 22\n");
    let from_cli = s.file("cli.py", "timeout = 11\n");
    with_py(|py| {
        let env = format!("-c {from_env}");
        let cfg = loaded(load_in(py, &s, &["app:app"], Some(&env)));
        assert_eq!(cfg.int(py, "timeout"), 22);
        assert_eq!(cfg.config_file.as_deref(), Some(from_env.as_str()));
        // The command line's -c wins.
        let cfg = loaded(load_in(py, &s, &["-c", &from_cli, "app:app"], Some(&env)));
        assert_eq!(cfg.int(py, "timeout"), 11);
        assert_eq!(cfg.config_file.as_deref(), Some(from_cli.as_str()));
    });
}

#[test]
fn gunicorn_conf_py_in_the_cwd_is_the_default_config() {
    let _g = lock();
    let s = Scratch::new("defaultconf");
    let empty = s.file("empty.py", "");
    let default = s.file("gunicorn.conf.py", "timeout = 77\n");
    with_py(|py| {
        // First move the process into the scratch dir...
        let cfg = loaded(load_in(py, &s, &["-c", &empty, "app:app"], None));
        assert_eq!(cfg.int(py, "timeout"), 30);
        // ...then its ./gunicorn.conf.py is read when no -c is given.
        let cfg = loaded(load_in(py, &s, &["app:app"], None));
        assert_eq!(cfg.int(py, "timeout"), 77);
        assert_eq!(cfg.config_file.as_deref(), Some(default.as_str()));
    });
}

#[test]
fn app_module_from_the_command_line() {
    let _g = lock();
    let s = Scratch::new("app");
    let conf = s.file("conf.py", "wsgi_app = 'other:application'\n");
    let empty = s.file("empty.py", "");
    with_py(|py| {
        let cfg = loaded(load_in(py, &s, &["-c", &empty, "myapp:app"], None));
        assert_eq!(cfg.app_uri.as_deref(), Some("myapp:app"));
        assert_eq!(
            cfg.string(py, "default_proc_name").as_deref(),
            Some("myapp:app")
        );
        // The positional wins over wsgi_app.
        let cfg = loaded(load_in(py, &s, &["-c", &conf, "myapp:app"], None));
        assert_eq!(cfg.app_uri.as_deref(), Some("myapp:app"));
        assert_eq!(
            cfg.string(py, "wsgi_app").as_deref(),
            Some("other:application")
        );
    });
}

#[test]
fn wsgi_app_is_used_without_a_positional() {
    let _g = lock();
    let s = Scratch::new("wsgiapp");
    let conf = s.file("conf.py", "wsgi_app = ' mod:application '\n");
    with_py(|py| {
        let cfg = loaded(load_in(py, &s, &["-c", &conf], None));
        assert_eq!(cfg.app_uri.as_deref(), Some("mod:application"));
        // default_proc_name is only set from the positional.
        assert_eq!(
            cfg.string(py, "default_proc_name").as_deref(),
            Some("gunicorn")
        );
    });
}

#[test]
fn no_application_is_fatal() {
    let _g = lock();
    let s = Scratch::new("noapp");
    let empty = s.file("empty.py", "");
    with_py(|py| {
        let e = load_err(load_in(py, &s, &["-c", &empty], None));
        assert!(
            matches!(&e, LoadError::Fatal(m) if m == "No application module specified."),
            "{e:?}"
        );
        assert_eq!(e.exit_code(), 1);
        assert_eq!(e.to_string(), "\nError: No application module specified.\n");
    });
}

#[test]
fn unknown_and_uppercase_names_are_ignored() {
    let _g = lock();
    let s = Scratch::new("unknown");
    let conf = s.file(
        "conf.py",
        "import os\n\
         foo = 1\n\
         WORKERS = 9\n\
         Timeout = 'not even an int'\n\
         _private = object()\n\
         def helper(x):\n    return x\n\
         backlog = 100\n",
    );
    with_py(|py| {
        let cfg = loaded(load_in(py, &s, &["-c", &conf, "app:app"], None));
        if let Computed::Int(n) = computed::workers() {
            assert_eq!(cfg.int(py, "workers"), n);
        }
        assert_eq!(cfg.int(py, "timeout"), 30);
        assert_eq!(cfg.int(py, "backlog"), 100);
    });
}

#[test]
fn hooks_from_the_file_are_kept() {
    let _g = lock();
    let s = Scratch::new("hooks");
    let conf = s.file(
        "conf.py",
        "def on_starting(server):\n    pass\n\
         def pre_request(worker, req):\n    pass\n\
         def post_request(worker, req):\n    pass\n\
         def nworkers_changed(server, new, old):\n    pass\n",
    );
    with_py(|py| {
        let cfg = loaded(load_in(py, &s, &["-c", &conf, "app:app"], None));
        let on_starting = cfg.hook(py, "on_starting");
        assert_eq!(
            py_str(&on_starting.getattr("__module__").unwrap()),
            "__config__"
        );
        assert_eq!(cfg.hook_arity(py, "post_request"), 2);
        let printed = cfg.print_config(py, false);
        assert_eq!(shown(&printed, "on_starting"), "<on_starting()>");
        assert_eq!(shown(&printed, "pre_request"), "<pre_request()>");
        assert_eq!(shown(&printed, "nworkers_changed"), "<nworkers_changed()>");
        assert_eq!(
            shown(&printed, "post_request"),
            "<validate_post_request.<locals>.<lambda>()>"
        );
        // Hooks the file does not define keep gunicorn's defaults.
        assert_eq!(shown(&printed, "on_exit"), "<OnExit.on_exit()>");
        assert_eq!(shown(&printed, "pre_fork"), "<Prefork.pre_fork()>");
        // Calling a hook from the file works.
        on_starting.call1((py.None(),)).unwrap();
    });
}

#[test]
fn post_request_print_config_forms() {
    let _g = lock();
    let s = Scratch::new("postrequest");
    let three = s.file(
        "three.py",
        "def post_request(worker, req, environ):\n    pass\n",
    );
    let four = s.file(
        "four.py",
        "def post_request(worker, req, environ, resp):\n    pass\n",
    );
    let empty = s.file("empty.py", "");
    with_py(|py| {
        let cfg = loaded(load_in(py, &s, &["-c", &three, "app:app"], None));
        assert_eq!(
            shown(&cfg.print_config(py, false), "post_request"),
            "<validate_post_request.<locals>.<lambda>()>"
        );
        assert_eq!(cfg.hook_arity(py, "post_request"), 3);
        let cfg = loaded(load_in(py, &s, &["-c", &four, "app:app"], None));
        assert_eq!(
            shown(&cfg.print_config(py, false), "post_request"),
            "<post_request()>"
        );
        let cfg = loaded(load_in(py, &s, &["-c", &empty, "app:app"], None));
        assert_eq!(
            shown(&cfg.print_config(py, false), "post_request"),
            "<PostRequest.post_request()>"
        );
        assert_eq!(cfg.hook_arity(py, "post_request"), 4);
    });
}

#[test]
fn print_config_is_sorted_and_aligned() {
    let _g = lock();
    let s = Scratch::new("print");
    let empty = s.file("empty.py", "");
    with_py(|py| {
        let cfg = loaded(load_in(py, &s, &["-c", &empty, "app:app"], None));
        let printed = cfg.print_config(py, true);
        let names: Vec<&str> = printed
            .lines()
            .map(|l| l.split_whitespace().next().unwrap())
            .collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        let width = names.iter().map(|n| n.len()).max().unwrap();
        for line in printed.lines() {
            assert_eq!(&line[width..width + 3], " = ", "{line}");
        }
        assert_eq!(shown(&printed, "timeout"), "30");
        assert_eq!(shown(&printed, "accesslog"), "None");
        assert_eq!(shown(&printed, "http_protocols"), "['h1']");
        assert_eq!(shown(&printed, "default_proc_name"), "app:app");
    });
}

#[test]
fn a_syntax_error_shows_the_traceback() {
    let _g = lock();
    let s = Scratch::new("syntax");
    let conf = s.file("conf.py", "workers = 2\nbind = [\n");
    with_py(
        |py| match load_err(load_in(py, &s, &["-c", &conf, "app:app"], None)) {
            LoadError::ConfigFile { path, traceback } => {
                assert_eq!(path, conf);
                assert!(
                    traceback.contains(&format!("File \"{conf}\", line 2")),
                    "{traceback}"
                );
                assert!(traceback.contains("SyntaxError"), "{traceback}");
                let e = LoadError::ConfigFile {
                    path: path.clone(),
                    traceback: traceback.clone(),
                };
                assert!(e
                    .to_string()
                    .starts_with(&format!("Failed to read config file: {conf}\n")));
                assert_eq!(e.exit_code(), 1);
            }
            e => panic!("{e:?}"),
        },
    );
}

#[test]
fn an_exception_in_the_file_shows_the_traceback() {
    let _g = lock();
    let s = Scratch::new("raise");
    let conf = s.file("conf.py", "workers = 2\n\nraise ValueError('boom')\n");
    with_py(
        |py| match load_err(load_in(py, &s, &["-c", &conf, "app:app"], None)) {
            LoadError::ConfigFile { path, traceback } => {
                assert_eq!(path, conf);
                assert!(traceback.starts_with("Traceback (most recent call last):"));
                assert!(
                    traceback.contains(&format!("File \"{conf}\", line 3, in <module>")),
                    "{traceback}"
                );
                assert!(traceback.ends_with("ValueError: boom\n"), "{traceback}");
            }
            e => panic!("{e:?}"),
        },
    );
}

#[test]
fn a_wrong_type_in_the_file_names_the_setting() {
    let _g = lock();
    let s = Scratch::new("wrongtype");
    let conf = s.file("conf.py", "timeout = 5\nworkers = 'many'\n");
    let conf2 = s.file("conf2.py", "preload_app = 1\n");
    with_py(|py| {
        match load_err(load_in(py, &s, &["-c", &conf, "app:app"], None)) {
            LoadError::FileValue {
                name,
                value,
                message,
            } => {
                assert_eq!(name, "workers");
                assert_eq!(value, "many");
                assert_eq!(message, "invalid literal for int() with base 0: 'many'");
            }
            e => panic!("{e:?}"),
        }
        let e = load_err(load_in(py, &s, &["-c", &conf2, "app:app"], None));
        assert_eq!(
            e.to_string(),
            "Invalid value for preload_app: 1\n\n\nError: Invalid type for casting: 1\n"
        );
        assert_eq!(e.exit_code(), 1);
    });
}

#[test]
fn bad_values_on_the_command_line() {
    let _g = lock();
    let s = Scratch::new("badcli");
    let empty = s.file("empty.py", "");
    with_py(|py| {
        // argparse's type=int.
        match load_err(load_in(
            py,
            &s,
            &["-c", &empty, "-w", "many", "app:app"],
            None,
        )) {
            LoadError::Cli(CliError::Usage { message, .. }) => {
                assert_eq!(message, "argument -w/--workers: invalid int value: 'many'")
            }
            e => panic!("{e:?}"),
        }
        // The validator's message.
        match load_err(load_in(
            py,
            &s,
            &["-c", &empty, "--reload-engine", "bad", "app:app"],
            None,
        )) {
            LoadError::Fatal(m) => assert_eq!(m, "Invalid reload_engine: 'bad'"),
            e => panic!("{e:?}"),
        }
        // The same from GUNICORN_CMD_ARGS.
        match load_err(load_in(
            py,
            &s,
            &["-c", &empty, "app:app"],
            Some("--http-protocols h3"),
        )) {
            LoadError::Fatal(m) => {
                assert_eq!(m, "Invalid protocol 'h3'. Valid protocols: h1, h2")
            }
            e => panic!("{e:?}"),
        }
        // auto_int (umask): a leading 0 is octal.
        let cfg = loaded(load_in(
            py,
            &s,
            &["-c", &empty, "-m", "022", "app:app"],
            None,
        ));
        assert_eq!(cfg.int(py, "umask"), 0o22);
    });
}

#[test]
fn recycling_settings_from_the_file_and_the_command_line() {
    let _g = lock();
    let s = Scratch::new("recycling");
    let conf = s.file(
        "conf.py",
        "max_worker_memory = 512\nmax_worker_lifetime = 3600\n",
    );
    let negative = s.file("negative.py", "max_worker_memory = -1\n");
    with_py(|py| {
        let cfg = loaded(load_in(py, &s, &["-c", &conf, "app:app"], None));
        assert_eq!(cfg.int(py, "max_worker_memory"), 512);
        assert_eq!(cfg.int(py, "max_worker_lifetime"), 3600);
        assert_eq!(cfg.int(py, "max_worker_lifetime_jitter"), 0);
        // `--max-worker-lifetime` is a whole flag, not an ambiguous prefix
        // of `--max-worker-lifetime-jitter`.
        let cfg = loaded(load_in(
            py,
            &s,
            &[
                "-c",
                &conf,
                "--max-worker-lifetime",
                "60",
                "--max-worker-lifetime-jitter",
                "30",
                "--max-worker-memory",
                "0",
                "app:app",
            ],
            None,
        ));
        assert_eq!(cfg.int(py, "max_worker_lifetime"), 60);
        assert_eq!(cfg.int(py, "max_worker_lifetime_jitter"), 30);
        assert_eq!(cfg.int(py, "max_worker_memory"), 0);
        // validate_pos_int's message, from the file and the command line.
        match load_err(load_in(py, &s, &["-c", &negative, "app:app"], None)) {
            LoadError::FileValue { name, message, .. } => {
                assert_eq!(name, "max_worker_memory");
                assert_eq!(message, "Value must be positive: -1");
            }
            e => panic!("{e:?}"),
        }
        match load_err(load_in(
            py,
            &s,
            &["-c", &conf, "--max-worker-lifetime=-5", "app:app"],
            None,
        )) {
            LoadError::Fatal(m) => assert_eq!(m, "Value must be positive: -5"),
            e => panic!("{e:?}"),
        }
    });
}

#[test]
fn env_splits_raw_env() {
    let _g = lock();
    let s = Scratch::new("rawenv");
    let empty = s.file("empty.py", "");
    with_py(|py| {
        let cfg = loaded(load_in(
            py,
            &s,
            &[
                "-c", &empty, "-e", "A=1", "--env", "B=x=y", "-e", "C=", "app:app",
            ],
            None,
        ));
        assert_eq!(
            cfg.env(py).unwrap(),
            vec![
                ("A".to_string(), "1".to_string()),
                ("B".to_string(), "x=y".to_string()),
                ("C".to_string(), String::new()),
            ]
        );
        let cfg = loaded(load_in(py, &s, &["-c", &empty, "app:app"], None));
        assert_eq!(cfg.env(py).unwrap(), Vec::new());
        let cfg = loaded(load_in(
            py,
            &s,
            &["-c", &empty, "-e", "A=1", "-e", "NOEQ", "app:app"],
            None,
        ));
        assert_eq!(
            cfg.env(py).unwrap_err(),
            "environment setting 'NOEQ' invalid"
        );
    });
}

fn support(name: &str) -> Support {
    SETTINGS[crate::table::index_of(name).unwrap()].support
}

/// The long flag of a setting.
fn long_flag(s: &crate::table::Setting) -> &'static str {
    s.flags.iter().find(|f| f.starts_with("--")).unwrap()
}

/// Settings with an integer default, a `--flag INT` and the given support.
fn int_settings(want: fn(Support) -> bool) -> Vec<(&'static crate::table::Setting, i64)> {
    use crate::table::{Action, DefaultValue};
    SETTINGS
        .iter()
        .filter(|s| want(s.support) && s.validator == Validator::PosInt)
        .filter(|s| s.action == Action::Store && !s.flags.is_empty())
        .filter_map(|s| match s.default {
            DefaultValue::Int(n) => Some((s, n)),
            _ => None,
        })
        .collect()
}

#[test]
fn unsupported_in_use_lists_non_default_later_settings() {
    use crate::table::Action;
    // Which settings are `Later` changes as rgunicorn grows: pick them from
    // the table.
    let later = int_settings(|s| s == Support::Later);
    let done = int_settings(|s| s == Support::Done);
    assert!(
        later.len() >= 3,
        "not enough Later int settings to test with"
    );
    let (changed, changed_default) = later[0];
    let (at_default, at_default_value) = later[1];
    let (untouched, _) = later[2];
    let never_bool = SETTINGS
        .iter()
        .find(|s| matches!(s.support, Support::Never(_)) && s.action == Action::StoreTrue);
    let hook_with = |support: Support| {
        SETTINGS.iter().find(move |s| {
            s.support == support && s.is_hook() && s.validator == Validator::Callable(1)
        })
    };
    let later_hook = hook_with(Support::Later);
    let done_hook = hook_with(Support::Done);

    let _g = lock();
    let s = Scratch::new("unsupported");
    let mut file = String::new();
    for hook in [later_hook, done_hook].into_iter().flatten() {
        file.push_str(&format!("def {}(arg):\n    pass\n", hook.name));
    }
    let conf = s.file("conf.py", &file);
    let mut args: Vec<String> = vec!["-c".into(), conf.clone()];
    args.extend([long_flag(changed).into(), (changed_default + 1).to_string()]);
    args.extend([long_flag(at_default).into(), at_default_value.to_string()]);
    if let Some((d, n)) = done.first() {
        args.extend([long_flag(d).into(), (n + 1).to_string()]);
    }
    if let Some(n) = never_bool {
        args.push(long_flag(n).into());
    }
    args.push("app:app".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    with_py(|py| {
        let cfg = loaded(load_in(py, &s, &args, None));
        let in_use = cfg.unsupported_in_use(py);
        let used: Vec<&str> = in_use.iter().map(|(n, _)| *n).collect();
        assert!(in_use.contains(&(changed.name, None)), "{in_use:?}");
        // Set on the command line, but to its default value.
        assert!(!used.contains(&at_default.name), "{used:?}");
        assert!(!used.contains(&untouched.name), "{used:?}");
        if let Some((d, _)) = done.first() {
            assert!(!used.contains(&d.name), "{used:?}");
        }
        if let Some(n) = never_bool {
            let Support::Never(why) = n.support else {
                unreachable!()
            };
            assert!(in_use.contains(&(n.name, Some(why))), "{in_use:?}");
        }
        if let Some(h) = later_hook {
            assert!(used.contains(&h.name), "{used:?}");
        }
        // Hooks left at their defaults, and Done ones, are not named.
        for st in SETTINGS.iter().filter(|st| st.is_hook()) {
            if Some(st.name) != later_hook.map(|h| h.name) {
                assert!(!used.contains(&st.name), "{used:?}");
            }
        }
        for (name, reason) in &in_use {
            match support(name) {
                Support::Later => assert_eq!(*reason, None, "{name}"),
                Support::Never(why) => assert_eq!(*reason, Some(why), "{name}"),
                Support::Done => panic!("{name} is done"),
            }
        }
    });
}

#[test]
fn every_default_in_the_table_passes_its_validator() {
    // The chdir default is the cwd, which load() changes.
    let _g = lock();
    with_py(|py| {
        if let Err(e) = Config::defaults(py) {
            panic!("{e}");
        }
    });
}

#[test]
fn set_validates_and_refuses_unknown_names() {
    let _g = lock();
    with_py(|py| {
        let mut cfg = Config::defaults(py).unwrap();
        cfg.set(py, "workers", &PyString::new(py, "0x10")).unwrap();
        assert_eq!(cfg.int(py, "workers"), 16);
        assert_eq!(
            cfg.set(py, "workers", &PyString::new(py, "-2")),
            Err(Invalid("Value must be positive: -2".into()))
        );
        assert_eq!(cfg.int(py, "workers"), 16);
        assert_eq!(
            cfg.set(py, "nope", &PyString::new(py, "x")),
            Err(Invalid("No configuration setting for: nope".into()))
        );
    });
}
