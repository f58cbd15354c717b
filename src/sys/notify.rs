//! systemd's notify protocol (`sd_notify`), spoken by the master only:
//! one datagram per state change to the unix socket named by
//! `NOTIFY_SOCKET` (a path, or an abstract name when it starts with `@`).
//!
//! - `READY=1` (with `STATUS=` and `MAINPID=`) once a worker serves, and
//!   again after a HUP once the new generation serves;
//! - `RELOADING=1` with `MONOTONIC_USEC=` when a HUP begins (once for
//!   HUPs that come before the `READY=1`);
//! - `STOPPING=1` when the master begins to stop (TERM, INT, QUIT);
//! - `WATCHDOG=1` every `WATCHDOG_USEC / 2` when systemd asks for it.
//!
//! `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` are read once and
//! removed from the environment (and from Python's `os.environ`), so that
//! workers, and whatever the app or a hook spawns, never notify in the
//! service's name. A USR2 master still gets them (the re-exec uses the
//! environment the master started with); it stays silent until it is
//! promoted, then announces `MAINPID=` itself. The old master, stopped while
//! its USR2 child lives, hands the service over with `MAINPID=<new master>`
//! instead of `STOPPING=1`.
//!
//! A failed send is logged once, at debug level, and never stops anything.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::{Duration, Instant};

use pyo3::prelude::*;

use crate::log;

const VARS: [&str; 3] = ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"];

/// What the master waits for before it says `READY=1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Awaiting {
    /// Start-up: one worker serving is enough.
    Start,
    /// A HUP began at this instant: the whole new generation must serve.
    Reload(Instant),
}

pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
    /// Half of `WATCHDOG_USEC`: how often to ping.
    watchdog: Option<Duration>,
    next_ping: Instant,
    /// An unpromoted USR2 master (or a master that handed the service
    /// over): nothing is sent.
    quiet: bool,
    awaiting: Option<Awaiting>,
    failure_logged: bool,
}

/// CLOCK_MONOTONIC in microseconds (systemd's `MONOTONIC_USEC`).
pub fn monotonic_usec() -> u64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .unwrap_or(nix::sys::time::TimeSpec::new(0, 0));
    ts.tv_sec() as u64 * 1_000_000 + ts.tv_nsec() as u64 / 1000
}

/// The address `NOTIFY_SOCKET` names: `@name` is an abstract socket, an
/// absolute path a socket file. Anything else (systemd's `vsock:`) is not
/// supported.
pub fn parse_address(value: &str) -> std::io::Result<SocketAddr> {
    if let Some(name) = value.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        SocketAddr::from_abstract_name(name.as_bytes())
    } else if value.starts_with('/') {
        SocketAddr::from_pathname(value)
    } else {
        Err(std::io::Error::other(format!(
            "unsupported NOTIFY_SOCKET {value:?}"
        )))
    }
}

impl Notifier {
    /// A notifier that sends nothing (no `NOTIFY_SOCKET`).
    pub fn disabled() -> Notifier {
        Notifier {
            target: None,
            watchdog: None,
            next_ping: Instant::now(),
            quiet: false,
            awaiting: None,
            failure_logged: false,
        }
    }

    /// Read and remove systemd's variables. `pid` is this master; `old_master`
    /// is `GUNICORN_PID` in a USR2 master (0 otherwise): such a master stays
    /// quiet until promoted, and takes the old master's watchdog.
    pub fn from_env(py: Python<'_>, pid: u32, old_master: i32) -> Notifier {
        let vars: Vec<Option<String>> = VARS.iter().map(|k| std::env::var(k).ok()).collect();
        if vars.iter().any(Option::is_some) {
            if let Ok(environ) = py.import("os").and_then(|os| os.getattr("environ")) {
                for k in VARS {
                    let _ = environ.call_method1("pop", (k, py.None()));
                }
            }
            for k in VARS {
                // SAFETY (of remove_var): the master is single-threaded.
                std::env::remove_var(k);
            }
        }
        let mut n = Notifier::disabled();
        n.quiet = old_master != 0;
        let Some(socket) = vars[0].as_deref().filter(|s| !s.is_empty()) else {
            return n;
        };
        match parse_address(socket).and_then(|addr| Ok((UnixDatagram::unbound()?, addr))) {
            Ok(target) => n.target = Some(target),
            Err(e) => {
                n.failure_logged = true;
                log::debug(&format!(
                    "sd_notify: NOTIFY_SOCKET {socket:?} not used: {e}"
                ));
                return n;
            }
        }
        let watchdog_pid: Option<i64> = vars[2].as_deref().and_then(|p| p.parse().ok());
        let ours = match watchdog_pid {
            None => true,
            Some(p) => p == pid as i64 || (old_master != 0 && p == old_master as i64),
        };
        n.watchdog = vars[1]
            .as_deref()
            .and_then(|u| u.parse::<u64>().ok())
            .filter(|&u| u > 0 && ours)
            .map(|u| Duration::from_micros(u / 2).max(Duration::from_millis(1)));
        n.awaiting = Some(Awaiting::Start);
        n
    }

