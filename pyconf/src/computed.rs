//! Defaults that gunicorn computes from the environment when it starts:
//! `PORT`, `WEB_CONCURRENCY`, `FORWARDED_ALLOW_IPS`, the working directory,
//! the effective user and group, and the control socket path.

use std::path::Path;

/// A default value read from the environment; it still goes through the
/// setting's validator, as gunicorn's class-level defaults do.
#[derive(Debug, Clone, PartialEq)]
pub enum Computed {
    Int(i64),
    Str(String),
    StrList(Vec<String>),
}

pub type ComputedDefault = fn() -> Computed;

pub fn bind() -> Computed {
    match std::env::var("PORT") {
        Ok(port) => Computed::StrList(vec![format!("0.0.0.0:{port}")]),
        Err(_) => Computed::StrList(vec!["127.0.0.1:8000".into()]),
    }
}

/// `int(os.environ.get("WEB_CONCURRENCY", 1))`; a value that is not an
/// integer is passed on as a string so the validator reports it.
pub fn workers() -> Computed {
    match std::env::var("WEB_CONCURRENCY") {
        Ok(v) => match v.trim().parse::<i64>() {
            Ok(n) => Computed::Int(n),
            Err(_) => Computed::Str(v),
        },
        Err(_) => Computed::Int(1),
    }
}

pub fn forwarded_allow_ips() -> Computed {
    Computed::Str(std::env::var("FORWARDED_ALLOW_IPS").unwrap_or_else(|_| "127.0.0.1,::1".into()))
}

/// gunicorn's `util.getcwd()`: `$PWD` when it names the same directory as
/// the real cwd (keeps symlinked paths as the user typed them).
pub fn getcwd() -> String {
    use std::os::unix::fs::MetadataExt;
    let real = std::env::current_dir().unwrap_or_else(|_| "/".into());
    if let Ok(pwd) = std::env::var("PWD") {
        if let (Ok(a), Ok(b)) = (std::fs::metadata(&pwd), std::fs::metadata(&real)) {
            if a.ino() == b.ino() && a.dev() == b.dev() {
                return pwd;
            }
        }
    }
    real.to_string_lossy().into_owned()
}

pub fn chdir() -> Computed {
    Computed::Str(getcwd())
}

pub fn euid() -> Computed {
    Computed::Int(nix::unistd::geteuid().as_raw() as i64)
}

pub fn egid() -> Computed {
    Computed::Int(nix::unistd::getegid().as_raw() as i64)
}

/// `$XDG_RUNTIME_DIR/gunicorn.ctl` when that directory exists, else
/// `~/.gunicorn/gunicorn.ctl` (the same default as gunicorn, so that
/// `--print-config` agrees).
pub fn control_socket() -> Computed {
    if let Ok(xdg) = std::env::var("XDG_RUNTIME_DIR") {
        if !xdg.is_empty() && Path::new(&xdg).is_dir() {
            return Computed::Str(format!("{}/gunicorn.ctl", xdg.trim_end_matches('/')));
        }
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| {
        nix::unistd::User::from_uid(nix::unistd::getuid())
            .ok()
            .flatten()
            .map(|u| u.dir.to_string_lossy().into_owned())
            .unwrap_or_else(|| "~".into())
    });
    Computed::Str(format!(
        "{}/.gunicorn/gunicorn.ctl",
        home.trim_end_matches('/')
    ))
}
