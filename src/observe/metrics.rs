//! Metrics: gunicorn's statsd client (`statsd_host`, `statsd_prefix`,
//! `dogstatsd_tags`, gunicorn's metric names) and the Prometheus text
//! endpoint (`metrics_bind`).
//!
//! Who counts what: each worker counts its requests, in-flight requests,
//! responses by status class and a latency histogram in its scoreboard slot
//! (relaxed atomic adds on the request path; status classes and latency
//! only when metrics are on); the
//! master counts worker restarts by cause. The master answers Prometheus
//! scrapes from the scoreboard; statsd packets for requests are sent by
//! each worker (batched, once a second), the `gunicorn.workers` gauge by the
//! master, as gunicorn splits them.
//!
//! The Prometheus endpoint is a non-blocking listening socket that the
//! master polls together with its signal self-pipe, so a scrape wakes the
//! loop at once and the master stays one thread without tokio (no thread
//! exists to be caught holding a lock when the master forks). Scrape
//! connections are non-blocking too and polled the same way until their
//! request has arrived: a slow or silent client never holds the loop; the
//! answer (a few KiB) is written at once.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, ToSocketAddrs, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::Duration;

use crate::settings::{Statsd as StatsdSettings, StatsdTarget};
use crate::sys::scoreboard::{Reclaimed, Totals, LATENCY_BUCKETS_MS};

/// Why a worker was replaced or removed (Prometheus label values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartCause {
    Timeout = 0,
    MaxRequests = 1,
    /// It exited by itself or was killed (not by the master's decision).
    Crash = 2,
    /// HUP: a new generation.
    Reload = 3,
    /// TTOU (or WINCH): fewer workers wanted.
    Ttou = 4,
    /// Older than `max_worker_lifetime` (+ jitter).
    MaxWorkerLifetime = 5,
    /// Above `max_worker_memory` 3 samples in a row.
    MaxWorkerMemory = 6,
    /// `worker kill PID` on the control socket.
    Control = 7,
    /// A hook in the worker set `worker.alive = False`.
    NotAlive = 8,
}

impl RestartCause {
    pub const ALL: [RestartCause; 9] = [
        RestartCause::Timeout,
        RestartCause::MaxRequests,
        RestartCause::Crash,
        RestartCause::Reload,
        RestartCause::Ttou,
        RestartCause::MaxWorkerLifetime,
        RestartCause::MaxWorkerMemory,
        RestartCause::Control,
        RestartCause::NotAlive,
    ];

    pub fn label(self) -> &'static str {
        match self {
            RestartCause::Timeout => "timeout",
            RestartCause::MaxRequests => "max_requests",
            RestartCause::Crash => "crash",
            RestartCause::Reload => "reload",
            RestartCause::Ttou => "ttou",
            RestartCause::MaxWorkerLifetime => "max_worker_lifetime",
            RestartCause::MaxWorkerMemory => "max_worker_memory",
            RestartCause::Control => "control",
            RestartCause::NotAlive => "not_alive",
        }
    }
}

// ---------------------------------------------------------------- statsd

enum Sock {
    Udp(UdpSocket),
    Unix(UnixDatagram),
}

/// A connected, non-blocking datagram socket and the line format.
pub struct Statsd {
    sock: Sock,
    prefix: String,
    tags: String,
}

/// Lines per datagram stay under this (a safe UDP payload on any path).
const MAX_PACKET: usize = 1400;

