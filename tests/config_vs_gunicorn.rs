//! `rgunicorn --print-config` against `gunicorn --print-config` (gunicorn
//! 27.0.1, installed by tests/run): config files, environment variables,
//! `GUNICORN_CMD_ARGS` and flags must resolve to the same value for every
//! setting gunicorn prints; bad input must fail in both.

use crate::common;

use std::collections::BTreeMap;
use std::path::Path;

use common::*;

type Args<'a> = &'a [&'a str];
type Env<'a> = &'a [(&'a str, &'a str)];
type Needles<'a> = &'a [&'a str];

const DUMMY_APP: &str = "def application(environ, start_response):\n    start_response('200 OK', [])\n    return [b'ok']\n";

const TYPED_CONF: &str = r#"
import os
bind = "127.0.0.1:9001"          # a string becomes a list
workers = "3"                     # coerced with int(x, 0)
threads = 0x4
timeout = True                    # bools are ints
graceful_timeout = "0o17"
keepalive = 9
preload_app = "true"              # booleans from strings
daemon = "False"
reuse_port = " TRUE "
umask = 0o22
user = "root"                     # names -> ids
group = "root"
raw_env = ["A=1", "B=two=2"]
forwarded_allow_ips = "10.0.0.0/8, 127.0.0.1,*"
proxy_allow_ips = "::1"
forwarder_headers = "SCRIPT_NAME, PATH_INFO,X_FOO"
secure_scheme_headers = {"X-SCHEME": "https"}
logconfig_dict = {"version": 1, "loggers": {}}
statsd_host = "localhost:9125"
statsd_prefix = "app"
proxy_protocol = True
http_protocols = " H1 "
http2_cleartext = True
header_map = "Refuse"
asgi_loop = "AsyncIO"
asgi_lifespan = "off"
http_parser = "python"
worker_class = "gthread"
reload_extra_files = [__file__]
pidfile = "  /tmp/x.pid  "
proc_name = "typed"
limit_request_line = 0
cert_reqs = 2
wsgi_app = "ignored:app"
not_a_setting = 42
TIMEOUT = 99                      # names are case-sensitive

def post_request(worker, req):    # 2-parameter form is wrapped
    pass

def pre_fork(server, worker):
    pass

def nworkers_changed(server, new_value, old_value):
    pass

class Hooks:
    @staticmethod
    def on_exit(server):
        pass

on_exit = Hooks.on_exit
"#;

const MODULE_CONF: &str =
    "workers = 7\nbind = ['unix:/tmp/a.sock', '[::1]:9000']\nstatsd_host = 'unix:8125'\n";

/// Parse `--print-config` output into name -> value.
fn settings(stdout: &str) -> BTreeMap<String, String> {
    stdout
        .lines()
        .filter_map(|l| {
            l.split_once(" = ")
                .map(|(k, v)| (k.trim().to_string(), v.to_string()))
        })
        .collect()
}

fn setup() -> std::path::PathBuf {
    let dir = scratch_dir("printcfg");
    std::fs::write(dir.join("dummyapp.py"), DUMMY_APP).unwrap();
    std::fs::write(dir.join("typed.conf.py"), TYPED_CONF).unwrap();
    std::fs::write(dir.join("modconf.py"), MODULE_CONF).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/gunicorn.conf.py"),
        dir.join("example.conf.py"),
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(
        dir.join("sub/gunicorn.conf.py"),
        "workers = 11\nbind = 'sub:1'\n",
    )
    .unwrap();
    dir
}

/// Run both with the same arguments, environment and directory; every
/// setting gunicorn prints must print the same in rgunicorn.
fn assert_same(dir: &Path, args: &[&str], env: &[(&str, &str)]) {
    let g = run_in(&gunicorn(), dir, args, env);
    let r = run_in(&rgunicorn(), dir, args, env);
    let (gout, rout) = (text(&g.stdout), text(&r.stdout));
    assert_eq!(
        g.status.code(),
        r.status.code(),
        "exit codes differ for {args:?} {env:?}\ngunicorn stderr: {}\nrgunicorn stderr: {}",
        text(&g.stderr),
        text(&r.stderr)
    );
    let (gs, rs) = (settings(&gout), settings(&rout));
    if !args.contains(&"--print-config") {
        return;
    }
    assert!(
        gs.len() >= 120,
        "gunicorn printed {} settings for {args:?}: {}",
        gs.len(),
        text(&g.stderr)
    );
    for (name, gval) in &gs {
        assert_eq!(
            Some(gval),
            rs.get(name),
            "setting {name} differs for {args:?} {env:?}"
        );
    }
    // Lines gunicorn prints, in the same order and format, too.
    let rlines: Vec<&str> = rout
        .lines()
        .filter(|l| gs.contains_key(l.split(" = ").next().unwrap().trim()))
        .collect();
    let width = gs.keys().map(|k| k.len()).max().unwrap();
    for (g_line, r_line) in gout.lines().zip(rlines) {
        assert_eq!(
            g_line,
            r_line.replacen(
                &format!("{:width$}", r_line.split(" = ").next().unwrap().trim()),
                &format!("{:width$}", g_line.split(" = ").next().unwrap().trim()),
                1
            )
        );
    }
}

#[test]
fn print_config_matches_gunicorn() {
    let dir = setup();
    let cases: &[(Args, Env)] = &[
        (&["--print-config", "dummyapp"], &[]),
        (
            &["--print-config", "-c", "example.conf.py", "dummyapp"],
            &[],
        ),
        (
            &[
                "--print-config",
                "-c",
                "example.conf.py",
                "dummyapp:application",
            ],
            &[
                ("PORT", "9999"),
                ("WORKERS", "2"),
                ("MAX_REQUESTS", "50"),
                ("LOG_LEVEL", "debug"),
            ],
        ),
        (&["--print-config", "-c", "typed.conf.py", "dummyapp"], &[]),
        (
            &["--print-config", "-c", "file:typed.conf.py", "dummyapp"],
            &[],
        ),
        (&["--print-config", "-c", "python:modconf", "dummyapp"], &[]),
        (
            &["--print-config", "dummyapp"],
            &[
                ("PORT", "7000"),
                ("WEB_CONCURRENCY", "4"),
                ("FORWARDED_ALLOW_IPS", "10.1.2.3"),
            ],
        ),
        // precedence: file < GUNICORN_CMD_ARGS < CLI; repeated flags replace the file's list
        (
            &["--print-config", "-c", "typed.conf.py", "dummyapp"],
            &[("GUNICORN_CMD_ARGS", "-w 6 -b env:1 -b env:2 --keep-alive 4")],
        ),
        (
            &[
                "--print-config",
                "-c",
                "typed.conf.py",
                "-w",
                "7",
                "-b",
                "cli:1",
                "dummyapp",
            ],
            &[("GUNICORN_CMD_ARGS", "-w 6 -b env:1 --keep-alive 4")],
        ),
        (
            &["--print-config", "dummyapp"],
            &[("GUNICORN_CMD_ARGS", "-c typed.conf.py --no-sendfile")],
        ),
        // flags of every shape
        (
            &[
                "--print-config",
                "--bac",
                "10",
                "-w3",
                "--timeout=7",
                "-m",
                "022",
                "--control-socket-mode",
                "0x1ff",
                "-e",
                "K=V",
                "--env",
                "Q=R",
                "--preload",
                "-D",
                "--no-sendfile",
                "--proxy-protocol",
                "--reuse-port",
                "--log-level",
                "DEBUG",
                "--log-file",
                "err.log",
                "--access-logfile",
                "-",
                "-n",
                "named",
                "--forwarded-allow-ips",
                "*",
                "--limit-request-field_size",
                "0",
                "--http-protocols",
                "h1",
                "-u",
                "0",
                "-g",
                "0",
                "--chdir",
                "sub",
                "-k",
                "uvicorn.workers.UvicornWorker",
                "dummyapp",
            ],
            &[],
        ),
        // ./gunicorn.conf.py is read from the start directory, not --chdir's
        (&["--print-config", "--chdir", "sub", "dummyapp"], &[]),
        (&["--print-config", "dummyapp", "extra", "positional"], &[]),
        (&["--check-config", "dummyapp"], &[]),
    ];
    for (args, env) in cases {
        assert_same(&dir, args, env);
    }
    // In sub/, its gunicorn.conf.py is the default config file.
    assert_same(
        &dir.join("sub"),
        &["--print-config", "--pythonpath", "..", "dummyapp"],
        &[("PYTHONPATH", dir.to_str().unwrap())],
    );
}

/// Bad input: both exit non-zero, and rgunicorn says what is wrong.
#[test]
fn bad_input_fails_in_both() {
    let dir = setup();
    let write = |name: &str, body: &str| std::fs::write(dir.join(name), body).unwrap();
    write("syntax.conf.py", "workers = 2\n\n\ntimeout = 3 3\n");
    write("wrongtype.conf.py", "workers = \"many\"\n");
    write("arity.conf.py", "def pre_fork(server):\n    pass\n");
    write(
        "arity_default.conf.py",
        "def on_starting(server, extra=None):\n    pass\n",
    );
    write(
        "post_request5.conf.py",
        "def post_request(a, b, c, d, e):\n    pass\n",
    );
    write(
        "raises.conf.py",
        "import os\nraise RuntimeError('boom from config')\n",
    );
    write("baduser.conf.py", "user = 'no-such-user-xyz'\n");
    write("badbool.conf.py", "daemon = 'maybe'\n");
    write("badip.conf.py", "forwarded_allow_ips = '10.0.0.1/8'\n");
    write("notcallable.conf.py", "when_ready = 3\n");
    let cases: &[(Args, Env, Needles)] = &[
        (
            &["-c", "syntax.conf.py", "--check-config", "dummyapp"],
            &[],
            &["syntax.conf.py", "line 4", "SyntaxError"],
        ),
        (
            &["-c", "wrongtype.conf.py", "--check-config", "dummyapp"],
            &[],
            &["workers", "many"],
        ),
        (
            &["-c", "arity.conf.py", "--check-config", "dummyapp"],
            &[],
            &["pre_fork", "arity of: 2"],
        ),
        (
            &["-c", "arity_default.conf.py", "--check-config", "dummyapp"],
            &[],
            &["on_starting", "arity of: 1"],
        ),
        (
            &["-c", "post_request5.conf.py", "--check-config", "dummyapp"],
            &[],
            &["post_request", "arity of: 4"],
        ),
        (
            &["-c", "raises.conf.py", "--check-config", "dummyapp"],
            &[],
            &["Traceback", "boom from config", "raises.conf.py"],
        ),
        (
            &["-c", "baduser.conf.py", "--check-config", "dummyapp"],
            &[],
            &["No such user"],
        ),
        (
            &["-c", "badbool.conf.py", "--check-config", "dummyapp"],
            &[],
            &["daemon", "Invalid boolean"],
        ),
        (
            &["-c", "badip.conf.py", "--check-config", "dummyapp"],
            &[],
            &["forwarded_allow_ips", "has host bits set"],
        ),
        (
            &["-c", "notcallable.conf.py", "--check-config", "dummyapp"],
            &[],
            &["when_ready", "not callable"],
        ),
        (
            &["-c", "missing.conf.py", "--check-config", "dummyapp"],
            &[],
            &["missing.conf.py", "doesn't exist"],
        ),
        (
            &["--check-config"],
            &[],
            &["No application module specified."],
        ),
        (&["-q", "dummyapp"], &[], &["unrecognized arguments: -q"]),
        (
            &["--work", "2", "dummyapp"],
            &[],
            &["ambiguous option: --work"],
        ),
        (&["-w", "x", "dummyapp"], &[], &["invalid int value: 'x'"]),
        (
            &["--check-config", "dummyapp"],
            &[("GUNICORN_CMD_ARGS", "--bogus")],
            &["unrecognized arguments: --bogus"],
        ),
        (
            &["--check-config", "nosuchmodule"],
            &[],
            &[
                "Error while loading the application",
                "No module named 'nosuchmodule'",
            ],
        ),
        (
            &["--check-config", "dummyapp:nope"],
            &[],
            &["Failed to find attribute 'nope' in 'dummyapp'."],
        ),
        (
            &["--check-config", "dummyapp:application(1"],
            &[],
            &["Failed to parse"],
        ),
        (
            &["--proxy-protocol", "dummyapp", "--check-config"],
            &[],
            &["proxy_protocol must be"],
        ),
        (
            &["--http-protocols", "h3", "--check-config", "dummyapp"],
            &[],
            &["Invalid protocol 'h3'"],
        ),
    ];
    for (args, env, needles) in cases {
        let g = run_in(&gunicorn(), &dir, args, env);
        let r = run_in(&rgunicorn(), &dir, args, env);
        assert!(!g.status.success(), "gunicorn accepted {args:?}");
        assert_eq!(
            g.status.code(),
            r.status.code(),
            "exit codes differ for {args:?}: {}",
            text(&r.stderr)
        );
        let err = text(&r.stderr);
        for needle in *needles {
            assert!(
                err.contains(needle),
                "rgunicorn's error for {args:?} lacks {needle:?}:\n{err}"
            );
        }
    }
}

#[test]
fn help_and_version() {
    let dir = setup();
    let out = run_in(&rgunicorn(), &dir, &["--help"], &[]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    assert!(
        help.starts_with("usage: rgunicorn [OPTIONS] [APP_MODULE]"),
        "{help}"
    );
    for flag in [
        "--bind",
        "--workers",
        "--worker-class",
        "--limit-request-field_size",
        "--no-control-socket",
        "--paste-global",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
    let out = run_in(&rgunicorn(), &dir, &["--version"], &[]);
    let version = text(&out.stdout);
    assert!(out.status.success());
    assert!(
        version.contains("rgunicorn (version ") && version.contains("Python 3."),
        "{version}"
    );
}

/// What a start would refuse, `--check-config` reports (gunicorn's only
/// imports the app): a worker class that cannot be loaded or served, TLS
/// files that are missing, settings rgunicorn would serve wrongly.
#[test]
fn check_config_reports_what_a_start_refuses() {
    let dir = setup();
    let cases: &[(&[&str], &str)] = &[
        (
            &["-k", "nosuch.Worker"],
            "class uri 'nosuch.Worker' invalid or not found",
        ),
        (&["-k", "tornado"], "is not supported by rgunicorn"),
        (
            &["--certfile", "missing.pem", "--keyfile", "missing.key"],
            "missing.pem",
        ),
        (
            &["--protocol", "uwsgi"],
            "protocol = \"uwsgi\" is not supported",
        ),
        (
            &[
                "--dirty-workers",
                "1",
                "--dirty-app",
                "dummyapp:application",
            ],
            "dirty arbiter",
        ),
    ];
    for (args, needle) in cases {
        let mut check = args.to_vec();
        check.extend(["--check-config", "dummyapp"]);
        let out = run_in(&rgunicorn(), &dir, &check, &[]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?} lacks {needle:?}: {err}");
        // A start fails the same way, before serving.
        let mut start = args.to_vec();
        start.extend(["-b", "127.0.0.1:0", "dummyapp"]);
        let out = run_in(&rgunicorn(), &dir, &start, &[]);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(text(&out.stderr).contains(needle), "{args:?}");
        assert!(!text(&out.stderr).contains("Listening at"), "{args:?}");
    }
}

/// Start-up warnings go through the error log (its format, its file), and
/// the settings rgunicorn acts on are not among them.
#[test]
fn startup_warnings_go_to_the_error_log() {
    let dir = common::scratch_dir("warnings-errorlog");
    let server = common::server::Server::start(
        &dir,
        &[
            "--error-logfile",
            "err.log",
            "--dirty-timeout",
            "5",
            "--forwarded-allow-ips",
            "10.0.0.1",
        ],
    );
    let log = std::fs::read_to_string(dir.join("err.log")).unwrap();
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains("[WARNING]")).collect();
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(
        warnings[0].starts_with('[')
            && warnings[0].contains(&format!(
                "] [{}] [WARNING] setting `dirty_timeout`",
                server.pid()
            )),
        "{log}"
    );
    assert!(!server.logged("Warning"));
    assert_eq!(server.stop(), 0);
}
