//! The baseline of `bench/`: a bare hyper 1 HTTP/1.1 server answering
//! `GET /health` exactly as rgunicorn's built-in app does
//! (`{"status":"healthy"}`, `application/json`; 404 elsewhere), with no
//! master, no scoreboard and no drain, in one of two layouts:
//!
//! - `threads`: one process, one multi-thread (work-stealing) tokio runtime
//!   with `--workers` threads and one listener;
//! - `processes`: one forked process per worker, each a current-thread
//!   runtime with its own `SO_REUSEPORT` listener (the kernel spreads
//!   connections over them); the parent only waits.
//!
//! Run: `bare_hyper --bind 127.0.0.1:8000 --layout threads|processes --workers 2`.

use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};

#[derive(Clone, Copy, PartialEq)]
enum Layout {
    Threads,
    Processes,
}

struct Args {
    bind: SocketAddr,
    layout: Layout,
    workers: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        bind: "127.0.0.1:8000".parse().unwrap(),
        layout: Layout::Threads,
        workers: 2,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--bind" => args.bind = value.parse().map_err(|e| format!("--bind: {e}"))?,
            "--workers" => args.workers = value.parse().map_err(|e| format!("--workers: {e}"))?,
            "--layout" => {
                args.layout = match value.as_str() {
                    "threads" => Layout::Threads,
                    "processes" => Layout::Processes,
                    _ => return Err("--layout: threads or processes".into()),
                }
            }
            _ => return Err(format!("unknown argument {flag}")),
        }
    }
    Ok(args)
}

/// The same bytes and headers as `rgunicorn::health::handle` for `/health`.
async fn health(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, body) = match req.uri().path() {
        "/health" => (StatusCode::OK, r#"{"status":"healthy"}"#),
        _ => (StatusCode::NOT_FOUND, r#"{"detail":"Not Found"}"#),
    };
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(resp)
}

/// Serve connections from `listener` on `runtime`.
fn serve(runtime: tokio::runtime::Runtime, listener: TcpListener) -> std::io::Result<()> {
    runtime.block_on(async move {
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .serve_connection(TokioIo::new(stream), hyper::service::service_fn(health))
                    .await;
            });
        }
    })
}

/// A listener of the `SO_REUSEPORT` group on `addr`.
fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    socket.listen(2048)?; // gunicorn's and rgunicorn's default backlog
    Ok(socket.into())
}

fn run(args: Args) -> std::io::Result<()> {
    match args.layout {
        Layout::Threads => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(args.workers)
                .enable_all()
                .build()?;
            serve(runtime, bind(args.bind)?)?;
        }
        Layout::Processes => {
            let parent = std::process::id() as libc::pid_t;
            for _ in 0..args.workers {
                // SAFETY: this process has no other thread and no runtime;
                // the child builds its own and never returns here.
                match unsafe { libc::fork() } {
                    -1 => return Err(std::io::Error::last_os_error()),
                    0 => {
                        // Die with the parent (the harness stops the parent).
                        // SAFETY: prctl(PR_SET_PDEATHSIG) only sets a flag
                        // of this process.
                        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) };
                        // SAFETY: getppid has no preconditions.
                        if unsafe { libc::getppid() } != parent {
                            std::process::exit(0);
                        }
                        let runtime = tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build();
                        let served = runtime.and_then(|rt| serve(rt, bind(args.bind)?));
                        let code = match served {
                            Ok(()) => 0,
                            Err(e) => {
                                eprintln!("bare_hyper worker: {e}");
                                1
                            }
                        };
                        std::process::exit(code);
                    }
                    _ => {}
                }
            }
            // Wait for the workers; the parent does nothing else.
            // SAFETY: wait(NULL) only reaps this process's children.
            while unsafe { libc::wait(std::ptr::null_mut()) } > 0 {}
        }
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bare_hyper: {e}\nusage: bare_hyper --bind ADDR --layout threads|processes --workers N");
            return std::process::ExitCode::from(2);
        }
    };
    eprintln!(
        "bare_hyper listening on {} ({} x {})",
        args.bind,
        args.workers,
        if args.layout == Layout::Threads {
            "thread"
        } else {
            "process"
        }
    );
    match run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bare_hyper: {e}");
            std::process::ExitCode::from(1)
        }
    }
}
