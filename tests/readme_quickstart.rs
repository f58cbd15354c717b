//! README.md's first command ("On a fresh machine") run as a newcomer runs
//! it: pasted into a shell in a clean clone of the committed tree (HEAD),
//! so that neither the README nor the manifest can rot. It must build,
//! serve on $PORT, answer /health as the README's next line says, and stop
//! on TERM with status 0.
//!
//! Cargo builds into this test run's own target directory (not a fresh
//! one): the release profile is built there once, then again only for
//! what changed. `cargo test` holds no lock on the target directory while the
//! tests run, so this inner cargo does not wait on the outer one.

use crate::common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::server::{free_port, get, stop_child, wait_exit};
use common::text;

/// The first ```sh block under "## On a fresh machine": its first line (the
/// command) and what its `curl .../health` line's comment says it answers.
fn quickstart(readme: &str) -> (String, String) {
    let section = readme
        .split("\n## On a fresh machine\n")
        .nth(1)
        .expect("README.md has an \"On a fresh machine\" section");
    let block = section
        .split("\n```sh\n")
        .nth(1)
        .and_then(|b| b.split("\n```").next())
        .expect("a ```sh block under \"On a fresh machine\"");
    let command = block.lines().next().unwrap().trim().to_string();
    let health = block
        .lines()
        .find(|l| l.starts_with("curl ") && l.contains("/health "))
        .and_then(|l| l.split_once('#'))
        .map(|(_, said)| said.trim().to_string())
        .expect("a `curl .../health  # <answer>` line in the block");
    (command, health)
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", text(&out.stderr));
    text(&out.stdout).trim().to_string()
}

/// Stops the command (TERM, then KILL) if the test fails midway.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        stop_child(&mut self.0);
    }
}

#[test]
fn readme_first_command_serves_from_a_clean_clone() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let target_dir = tmp.parent().unwrap();
    // A clone kept between runs and brought to HEAD each time (checked out
    // by force, untracked files removed): exactly the committed tree, whose
    // unchanged files keep their times, so that cargo rebuilds only what
    // changed since the last run.
    let clone = tmp.join("readme-clone");
    if !clone.join(".git").is_dir() {
        let _ = std::fs::remove_dir_all(&clone);
        git(tmp, &["init", "--quiet", "readme-clone"]);
    }
    let head = git(repo, &["rev-parse", "HEAD"]);
    git(
        &clone,
        &[
            "fetch",
            "--quiet",
            "--no-tags",
            repo.to_str().unwrap(),
            &head,
        ],
    );
    git(
        &clone,
        &["checkout", "--quiet", "--force", "--detach", &head],
    );
    git(&clone, &["clean", "--quiet", "-ffdx"]);
    assert_eq!(git(&clone, &["status", "--porcelain"]), "");

    let readme = std::fs::read_to_string(clone.join("README.md")).unwrap();
    let (command, health) = quickstart(&readme);
    assert!(command.starts_with("cargo run"), "{command}");
    // The control socket's default is in the user's home: keep it in the
    // clone, apart from other servers.
    let runtime_dir = clone.join("run");
    std::fs::create_dir(&runtime_dir).unwrap();
    let port = free_port();
    let started = Instant::now();
    let mut cmd = Command::new("sh");
    // `exec`: the shell becomes cargo, which on Unix executes the binary
    // in its own place, so TERM reaches the master.
    cmd.current_dir(&clone)
        .args(["-c", &format!("exec {command}")])
        .env("PORT", port.to_string())
        .env("XDG_RUNTIME_DIR", &runtime_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // What `cargo test` sets for a test binary is no newcomer's; the rest
    // of the environment (the toolchain rustup chose, the user's cargo
    // settings) is kept, so that the build reuses the target directory.
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        let from_cargo_test = [
            "CARGO",
            "CARGO_MANIFEST_DIR",
            "CARGO_MANIFEST_PATH",
            "CARGO_CRATE_NAME",
            "CARGO_PRIMARY_PACKAGE",
            "CARGO_TARGET_TMPDIR",
        ]
        .contains(&k.as_ref())
            || k.starts_with("CARGO_PKG_")
            || k.starts_with("CARGO_BIN_");
        if from_cargo_test {
            cmd.env_remove(&key);
        }
    }
    cmd.env("CARGO_TARGET_DIR", target_dir);
    eprintln!("readme: {command} (PORT={port}) in {}", clone.display());
    let mut running = Running(cmd.spawn().unwrap());
    let stderr = running.0.stderr.take().unwrap();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let keep = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("readme: {line}");
            keep.lock().unwrap().push(line);
        }
    });

    // A release build first: bounded generously, and a failed build ends
    // the wait at once.
    let deadline = started + Duration::from_secs(30 * 60);
    let body = loop {
        if let Some(status) = running.0.try_wait().unwrap() {
            panic!(
                "`{command}` exited with {status} before serving:\n{}",
                lines.lock().unwrap().join("\n")
            );
        }
        if let Ok((200, body)) = get(port, "/health") {
            break body;
        }
        assert!(Instant::now() < deadline, "not serving after 30 minutes");
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!(
        "readme: built and serving in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(body, health);
    assert_eq!(health, r#"{"status":"healthy"}"#);

    // The process we started is now the master (cargo executed it).
    let pid = running.0.id();
    let exe: PathBuf = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    assert_eq!(exe, target_dir.join("release/rgunicorn"));
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(wait_exit(&mut running.0, Duration::from_secs(40)), 0);
}
