//! The master and its workers as a child process: start-up hook order,
//! serving the built-in app, HUP / TTIN / TTOU / max_requests under a
//! closed-loop keep-alive load with zero failed requests, TERM; a Python
//! thread a hook starts in the master runs while the master waits.

use crate::common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::server::*;
use common::*;

#[test]
fn startup_hook_order_and_builtin_app() {
    let dir = scratch_dir("master-start");
    let server = Server::start(&dir, &[]);
    server.wait_until(|| count(&server.hooks(), "post_worker_init") == 2);
    let hooks = server.hooks();
    let master = server.pid().to_string();
    let names: Vec<&str> = hooks
        .iter()
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(
        &names[..3],
        ["nworkers_changed", "on_starting", "when_ready"],
        "{hooks:#?}"
    );
    assert_eq!(hooks[0], format!("nworkers_changed {master} 2 None"));
    assert_eq!(hooks[1], format!("on_starting {master} {master} 2"));
    // pre_fork runs in the master with pid "[booting]", post_fork in the worker.
    let pre: Vec<&String> = hooks.iter().filter(|l| l.starts_with("pre_fork")).collect();
    assert_eq!(pre.len(), 2);
    assert!(
        pre.iter()
            .all(|l| l.starts_with(&format!("pre_fork {master} [booting]"))),
        "{pre:?}"
    );
    for l in hooks.iter().filter(|l| l.starts_with("post_fork")) {
        let f: Vec<&str> = l.split_whitespace().collect();
        assert_eq!(
            f[1], f[2],
            "post_fork runs in the worker with worker.pid set: {l}"
        );
        assert_ne!(f[1], master);
        assert_eq!(f[3], "True", "worker.ppid is the master: {l}");
    }
    assert_eq!(server.worker_pids().len(), 2);

    let (status, body) = server.get("/health").unwrap();
    assert_eq!((status, body.as_str()), (200, r#"{"status":"healthy"}"#));
    let (status, body) = server.get("/health/ready").unwrap();
    assert_eq!((status, body.as_str()), (200, r#"{"status":"ready"}"#));
    let (status, body) = server.get("/health/worker").unwrap();
    assert_eq!(status, 200);
    let worker_id: i32 = body
        .split("\"worker_id\":")
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(server.worker_pids().contains(&worker_id), "{body}");
    assert!(
        body.contains("\"uptime_seconds\":") && body.contains("\"requests_served\":"),
        "{body}"
    );
    assert_eq!(server.get("/nope").unwrap().0, 404);

    let hook_log = server.hook_log.clone();
    assert_eq!(server.stop(), 0);
    let hooks: Vec<String> = std::fs::read_to_string(hook_log)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(count(&hooks, "worker_exit"), 2);
    assert_eq!(count(&hooks, "child_exit"), 2);
    assert_eq!(hooks.last().unwrap(), &format!("on_exit {master}"));
}

#[test]
fn hup_ttin_ttou_lose_no_request_under_load() {
    let dir = scratch_dir("master-hup");
    let server = Server::start(&dir, &[]);
    server.wait_until(|| count(&server.hooks(), "post_worker_init") == 2);
    let load = Load::start(server.port, 16);
    server.wait_until(|| load.ok.load(Ordering::Relaxed) > 200);
    let before = server.worker_pids();

    for round in 1..=2 {
        server.signal("HUP");
        server.wait_until(|| count(&server.hooks(), "on_reload") == round);
        // A new generation serves and the old one is gone.
        server.wait_until(|| {
            count(&server.hooks(), "child_exit") == 2 * round && server.worker_pids().len() == 2
        });
        let served = load.ok.load(Ordering::Relaxed);
        server.wait_until(|| load.ok.load(Ordering::Relaxed) > served + 200);
    }
    let after = server.worker_pids();
    assert!(
        before.iter().all(|p| !after.contains(p)),
        "{before:?} -> {after:?}"
    );

    server.signal("TTIN");
    server.wait_until(|| server.worker_pids().len() == 3);
    assert!(server
        .hooks()
        .iter()
        .any(|l| l.starts_with("nworkers_changed") && l.ends_with(" 3 2")));
    server.signal("TTOU");
    server.wait_until(|| {
        server.worker_pids().len() == 2 && count(&server.hooks(), "child_exit") == 5
    });
    let served = load.ok.load(Ordering::Relaxed);
    server.wait_until(|| load.ok.load(Ordering::Relaxed) > served + 200);

    let (ok, failed) = load.finish();
    eprintln!("HUP x2 + TTIN + TTOU: {ok} requests served, {failed} failed");
    assert_eq!(failed, 0, "{ok} ok");
    assert_eq!(server.stop(), 0);
}

#[test]
fn max_requests_recycles_workers_without_failures() {
    let dir = scratch_dir("master-maxreq");
    let server = Server::start(
        &dir,
        &["--max-requests", "300", "--max-requests-jitter", "50"],
    );
    let load = Load::start(server.port, 16);
    // At least 4 workers replaced.
    server.wait_until(|| count(&server.hooks(), "child_exit") >= 4);
    let (ok, failed) = load.finish();
    eprintln!("max_requests=300: {ok} requests served, {failed} failed");
    assert_eq!(failed, 0, "{ok} ok");
    // Each recycled worker reached its max_requests (300 + jitter) before
    // it went: `worker.nr` in worker_exit is what the worker counted. It
    // serves on until its replacement serves, so how many more it serves
    // depends on how loaded the machine is (not bounded here).
    let mut recycled = 0;
    for l in server
        .hooks()
        .iter()
        .filter(|l| l.starts_with("worker_exit"))
    {
        let f: Vec<u64> = l
            .split_whitespace()
            .skip(1)
            .map(|v| v.parse().unwrap())
            .collect();
        let (nr, max) = (f[2], f[3]);
        eprintln!("worker {} served {nr} (max_requests {max})", f[1]);
        assert!((300..=350).contains(&max), "{l}");
        if nr >= max {
            recycled += 1;
        }
    }
    assert!(recycled >= 4, "{recycled} workers recycled");
    assert!(
        server
            .hooks()
            .iter()
            .filter(|l| l.starts_with("worker_exit"))
            .count()
            >= 4
    );
    assert_eq!(server.stop(), 0);
}

#[test]
fn usr2_upgrade_then_term_old_master_loses_no_request() {
    let dir = scratch_dir("master-usr2");
    let server = Server::start(&dir, &["--pid", "app.pid"]);
    server.wait_until(|| count(&server.hooks(), "post_worker_init") == 2);
    let old = server.pid();
    let old_workers = server.worker_pids();
    let load = Load::start(server.port, 32);
    server.wait_until(|| load.ok.load(Ordering::Relaxed) > 200);

    server.signal("USR2");
    let pid2 = dir.join("app.pid.2");
    server.wait_until(|| pid2.exists());
    let new: i32 = std::fs::read_to_string(&pid2)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let _guard = KillOnDrop(new);
    // The new master is the old one's child, runs pre_exec before exec,
    // starts afresh (nworkers_changed .. None, on_starting) and boots its
    // own workers on the inherited socket.
    assert!(server.worker_pids().contains(&new));
    server.wait_until(|| count(&server.hooks(), "post_worker_init") == 4);
    let hooks = server.hooks();
    assert!(
        hooks.contains(&format!("pre_exec {new} {old}")),
        "{hooks:#?}"
    );
    assert!(hooks.contains(&format!("nworkers_changed {new} 2 None")));
    assert!(hooks.contains(&format!("on_starting {new} {new} 2")));
    let new_workers = children(new);
    assert_eq!(new_workers.len(), 2);
    // USR2 again while the child exists is refused.
    server.signal("USR2");
    server.wait_until(|| server.logged("USR2 signal ignored. Child exists."));
    let served = load.ok.load(Ordering::Relaxed);
    server.wait_until(|| load.ok.load(Ordering::Relaxed) > served + 200);

    // TERM the old master: its workers drain, the new master is promoted.
    let hook_log = server.hook_log.clone();
    let lines = server.stderr_lines.clone();
    assert_eq!(server.stop(), 0);
    let wait = |what: &str, cond: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !cond() {
            assert!(Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait("promotion", &|| {
        lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains(&format!("[{new}] [INFO] Master has been promoted.")))
    });
    wait("pidfile renamed", &|| {
        !pid2.exists()
            && std::fs::read_to_string(dir.join("app.pid")).ok().as_deref()
                == Some(&format!("{new}\n"))
    });
    assert!(old_workers.iter().all(|p| !alive(*p)));
    let served = load.ok.load(Ordering::Relaxed);
    wait("serving after the upgrade", &|| {
        load.ok.load(Ordering::Relaxed) > served + 200
    });
    let (ok, failed) = load.finish();
    eprintln!("USR2 + TERM old master: {ok} requests served, {failed} failed");
    assert_eq!(failed, 0, "{ok} ok");
    assert_eq!(children(new), new_workers);

    // The promoted master stops like any master.
    let _ = Command::new("kill")
        .args(["-TERM", &new.to_string()])
        .status();
    wait("new master stops", &|| !alive(new));
    let hooks = std::fs::read_to_string(hook_log).unwrap();
    assert!(hooks.contains(&format!("on_exit {new}")), "{hooks}");
    assert!(!dir.join("app.pid").exists());
}

#[test]
fn a_blocked_worker_is_aborted_and_replaced_within_timeout() {
    let dir = scratch_dir("master-timeout");
    let server = Server::start_program(&testapp(), "tests:app", &dir, &["--timeout", "2"]);
    server.wait_until(|| count(&server.hooks(), "post_worker_init") == 2);
    let before = server.worker_pids();
    let port = server.port;
    let started = Instant::now();
    // This request blocks its worker's serving loop for 30 s.
    let blocked = std::thread::spawn(move || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(40))).unwrap();
        s.write_all(b"GET /block?s=30 HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        buf
    });
    server.wait_until(|| count(&server.hooks(), "child_exit") == 1);
    server.wait_until(|| {
        server.worker_pids().len() == 2
            && server.get("/health").map(|r| r.0 == 200).unwrap_or(false)
    });
    let replaced_after = started.elapsed();
    let after = server.worker_pids();
    let killed: Vec<&i32> = before.iter().filter(|p| !after.contains(p)).collect();
    assert_eq!(killed.len(), 1, "{before:?} -> {after:?}");
    assert!(
        replaced_after <= Duration::from_secs(2 + 2),
        "replaced after {replaced_after:?}"
    );
    let hooks = server.hooks();
    assert!(
        hooks
            .iter()
            .any(|l| l == &format!("worker_abort {} {}", killed[0], killed[0])),
        "{hooks:#?}"
    );
    let lines = server.stderr_lines.lock().unwrap().clone();
    assert!(
        lines
            .iter()
            .any(|l| l.contains(&format!("[CRITICAL] WORKER TIMEOUT (pid:{})", killed[0]))),
        "{lines:#?}"
    );
    // The blocked client gets gunicorn's 500, as from gunicorn's sync worker.
    let answer = String::from_utf8(blocked.join().unwrap()).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 500 Internal Server Error\r\nConnection: close\r\n"),
        "{answer}"
    );
    assert_eq!(server.stop(), 0);
}

#[test]
fn int_and_quit_are_quick_stops_with_worker_int() {
    for sig in ["INT", "QUIT"] {
        let dir = scratch_dir("master-int");
        let server = Server::start(&dir, &[]);
        server.wait_until(|| count(&server.hooks(), "post_worker_init") == 2);
        let workers = server.worker_pids();
        let master = server.pid();
        let hook_log = server.hook_log.clone();
        server.signal(sig);
        let mut child = server;
        let deadline = Instant::now() + Duration::from_secs(20);
        let code = loop {
            if let Some(status) = child.child.try_wait().unwrap() {
                break status.code();
            }
            assert!(Instant::now() < deadline, "{sig}: master did not exit");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(code, Some(0), "{sig}");
        let hooks: Vec<String> = std::fs::read_to_string(&hook_log)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        for w in &workers {
            // worker_int runs in the worker, then worker_exit.
            let int = hooks
                .iter()
                .position(|l| l == &format!("worker_int {w} {w}"));
            let exit = hooks
                .iter()
                .position(|l| l.starts_with(&format!("worker_exit {w} {w} ")));
            assert!(int.is_some() && int < exit, "{sig}: {hooks:#?}");
            assert!(!alive(*w));
        }
        assert_eq!(count(&hooks, "child_exit"), 2, "{sig}: {hooks:#?}");
        assert_eq!(hooks.last().unwrap(), &format!("on_exit {master}"));
        drop(child);
    }
}

#[test]
fn usr1_reopens_the_error_log_in_master_and_workers() {
    let dir = scratch_dir("master-usr1");
    let log = dir.join("err.log");
    let server = Server::start(&dir, &["--error-logfile", "err.log"]);
    server.wait_until(|| count(&server.hooks(), "post_worker_init") == 2);
    let workers = server.worker_pids();
    // Rotate: move the file away, then USR1.
    std::fs::rename(&log, dir.join("err.log.1")).unwrap();
    server.signal("USR1");
    // Every process holds the new file once it has reopened.
    let holds_new_log = |pid: i32| {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|fds| {
                fds.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                    .any(|target| target == log)
            })
            .unwrap_or(false)
    };
    server.wait_until(|| holds_new_log(server.pid()) && workers.iter().all(|&w| holds_new_log(w)));
    // Lines written after the reopen land in the new file: TTOU stops the
    // oldest worker, which logs its exit, and the master logs the signal.
    server.signal("TTOU");
    server.wait_until(|| server.worker_pids().len() == 1);
    let gone = workers
        .iter()
        .find(|w| !server.worker_pids().contains(w))
        .copied()
        .unwrap();
    server.wait_until(|| {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.contains("Handling signal: ttou")
            && text.contains(&format!("Worker exiting (pid: {gone})"))
    });
    let old = std::fs::read_to_string(dir.join("err.log.1")).unwrap();
    assert!(
        old.contains("Booting worker") && !old.contains("ttou"),
        "{old}"
    );
    assert_eq!(server.stop(), 0);
}

/// A raw `GET` whose request line is `len` bytes long (CRLF excluded):
/// its status.
fn long_line_status(port: u16, len: usize) -> u16 {
    let path = format!("/{}", "a".repeat(len - "GET / HTTP/1.1".len()));
    let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut head = [0u8; 12];
    conn.read_exact(&mut head).unwrap();
    std::str::from_utf8(&head[9..12]).unwrap().parse().unwrap()
}

/// Each HUP reads the settings again and the new workers get them, as in
/// gunicorn: `threads`, `limit_request_line` and `access_log_format` for
/// a WSGI app, side by side with gunicorn 27.0.1.
#[test]
fn hup_applies_changed_wsgi_settings_to_new_workers() {
    const APP: &str = r#"
def app(environ, start_response):
    body = ("multithread=%s" % environ["wsgi.multithread"]).encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]
"#;
    for program in [rgunicorn(), gunicorn()] {
        let name = program.file_name().unwrap().to_string_lossy().into_owned();
        let dir = scratch_dir(&format!("hup-settings-wsgi-{name}"));
        std::fs::write(dir.join("app.py"), APP).unwrap();
        let port = free_port();
        let conf = |threads: u32, line: u32, tag: &str| {
            format!(
                "bind = \"127.0.0.1:{port}\"\nworkers = 1\nthreads = {threads}\n\
                 limit_request_line = {line}\naccesslog = \"access.log\"\n\
                 access_log_format = \"{tag} %(m)s %(U)s %(s)s\"\n"
            )
        };
        let server = Server::start_conf(&program, "app:app", &dir, &conf(1, 4094, "before"), &[]);
        let access = || std::fs::read_to_string(dir.join("access.log")).unwrap_or_default();
        assert_eq!(server.get("/x").unwrap(), (200, "multithread=False".into()));
        assert_eq!(long_line_status(port, 2000), 200, "{name}");
        server.wait_until(|| access().contains("before GET /x 200"));

        std::fs::write(dir.join("hooks.conf.py"), conf(4, 1000, "after")).unwrap();
        server.signal("HUP");
        server.wait_until(|| {
            server
                .get("/x")
                .is_ok_and(|(_, body)| body == "multithread=True")
        });
        server.wait_until(|| long_line_status(port, 2000) == 414);
        server.wait_until(|| access().contains("after GET /x 200"));
        server.stop();
    }
}

/// The same for an ASGI app: `root_path` reaches the new workers' scope,
/// and a new `timeout` applies to them (a loop blocked 2 s is served
/// under `timeout = 30`, and one blocked longer is a WORKER TIMEOUT under
/// `timeout = 1`).
#[test]
fn hup_applies_changed_asgi_settings_to_new_workers() {
    const APP: &str = r#"
import os, time
async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["path"].endswith("/block"):
        time.sleep(int(scope["query_string"] or b"0"))
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body",
                "body": ("root_path=%s pid=%d" % (scope["root_path"], os.getpid())).encode()})
