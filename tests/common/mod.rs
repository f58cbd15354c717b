//! Helpers shared by the integration tests: the built binary, the reference
//! gunicorn, scratch directories.

pub mod certs;
pub mod server;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

pub fn rgunicorn() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_rgunicorn"))
}

/// The gunicorn 27.0.1 that `tests/run` installs (or `GUNICORN_BIN`).
pub fn gunicorn() -> PathBuf {
    if let Ok(p) = std::env::var("GUNICORN_BIN") {
        return PathBuf::from(p);
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-venv/bin/gunicorn");
    assert!(
        p.exists(),
        "gunicorn 27.0.1 not found: run tests/run (it installs it into target/test-venv) or set GUNICORN_BIN"
    );
    p
}

/// A fresh empty directory under cargo's scratch space for integration tests.
pub fn scratch_dir(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Run `program args` in `dir` with a controlled environment: only PATH,
/// HOME and the given variables.
pub fn run_in(program: &Path, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(program);
    cmd.current_dir(dir)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", dir);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("spawn")
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Raise this process's soft `RLIMIT_NOFILE` to its hard limit (a server
/// started afterwards inherits it), and check that it allows `need`
/// descriptors: a test with thousands of connections needs them on both
/// sides.
pub fn raise_nofile(need: u64) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource, RLIM_INFINITY};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    let want = if hard == RLIM_INFINITY { 1 << 20 } else { hard };
    if soft < want {
        setrlimit(Resource::RLIMIT_NOFILE, want, hard).unwrap();
    }
    let (soft, _) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    assert!(
        soft >= need,
        "RLIMIT_NOFILE is {soft}, this test needs {need} descriptors"
    );
}

/// Sockets a process holds open now (`/proc/PID/fd`).
pub fn socket_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter(|l| l.to_string_lossy().starts_with("socket:"))
                .count()
        })
        .unwrap_or(0)
}

/// Copies of the Python test apps (`tests/apps/*.py`) into `dir`.
pub fn copy_test_apps(dir: &Path) {
    let apps = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/apps");
    for entry in std::fs::read_dir(apps).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "py") {
            std::fs::copy(&p, dir.join(p.file_name().unwrap())).unwrap();
        }
    }
}

/// Read `s` until EOF, an error, or `within` has passed: what arrived.
pub fn read_to_eof(s: &mut std::net::TcpStream, within: std::time::Duration) -> Vec<u8> {
    use std::io::Read;
    let deadline = std::time::Instant::now() + within;
    let mut got = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            break;
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    got
}