impl Statsd {
    /// gunicorn connects once and, when that fails, sends nothing.
    pub fn connect(cfg: &StatsdSettings) -> Option<Statsd> {
        let sock = match &cfg.target {
            StatsdTarget::Udp(host, port) => {
                let addr = (host.as_str(), *port).to_socket_addrs().ok()?.next()?;
                let bind: std::net::SocketAddr = if addr.is_ipv4() {
                    ([0, 0, 0, 0], 0).into()
                } else {
                    (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
                };
                let s = UdpSocket::bind(bind).ok()?;
                s.connect(addr).ok()?;
                s.set_nonblocking(true).ok()?;
                Sock::Udp(s)
            }
            StatsdTarget::Unix(path) => {
                let s = UnixDatagram::unbound().ok()?;
                s.connect(path).ok()?;
                s.set_nonblocking(true).ok()?;
                Sock::Unix(s)
            }
        };
        Some(Statsd {
            sock,
            prefix: cfg.prefix.clone(),
            tags: cfg.tags.clone(),
        })
    }

    /// One metric line as gunicorn formats it (`kind`: `c|@1.0`, `ms`, `g`).
    pub fn line(&self, name: &str, value: impl std::fmt::Display, kind: &str) -> String {
        let mut l = format!("{}{name}:{value}|{kind}", self.prefix);
        if !self.tags.is_empty() {
            l.push_str("|#");
            l.push_str(&self.tags);
        }
        l
    }

    /// Send lines, several per datagram (statsd's multi-metric packets,
    /// newline-separated). Errors are dropped: metrics never block or fail
    /// serving.
    pub fn send(&self, lines: &[String]) {
        let mut packer = Packer::default();
        for l in lines {
            packer.push_line(self, l);
        }
        packer.finish(self);
    }
    fn send_one(&self, packet: &str) {
        let _ = match &self.sock {
            Sock::Udp(s) => s.send(packet.as_bytes()),
            Sock::Unix(s) => s.send(packet.as_bytes()),
        };
    }
}

/// Datagrams filled line by line, with no allocation per line.
#[derive(Default)]
pub struct Packer {
    packet: String,
    line: String,
}

impl Packer {
    /// Append a metric line as [`Statsd::line`] formats it.
    pub fn push(&mut self, statsd: &Statsd, name: &str, value: impl std::fmt::Display, kind: &str) {
        use std::fmt::Write as _;
        let mut line = std::mem::take(&mut self.line);
        line.clear();
        let _ = write!(line, "{}{name}:{value}|{kind}", statsd.prefix);
        if !statsd.tags.is_empty() {
            line.push_str("|#");
            line.push_str(&statsd.tags);
        }
        self.push_line(statsd, &line);
        self.line = line;
    }

    fn push_line(&mut self, statsd: &Statsd, l: &str) {
        if !self.packet.is_empty() && self.packet.len() + 1 + l.len() > MAX_PACKET {
            statsd.send_one(&self.packet);
            self.packet.clear();
        }
        if !self.packet.is_empty() {
            self.packet.push('\n');
        }
        self.packet.push_str(l);
    }

    pub fn finish(self, statsd: &Statsd) {
        if !self.packet.is_empty() {
            statsd.send_one(&self.packet);
        }
    }
}

/// A worker's requests since the last flush: (status, duration ms).
#[derive(Default)]
pub struct StatsdBatch {
    pending: Mutex<Vec<(u16, f32)>>,
}

impl StatsdBatch {
    /// On the request path: one uncontended lock and a push.
    pub fn record(&self, status: u16, micros: u64) {
        if let Ok(mut v) = self.pending.lock() {
            v.push((status, micros as f32 / 1000.0));
        }
    }

    /// gunicorn's per-request metrics for everything recorded since the
    /// last flush: `gunicorn.requests` and `gunicorn.request.status.<code>`
    /// counters (summed), a `gunicorn.request.duration` timer per request.
    pub fn flush(&self, statsd: &Statsd) {
        let taken = match self.pending.lock() {
            Ok(mut v) if !v.is_empty() => std::mem::take(&mut *v),
            _ => return,
        };
        let mut packer = Packer::default();
        packer.push(statsd, "gunicorn.requests", taken.len(), "c|@1.0");
        let mut by_status: BTreeMap<u16, u64> = BTreeMap::new();
        for (status, _) in &taken {
            *by_status.entry(*status).or_default() += 1;
        }
        for (status, n) in by_status {
            packer.push(
                statsd,
                &format!("gunicorn.request.status.{status}"),
                n,
                "c|@1.0",
            );
        }
        for (_, ms) in &taken {
            packer.push(
                statsd,
                "gunicorn.request.duration",
                format_args!("{ms:.3}"),
                "ms",
            );
        }
        packer.finish(statsd);
    }
}

const LOG_NAMES: [&str; 4] = [
    "gunicorn.log.critical",
    "gunicorn.log.error",
    "gunicorn.log.warning",
    "gunicorn.log.exception",
];

/// What was already reported of [`crate::log::COUNTS`] by this process.
#[derive(Default)]
pub struct LogCountsSent([u64; 4]);

impl LogCountsSent {
    /// Starting from the counts now (a forked worker inherits its
    /// master's, which the master reports itself).
    pub fn now() -> LogCountsSent {
        LogCountsSent(std::array::from_fn(|i| {
            crate::log::COUNTS[i].load(Ordering::Relaxed)
        }))
    }