"#;
    let dir = scratch_dir("hup-settings-asgi");
    std::fs::write(dir.join("app.py"), APP).unwrap();
    let port = free_port();
    let conf = |root_path: &str, timeout: u32| {
        format!(
            "bind = \"127.0.0.1:{port}\"\nworkers = 1\nroot_path = \"{root_path}\"\n\
             timeout = {timeout}\n"
        )
    };
    let server = Server::start_conf(&rgunicorn(), "app:app", &dir, &conf("", 30), &[]);
    let (status, body) = server.get("/x").unwrap();
    assert!(
        status == 200 && body.starts_with("root_path= pid="),
        "{body}"
    );
    let (status, body) = server.get("/block?2").unwrap();
    assert!(
        status == 200 && body.starts_with("root_path= pid="),
        "{body}"
    );

    std::fs::write(dir.join("hooks.conf.py"), conf("/api", 1)).unwrap();
    server.signal("HUP");
    let mut new_pid = String::new();
    server.wait_until(|| match server.get("/x") {
        Ok((_, body)) => match body.strip_prefix("root_path=/api pid=") {
            Some(pid) => {
                new_pid = pid.to_string();
                true
            }
            None => false,
        },
        Err(_) => false,
    });
    // Blocked longer than the client waits (5 s): killed after about 1 s.
    let blocked = server.get("/block?8");
    assert!(
        !matches!(blocked, Ok((200, _))),
        "served under timeout = 1: {blocked:?}"
    );
    let timed_out = format!("WORKER TIMEOUT (pid:{new_pid})");
    server.wait_until(|| server.logged(&timed_out));
    server.stop();
}

