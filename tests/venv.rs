//! The cargo-built binary and virtual environments: it runs in a venv as
//! that venv's own `python` does. An activated venv (`VIRTUAL_ENV`, PATH
//! with its bin/ first, as `activate` sets them) gives its site-packages,
//! the base interpreter's only with `include-system-site-packages = true`,
//! and the venv's copy of a module wins over the base's; a binary in a
//! venv's bin/ uses that venv; with no venv, the interpreter the binary was
//! built against; a venv of another Python minor version is refused with
//! both versions named.
//!
//! The venvs are made here with `python -m venv --without-pip` (no
//! network), and what a worker reports (sys.prefix, sys.path, which copy
//! of a module it imported) is compared with what the venv's python reports
//! running the same file. The build's interpreter is never written to: a
//! module "in the base" lives in a throwaway base interpreter (see
//! [`throwaway_base`]).

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

use common::server::{alive, children, KillOnDrop, Server};
use common::{rgunicorn, scratch_dir, text};

/// The app, also runnable as a script: it imports `{required}` at the top
/// (a worker that cannot import it does not boot), and reports the
/// interpreter's prefixes and path and which copy of each test module it
/// finds (each module's `WHERE` says where it was written).
const APP: &str = r#"
import json, os, sys
import {required}

def report():
    found = {}
    for name in ("venvmark", "shadowmod", "baseonly"):
        try:
            found[name] = __import__(name).WHERE
        except ImportError:
            found[name] = None
    return {
        "prefix": sys.prefix,
        "base_prefix": sys.base_prefix,
        "executable": sys.executable,
        # The first entry is each entry point's own (python: the script's
        # directory; rgunicorn: the working directory, as gunicorn does).
        "path": sys.path[1:],
        "modules": found,
    }

def application(environ, start_response):
    body = json.dumps(dict(report(), ppid=os.getppid())).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]

if __name__ == "__main__":
    print(json.dumps(report()))
"#;

/// The interpreter the binary was built against, as the binary itself
/// reports it with no venv in sight.
struct Built {
    prefix: PathBuf,
    /// "3.11.7"
    version: String,
    /// "3.11"
    minor: String,
    python: PathBuf,
}

impl Built {
    fn site_packages(&self, prefix: &Path) -> PathBuf {
        prefix.join(format!("lib/python{}/site-packages", self.minor))
    }
}

fn built(dir: &Path) -> Built {
    let out = dir.join("built.json");
    std::fs::write(
        dir.join("probe.conf.py"),
        "import json, os, sys\n\
         v = sys.version_info\n\
         json.dump({'prefix': sys.base_prefix, 'version': '%d.%d.%d' % v[:3],\n\
                    'minor': '%d.%d' % v[:2]}, open(os.environ['PROBE_OUT'], 'w'))\n",
    )
    .unwrap();
    let status = command(&rgunicorn(), dir, &env_for(None, dir))
        .args(["rgunicorn:health", "-c", "probe.conf.py", "--check-config"])
        .env("PROBE_OUT", &out)
        .status()
        .unwrap();
    assert!(status.success());
    let v: Value = serde_json::from_str(&std::fs::read_to_string(out).unwrap()).unwrap();
    let prefix = PathBuf::from(v["prefix"].as_str().unwrap());
    let minor = v["minor"].as_str().unwrap().to_string();
    let python = prefix.join(format!("bin/python{minor}"));
    assert!(python.exists(), "no {}", python.display());
    Built {
        prefix,
        version: v["version"].as_str().unwrap().to_string(),
        minor,
        python,
    }
}

/// The environment of a shell where `venv` is activated (as `activate`
/// sets it: VIRTUAL_ENV, PATH with its bin/ first), or none is. HOME is the
/// test's directory so that no user site-packages get in, and neither
/// PYTHONPATH nor PYTHONHOME is set.
fn env_for(venv: Option<&Path>, home: &Path) -> Vec<(String, Option<String>)> {
    let path = std::env::var("PATH").unwrap_or_default();
    let mut env = vec![
        ("HOME".to_string(), Some(home.display().to_string())),
        ("PYTHONPATH".to_string(), None),
        ("PYTHONHOME".to_string(), None),
    ];
    match venv {
        Some(v) => {
            env.push(("VIRTUAL_ENV".into(), Some(v.display().to_string())));
            env.push(("PATH".into(), Some(format!("{}/bin:{path}", v.display()))));
        }
        None => env.push(("VIRTUAL_ENV".into(), None)),
    }
    env
}

fn borrowed(env: &[(String, Option<String>)]) -> Vec<(&str, Option<&str>)> {
    env.iter()
        .map(|(k, v)| (k.as_str(), v.as_deref()))
        .collect()
}

