//! The gate's unit tests: each rule, the fast path against the full one,
//! the corpus, trickled and pipelined bytes.

use super::*;

fn py_literal(v: &str) -> String {
    v.trim_matches(|c| c == '\'' || c == '"').to_string()
}

/// Apply a `name=value` corpus setting (a Python literal).
pub(super) fn apply(l: &mut Limits, name: &str, value: &str) {
    let b = value == "True";
    let int = || value.parse::<i64>().unwrap();
    match name {
        "limit_request_line" => l.limit_request_line = int(),
        "limit_request_fields" => l.limit_request_fields = int(),
        "limit_request_field_size" => l.limit_request_field_size = int(),
        "permit_unconventional_http_method" => l.permit_unconventional_http_method = b,
        "permit_unconventional_http_version" => l.permit_unconventional_http_version = b,
        "casefold_http_method" => l.casefold_http_method = b,
        "permit_obsolete_folding" => l.permit_obsolete_folding = b,
        "strip_header_spaces" => l.strip_header_spaces = b,
        "header_map" => {
            l.header_map = match py_literal(value).as_str() {
                "drop" => HeaderMapPolicy::Drop,
                "refuse" => HeaderMapPolicy::Refuse,
                "dangerous" => HeaderMapPolicy::Dangerous,
                other => panic!("header_map {other}"),
            }
        }
        "forwarded_allow_ips" => {
            l.forwarded_allow_ips = py_literal(value)
                .split(',')
                .map(|s| s.trim().to_string())
                .collect()
        }
        "proxy_protocol" => {
            l.proxy_protocol = match value {
                "True" => ProxyProtocol::Auto,
                "False" => ProxyProtocol::Off,
                v => match py_literal(v).as_str() {
                    "v1" => ProxyProtocol::V1,
                    "v2" => ProxyProtocol::V2,
                    "off" => ProxyProtocol::Off,
                    _ => ProxyProtocol::Auto,
                },
            }
        }
        other => panic!("setting {other} not handled"),
    }
}

#[test]
fn common_heads_take_the_fast_path() {
    let limits = Arc::new(Limits::default());
    let take = |head: &[u8]| {
        let mut f = Framer::new(limits.clone(), Some(IpAddr::from([10, 0, 0, 1])));
        f.plain_head(head)
            .map(|n| (n, head[..n].to_vec(), f.close_after))
    };
    let wrk = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n\r\n";
    assert_eq!(take(wrk), Some((wrk.len(), wrk.to_vec(), false)));
    let browser = b"GET /a/b?c=d HTTP/1.1\r\nHost: example.com\r\nUser-Agent: Mozilla/5.0 (X11)\r\nAccept: text/html,*/*;q=0.8\r\nConnection: close\r\n\r\n";
    assert_eq!(take(browser), Some((browser.len(), browser.to_vec(), true)));
    let http10 = b"HEAD / HTTP/1.0\r\n\r\nGET";
    assert_eq!(take(http10), Some((19, http10[..19].to_vec(), true)));
    for other in [
        &b"GET /health HTTP/1.1\r\nHost: a\r\n"[..],
        b"GET /health HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
        b"GET /health HTTP/1.1\r\nX_Y: 1\r\n\r\n",
        b"GET /health HTTP/1.1\r\nHost:a\r\n\r\n",
        b"GET /h#f HTTP/1.1\r\n\r\n",
        b"get / HTTP/1.1\r\n\r\n",
        b"\r\nGET / HTTP/1.1\r\n\r\n",
    ] {
        assert_eq!(take(other), None, "{}", String::from_utf8_lossy(other));
    }
}

/// An allow-list as the config gives it, checked for `peer`.
fn ip_allowed(list: &[String], peer: Option<IpAddr>) -> bool {
    let entries: Vec<AllowEntry> = list.iter().filter_map(|e| AllowEntry::parse(e)).collect();
    entries_allow(&entries, peer)
}

/// Run the framer over `input` fed in pieces of `step` bytes, then EOF;
/// returns the canonical output and the result.
fn run_steps(
    limits: &Arc<Limits>,
    input: &[u8],
    step: usize,
) -> (Vec<u8>, Framer, Option<RequestError>) {
    run_steps_with(limits, input, step, false)
}

/// [`run_steps`], with the fast path off when `full_only`.
fn run_steps_with(
    limits: &Arc<Limits>,
    input: &[u8],
    step: usize,
    full_only: bool,
) -> (Vec<u8>, Framer, Option<RequestError>) {
    let mut f = Framer::new(limits.clone(), Some(IpAddr::from([127, 0, 0, 1])));
    f.no_fast_path = full_only;
    let mut out = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut fed = 0;
    let mut err = None;
    loop {
        let end = (fed + step).min(input.len());
        buf.extend_from_slice(&input[fed..end]);
        fed = end;
        let eof = fed == input.len();
        match f.advance(&buf, eof, &mut out) {
            Ok(n) => {
                buf.drain(..n);
            }
            Err(e) => {
                err = Some(e);
                break;
            }
        }
        if eof {
            // A second call at EOF must not change anything.
            match f.advance(&buf, true, &mut out) {
                Ok(n) => assert!(n == buf.len() || f.at_end()),
                Err(e) => err = Some(e),
            }
            break;
        }
    }
    (out, f, err)
}

/// The statuses a client would read (the corpus's notation).
pub(super) fn statuses(limits: &Arc<Limits>, input: &[u8]) -> String {
    let (_, f, err) = run_steps(limits, input, usize::MAX / 2);
    let mut answered = f.heads_released();
    let mut v: Vec<String> = Vec::new();
    if let Some(e) = &err {
        if f.mid_request() && !e.empty {
            answered -= 1;
        }
    }
    for _ in 0..answered {
        v.push("200".into());
    }
    if let Some(e) = err {
        if !e.empty {
            v.push(e.status.to_string());
        }
    }
    if v.is_empty() {
        "EMPTY".into()
    } else {
        v.join(",")
    }
}