/// A config in `dir` that keeps the hook recorder of [`HOOKS_CONF`] and
/// adds `extra` (the last `-c` wins, so it must load the hooks itself).
fn write_conf(dir: &std::path::Path, name: &str, extra: &str) {
    let text = format!("exec(open(\"hooks.conf.py\").read())\n{extra}\n");
    let tmp = dir.join(format!("{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    // Renamed into place: a reload never reads half a file.
    std::fs::rename(tmp, dir.join(name)).unwrap();
}

#[test]
fn a_hup_storm_boots_one_generation_at_a_time() {
    let dir = scratch_dir("master-hup-storm");
    // Each worker takes a second to import the app; the answer says which
    // configuration the worker was forked under.
    std::fs::write(
        dir.join("slowapp.py"),
        "import os, time\n\
         time.sleep(1.0)\n\
         def app(environ, start_response):\n\
         \x20   start_response('200 OK', [('Content-Type', 'text/plain')])\n\
         \x20   return [os.environ['GEN'].encode()]\n",
    )
    .unwrap();
    let conf = |n: u32| format!("workers = 2\nraw_env = ['GEN={n}']");
    write_conf(&dir, "storm.conf.py", &conf(0));
    let server = Server::start_program(&rgunicorn(), "slowapp:app", &dir, &["-c", "storm.conf.py"]);
    server.wait_until(|| server.worker_pids().len() == 2 && server.get("/").is_ok());
    let load = Load::start(server.port, 8);
    server.wait_until(|| load.ok.load(Ordering::Relaxed) > 100);

    // The number of workers, sampled every 5 ms until the end.
    let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let (sampling, master) = (sampling.clone(), server.pid());
        std::thread::spawn(move || {
            let mut peak = 0;
            while sampling.load(Ordering::Relaxed) {
                peak = peak.max(children(master).len());
                std::thread::sleep(Duration::from_millis(5));
            }
            peak
        })
    };
    // 20 HUPs in 2 s, each after a change of the configuration.
    let started = Instant::now();
    let master = nix::unistd::Pid::from_raw(server.pid());
    for n in 1..=20 {
        let at = started + Duration::from_millis(100) * (n - 1);
        std::thread::sleep(at.saturating_duration_since(Instant::now()));
        write_conf(&dir, "storm.conf.py", &conf(n));
        nix::sys::signal::kill(master, nix::sys::signal::Signal::SIGHUP).unwrap();
    }
    let storm = started.elapsed();
    // It settles: two workers, of the last configuration, every replaced
    // worker gone.
    server.wait_until(|| {
        let hooks = server.hooks();
        let reloads = count(&hooks, "on_reload");
        server.worker_pids().len() == 2
            && count(&hooks, "post_worker_init") == 2 + 2 * reloads
            && count(&hooks, "child_exit") == 2 * reloads
            && (0..10).all(|_| server.get("/").is_ok_and(|(_, body)| body == "20"))
    });
    let settled = started.elapsed();
    sampling.store(false, Ordering::Relaxed);
    let peak = sampler.join().unwrap();
    let (ok, failed) = load.finish();
    let reloads = count(&server.hooks(), "on_reload");
    eprintln!(
        "20 HUPs in {storm:?}: peak {peak} workers, {reloads} reloads, settled after \
         {settled:?}; {ok} requests served, {failed} failed"
    );
    assert!(peak <= 4, "peak {peak} workers for workers = 2");
    assert!(reloads < 20, "{reloads} reloads for 20 HUPs");
    assert_eq!(failed, 0, "{ok} ok");
    assert!(server.logged("Reload deferred"));
    assert_eq!(server.stop(), 0);
}

#[test]
fn a_changed_bind_applies_on_hup() {
    let dir = scratch_dir("master-hup-bind");
    let (a, b) = (free_port(), free_port());
    let unix = dir.join("app.sock");
    write_conf(&dir, "bind.conf.py", &format!("bind = '127.0.0.1:{a}'"));
    let server = Server::start_program(
        &testapp(),
        "tests:app",
        &dir,
        &["-c", "bind.conf.py", "--metrics-bind", "127.0.0.1:0"],
    );
    assert_eq!(server.port, a);
    server.wait_until(|| count(&server.hooks(), "post_worker_init") == 2);
    let in_flight = |server: &Server| {
        server
            .metrics_response()
            .lines()
            .find_map(|l| {
                l.strip_prefix("rgunicorn_requests_in_flight ")?
                    .parse()
                    .ok()
            })
            .unwrap_or(0u64)
    };
    // A request in flight on the port that goes away.
    let slow = std::thread::spawn(move || get(a, "/sleep?s=2"));
    server.wait_until(|| in_flight(&server) == 1);

    write_conf(
        &dir,
        "bind.conf.py",
        &format!("bind = ['127.0.0.1:{b}', 'unix:{}']", unix.display()),
    );
    server.signal("HUP");
    let unix_get = || -> std::io::Result<u16> {
        let mut s = std::os::unix::net::UnixStream::connect(&unix)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")?;
        let mut text = String::new();
        s.read_to_string(&mut text)?;
        Ok(text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0))
    };
    server.wait_until(|| get(b, "/health").is_ok_and(|(s, _)| s == 200));
    server.wait_until(|| unix_get().is_ok_and(|s| s == 200));
    // As gunicorn's reload logs it: no pid.
    let listening = format!(
        "[INFO] Listening at: http://127.0.0.1:{b},unix:{}",
        unix.display()
    );
    // Written before the workers forked; the reader thread may still lag.
    server.wait_until(|| !server.log_lines(|l| l.ends_with(&listening)).is_empty());
    // The old port closes once its workers have finished what they had.
    assert_eq!(slow.join().unwrap().unwrap(), (200, "slept".to_string()));
    server.wait_until(|| TcpStream::connect(("127.0.0.1", a)).is_err());
    server.wait_until(|| server.worker_pids().len() == 2);
    // The metrics listener is not one of the app's.
    assert!(server
        .metrics_response()
        .contains("rgunicorn_requests_in_flight"));

    // A port in use: the old sockets go on serving, the error names it.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let c = taken.local_addr().unwrap().port();
    write_conf(&dir, "bind.conf.py", &format!("bind = '127.0.0.1:{c}'"));
    server.signal("HUP");
    server.wait_until(|| {
        server.logged(&format!(
            "[ERROR] Reload: bind not changed: Can't connect to ('127.0.0.1', {c}); \
                 still listening at: http://127.0.0.1:{b},unix:{}",
            unix.display()
        ))
    });
    // The reload itself goes on: a new generation replaces the old one.
    server.wait_until(|| {
        let hooks = server.hooks();
        count(&hooks, "on_reload") == 2
            && count(&hooks, "child_exit") == 4
            && server.worker_pids().len() == 2
    });
    assert_eq!(get(b, "/health").unwrap().0, 200);
    assert_eq!(unix_get().unwrap(), 200);
    assert!(alive(server.pid()), "the master exited");

    // Once the port is free, the next HUP binds it.
    drop(taken);
    server.signal("HUP");
    server.wait_until(|| get(c, "/health").is_ok_and(|(s, _)| s == 200));
    let listening = format!("[INFO] Listening at: http://127.0.0.1:{c}");
    // Written before the workers forked; the reader thread may still lag.
    server.wait_until(|| !server.log_lines(|l| l.ends_with(&listening)).is_empty());
    server.wait_until(|| TcpStream::connect(("127.0.0.1", b)).is_err() && !unix.exists());
    assert_eq!(server.stop(), 0);
}