    /// Counter lines for the log records since the last call.
    pub fn lines(&mut self, statsd: &Statsd) -> Vec<String> {
        let mut out = Vec::new();
        for (i, sent) in self.0.iter_mut().enumerate() {
            let now = crate::log::COUNTS[i].load(Ordering::Relaxed);
            if now > *sent {
                out.push(statsd.line(LOG_NAMES[i], now - *sent, "c|@1.0"));
                *sent = now;
            }
        }
        out
    }
}

/// What was already reported of a worker's reclaimed-connection counters.
#[derive(Default)]
pub struct ReclaimedSent([u64; 2]);

impl ReclaimedSent {
    /// Counter lines (`rgunicorn.connections_reclaimed.idle`,
    /// `.slow_head`) for the closes counted in `slot` since the last call.
    pub fn lines(&mut self, statsd: &Statsd, slot: &crate::sys::scoreboard::Slot) -> Vec<String> {
        let mut out = Vec::new();
        for r in Reclaimed::ALL {
            let now = slot.reclaimed[r as usize].load(Ordering::Relaxed);
            let sent = &mut self.0[r as usize];
            if now > *sent {
                let name = format!("rgunicorn.connections_reclaimed.{}", r.label());
                out.push(statsd.line(&name, now - *sent, "c|@1.0"));
                *sent = now;
            }
        }
        out
    }
}

// ------------------------------------------------------------ Prometheus

/// What one scrape shows.
pub struct Snapshot {
    pub totals: Totals,
    pub workers: usize,
    pub restarts: [u64; RestartCause::ALL.len()],
}

/// The Prometheus text exposition format (version 0.0.4).
pub fn render(s: &Snapshot) -> String {
    use std::fmt::Write as _;
    let t = &s.totals;
    let mut o = String::with_capacity(2048);
    let _ = writeln!(
        o,
        "# HELP rgunicorn_requests_total Requests received by workers.\n\
         # TYPE rgunicorn_requests_total counter\n\
         rgunicorn_requests_total {}",
        t.requests
    );
    let _ = writeln!(
        o,
        "# HELP rgunicorn_requests_in_flight Requests inside the app now.\n\
         # TYPE rgunicorn_requests_in_flight gauge\n\
         rgunicorn_requests_in_flight {}",
        t.in_flight
    );
    let _ = writeln!(
        o,
        "# HELP rgunicorn_responses_total Responses by status class.\n\
         # TYPE rgunicorn_responses_total counter"
    );
    for (i, n) in t.status_classes.iter().enumerate() {
        let _ = writeln!(o, "rgunicorn_responses_total{{class=\"{}xx\"}} {n}", i + 1);
    }
    let _ = writeln!(
        o,
        "# HELP rgunicorn_request_duration_seconds From the request received to its response head.\n\
         # TYPE rgunicorn_request_duration_seconds histogram"
    );
    let mut cumulative = 0;
    for (i, n) in t.latency.iter().enumerate() {
        cumulative += n;
        let le = match LATENCY_BUCKETS_MS.get(i) {
            Some(ms) => format!("{}", *ms as f64 / 1000.0),
            None => "+Inf".to_string(),
        };
        let _ = writeln!(
            o,
            "rgunicorn_request_duration_seconds_bucket{{le=\"{le}\"}} {cumulative}"
        );
    }
    let _ = writeln!(
        o,
        "rgunicorn_request_duration_seconds_sum {}\nrgunicorn_request_duration_seconds_count {cumulative}",
        t.latency_sum_us as f64 / 1e6
    );
    let _ = writeln!(
        o,
        "# HELP rgunicorn_connections_reclaimed_total Connections closed by a worker at worker_connections to make room for waiting ones, by what they held their slot with.\n\
         # TYPE rgunicorn_connections_reclaimed_total counter"
    );
    for r in Reclaimed::ALL {
        let _ = writeln!(
            o,
            "rgunicorn_connections_reclaimed_total{{reason=\"{}\"}} {}",
            r.label(),
            t.reclaimed[r as usize]
        );
    }
    let _ = writeln!(
        o,
        "# HELP rgunicorn_workers Worker processes alive.\n\
         # TYPE rgunicorn_workers gauge\n\
         rgunicorn_workers {}",
        s.workers
    );
    let _ = writeln!(
        o,
        "# HELP rgunicorn_worker_restarts_total Workers replaced or removed, by cause.\n\
         # TYPE rgunicorn_worker_restarts_total counter"
    );
    for c in RestartCause::ALL {
        let _ = writeln!(
            o,
            "rgunicorn_worker_restarts_total{{cause=\"{}\"}} {}",
            c.label(),
            s.restarts[c as usize]
        );
    }
    o
}

/// How long a scrape client may take to send its request.
pub const SCRAPE_DEADLINE: Duration = Duration::from_secs(5);
/// Scrape connections held at once (the oldest goes beyond this).
pub const MAX_PENDING_SCRAPES: usize = 16;
/// The response is written with this bound (it is a few KiB: it fits a
/// socket buffer, so the write does not wait in practice).
pub const SCRAPE_WRITE_TIMEOUT: Duration = Duration::from_millis(100);

/// The `metrics_bind` listener, owned by the master, and the scrape
/// connections whose request has not fully arrived yet: they are polled
/// with the loop's signal pipe, never waited on.
pub struct Exporter {
    listener: TcpListener,
    pending: Vec<(std::net::TcpStream, Vec<u8>, std::time::Instant)>,
}

impl Exporter {
    pub fn bind(addr: &str) -> std::io::Result<Exporter> {
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        // std's sockets are close-on-exec: a USR2 master binds its own.
        Ok(Exporter {
            listener,
            pending: Vec::new(),
        })
    }