fn command(program: &Path, dir: &Path, env: &[(String, Option<String>)]) -> Command {
    let mut cmd = Command::new(program);
    cmd.current_dir(dir);
    for (k, v) in env {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    cmd
}

fn make_venv(python: &Path, at: &Path, system_site_packages: bool) {
    let mut cmd = Command::new(python);
    cmd.args(["-m", "venv", "--without-pip"]);
    if system_site_packages {
        cmd.arg("--system-site-packages");
    }
    let out = cmd.arg(at).env_remove("VIRTUAL_ENV").output().unwrap();
    assert!(out.status.success(), "venv: {}", text(&out.stderr));
}

/// A module `name` whose `WHERE` is `label`, in `site_packages`.
fn put_module(site_packages: &Path, name: &str, label: &str) {
    assert!(site_packages.is_dir(), "no {}", site_packages.display());
    std::fs::write(
        site_packages.join(format!("{name}.py")),
        format!("WHERE = {label:?}\n"),
    )
    .unwrap();
}

/// `python app.py` in `dir`: the report of the venv's (or base's) own
/// python, the reference for what a worker must see.
fn python_report(python: &Path, dir: &Path, env: &[(String, Option<String>)]) -> Value {
    let out = command(python, dir, env).arg("app.py").output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn write_app(dir: &Path, required: &str) {
    std::fs::write(dir.join("app.py"), APP.replace("{required}", required)).unwrap();
}

/// Serve app.py from `dir` with `program` in `env`.
fn serve(program: &Path, dir: &Path, env: &[(String, Option<String>)], args: &[&str]) -> Server {
    Server::start_program_env(program, "app:application", dir, args, &borrowed(env))
}

/// The worker's report, without the worker's parent pid.
fn served_report(port: u16) -> (Value, i64) {
    let (status, body) = get(port);
    assert_eq!(status, 200, "{body}");
    let mut v: Value = serde_json::from_str(&body).unwrap();
    let ppid = v
        .as_object_mut()
        .unwrap()
        .remove("ppid")
        .unwrap()
        .as_i64()
        .unwrap();
    (v, ppid)
}

fn get(port: u16) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).unwrap();
    let status = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = buf.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

fn modules(venvmark: Option<&str>, shadowmod: Option<&str>, baseonly: Option<&str>) -> Value {
    serde_json::json!({"venvmark": venvmark, "shadowmod": shadowmod, "baseonly": baseonly})
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn without_a_venv_it_runs_the_interpreter_it_was_built_against() {
    let dir = scratch_dir("venv-none");
    let built = built(&dir);
    write_app(&dir, "os");
    let env = env_for(None, &dir);
    let server = serve(&rgunicorn(), &dir, &env, &[]);
    let (report, _) = served_report(server.port);
    assert_eq!(report["prefix"], built.prefix.to_str().unwrap());
    assert_eq!(report["base_prefix"], built.prefix.to_str().unwrap());
    let reference = python_report(&built.python, &dir, &env);
    assert_eq!(report["path"], reference["path"]);
    assert_eq!(report["modules"], modules(None, None, None));
    assert_eq!(server.stop(), 0);
}

/// The package is only in the venv: the base interpreter cannot import it,
/// a worker under the activated venv can, sees what the venv's python sees,
/// and still does after a USR2 upgrade (the new master inherits the
/// environment and re-executes the binary).
#[test]
fn activated_venv_serves_its_own_packages_also_after_usr2() {
    let dir = scratch_dir("venv-active");
    let built = built(&dir);
    let venv = dir.join("venv");
    make_venv(&built.python, &venv, false);
    put_module(&built.site_packages(&venv), "venvmark", "venv");
    write_app(&dir, "venvmark");

    let no_venv = env_for(None, &dir);
    let base = command(&built.python, &dir, &no_venv)
        .args(["-c", "import venvmark"])
        .output()
        .unwrap();
    assert!(
        text(&base.stderr).contains("No module named 'venvmark'"),
        "the base interpreter must not have venvmark: {}",
        text(&base.stderr)
    );

    let env = env_for(Some(&venv), &dir);
    let server = serve(&rgunicorn(), &dir, &env, &["--pid", "app.pid"]);
    let (report, ppid) = served_report(server.port);
    assert_eq!(ppid, i64::from(server.pid()));
    let reference = python_report(&venv.join("bin/python"), &dir, &env);
    assert_eq!(report, reference);
    assert_eq!(report["prefix"], venv.to_str().unwrap());
    assert_eq!(report["base_prefix"], built.prefix.to_str().unwrap());
    assert_eq!(report["modules"], modules(Some("venv"), None, None));

    // USR2, then TERM the old master: the new one's workers answer.
    server.signal("USR2");
    let pid2 = dir.join("app.pid.2");
    wait_for("the new master's pidfile", || pid2.exists());
    let new: i32 = std::fs::read_to_string(&pid2)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let _guard = KillOnDrop(new);
    wait_for("the new master's workers", || children(new).len() == 2);
    let port = server.port;
    assert_eq!(server.stop(), 0);
    wait_for("the new master's promotion", || {
        std::fs::read_to_string(dir.join("app.pid")).ok().as_deref() == Some(&format!("{new}\n"))
    });
    let (after, ppid) = served_report(port);
    assert_eq!(ppid, i64::from(new));
    assert_eq!(after, reference);
    let _ = Command::new("kill")
        .args(["-TERM", &new.to_string()])
        .status();
    wait_for("the new master to exit", || !alive(new));
}

/// A base interpreter whose site-packages the test owns, so that a module
/// can be "in the base" without writing to the build's interpreter: a copy
/// of the build's `pythonX.Y` executable in `at/bin/`, and `at/lib/` made
/// of symlinks to the build's lib/ (libpython, the standard library, its
/// extension modules) except for an empty `lib/pythonX.Y/site-packages`.
/// CPython finds its prefix from where its executable is (here `at`), so
/// this is a real installation to it, and venvs made with its python name
/// it as their `home`; both rgunicorn and the venvs' pythons see it the
/// same way, which the tests check.
fn throwaway_base(built: &Built, at: &Path) -> PathBuf {
    let stdlib = format!("python{}", built.minor);
    std::fs::create_dir_all(at.join("bin")).unwrap();
    let python = at.join("bin").join(built.python.file_name().unwrap());
    std::fs::copy(&built.python, &python).unwrap();
    let link_all_but = |from: &Path, to: &Path, except: &str| {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            if entry.file_name() != except {
                std::os::unix::fs::symlink(entry.path(), to.join(entry.file_name())).unwrap();
            }
        }
    };
    link_all_but(&built.prefix.join("lib"), &at.join("lib"), &stdlib);
    let lib = at.join("lib").join(&stdlib);
    link_all_but(
        &built.prefix.join("lib").join(&stdlib),
        &lib,
        "site-packages",
    );
    std::fs::create_dir(lib.join("site-packages")).unwrap();
    python
}

/// `shadowmod` is in the base's site-packages and in the venv's, in two
/// versions; `baseonly` only in the base's. With
/// `include-system-site-packages = true` the venv's shadowmod wins and
/// baseonly is found (so the base's site-packages is on the path: the
/// venv's copy wins by order, as for the venv's python); with `false`
/// neither base module is found.
#[test]
fn venv_copy_wins_over_the_base_and_the_base_only_when_the_venv_includes_it() {
    let dir = scratch_dir("venv-shadow");
    let built = built(&dir);
    let base_python = throwaway_base(&built, &dir.join("base"));
    let base_site = built.site_packages(&dir.join("base"));
    put_module(&base_site, "shadowmod", "base");
    put_module(&base_site, "baseonly", "base");
    write_app(&dir, "shadowmod");
    let no_venv = env_for(None, &dir);
    let base_report = python_report(&base_python, &dir, &no_venv);
    assert_eq!(
        base_report["modules"],
        modules(None, Some("base"), Some("base"))
    );

    let with_system = dir.join("with-system");
    make_venv(&base_python, &with_system, true);
    put_module(&built.site_packages(&with_system), "shadowmod", "venv");
    let env = env_for(Some(&with_system), &dir);
    let server = serve(&rgunicorn(), &dir, &env, &[]);
    let (report, _) = served_report(server.port);
    assert_eq!(
        report,
        python_report(&with_system.join("bin/python"), &dir, &env)
    );
    assert_eq!(report["modules"], modules(None, Some("venv"), Some("base")));
    assert_eq!(report["base_prefix"], dir.join("base").to_str().unwrap());
    assert_eq!(server.stop(), 0);

    // Isolated: the app imports only os; neither base module is visible.
    write_app(&dir, "os");
    let isolated = dir.join("isolated");
    make_venv(&base_python, &isolated, false);
    let env = env_for(Some(&isolated), &dir);
    let server = serve(&rgunicorn(), &dir, &env, &[]);
    let (report, _) = served_report(server.port);
    assert_eq!(
        report,
        python_report(&isolated.join("bin/python"), &dir, &env)
    );
    assert_eq!(report["modules"], modules(None, None, None));
    assert_eq!(server.stop(), 0);
}

/// The binary in a venv's bin/ belongs to that venv, as the venv's python
/// and the pip console script do, even with another venv activated.
#[test]
fn binary_in_a_venvs_bin_uses_that_venv_whatever_is_activated() {
    let dir = scratch_dir("venv-own");
    let built = built(&dir);
    let own = dir.join("own");
    make_venv(&built.python, &own, false);
    put_module(&built.site_packages(&own), "venvmark", "own venv");
    let other = dir.join("other");
    make_venv(&built.python, &other, false);
    put_module(&built.site_packages(&other), "venvmark", "activated venv");
    // A hard link: the binary must see its path as own/bin/rgunicorn (a
    // symlink resolves to target/).
    let binary = own.join("bin/rgunicorn");
    if std::fs::hard_link(rgunicorn(), &binary).is_err() {
        std::fs::copy(rgunicorn(), &binary).unwrap();
    }
    write_app(&dir, "venvmark");
    let env = env_for(Some(&other), &dir);
    let server = serve(&binary, &dir, &env, &[]);
    let (report, _) = served_report(server.port);
    assert_eq!(report["modules"], modules(Some("own venv"), None, None));
    let own_env = env_for(Some(&own), &dir);
    assert_eq!(
        report,
        python_report(&own.join("bin/python"), &dir, &own_env)
    );
    assert_eq!(server.stop(), 0);
}

/// An interpreter of another minor version than the build's, if this
/// machine has one (on PATH as pythonX.Y, or under pyenv).
fn other_minor_python(built: &Built) -> Option<(PathBuf, String)> {
    let path = std::env::var("PATH").unwrap_or_default();
    let on_path = std::env::split_paths(&path)
        .flat_map(|d| (6..=20).map(move |m| d.join(format!("python3.{m}"))))
        .collect::<Vec<_>>();
    let pyenv_root = std::env::var_os("PYENV_ROOT")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".pyenv")));
    let mut under_pyenv: Vec<PathBuf> = pyenv_root
        .and_then(|r| std::fs::read_dir(r.join("versions")).ok())
        .into_iter()
        .flatten()
        .filter_map(|e| Some(e.ok()?.path().join("bin/python3")))
        .collect();
    under_pyenv.sort();
    on_path
        .into_iter()
        .chain(under_pyenv)
        .filter(|p| p.exists())
        .find_map(|p| {
            let out = Command::new(&p)
                .args([
                    "-c",
                    "import sys, venv; print('%d.%d' % sys.version_info[:2])",
                ])
                .env_remove("VIRTUAL_ENV")
                .output()
                .ok()?;
            let minor = text(&out.stdout).trim().to_string();
            (out.status.success() && minor != built.minor && minor.starts_with("3."))
                .then_some((p, minor))
        })
}