/// The memory-watcher pattern of real configs: `when_ready` starts a
/// thread in the master that looks at `server.WORKERS` now and then and
/// recycles a worker with `server.kill_worker(pid, SIGTERM)` (appended to
/// [`HOOKS_CONF`], whose `_rec` it uses).
const WATCHER_HOOK: &str = r#"
import signal, threading, time
def when_ready(server):
    def watch():
        killed = None
        for tick in range(1, 1000):
            pids = sorted(server.WORKERS)
            _rec("tick", tick, *pids)
            if killed is None and len(pids) == 2:
                killed = pids[0]
                server.kill_worker(killed, signal.SIGTERM)
                server.kill_worker(999999999, signal.SIGTERM)  # gone: no error
                _rec("killed", killed)
            time.sleep(0.05)
    threading.Thread(target=watch, daemon=True).start()
"#;

#[test]
fn a_thread_started_in_when_ready_runs_and_recycles_a_worker_as_in_gunicorn() {
    let dir = scratch_dir("master-thread");
    copy_test_apps(&dir);
    let conf = format!("{HOOKS_CONF}{WATCHER_HOOK}");
    for program in [gunicorn(), rgunicorn()] {
        let server = Server::start_conf(&program, "plain_app", &dir, &conf, &[]);
        server.wait_until(|| server.hooks().iter().any(|l| l.starts_with("killed ")));
        let hooks = server.hooks();
        let killed: i32 = hooks
            .iter()
            .find_map(|l| l.strip_prefix("killed "))
            .unwrap()
            .parse()
            .unwrap();
        // The thread goes on ticking while the master waits, and sees the
        // killed worker replaced.
        server.wait_until(|| {
            server.hooks().iter().any(|l| {
                let pids: Vec<&str> = l.split(' ').skip(2).collect();
                l.starts_with("tick ") && pids.len() == 2 && !pids.contains(&&*killed.to_string())
            })
        });
        assert!(!server.worker_pids().contains(&killed), "{program:?}");
        // The thread also runs while the master stops (closing listeners
        // runs Python): it never finds the server object borrowed.
        let lines = server.stderr_lines.clone();
        assert_eq!(server.stop(), 0, "{program:?}");
        let lines = lines.lock().unwrap();
        assert!(
            !lines.iter().any(|l| l.contains("Exception in thread")),
            "{program:?}: {lines:#?}"
        );
        std::fs::remove_file(dir.join("hooks.log")).ok();
    }
}