/// Cases where rgunicorn deliberately answers otherwise, with why.
pub(super) const KNOWN: &[(&str, &str)] = &[(
    "valid/022",
    "gunicorn's measuring app sent no Content-Length, so its HTTP/1.0 keep-alive \
     response had to close the connection before the second request; \
     rgunicorn's responses always carry a length and keep the connection",
)];

#[test]
fn corpus_framer_only() {
    let cases = corpus::load();
    assert!(cases.len() >= 140, "corpus not found or short");
    let (mut ok_d, mut ok_s, mut n_s) = (0, 0, 0);
    let mut failures = Vec::new();
    let mut class_mismatch = Vec::new();
    for c in &cases {
        let known = KNOWN.iter().any(|(k, _)| *k == c.name);
        let defaults = Arc::new(Limits::default());
        let got = statuses(&defaults, &c.bytes);
        if got == c.status_default {
            ok_d += 1;
        } else if !known {
            failures.push(format!(
                "{} default: want {} got {}",
                c.name, c.status_default, got
            ));
        }
        if c.set == "invalid" && c.settings == "-" {
            let (_, _, err) = run_steps(&defaults, &c.bytes, usize::MAX / 2);
            let class = err.map(|e| e.class).unwrap_or("-");
            if class != c.class {
                class_mismatch.push(format!("{}: want {} got {}", c.name, c.class, class));
            }
        }
        if c.settings != "-" {
            n_s += 1;
            let mut l = Limits::default();
            for (k, v) in &c.settings_list() {
                apply(&mut l, k, v);
            }
            let got = statuses(&Arc::new(l), &c.bytes);
            if got == c.status_with_settings {
                ok_s += 1;
            } else if !known {
                failures.push(format!(
                    "{} with {:?}: want {} got {}",
                    c.name, c.settings, c.status_with_settings, got
                ));
            }
        }
    }
    println!(
        "framer: {ok_d}/{} default, {ok_s}/{n_s} with settings",
        cases.len()
    );
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(class_mismatch.is_empty(), "{class_mismatch:#?}");
}

#[test]
fn corpus_is_split_invariant() {
    // Feeding the bytes one at a time gives the same output and answer.
    let limits = Arc::new(Limits::default());
    for c in corpus::load() {
        let (o1, _, e1) = run_steps(&limits, &c.bytes, usize::MAX / 2);
        for step in [1, 7] {
            let (o2, _, e2) = run_steps(&limits, &c.bytes, step);
            assert_eq!(
                e1.as_ref().map(|e| (e.status, e.class)),
                e2.as_ref().map(|e| (e.status, e.class)),
                "{} step {step}",
                c.name
            );
            assert_eq!(o1, o2, "{} step {step}", c.name);
        }
    }
}

fn frame(input: &[u8]) -> (Vec<u8>, Option<RequestError>) {
    let (o, _, e) = run_steps(&Arc::new(Limits::default()), input, usize::MAX / 2);
    (o, e)
}

#[test]
fn canonical_output() {
    let (out, err) = frame(
        b"\r\nPOST /a?b=\"c\" HTTP/1.1\r\nHost: x\r\nX_Y: dropped\r\nTransfer-Encoding: Identity ,\tChunked\r\n\r\n\
          0005;a=b\r\nhello\r\n000\r\nVary: *\r\n\r\nGET / HTTP/1.0\r\nContent-Length: 002\r\n\r\nokGET /ignored HTTP/1.1\r\n\r\n",
    );
    assert!(err.is_none(), "{err:?}");
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "POST http://rgunicorn.raw/312e3120202f613f623d226322 HTTP/1.1\r\n\
         Host: x\r\nTransfer-Encoding: identity, chunked\r\n\r\n\
         5\r\nhello\r\n0\r\n\r\nGET http://rgunicorn.raw/312e3020303032202f HTTP/1.0\r\n\
         Content-Length: 2\r\n\r\nok"
    );
}

#[test]
fn connect_reaches_hyper_under_another_name() {
    let (out, err) = frame(
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\nGET /ignored HTTP/1.1\r\n\r\n",
    );
    assert!(err.is_none(), "{err:?}");
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "RGUNICORN- http://rgunicorn.raw/312e3120206578616d706c652e636f6d3a343433 HTTP/1.1\r\n\
         Host: example.com:443\r\n\r\n"
    );
    // A client's own method with the same prefix is told apart.
    let (out, _) = frame(b"RGUNICORN- / HTTP/1.1\r\n\r\nRGUNICORN-X / HTTP/1.1\r\n\r\n");
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "RGUNICORN-RGUNICORN- / HTTP/1.1\r\n\r\nRGUNICORN-RGUNICORN-X / HTTP/1.1\r\n\r\n"
    );
    // casefold_http_method upper-cases first: `connect` is a CONNECT.
    let l = Limits {
        casefold_http_method: true,
        permit_unconventional_http_method: true,
        ..Limits::default()
    };
    let (out, _, _) = run_steps(&Arc::new(l), b"connect h:1 HTTP/1.1\r\n\r\n", 1000);
    assert!(out.starts_with(b"RGUNICORN- http://rgunicorn.raw/"));
}

#[test]
fn restore_method_undoes_the_hiding() {
    let restored = |m: &str| {
        let mut req = hyper::Request::builder().method(m).body(()).unwrap();
        let connect = restore_method(&mut req);
        (req.method().to_string(), connect)
    };
    for m in ["CONNECT", "GET", "RGUNICORN-", "RGUNICORN-X", "-X-"] {
        let hidden = String::from_utf8(method_for_hyper(m.as_bytes()).into_owned()).unwrap();
        assert_eq!(restored(&hidden), (m.to_string(), m == "CONNECT"), "{m}");
    }
    // A CONNECT that the gate did not hide is not reported as one.
    assert_eq!(restored("CONNECT"), ("CONNECT".to_string(), false));
}