fn refused(dir: &Path, venv: &Path) -> Output {
    let out = command(&rgunicorn(), dir, &env_for(Some(venv), dir))
        .args(["app:application", "--check-config"])
        .output()
        .unwrap();
    eprintln!("{}", text(&out.stderr));
    out
}

/// Refused before Python starts: exit status 1, one error line naming the
/// venv and both versions, no traceback.
fn assert_refused(out: &Output, venv: &Path, venv_minor: &str, built: &Built) {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.starts_with("Error: "), "{stderr}");
    assert!(
        stderr.contains(&format!("VIRTUAL_ENV={}", venv.display())),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("is a Python {venv_minor} virtual environment")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("built against Python {}", built.version)),
        "{stderr}"
    );
    assert!(!stderr.contains("Traceback"), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
}

#[test]
fn venv_of_another_minor_version_is_refused_naming_both() {
    let dir = scratch_dir("venv-mismatch");
    let built = built(&dir);
    write_app(&dir, "os");

    // A venv as virtualenv and uv describe it (`version_info`, no
    // `version`), claiming the next minor version: the refusal reads it.
    let (major, minor) = built.minor.split_once('.').unwrap();
    let next = format!("{major}.{}", minor.parse::<u32>().unwrap() + 1);
    let claimed = dir.join("claimed");
    make_venv(&built.python, &claimed, false);
    let cfg = std::fs::read_to_string(claimed.join("pyvenv.cfg")).unwrap();
    let cfg: String = cfg
        .lines()
        .filter(|l| !l.starts_with("version"))
        .map(|l| format!("{l}\n"))
        .chain([format!("version_info = {next}.0.final.0\n")])
        .collect();
    std::fs::write(claimed.join("pyvenv.cfg"), cfg).unwrap();
    assert_refused(&refused(&dir, &claimed), &claimed, &next, &built);

    // A real venv of another minor version, when this machine has one.
    match other_minor_python(&built) {
        Some((python, other)) => {
            let venv = dir.join("other");
            make_venv(&python, &venv, false);
            assert_refused(&refused(&dir, &venv), &venv, &other, &built);
        }
        None => eprintln!(
            "no Python other than {} here: only the pyvenv.cfg-described venv was tried",
            built.minor
        ),
    }

    // VIRTUAL_ENV naming no venv: an error too, not the base's packages.
    let out = refused(&dir, &dir.join("gone"));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("is not a virtual environment"), "{stderr}");
    assert!(!stderr.contains("Traceback"), "{stderr}");
}