    pub fn enabled(&self) -> bool {
        self.target.is_some()
    }

    /// What a `READY=1` waits for, if anything.
    pub fn awaiting(&self) -> Option<Awaiting> {
        self.awaiting
    }

    /// Send one message (newline-separated `KEY=value` lines).
    pub fn send(&mut self, msg: &str) {
        if self.quiet {
            return;
        }
        let Some((sock, addr)) = &self.target else {
            return;
        };
        if let Err(e) = sock.send_to_addr(msg.as_bytes(), addr) {
            if !self.failure_logged {
                self.failure_logged = true;
                log::debug(&format!("sd_notify: can't send to NOTIFY_SOCKET: {e}"));
            }
        }
    }

    pub fn ready(&mut self, pid: u32, serving: usize) {
        self.awaiting = None;
        self.send(&format!(
            "READY=1\nSTATUS=Serving with {serving} worker{}\nMAINPID={pid}",
            if serving == 1 { "" } else { "s" }
        ));
    }

    /// A HUP begins: `READY=1` again once the new workers serve. Another
    /// HUP before that (or the deferred reload starting) restarts the
    /// wait, and says `RELOADING=1` only once.
    pub fn reloading(&mut self) {
        if !self.enabled() {
            return;
        }
        let again = matches!(self.awaiting, Some(Awaiting::Reload(_)));
        self.awaiting = Some(Awaiting::Reload(Instant::now()));
        if again {
            return;
        }
        self.send(&format!(
            "RELOADING=1\nMONOTONIC_USEC={}\nSTATUS=Reloading",
            monotonic_usec()
        ));
    }

    /// The master stops. With a live USR2 master (`successor`), the service
    /// is handed over to it instead (it becomes the main process).
    pub fn stopping(&mut self, successor: i32) {
        self.awaiting = None;
        if successor != 0 {
            self.send(&format!(
                "MAINPID={successor}\nSTATUS=Handed over to the new master (pid {successor})"
            ));
            self.quiet = true;
        } else {
            self.send("STOPPING=1\nSTATUS=Stopping");
        }
    }

    /// A USR2 master was promoted: it is the service's main process now.
    pub fn promoted(&mut self, pid: u32) {
        if !self.quiet || !self.enabled() {
            return;
        }
        self.quiet = false;
        let ready = if self.awaiting.is_none() {
            "READY=1\n"
        } else {
            ""
        };
        self.send(&format!(
            "{ready}MAINPID={pid}\nSTATUS=Promoted (pid {pid})"
        ));
        self.next_ping = Instant::now();
        self.watchdog_tick();
    }

    /// The longest the master's loop may sleep before the next ping.
    pub fn cap_wait(&self, wait: Duration) -> Duration {
        match self.watchdog {
            Some(_) if !self.quiet => wait.min(
                self.next_ping
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(1)),
            ),
            _ => wait,
        }
    }

    /// `WATCHDOG=1` when a ping is due.
    pub fn watchdog_tick(&mut self) {
        let Some(every) = self.watchdog else {
            return;
        };
        if self.quiet {
            return;
        }
        let now = Instant::now();
        if now >= self.next_ping {
            self.send("WATCHDOG=1");
            self.next_ping = now + every;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        use std::os::linux::net::SocketAddrExt;
        let a = parse_address("@abstract/notify").unwrap();
        assert_eq!(a.as_abstract_name(), Some(&b"abstract/notify"[..]));
        let p = parse_address("/run/systemd/notify").unwrap();
        assert_eq!(
            p.as_pathname(),
            Some(std::path::Path::new("/run/systemd/notify"))
        );
        assert!(parse_address("vsock:2:1234").is_err());
    }

    #[test]
    fn sends_to_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("rgunicorn-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let rx = UnixDatagram::bind_addr(&addr).unwrap();
        let mut n = Notifier::disabled();
        n.target = Some((UnixDatagram::unbound().unwrap(), addr));
        n.awaiting = Some(Awaiting::Start);
        n.ready(42, 2);
        let mut buf = [0u8; 256];
        let len = rx.recv(&mut buf).unwrap();
        assert_eq!(
            std::str::from_utf8(&buf[..len]).unwrap(),
            "READY=1\nSTATUS=Serving with 2 workers\nMAINPID=42"
        );
        assert_eq!(n.awaiting(), None);
        // Quiet (an unpromoted USR2 master): nothing; promoted: MAINPID.
        n.quiet = true;
        n.send("WATCHDOG=1");
        n.promoted(43);
        let len = rx.recv(&mut buf).unwrap();
        assert_eq!(
            std::str::from_utf8(&buf[..len]).unwrap(),
            "READY=1\nMAINPID=43\nSTATUS=Promoted (pid 43)"
        );
    }

    #[test]
    fn a_failed_send_is_not_fatal() {
        let mut n = Notifier::disabled();
        n.target = Some((
            UnixDatagram::unbound().unwrap(),
            SocketAddr::from_pathname("/nonexistent/rgunicorn/notify").unwrap(),
        ));
        n.send("READY=1");
        n.send("READY=1");
        assert!(n.failure_logged);
    }
}