#[test]
fn error_messages_match_gunicorn() {
    let e = frame(b"GET /foo FTP/1.1\r\n\r\n").1.unwrap();
    assert_eq!(
        e.message,
        "Invalid HTTP Version 'Invalid HTTP Version: 'FTP/1.1''"
    );
    let e = frame(b"GET /foo HTTP/2.0\r\n\r\n").1.unwrap();
    assert_eq!(
        e.message,
        "Invalid HTTP Version 'Invalid HTTP Version: (2, 0)'"
    );
    let e = frame(b"get /foo HTTP/1.1\r\n\r\n").1.unwrap();
    assert_eq!(e.message, "Invalid Method 'Invalid HTTP method: 'get''");
    let e = frame(b"GET /x HTTP/1.1\r\nA: \x07\r\n\r\n").1.unwrap();
    assert_eq!(e.message, "Invalid HTTP Header: 'A'");
    let e = frame(b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n6_0\r\n")
        .1
        .unwrap();
    assert_eq!(e.message, "Invalid chunk size: b'6_0'");
    let e = frame(b"GET /x HTTP/1.1\r\nTransfer-Encoding: br\r\n\r\n")
        .1
        .unwrap();
    assert_eq!(
        (e.status, e.message.as_str()),
        (501, "Unsupported transfer coding: 'br'")
    );
    let e = frame(b"GET /x HTTP/1.1\r\nExpect: 200-ok\r\n\r\n")
        .1
        .unwrap();
    assert_eq!(e.status, 417);
    let e = frame(&[b"GET /".as_slice(), &[b'a'; 5000], b" HTTP/1.1\r\n\r\n"].concat())
        .1
        .unwrap();
    assert_eq!((e.status, e.reason), (414, "URI Too Long"));
    assert_eq!(e.message, "Request Line is too large (5014 > 4094)");
    // Non-ASCII messages go out latin-1 encoded, as gunicorn's do.
    let e = frame(b"GET\xe9 / HTTP/1.1\r\n\r\n").1.unwrap();
    let bytes = e.response_bytes();
    let text: String = bytes.iter().map(|&c| c as char).collect();
    let (_, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(
        text.contains(&format!("Content-Length: {}\r\n", body.chars().count())),
        "{text}"
    );
    assert!(bytes.contains(&0xe9));
}

#[test]
fn incomplete_and_closing() {
    // EOF mid-head: no answer at all.
    assert!(frame(b"GET / HTTP/1.1\r\nHost").1.unwrap().empty);
    // EOF mid-chunk: no answer; after the data but before CRLF: 400.
    assert!(
        frame(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel")
            .1
            .unwrap()
            .empty
    );
    assert_eq!(
        frame(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello")
            .1
            .unwrap()
            .class,
        "ChunkMissingTerminator"
    );
    // A clean close between requests is no error.
    assert!(frame(b"GET / HTTP/1.1\r\n\r\n").1.is_none());
    assert!(frame(b"").1.is_none());
    // After Connection: close the rest is never read.
    let (out, err) = frame(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\nBAD\r\n\r\n");
    assert!(err.is_none());
    assert!(out.ends_with(b"close\r\n\r\n"));
}

#[test]
fn forwarded_trust() {
    let l = Arc::new(Limits::default());
    let input = b"GET / HTTP/1.1\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Ssl: off\r\n\r\n";
    let mut f = Framer::new(l.clone(), Some("10.0.0.1".parse().unwrap()));
    assert!(
        f.advance(input, true, &mut Vec::new()).is_ok(),
        "untrusted peer: ignored"
    );
    let mut f = Framer::new(l.clone(), None);
    assert!(
        f.advance(input, true, &mut Vec::new()).is_err(),
        "UNIX socket: trusted"
    );
    assert!(ip_allowed(
        &["10.0.0.0/8".into()],
        Some("10.2.3.4".parse().unwrap())
    ));
    assert!(!ip_allowed(
        &["10.0.0.0/8".into()],
        Some("11.2.3.4".parse().unwrap())
    ));
    assert!(ip_allowed(&["::1".into()], Some("::1".parse().unwrap())));
}

#[test]
fn hold_limit_streams_large_chunked_bodies() {
    let l = Limits {
        hold_limit: 10,
        ..Limits::default()
    };
    let l = Arc::new(l);
    let mut f = Framer::new(l, None);
    let mut out = Vec::new();
    let input = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n";
    assert_eq!(f.advance(input, false, &mut out), Ok(input.len()));
    assert!(out.starts_with(b"POST / HTTP/1.1"));
    assert!(f.mid_request());
    assert!(f.advance(b"zz\r\n", false, &mut out).is_err());
}

#[test]
fn proxy_protocol() {
    let l = Limits {
        proxy_protocol: ProxyProtocol::Auto,
        ..Limits::default()
    };
    let l = Arc::new(l);
    let mut f = Framer::new(l.clone(), Some(IpAddr::from([127, 0, 0, 1])));
    let mut out = Vec::new();
    let input = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET / HTTP/1.0\r\n\r\n";
    assert!(f.advance(input, true, &mut out).is_ok());
    assert_eq!(out, b"GET / HTTP/1.0\r\n\r\n");
    let info = f.proxy_info().unwrap();
    assert_eq!(info.client_port, Some(56324));
    let mut f = Framer::new(l, Some(IpAddr::from([10, 0, 0, 1])));
    assert_eq!(f.advance(input, true, &mut out).unwrap_err().status, 403);
}

#[test]
fn proxy_ports_are_ascii_digits_on_the_wire() {
    let l = Arc::new(Limits {
        proxy_protocol: ProxyProtocol::V1,
        ..Limits::default()
    });
    let port_of = |port: &[u8]| {
        let mut input = b"PROXY TCP4 1.2.3.4 5.6.7.8 ".to_vec();
        input.extend_from_slice(port);
        input.extend_from_slice(b" 2\r\nGET / HTTP/1.1\r\n\r\n");
        let mut f = Framer::new(l.clone(), Some(IpAddr::from([127, 0, 0, 1])));
        let mut out = Vec::new();
        match f.advance(&input, true, &mut out) {
            Ok(_) => Ok(f.proxy_info().unwrap().client_port.unwrap()),
            Err(e) => Err((e.status, e.message)),
        }
    };
    assert_eq!(port_of(b"1"), Ok(1));
    assert_eq!(port_of(b"0001"), Ok(1));
    assert_eq!(port_of(b"65535"), Ok(65535));
    // Python's int() takes all of these (gunicorn: 200 for the ASCII
    // ones and a lone latin-1 NBSP; 400 for UTF-8's NBSP and the
    // Arabic-Indic digit only because latin-1 decodes them to other
    // characters); on the bytes as sent none is a port.
    for bad in [
        &b"\xc2\xa01"[..],
        b"\xa01",
        b"\x851",
        b"\t1",
        b"1\t",
        b"+1",
        b"-0",
        b"1_0",
        b"\xd9\xa2",
        b"\xef\xbc\x91",
        b"",
        b"65536",
        b"99999999999999999999999",
    ] {
        let got = port_of(bad);
        let Err((400, msg)) = &got else {
            panic!("{bad:?}: {got:?}");
        };
        assert!(msg.contains("invalid port"), "{bad:?}: {msg}");
    }
}

#[test]
fn targets_split_as_urlsplit() {
    // (target, path, query, fragment) as Python 3.11's urlsplit (via
    // gunicorn's split_request_uri) gives them.
    let cases: &[(&str, &str, &str, &str)] = &[
        ("/p?q=1#frag", "/p", "q=1", "frag"),
        ("http://a", "", "", ""),
        ("http://a?x=1#y", "", "x=1", "y"),
        ("http:///x", "/x", "", ""),
        ("://a/x", "://a/x", "", ""),
        ("HTTP://A/p", "/p", "", ""),
        ("a.com:443", "443", "", ""),
        ("*", "*", "", ""),
        ("//x/y?z", "//x/y", "z", ""),
        ("h:/x", "/x", "", ""),
        ("http:x", "x", "", ""),
        ("1http://a/x", "1http://a/x", "", ""),
        ("/a#b?c", "/a", "", "b?c"),
    ];
    for (target, path, query, fragment) in cases {
        let got = split_target(target.as_bytes());
        let want = TargetParts {
            path: path.as_bytes(),
            query: query.as_bytes(),
            fragment: fragment.as_bytes(),
        };
        assert_eq!(got, want, "{target}");
    }
}

#[test]
fn the_sent_line_of_a_request_hyper_read_as_sent_and_of_a_marked_one() {
    let plain = hyper::Request::get("/a%20b?q=1").body(()).unwrap();
    let line = SentLine::of_request(&plain);
    assert_eq!(line.target(), "/a%20b?q=1");
    assert_eq!(
        (line.parts().path, line.parts().query),
        (&b"/a%20b"[..], &b"q=1"[..])
    );
    assert_eq!(
        (line.version(), line.protocol().as_ref()),
        ((1, 1), "HTTP/1.1")
    );
    assert!(!line.is_http2());

    let h2 = hyper::Request::get("/x")
        .version(hyper::Version::HTTP_2)
        .body(())
        .unwrap();
    let line = SentLine::of_request(&h2);
    assert_eq!(
        (line.protocol().as_ref(), line.is_http2()),
        ("HTTP/2.0", true)
    );

    // Absolute-form, a fragment and HTTP/1.2, as the framer marks them.
    let mut marked = hyper::Request::get("/").body(()).unwrap();
    marked.extensions_mut().insert(RawHead {
        target: b"http://h/p?q#f".to_vec(),
        version: (1, 2),
        content_length: None,
    });
    let line = SentLine::of_request(&marked);
    assert_eq!(line.target(), "http://h/p?q#f");
    let parts = line.parts();
    assert_eq!(
        (parts.path, parts.query, parts.fragment),
        (&b"/p"[..], &b"q"[..], &b"f"[..])
    );
    assert_eq!(
        (line.version(), line.protocol().as_ref()),
        ((1, 2), "HTTP/1.2")
    );
    assert!(!line.is_http2());
}

mod props {
    use super::*;
    use proptest::prelude::*;

    fn framer_output(input: &[u8]) -> Result<Vec<u8>, RequestError> {
        let (out, _, err) = run_steps(&Arc::new(Limits::default()), input, usize::MAX / 2);
        match err {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    /// A socket that yields `chunks` one read at a time, then EOF.
    struct Chunks(std::collections::VecDeque<Vec<u8>>);

    impl hyper::rt::Read for Chunks {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            mut buf: hyper::rt::ReadBufCursor<'_>,
        ) -> Poll<io::Result<()>> {
            let chunks = &mut self.get_mut().0;
            if let Some(front) = chunks.front_mut() {
                let n = front.len().min(buf.remaining());
                buf.put_slice(&front[..n]);
                front.drain(..n);
                if front.is_empty() {
                    chunks.pop_front();
                }
            }
            Poll::Ready(Ok(()))
        }
    }

    impl hyper::rt::Write for Chunks {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// What hyper reads through [`GatedIo`] (reads of at most `cap`
    /// bytes) from a socket delivering `input` in pieces of `step`.
    fn read_through_gate(
        limits: &Arc<Limits>,
        input: &[u8],
        step: usize,
        cap: usize,
    ) -> (Vec<u8>, Option<RequestError>) {
        let chunks = input.chunks(step.max(1)).map(<[u8]>::to_vec).collect();
        let mut io = GatedIo::new(
            Chunks(chunks),
            limits.clone(),
            Some(IpAddr::from([127, 0, 0, 1])),
        );
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut space = vec![0u8; cap];
        let mut out = Vec::new();
        for _ in 0..=input.len() * 2 + 4 {
            let mut rb = hyper::rt::ReadBuf::new(&mut space);
            let polled = hyper::rt::Read::poll_read(Pin::new(&mut io), &mut cx, rb.unfilled());
            assert!(matches!(polled, Poll::Ready(Ok(()))), "{polled:?}");
            if rb.filled().is_empty() {
                return (out, io.error().cloned());
            }
            out.extend_from_slice(rb.filled());
        }
        panic!("no EOF from the gate");
    }

    /// The default limits, or limits small enough for generated
    /// requests to cross them.
    fn limits_for(tight: bool) -> Limits {
        let mut limits = Limits::default();
        if tight {
            limits.limit_request_line = 24;
            limits.limit_request_fields = 2;
            limits.limit_request_field_size = 12;
        }
        limits
    }

    /// Both paths give the same bytes, error, count and state.
    fn same_on_both_paths(limits: &Limits, input: &[u8], step: usize) -> Result<(), TestCaseError> {
        let limits = Arc::new(limits.clone());
        let (fast_out, fast, fast_err) = run_steps_with(&limits, input, step, false);
        let (full_out, full, full_err) = run_steps_with(&limits, input, step, true);
        prop_assert_eq!(fast_err, full_err);
        prop_assert_eq!(fast_out, full_out);
        prop_assert_eq!(
            (
                fast.requests(),
                fast.heads_released(),
                fast.at_end(),
                fast.close_after
            ),
            (
                full.requests(),
                full.heads_released(),
                full.at_end(),
                full.close_after
            )
        );
        Ok(())
    }

    /// Heads near the fast path's edges: plain fields, and now and then
    /// a field it must leave to the full path.
    fn plain_request() -> impl Strategy<Value = Vec<u8>> {
        let method = prop::sample::select(vec![
            "GET", "POST", "HEAD", "CONNECT", "get", "GETX", "AB", "OPTIONS",
        ]);
        let target = prop::sample::select(vec![
            "/", "/health", "/a?b=c&d", "/%41b", "//x", "/a#f", "/\"q\"", "*", "/a b",
        ]);
        let version = prop::sample::select(vec!["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/1.1 "]);
        let name = prop::sample::select(vec![
            "Host",
            "host",
            "X-A",
            "Content-Type",
            "Connection",
            "Content-Length",
            "Transfer-Encoding",
            "Expect",
            "X_U",
            "X-Forwarded-Proto",
            "Bad Name",
            "",
        ]);
        let value = prop::sample::select(vec![
            "v",
            "close",
            "Keep-Alive",
            " lead",
            "trail ",
            "a\tb",
            "",
            "\x7f",
            "5",
            "https",
            "\u{e9}",
            "100-continue",
            "chunked",
        ]);
        let sep = prop::sample::select(vec![": ", ":", " : ", ":  "]);
        let headers = prop::collection::vec((name, sep, value, any::<bool>()), 0..5);
        (method, target, version, headers, any::<bool>()).prop_map(|(m, t, v, hs, lead)| {
            let mut r = Vec::new();
            if lead {
                r.extend_from_slice(b"\r\n");
            }
            r.extend_from_slice(format!("{m} {t} {v}\r\n").as_bytes());
            for (n, sep, val, fold) in hs {
                r.extend_from_slice(n.as_bytes());
                r.extend_from_slice(sep.as_bytes());
                r.extend(val.chars().map(|c| c as u32 as u8));
                r.extend_from_slice(b"\r\n");
                if fold {
                    r.extend_from_slice(b" folded\r\n");
                }
            }
            r.extend_from_slice(b"\r\n");
            r
        })
    }

    /// Requests the fast path takes whole, mostly (a second Host or a
    /// `Connection: close` now and then): the zero-copy read path's
    /// common case, which the edge cases above rarely produce.
    fn common_request() -> impl Strategy<Value = Vec<u8>> {
        let method = prop::sample::select(vec!["GET", "POST", "HEAD", "DELETE"]);
        let target = prop::sample::select(vec!["/", "/health", "/a/b?c=d&e=%41", "/x:y@z"]);
        let field = prop::sample::select(vec![
            "Host: example.com",
            "Accept: */*",
            "User-Agent: curl/8.0 (x86_64)",
            "X-Request-Id: 42",
            "Connection: keep-alive",
            "Connection: close",
        ]);
        let fields = prop::collection::vec(field, 0..4);
        (method, target, fields).prop_map(|(m, t, fs)| {
            let mut r = format!("{m} {t} HTTP/1.1\r\n");
            for f in fs {
                r.push_str(f);
                r.push_str("\r\n");
            }
            r.push_str("\r\n");
            r.into_bytes()
        })
    }

    /// One to three requests of any of the kinds above, back to back.
    fn pipelined() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(
            prop_oneof![common_request(), plain_request(), request()],
            1..4,
        )
        .prop_map(|reqs| reqs.concat())
    }

    fn request() -> impl Strategy<Value = Vec<u8>> {
        let method = prop::sample::select(vec!["GET", "POST", "PUT", "OPTIONS", "DELETE", "-X-"]);
        let target = prop::sample::select(vec![
            "/",
            "/a?b=c",
            "/\"q\"?x=\"y\"",
            "*",
            "http://h/p",
            "//x",
        ]);
        let version = prop::sample::select(vec!["HTTP/1.1", "HTTP/1.0"]);
        let name = "[A-Za-z0-9!#$%&'*+.^_`|~-]{1,12}";
        let value = "[ \\t\\x21-\\x7e\\x80-\\xff]{0,20}";
        let headers = prop::collection::vec((name, value), 0..6);
        let body = prop::collection::vec(any::<u8>(), 0..40);
        (method, target, version, headers, body, any::<bool>()).prop_map(
            |(m, t, v, hs, body, chunked)| {
                let mut r = format!("{m} {t} {v}\r\n").into_bytes();
                for (n, val) in hs {
                    r.extend_from_slice(n.as_bytes());
                    r.extend_from_slice(b": ");
                    r.extend(val.chars().map(|c| c as u32 as u8));
                    r.extend_from_slice(b"\r\n");
                }
                if chunked && v == "HTTP/1.1" {
                    r.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                    if !body.is_empty() {
                        r.extend_from_slice(format!("{:X}\r\n", body.len()).as_bytes());
                        r.extend_from_slice(&body);
                        r.extend_from_slice(b"\r\n");
                    }
                    r.extend_from_slice(b"0\r\n\r\n");
                } else {
                    r.extend_from_slice(
                        format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes(),
                    );
                    r.extend_from_slice(&body);
                }
                r
            },
        )
    }

    /// `out` with each stand-in target that marks a stand-in target (a
    /// marked head framed again) back to the inner one.
    fn without_remarks(out: &[u8]) -> Vec<u8> {
        let stand_in = b" http://rgunicorn.raw/";
        let mut v = out.to_vec();
        let mut from = 0;
        while let Some(i) = find(&v[from..], stand_in).map(|i| i + from) {
            let hex_at = i + stand_in.len();
            let end = v[hex_at..]
                .iter()
                .position(|&c| c == b' ')
                .map_or(v.len(), |e| hex_at + e);
            let inner = unhex(&v[hex_at..end])
                .and_then(|raw| RawHead::parse(&raw))
                .filter(|raw| raw.target.starts_with(&stand_in[1..]));
            match inner {
                Some(raw) => {
                    v.splice(i + 1..end, raw.target);
                }
                None => from = end,
            }
        }
        v
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn arbitrary_bytes_never_panic(input in prop::collection::vec(any::<u8>(), 0..600), step in 1usize..50) {
            let t = std::time::Instant::now();
            let (o1, _, e1) = run_steps(&Arc::new(Limits::default()), &input, usize::MAX / 2);
            let (o2, _, e2) = run_steps(&Arc::new(Limits::default()), &input, step);
            prop_assert!(t.elapsed() < std::time::Duration::from_secs(2));
            prop_assert_eq!(e1.map(|e| (e.status, e.class)), e2.map(|e| (e.status, e.class)));
            prop_assert_eq!(o1, o2);
        }

        #[test]
        fn http_like_bytes_never_panic(
            reqs in prop::collection::vec(request(), 1..3),
            noise in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
        ) {
            let mut input = reqs.concat();
            for (i, b) in noise {
                let at = i.index(input.len());
                input[at] = b;
            }
            let _ = framer_output(&input);
        }

        #[test]
        fn the_fast_path_answers_as_the_full_path(
            input in pipelined(),
            step in prop_oneof![Just(usize::MAX / 2), 1usize..40],
            tight in any::<bool>(),
            casefold in any::<bool>(),
        ) {
            let limits = Limits { casefold_http_method: casefold, ..limits_for(tight) };
            same_on_both_paths(&limits, &input, step)?;
        }

        #[test]
        fn the_gate_gives_hyper_what_the_full_path_gives(
            input in pipelined(),
            step in prop_oneof![Just(usize::MAX / 2), 1usize..40],
            room in prop_oneof![Just(8192usize), 0usize..64],
            tight in any::<bool>(),
        ) {
            // The read path as hyper drives it (plain requests left in
            // hyper's buffer, the rest copied and framed), against the
            // framer with its fast path off, given the same pieces
            // (hyper's buffer holds a whole piece: with tight limits,
            // which error comes first depends on the pieces, as in
            // gunicorn).
            let limits = Arc::new(limits_for(tight));
            let step = step.min(input.len());
            let (gated, gated_err) = read_through_gate(&limits, &input, step, step + room);
            let (full, _, full_err) = run_steps_with(&limits, &input, step, true);
            prop_assert_eq!(gated_err, full_err);
            prop_assert_eq!(gated, full);
        }

        #[test]
        fn accepted_output_is_accepted_again(reqs in prop::collection::vec(request(), 1..3)) {
            let input = reqs.concat();
            if let Ok(out) = framer_output(&input) {
                // The canonical form is a fixed point but for the
                // marking of marked heads again, and hyper's URI
                // parser reads every target in it.
                let again = framer_output(&out).map(|a| without_remarks(&a));
                prop_assert_eq!(again.as_ref(), Ok(&out));
            }
        }
    }
}

/// GatedIo in front of a real hyper connection.
mod gated {
    use super::*;
    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::TokioIo;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Send `request` through the gate to a hyper connection served by
    /// `svc`, half-close, and read to EOF: the raw answer.
    async fn serve_gated<F, Fut>(limits: Limits, request: &[u8], svc: F) -> String
    where
        F: Fn(hyper::Request<hyper::body::Incoming>) -> Fut + Send + 'static,
        Fut: std::future::Future<
                Output = Result<hyper::Response<Full<bytes::Bytes>>, std::convert::Infallible>,
            > + Send
            + 'static,
    {
        let (client, server) = tokio::io::duplex(1 << 20);
        let io = GatedIo::new(
            TokioIo::new(server),
            Arc::new(limits),
            Some(IpAddr::from([127, 0, 0, 1])),
        );
        let serve = tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .half_close(true)
                .serve_connection(io, hyper::service::service_fn(svc))
                .await;
        });
        let (mut rd, mut wr) = tokio::io::split(client);
        wr.write_all(request).await.unwrap();
        wr.shutdown().await.unwrap();
        let mut got = Vec::new();
        tokio::time::timeout(std::time::Duration::from_secs(5), rd.read_to_end(&mut got))
            .await
            .expect("server hung")
            .unwrap();
        let _ = serve.await;
        String::from_utf8_lossy(&got).into_owned()
    }

    async fn exchange(limits: Limits, request: &[u8]) -> String {
        serve_gated(
            limits,
            request,
            |req: hyper::Request<hyper::body::Incoming>| async move {
                let ok = req.into_body().collect().await.is_ok();
                let body = if ok { "ok" } else { "body error" };
                Ok(hyper::Response::new(Full::new(bytes::Bytes::from(body))))
            },
        )
        .await
    }

    fn status_lines(s: &str) -> Vec<&str> {
        s.match_indices("HTTP/1.1 ")
            .map(|(i, _)| &s[i..i + s[i..].find("\r\n").unwrap_or(s.len() - i)])
            .collect()
    }

    #[tokio::test]
    async fn pipelined_then_refused() {
        let r = exchange(
            Limits::default(),
            b"GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\nget /3 HTTP/1.1\r\n\r\n",
        )
        .await;
        assert_eq!(
            status_lines(&r),
            [
                "HTTP/1.1 200 OK",
                "HTTP/1.1 200 OK",
                "HTTP/1.1 400 Bad Request"
            ],
            "{r}"
        );
        assert!(r.ends_with("</html>\n"), "{r}");
    }

    #[tokio::test]
    async fn first_request_refused() {
        let r = exchange(
            Limits::default(),
            b"GET /foo HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        )
        .await;
        assert_eq!(status_lines(&r), ["HTTP/1.1 400 Bad Request"], "{r}");
        assert!(r.contains("Invalid HTTP Header: &#x27;HOST&#x27;"), "{r}");
    }

    #[tokio::test]
    async fn empty_close() {
        let r = exchange(Limits::default(), b"GET /foo HTTP/1.1\r\nHo").await;
        assert_eq!(r, "");
    }

    /// What a service behind the gate sees of each request on one
    /// connection: `method target version raw-head`.
    async fn seen(request: &[u8]) -> Vec<String> {
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = log.clone();
        serve_gated(
            Limits::default(),
            request,
            move |mut req: hyper::Request<hyper::body::Incoming>| {
                restore_method(&mut req);
                restore_raw_head(&mut req);
                let raw = req.extensions().get::<RawHead>().map(|r| {
                    format!(
                        "{} {:?} {}",
                        SentLine::of_request(&req).protocol(),
                        r.content_length.as_deref().map(String::from_utf8_lossy),
                        String::from_utf8_lossy(&r.target)
                    )
                });
                let fields: Vec<String> = req
                    .headers()
                    .iter()
                    .map(|(k, v)| format!("{k}={}", v.to_str().unwrap()))
                    .collect();
                seen.lock().unwrap().push(format!(
                    "{} {} {:?} {raw:?} {}",
                    req.method(),
                    req.uri(),
                    req.version(),
                    fields.join(",")
                ));
                async move {
                    let _ = req.into_body().collect().await;
                    Ok(hyper::Response::new(Full::new(bytes::Bytes::from("ok"))))
                }
            },
        )
        .await;
        let v = log.lock().unwrap().clone();
        v
    }

    #[tokio::test]
    async fn the_request_line_as_sent_reaches_the_app() {
        let got = seen(
            b"GET /p?q=1#frag HTTP/1.1\r\nHost: a\r\n\r\n\
              GET http://a HTTP/1.1\r\n\r\n\
              GET http:///x HTTP/1.2\r\n\r\n\
              POST /p HTTP/1.1\r\nContent-Length: 002\r\nRgunicorn-Raw: theirs\r\n\r\nok\
              GET ://a/x HTTP/1.1\r\n\r\n\
              GET /plain HTTP/1.1\r\nRgunicorn-Raw: theirs\r\n\r\n\
              HEAD /h#x HTTP/1.1\r\n\r\n\
              CONNECT a.com:443 HTTP/1.1\r\n\r\n",
        )
        .await;
        assert_eq!(
            got,
            [
                r#"GET /p?q=1 HTTP/1.1 Some("HTTP/1.1 None /p?q=1#frag") host=a"#,
                r#"GET http://a/ HTTP/1.1 Some("HTTP/1.1 None http://a") "#,
                r#"GET /x HTTP/1.1 Some("HTTP/1.2 None http:///x") "#,
                r#"POST /p HTTP/1.1 Some("HTTP/1.1 Some(\"002\") /p") content-length=2,rgunicorn-raw=theirs"#,
                r#"GET ://a/x HTTP/1.1 Some("HTTP/1.1 None ://a/x") "#,
                "GET /plain HTTP/1.1 None rgunicorn-raw=theirs",
                r#"HEAD /h HTTP/1.1 Some("HTTP/1.1 None /h#x") "#,
                r#"CONNECT a.com:443 HTTP/1.1 Some("HTTP/1.1 None a.com:443") "#,
            ]
        );
    }

    #[tokio::test]
    async fn quoted_target_reaches_the_app() {
        let r = exchange(
            Limits::default(),
            b"GET /with_\"quotes\"?foo=\"bar\" HTTP/1.1\r\n\r\n",
        )
        .await;
        assert_eq!(status_lines(&r), ["HTTP/1.1 200 OK"], "{r}");
    }

    #[tokio::test]
    async fn chunked_error_held_back() {
        let r = exchange(
            Limits::default(),
            b"GET /1 HTTP/1.1\r\n\r\nPOST /2 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6_0\r\n world\r\n0\r\n\r\n",
        )
        .await;
        assert_eq!(
            status_lines(&r),
            ["HTTP/1.1 200 OK", "HTTP/1.1 400 Bad Request"],
            "{r}"
        );
    }

    #[tokio::test]
    async fn chunked_error_after_streaming() {
        let l = Limits {
            hold_limit: 8,
            ..Limits::default()
        };
        let r = exchange(
            l,
            b"GET /1 HTTP/1.1\r\n\r\nPOST /2 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6_0\r\n world\r\n0\r\n\r\n",
        )
        .await;
        assert_eq!(
            status_lines(&r),
            ["HTTP/1.1 200 OK", "HTTP/1.1 400 Bad Request"],
            "{r}"
        );
        assert!(!r.contains("body error"), "{r}");
    }

    /// Read from `rd` until `got` ends with `end`.
    async fn read_until(
        rd: &mut (impl tokio::io::AsyncRead + Unpin),
        got: &mut Vec<u8>,
        end: &[u8],
    ) {
        let mut b = [0u8; 1];
        while !got.ends_with(end) {
            let n = tokio::time::timeout(std::time::Duration::from_secs(5), rd.read(&mut b))
                .await
                .expect("server hung")
                .unwrap();
            assert!(n > 0, "EOF after {:?}", String::from_utf8_lossy(got));
            got.push(b[0]);
        }
    }

    /// An upgrade request answered as HTTP keeps the connection framed;
    /// once the app answers 101 and sets the switch, the bytes that
    /// follow (never valid HTTP) pass through both ways untouched.
    #[tokio::test]
    async fn switched_protocols_pass_raw_bytes() {
        let (client, server) = tokio::io::duplex(1 << 16);
        let io = GatedIo::new(
            TokioIo::new(server),
            Arc::new(Limits::default()),
            Some(IpAddr::from([127, 0, 0, 1])),
        );
        let raw = io.raw_switch();
        let svc =
            hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                let raw = raw.clone();
                async move {
                    let mut resp = hyper::Response::new(Full::new(bytes::Bytes::from("ok")));
                    if req.uri().path() == "/switch" {
                        let on = hyper::upgrade::on(&mut req);
                        raw.store(true, Ordering::Release);
                        tokio::spawn(async move {
                            // An echo of the raw bytes.
                            let mut io = TokioIo::new(on.await.unwrap());
                            let mut buf = [0u8; 64];
                            loop {
                                let n = io.read(&mut buf).await.unwrap();
                                if n == 0 {
                                    break;
                                }
                                io.write_all(&buf[..n]).await.unwrap();
                            }
                        });
                        *resp.status_mut() = hyper::StatusCode::SWITCHING_PROTOCOLS;
                        *resp.body_mut() = Full::new(bytes::Bytes::new());
                        resp.headers_mut()
                            .insert("upgrade", hyper::header::HeaderValue::from_static("test"));
                        resp.headers_mut().insert(
                            "connection",
                            hyper::header::HeaderValue::from_static("upgrade"),
                        );
                    }
                    Ok::<_, std::convert::Infallible>(resp)
                }
            });
        tokio::spawn(
            hyper::server::conn::http1::Builder::new()
                .half_close(true)
                .serve_connection(io, svc)
                .with_upgrades(),
        );
        let (mut rd, mut wr) = tokio::io::split(client);
        let upgrade = "Upgrade: test\r\nConnection: upgrade\r\n\r\n";
        let mut got = Vec::new();
        wr.write_all(format!("GET /stay HTTP/1.1\r\n{upgrade}").as_bytes())
            .await
            .unwrap();
        read_until(&mut rd, &mut got, b"\r\n\r\nok").await;
        assert!(
            got.starts_with(b"HTTP/1.1 200 OK"),
            "{}",
            String::from_utf8_lossy(&got)
        );
        got.clear();
        wr.write_all(format!("GET /switch HTTP/1.1\r\n{upgrade}").as_bytes())
            .await
            .unwrap();
        read_until(&mut rd, &mut got, b"\r\n\r\n").await;
        assert!(
            got.starts_with(b"HTTP/1.1 101 Switching Protocols"),
            "{}",
            String::from_utf8_lossy(&got)
        );
        // A bare LF, a lower-case "method", bytes past 0x7f: the framer
        // would refuse each.
        let frames: &[u8] = b"\x81\x85get bare\nLF\xff\r\n\r\n";
        wr.write_all(frames).await.unwrap();
        got.clear();
        read_until(&mut rd, &mut got, b"\r\n\r\n").await;
        assert_eq!(got, frames);
    }

    /// A CONNECT answered 200 with a body: hyper writes the whole
    /// response (no tunnel), and the connection then ends, as gunicorn
    /// stops reading after a CONNECT.
    #[tokio::test]
    async fn connect_answered_as_any_request() {
        let (client, server) = tokio::io::duplex(1 << 16);
        let io = GatedIo::new(
            TokioIo::new(server),
            Arc::new(Limits::default()),
            Some(IpAddr::from([127, 0, 0, 1])),
        );
        let svc = hyper::service::service_fn(
            |mut req: hyper::Request<hyper::body::Incoming>| async move {
                let connect = restore_method(&mut req);
                restore_raw_head(&mut req);
                // No tunnel to take either (one would only resolve
                // after this response).
                assert!(hyper::upgrade::on(&mut req).await.is_err());
                let body = format!("{connect} {} {}", req.method(), req.uri());
                let resp = hyper::Response::builder()
                    .header("content-length", body.len())
                    .body(Full::new(bytes::Bytes::from(body)))
                    .unwrap();
                Ok::<_, std::convert::Infallible>(resp)
            },
        );
        let serve = tokio::spawn(
            hyper::server::conn::http1::Builder::new()
                .half_close(true)
                .serve_connection(io, svc)
                .with_upgrades(),
        );
        let (mut rd, mut wr) = tokio::io::split(client);
        // No half-close: the end of the connection is the server's doing.
        wr.write_all(
            b"CONNECT [::1]:443 HTTP/1.1\r\nHost: [::1]:443\r\n\r\nGET /next HTTP/1.1\r\n\r\n",
        )
        .await
        .unwrap();
        let mut got = Vec::new();
        tokio::time::timeout(std::time::Duration::from_secs(5), rd.read_to_end(&mut got))
            .await
            .expect("connection left open")
            .unwrap();
        let got = String::from_utf8(got).unwrap();
        let (head, body) = got.split_once("\r\n\r\n").unwrap();
        assert_eq!(body, "true CONNECT [::1]:443", "{got}");
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
        assert!(head.contains("\r\ncontent-length: 22"), "{got}");
        assert!(serve.await.unwrap().is_ok());
    }

    #[tokio::test]
    async fn chunked_ok() {
        let r = exchange(
            Limits::default(),
            b"POST /2 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n000\r\n\r\nGET /second HTTP/1.1\r\n\r\n",
        )
        .await;
        assert_eq!(
            status_lines(&r),
            ["HTTP/1.1 200 OK", "HTTP/1.1 200 OK"],
            "{r}"
        );
        assert!(!r.contains("body error"), "{r}");
    }
}
