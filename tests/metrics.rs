//! Metrics: gunicorn's statsd packets (names, types, prefix, dogstatsd
//! tags) received by a local UDP listener, and the Prometheus endpoint's
//! counters moving with traffic, a 404, a killed worker, TTOU and
//! max_requests.

use crate::common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use common::server::*;
use common::*;

/// One scrape: every sample line as name{labels} -> value.
fn scrape(port: u16) -> BTreeMap<String, f64> {
    let text = metrics_response(port);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.contains("Content-Type: text/plain; version=0.0.4"));
    let body = text.split("\r\n\r\n").nth(1).unwrap();
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap();
            (k.to_string(), v.parse().unwrap())
        })
        .collect()
}

fn get(m: &BTreeMap<String, f64>, key: &str) -> f64 {
    *m.get(key).unwrap_or_else(|| panic!("no {key} in {m:#?}"))
}

#[test]
fn prometheus_counters_move_with_traffic() {
    let dir = scratch_dir("metrics-prom");
    let server = Server::start(&dir, &["--metrics-bind", "127.0.0.1:0"]);
    let port = server.metrics_port();
    let before = scrape(port);
    assert_eq!(get(&before, "rgunicorn_workers"), 2.0);

    for _ in 0..10 {
        assert_eq!(server.get("/health").unwrap().0, 200);
    }
    let after = scrape(port);
    let delta = |m: &BTreeMap<String, f64>, k: &str| get(m, k) - get(&before, k);
    assert_eq!(delta(&after, "rgunicorn_requests_total"), 10.0);
    assert_eq!(
        delta(&after, "rgunicorn_responses_total{class=\"2xx\"}"),
        10.0
    );
    assert_eq!(
        delta(&after, "rgunicorn_responses_total{class=\"4xx\"}"),
        0.0
    );
    assert_eq!(
        delta(&after, "rgunicorn_request_duration_seconds_count"),
        10.0
    );
    assert_eq!(
        delta(
            &after,
            "rgunicorn_request_duration_seconds_bucket{le=\"+Inf\"}"
        ),
        10.0
    );
    // The health endpoint answers well within 1 s.
    assert_eq!(
        delta(
            &after,
            "rgunicorn_request_duration_seconds_bucket{le=\"1\"}"
        ),
        10.0
    );

    assert_eq!(server.get("/nope").unwrap().0, 404);
    let after404 = scrape(port);
    assert_eq!(
        get(&after404, "rgunicorn_responses_total{class=\"4xx\"}")
            - get(&after, "rgunicorn_responses_total{class=\"4xx\"}"),
        1.0
    );
    assert_eq!(
        get(&after404, "rgunicorn_responses_total{class=\"2xx\"}"),
        get(&after, "rgunicorn_responses_total{class=\"2xx\"}")
    );

    // A worker killed: counted as a crash; its requests stay counted.
    // A scrape pending while the replacement forks still ends when the
    // master answers it (the worker does not keep a copy open).
    let mut pending = TcpStream::connect(("127.0.0.1", port)).unwrap();
    pending
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(pending, "GET /metrics HTTP/1.1\r\n").unwrap();
    // Answered after the master has accepted the pending one.
    scrape(port);
    let victim = server.worker_pids()[0];
    let status = std::process::Command::new("kill")
        .args(["-KILL", &victim.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    server.wait_until(|| {
        let m = scrape(port);
        get(&m, "rgunicorn_worker_restarts_total{cause=\"crash\"}") == 1.0
            && get(&m, "rgunicorn_workers") == 2.0
    });
    write!(pending, "Host: t\r\n\r\n").unwrap();
    let mut text = String::new();
    pending.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    let killed = scrape(port);
    assert!(get(&killed, "rgunicorn_requests_total") >= get(&after404, "rgunicorn_requests_total"));
    assert_eq!(
        get(
            &killed,
            "rgunicorn_worker_restarts_total{cause=\"timeout\"}"
        ),
        0.0
    );

    // TTOU: one worker fewer, counted as such.
    server.signal("TTOU");
    server.wait_until(|| {
        let m = scrape(port);
        get(&m, "rgunicorn_worker_restarts_total{cause=\"ttou\"}") == 1.0
            && get(&m, "rgunicorn_workers") == 1.0
    });

    // HUP: the old generation (one worker) is replaced by the configured two.
    server.signal("HUP");
    server.wait_until(|| {
        let m = scrape(port);
        get(&m, "rgunicorn_worker_restarts_total{cause=\"reload\"}") == 1.0
            && get(&m, "rgunicorn_workers") == 2.0
    });
    let end = scrape(port);
    assert_eq!(
        get(&end, "rgunicorn_worker_restarts_total{cause=\"crash\"}"),
        1.0
    );
    assert_eq!(server.stop(), 0);
}

#[test]
fn prometheus_counts_max_requests_restarts() {
    let dir = scratch_dir("metrics-maxreq");
    let server = Server::start(
        &dir,
        &["--metrics-bind", "127.0.0.1:0", "--max-requests", "5"],
    );
    let port = server.metrics_port();
    // A client that connects and says nothing holds nothing up, nor does
    // one whose request arrives in pieces.
    let _silent = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut slow = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(slow, "GET /metrics HT").unwrap();
    assert_eq!(get(&scrape(port), "rgunicorn_workers"), 2.0);
    write!(slow, "TP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let mut text = String::new();
    slow.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    for _ in 0..30 {
        assert_eq!(server.get("/health").unwrap().0, 200);
    }
    server.wait_until(|| {
        get(
            &scrape(port),
            "rgunicorn_worker_restarts_total{cause=\"max_requests\"}",
        ) >= 1.0
    });
    // Unknown paths get a 404 from the exporter.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET /other HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.1 404"), "{text}");
    assert_eq!(server.stop(), 0);
}

/// A local statsd receiver: the socket (reads wait at most `wait`) and
/// its address for `statsd_host`.
fn statsd_receiver(wait: Duration) -> (UdpSocket, String) {
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(wait)).unwrap();
    let addr = udp.local_addr().unwrap().to_string();
    (udp, addr)
}

#[test]
fn statsd_packets_use_gunicorn_names_prefix_and_tags() {
    let (udp, addr) = statsd_receiver(Duration::from_millis(200));
    let dir = scratch_dir("metrics-statsd");
    let server = Server::start(
        &dir,
        &[
            "--statsd-host",
            &addr,
            "--statsd-prefix",
            "myapp",
            "--dogstatsd-tags",
            "env:test,team:web",
        ],
    );
    const N: usize = 7;
    for _ in 0..N {
        assert_eq!(server.get("/health").unwrap().0, 200);
    }
    assert_eq!(server.get("/nope").unwrap().0, 404);

    // Workers flush once a second; collect until every request is in.
    let tags = "|#env:test,team:web";
    let mut lines: Vec<String> = Vec::new();
    let (mut requests, mut not_found, mut gauge) = (0u64, 0u64, false);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 65536];
    let mut done = false;
    loop {
        assert!(Instant::now() < deadline, "statsd lines so far: {lines:#?}");
        let Ok(n) = udp.recv(&mut buf) else {
            // Every request is in, and the flush that carried the last of
            // them is complete (its datagrams come back to back).
            if done {
                break;
            }
            continue;
        };
        for line in String::from_utf8_lossy(&buf[..n]).lines() {
            assert!(line.starts_with("myapp.gunicorn."), "{line}");
            assert!(line.ends_with(tags), "{line}");
            let body = line.strip_suffix(tags).unwrap();
            if let Some(v) = body
                .strip_prefix("myapp.gunicorn.requests:")
                .and_then(|v| v.strip_suffix("|c|@1.0"))
            {
                requests += v.parse::<u64>().unwrap();
            }
            if body == "myapp.gunicorn.request.status.404:1|c|@1.0" {
                not_found += 1;
            }
            if body == "myapp.gunicorn.workers:2|g" {
                gauge = true;
            }
            lines.push(line.to_string());
        }
        done = requests > N as u64 && not_found == 1 && gauge;
    }
    // One timer per request, in ms; the status counters add up.
    let timers = lines
        .iter()
        .filter(|l| l.starts_with("myapp.gunicorn.request.duration:"))
        .inspect(|l| {
            let v = l
                .strip_prefix("myapp.gunicorn.request.duration:")
                .unwrap()
                .strip_suffix(&format!("|ms{tags}"))
                .unwrap_or_else(|| panic!("{l}"));
            assert!(v.parse::<f64>().unwrap() >= 0.0);
        })
        .count() as u64;
    let by_status: u64 = lines
        .iter()
        .filter_map(|l| l.strip_prefix("myapp.gunicorn.request.status."))
        .map(|l| {
            let count = l.split(':').nth(1).unwrap().split('|').next().unwrap();
            count.parse::<u64>().unwrap()
        })
        .sum();
    assert_eq!(timers, requests);
    assert_eq!(by_status, requests);
    assert!(lines
        .iter()
        .any(|l| l.starts_with("myapp.gunicorn.request.status.200:")));
    assert_eq!(server.stop(), 0);
}

#[test]
fn statsd_over_a_unix_datagram_socket() {
    let dir = scratch_dir("metrics-statsd-unix");
    let path = dir.join("statsd.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let host = format!("unix:{}", path.display());
    let server = Server::start(&dir, &["--statsd-host", &host]);
    assert_eq!(server.get("/health").unwrap().0, 200);
    let (mut requests, mut gauge) = (false, false);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 65536];
    while !(requests && gauge) {
        assert!(Instant::now() < deadline, "no statsd lines over {host}");
        let Ok(n) = sock.recv(&mut buf) else { continue };
        for line in String::from_utf8_lossy(&buf[..n]).lines() {
            requests |= line.starts_with("gunicorn.requests:") && line.ends_with("|c|@1.0");
            gauge |= line == "gunicorn.workers:2|g";
        }
    }
    assert_eq!(server.stop(), 0);
}

/// A real config's busy-worker gauge: request hooks call the statsd
/// methods gunicorn's logger has when `statsd_host` is set.
const HOOK_METRICS_CONF: &str = r#"
bind = "127.0.0.1:0"
workers = 1
import os
if os.environ.get("STATSD_ADDR"):
    statsd_host = os.environ["STATSD_ADDR"]
    statsd_prefix = "svc"
    dogstatsd_tags = "env:test"
def when_ready(server):
    server.log.info("log has increment: %s", hasattr(server.log, "increment"))
def pre_request(worker, req):
    if hasattr(worker.log, "increment"):
        worker.log.increment("hook.busy", 1)
        worker.log.info("", extra={"metric": "hook.extra", "value": 3, "mtype": "counter"})
def post_request(worker, req, environ, resp):
    if hasattr(worker.log, "increment"):
        worker.log.decrement("hook.busy", 1, 0.5)
        worker.log.gauge("hook.gauge", 7)
        worker.log.histogram("hook.histogram", 2.5)
        worker.log.timer("hook.timer", 12)
    worker.log.info("post_request done")
"#;

#[test]
fn hooks_send_statsd_metrics_through_log_as_in_gunicorn() {
    let (udp, addr) = statsd_receiver(Duration::from_millis(100));
    let dir = scratch_dir("metrics-hook-statsd");
    copy_test_apps(&dir);
    std::fs::write(dir.join("hookmetrics.conf.py"), HOOK_METRICS_CONF).unwrap();
    let mut seen = Vec::new();
    for program in [gunicorn(), rgunicorn()] {
        // Without statsd_host the methods are not there; with it they send.
        for statsd in [None, Some(addr.as_str())] {
            let server = Server::start_program_env(
                &program,
                "plain_app",
                &dir,
                // The last -c wins, over the one start_program_env gives.
                &["-c", "hookmetrics.conf.py"],
                &[("STATSD_ADDR", statsd)],
            );
            let want = format!("log has increment: {}", statsd.map_or("False", |_| "True"));
            server.wait_until(|| server.logged(&want));
            assert_eq!(server.get("/").unwrap().0, 200, "{program:?}");
            let mut lines: Vec<String> = Vec::new();
            if statsd.is_some() {
                let deadline = Instant::now() + Duration::from_secs(20);
                let mut buf = [0u8; 65536];
                while lines.len() < 6 {
                    assert!(Instant::now() < deadline, "{program:?}: {lines:#?}");
                    let Ok(n) = udp.recv(&mut buf) else { continue };
                    lines.extend(
                        String::from_utf8_lossy(&buf[..n])
                            .lines()
                            .filter(|l| l.starts_with("svc.hook."))
                            .map(str::to_string),
                    );
                }
                lines.sort();
            }
            // The empty info() with a metric writes no line with statsd on
            // (pre_request's line would come before post_request's).
            server.wait_until(|| server.logged("post_request done"));
            assert!(
                server.log_lines(|l| l.ends_with("[INFO] ")).is_empty(),
                "{program:?}"
            );
            assert_eq!(server.stop(), 0, "{program:?}");
            seen.push(lines);
        }
    }
    assert_eq!(
        seen[3],
        [
            "svc.hook.busy:-1|c|@0.5|#env:test",
            "svc.hook.busy:1|c|@1.0|#env:test",
            "svc.hook.extra:3|c|@1.0|#env:test",
            "svc.hook.gauge:7|g|#env:test",
            "svc.hook.histogram:2.5|h|#env:test",
            "svc.hook.timer:12|ms|#env:test",
        ]
    );
    assert_eq!(seen[1], seen[3], "gunicorn's lines, then rgunicorn's");
}
