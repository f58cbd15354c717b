//! Slow clients: a client that trickles its request head is cut off after
//! `header_read_timeout` while other clients are served; a client that
//! takes longer than `keepalive` to send its first request is still served;
//! `keepalive = 0` closes after each response, as in gunicorn.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::server::*;
use common::*;

#[test]
fn a_trickling_head_is_cut_off_and_others_are_served() {
    let dir = scratch_dir("slow-trickle");
    let server = Server::start(&dir, &["--header-read-timeout", "1"]);
    let port = server.port;
    let mut slow = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let connected = Instant::now();
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: t\r\nX-Slow: ")
        .unwrap();
    // Meanwhile other clients are served as usual.
    let others = std::thread::spawn(move || {
        let start = Instant::now();
        let mut ok = 0;
        while start.elapsed() < Duration::from_millis(1500) {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s.write_all(b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                .unwrap();
            let mut r = String::new();
            s.read_to_string(&mut r).unwrap();
            assert!(r.starts_with("HTTP/1.1 200"), "{r}");
            ok += 1;
        }
        ok
    });
    // One byte every 100 ms: the head never completes.
    let cut_after = loop {
        std::thread::sleep(Duration::from_millis(100));
        if slow.write_all(b"x").is_err() {
            break connected.elapsed();
        }
        // A closed connection shows as EOF on a non-blocking read.
        slow.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 64];
        let eof = matches!(slow.read(&mut buf), Ok(0));
        slow.set_nonblocking(false).unwrap();
        if eof {
            break connected.elapsed();
        }
        assert!(
            connected.elapsed() < Duration::from_secs(10),
            "the trickling client was never cut off"
        );
    };
    assert!(
        cut_after >= Duration::from_millis(900) && cut_after < Duration::from_secs(4),
        "cut after {cut_after:?}"
    );
    assert!(others.join().unwrap() > 5);
    assert_eq!(server.stop(), 0);
}

#[test]
fn a_first_request_slower_than_keepalive_is_served() {
    let dir = scratch_dir("slow-first");
    let server = Server::start(&dir, &["--keep-alive", "1"]);
    let mut s = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // The client's own delay is what is tested here.
    std::thread::sleep(Duration::from_millis(1500));
    s.write_all(b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut r = String::new();
    s.read_to_string(&mut r).unwrap();
    assert!(r.starts_with("HTTP/1.1 200"), "{r:?}");
    assert_eq!(server.stop(), 0);
}

#[test]
fn keepalive_zero_closes_after_each_response() {
    let dir = scratch_dir("slow-ka0");
    let server = Server::start(&dir, &["--keep-alive", "0"]);
    let mut s = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    // No Connection: close from the client, yet the server closes.
    let mut r = String::new();
    s.read_to_string(&mut r).unwrap();
    assert!(r.starts_with("HTTP/1.1 200"), "{r:?}");
    assert!(
        r.to_ascii_lowercase().contains("connection: close"),
        "{r:?}"
    );
    assert_eq!(server.stop(), 0);
}