    pub fn local_addr(&self) -> String {
        self.listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default()
    }

    /// The listener and the pending connections, for the loop's poll.
    pub fn fds(&self) -> Vec<std::os::fd::BorrowedFd<'_>> {
        std::iter::once(std::os::fd::AsFd::as_fd(&self.listener))
            .chain(
                self.pending
                    .iter()
                    .map(|(c, _, _)| std::os::fd::AsFd::as_fd(c)),
            )
            .collect()
    }

    /// Accept what waits, read what arrived (non-blocking), answer each
    /// complete request, drop the silent past [`SCRAPE_DEADLINE`].
    pub fn serve_pending(&mut self, snapshot: impl Fn() -> Snapshot) {
        while let Ok((conn, _)) = self.listener.accept() {
            if conn.set_nonblocking(true).is_err() {
                continue;
            }
            if self.pending.len() >= MAX_PENDING_SCRAPES {
                self.pending.remove(0);
            }
            self.pending
                .push((conn, Vec::new(), std::time::Instant::now()));
        }
        self.pending.retain_mut(|(conn, head, since)| {
            let mut buf = [0u8; 1024];
            loop {
                match conn.read(&mut buf) {
                    Ok(0) => return false,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(_) => return false,
                }
            }
            let complete = head.windows(4).any(|w| w == b"\r\n\r\n") || head.len() >= 8192;
            if !complete {
                return since.elapsed() < SCRAPE_DEADLINE;
            }
            answer(conn, head, &snapshot);
            false
        });
    }
}

/// Write the response to one complete request head.
fn answer(conn: &mut std::net::TcpStream, head: &[u8], snapshot: &impl Fn() -> Snapshot) {
    let line = String::from_utf8_lossy(head);
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next(), parts.next());
    let path = path.map(|p| p.split('?').next().unwrap_or(p));
    let (status, body) = match (method, path) {
        (Some("GET" | "HEAD"), Some("/metrics" | "/")) => ("200 OK", render(&snapshot())),
        (Some(_), Some(_)) => ("404 Not Found", "Not Found\n".to_string()),
        _ => ("400 Bad Request", "Bad Request\n".to_string()),
    };
    let resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{}",
        body.len(),
        if method == Some("HEAD") { "" } else { &body }
    );
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_write_timeout(Some(SCRAPE_WRITE_TIMEOUT));
    let _ = conn.write_all(resp.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative() {
        let mut totals = Totals::default();
        totals.latency[0] = 2;
        totals.latency[3] = 1;
        totals.latency[LATENCY_BUCKETS_MS.len()] = 1;
        totals.reclaimed = [3, 5];
        let text = render(&Snapshot {
            totals,
            workers: 2,
            restarts: [0, 0, 1, 0, 0, 0, 0, 0, 0],
        });
        assert!(text.contains("rgunicorn_request_duration_seconds_bucket{le=\"0.005\"} 2\n"));
        assert!(text.contains("rgunicorn_request_duration_seconds_bucket{le=\"0.05\"} 3\n"));
        assert!(text.contains("rgunicorn_request_duration_seconds_bucket{le=\"+Inf\"} 4\n"));
        assert!(text.contains("rgunicorn_request_duration_seconds_count 4\n"));
        assert!(text.contains("rgunicorn_workers 2\n"));
        assert!(text.contains("rgunicorn_worker_restarts_total{cause=\"crash\"} 1\n"));
        assert!(text.contains("rgunicorn_connections_reclaimed_total{reason=\"idle\"} 3\n"));
        assert!(text.contains("rgunicorn_connections_reclaimed_total{reason=\"slow_head\"} 5\n"));
    }
}

// ---------------------------------------------------------------- master

/// The master's side: the exporter, the statsd gauge, restarts by cause and
/// the counters of reaped workers (so totals never go down).
#[derive(Default)]
pub struct MasterMetrics {
    exporter: Option<Exporter>,
    statsd: Option<Statsd>,
    log_sent: LogCountsSent,
    last_gauge: Option<std::time::Instant>,
    restarts: [u64; RestartCause::ALL.len()],
    retired: Totals,
}

impl MasterMetrics {
    /// At start, after the listeners: bind `metrics_bind` (a failure is
    /// logged, not fatal: a USR2 master finds the old one's port taken),
    /// connect to `statsd_host`.
    pub fn start(settings: &crate::settings::Metrics) -> MasterMetrics {
        let mut m = MasterMetrics::default();
        if let Some(addr) = &settings.metrics_bind {
            match Exporter::bind(addr) {
                Ok(e) => {
                    crate::log::info(&format!("Metrics at: http://{}/metrics", e.local_addr()));
                    m.exporter = Some(e);
                }
                Err(e) => crate::log::error(&format!("metrics_bind {addr}: {e}")),
            }
        }
        m.reconfigure(settings);
        m
    }

    /// On HUP: statsd settings afresh (`metrics_bind` is kept as bound).
    pub fn reconfigure(&mut self, settings: &crate::settings::Metrics) {
        self.statsd = settings.statsd.as_ref().and_then(Statsd::connect);
    }

    /// Workers count status classes and latency: an exporter is bound or
    /// `statsd_host` is set (`settings`, as the master last loaded them).
    pub fn enabled(&self, settings: &crate::settings::Metrics) -> bool {
        self.exporter.is_some() || settings.statsd.is_some()
    }

    /// Polled with the signal pipe.
    pub fn poll_fds(&self) -> Vec<std::os::fd::BorrowedFd<'_>> {
        self.exporter
            .as_ref()
            .map(Exporter::fds)
            .unwrap_or_default()
    }

    /// A worker was reaped: fold its slot into the totals, count the cause.
    pub fn worker_gone(&mut self, slot: &crate::sys::scoreboard::Slot, cause: RestartCause) {
        self.retired.add(slot);
        // Nothing is in flight in a process that is gone.
        self.retired.in_flight -= slot.in_flight.load(Ordering::Relaxed) as u64;
        self.restarts[cause as usize] += 1;
    }

    /// Once per loop turn: answer pending scrapes; the statsd gauge and
    /// log counters at most once a second (gunicorn sends the gauge on
    /// each loop turn, which is once a second there).
    pub fn turn<'a>(&mut self, live: impl Iterator<Item = &'a crate::sys::scoreboard::Slot>) {
        let live: Vec<&crate::sys::scoreboard::Slot> = live.collect();
        if let Some(exporter) = &mut self.exporter {
            exporter.serve_pending(|| {
                let mut totals = self.retired.clone();
                for s in &live {
                    totals.add(s);
                }
                Snapshot {
                    totals,
                    workers: live.len(),
                    restarts: self.restarts,
                }
            });
        }
        if let Some(statsd) = &self.statsd {
            if self
                .last_gauge
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
            {
                self.last_gauge = Some(std::time::Instant::now());
                let mut lines = vec![statsd.line("gunicorn.workers", live.len(), "g")];
                lines.extend(self.log_sent.lines(statsd));
                statsd.send(&lines);
            }
        }
    }
}
