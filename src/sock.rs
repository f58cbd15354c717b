//! Listening sockets: gunicorn's bind forms (`HOST:PORT`, `[V6]:PORT`,
//! `tcp://`, `unix:PATH`, `fd://N`), inherited sockets (`GUNICORN_FD` after
//! a USR2 re-exec, systemd's `LISTEN_FDS`/`LISTEN_PID`), socket options,
//! bind retries and the strings the `Listening at:` line shows.

use std::fmt;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};

use socket2::{Domain, SockAddr, Socket, Type};

use pyconf::validate::{parse_address, Address};

use crate::log;

#[derive(Debug, thiserror::Error)]
pub enum SockError {
    #[error("{0}")]
    Address(String),
    #[error("Can't connect to {0}")]
    CantConnect(String),
    #[error("{0:?} is not a socket")]
    NotASocket(String),
    #[error("{what}: {err}")]
    Io { what: String, err: std::io::Error },
}

/// A bound, listening socket shared by the master and its workers.
pub struct Listener {
    pub socket: Socket,
    /// Unix socket path (unlinked on stop unless inherited).
    pub unix_path: Option<String>,
}

impl Listener {
    pub fn fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

impl fmt::Display for Listener {
    /// `http://127.0.0.1:8000`, `http://[::1]:8000`, `unix:/path`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let addr = self.socket.local_addr().ok();
        match addr.as_ref().and_then(|a| a.as_socket()) {
            Some(std::net::SocketAddr::V4(a)) => write!(f, "http://{}:{}", a.ip(), a.port()),
            Some(std::net::SocketAddr::V6(a)) => write!(f, "http://[{}]:{}", a.ip(), a.port()),
            None => {
                let path = addr
                    .as_ref()
                    .and_then(|a| a.as_pathname().map(|p| p.display().to_string()))
                    .or_else(|| self.unix_path.clone())
                    .unwrap_or_default();
                write!(f, "unix:{path}")
            }
        }
    }
}

/// How gunicorn shows an address in its bind errors: `('127.0.0.1', 8000)` or the path.
fn addr_repr(addr: &Address) -> String {
    match addr {
        Address::Tcp(h, p) => format!("('{h}', {p})"),
        Address::Unix(p) => format!("'{p}'"),
        Address::Fd(fd) => fd.to_string(),
    }
}

pub struct BindOptions {
    pub backlog: i32,
    pub reuse_port: bool,
    pub umask: u32,
    /// Unix socket files are chowned to the workers' user and group.
    pub owner: (u32, u32),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SockError {
    let what = what.into();
    move |err| SockError::Io { what, err }
}

fn bind_one(addr: &Address, opts: &BindOptions) -> Result<Listener, std::io::Error> {
    match addr {
        Address::Tcp(host, port) => {
            let ip: std::net::IpAddr = match host.parse() {
                Ok(ip) => ip,
                // `:8000`: Python binds ('', port) to every IPv4 address.
                Err(_) if host.is_empty() => std::net::Ipv4Addr::UNSPECIFIED.into(),
                Err(_) => {
                    use std::net::ToSocketAddrs;
                    (host.as_str(), *port)
                        .to_socket_addrs()?
                        .next()
                        .ok_or_else(|| std::io::Error::other(format!("no address for {host}")))?
                        .ip()
                }
            };
            let sa = std::net::SocketAddr::new(ip, *port);
            let socket = Socket::new(Domain::for_address(sa), Type::STREAM, None)?;
            socket.set_reuse_address(true)?;
            if opts.reuse_port {
                socket.set_reuse_port(true)?;
            }
            if sa.is_ipv6() {
                socket.set_only_v6(true)?;
            }
            socket.set_tcp_nodelay(true)?;
            socket.bind(&SockAddr::from(sa))?;
            socket.listen(opts.backlog)?;
            socket.set_nonblocking(true)?;
            Ok(Listener {
                socket,
                unix_path: None,
            })
        }
        Address::Unix(path) => {
            use std::os::unix::fs::FileTypeExt;
            // `create` has refused a path that exists and is not a socket.
            if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
                std::fs::remove_file(path)?;
            }
            let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
            // SAFETY: umask only changes this process's file mode mask; it
            // is restored right after bind (the master is single-threaded).
            let old = unsafe { libc::umask(opts.umask as libc::mode_t) };
            let bound = socket.bind(&SockAddr::unix(path)?);
            // SAFETY: as above.
            unsafe { libc::umask(old) };
            bound?;
            let (uid, gid) = opts.owner;
            if (uid, gid)
                != (
                    nix::unistd::geteuid().as_raw(),
                    nix::unistd::getegid().as_raw(),
                )
            {
                std::os::unix::fs::chown(path, Some(uid), Some(gid))?;
            }
            socket.listen(opts.backlog)?;
            socket.set_nonblocking(true)?;
            Ok(Listener {
                socket,
                unix_path: Some(path.clone()),
            })
        }
        Address::Fd(fd) => from_fd(*fd),
    }
}

/// Adopt an inherited listening socket.
fn from_fd(fd: RawFd) -> Result<Listener, std::io::Error> {
    // SAFETY: fd was handed to us (fd://N, GUNICORN_FD, LISTEN_FDS) to own;
    // fstat first proves it is an open descriptor.
    nix::sys::stat::fstat(unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) })?;
    // SAFETY: see above; from here on the Socket owns and closes it.
    let socket = unsafe { Socket::from_raw_fd(fd) };
    socket.set_nonblocking(true)?;
    socket.set_cloexec(true)?;
    let unix_path = socket
        .local_addr()
        .ok()
        .and_then(|a| a.as_pathname().map(|p| p.display().to_string()));
    Ok(Listener { socket, unix_path })
}

/// Sockets handed down by a parent: `GUNICORN_FD` (USR2) or systemd socket
/// activation. The variables are removed from the environment, as gunicorn does.
pub fn inherited() -> Result<Option<(Vec<Listener>, bool)>, SockError> {
    let pid_matches = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        .is_some_and(|p| p == std::process::id());
    if pid_matches {
        let n: i32 = std::env::var("LISTEN_FDS")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        std::env::remove_var("LISTEN_PID");
        std::env::remove_var("LISTEN_FDS");
        let listeners = (3..3 + n)
            .map(|fd| from_fd(fd).map_err(io(format!("LISTEN_FDS fd {fd}"))))
            .collect::<Result<_, _>>()?;
        return Ok(Some((listeners, true)));
    }
    if let Ok(fds) = std::env::var("GUNICORN_FD") {
        std::env::remove_var("GUNICORN_FD");
        let listeners = fds
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| {
                let fd: RawFd = s
                    .trim()
                    .parse()
                    .map_err(|_| SockError::Address(format!("bad GUNICORN_FD entry {s:?}")))?;
                from_fd(fd).map_err(io(format!("GUNICORN_FD fd {fd}")))
            })
            .collect::<Result<_, _>>()?;
        return Ok(Some((listeners, false)));
    }
    Ok(None)
}

/// Parse every `bind` entry (errors as gunicorn words them).
pub fn parse_binds(binds: &[String]) -> Result<Vec<Address>, SockError> {
    binds
        .iter()
        .map(|b| parse_address(b, "8000").map_err(SockError::Address))
        .collect()
}

/// Bind every address, retrying each 5 times 1 s apart when it is in use
/// (gunicorn's `Connection in use: ...` lines, then `Can't connect to`).
/// If any `fd://` entry exists only those are used, as in gunicorn.
pub fn create(addrs: &[Address], opts: &BindOptions) -> Result<Vec<Listener>, SockError> {
    let fds: Vec<&Address> = addrs
        .iter()
        .filter(|a| matches!(a, Address::Fd(_)))
        .collect();
    let wanted: Vec<&Address> = if fds.is_empty() {
        addrs.iter().collect()
    } else {
        fds
    };
    let mut out = Vec::new();
    for addr in wanted {
        if let Address::Unix(path) = addr {
            use std::os::unix::fs::FileTypeExt;
            if std::fs::symlink_metadata(path).is_ok_and(|m| !m.file_type().is_socket()) {
                return Err(SockError::NotASocket(path.clone()));
            }
        }
        let mut attempt = 0;
        loop {
            match bind_one(addr, opts) {
                Ok(l) => {
                    out.push(l);
                    break;
                }
                Err(e) => {
                    if e.kind() == std::io::ErrorKind::AddrInUse {
                        log::error(&format!("Connection in use: {}", addr_repr(addr)));
                    } else if e.kind() == std::io::ErrorKind::AddrNotAvailable {
                        log::error(&format!("Invalid address: {}", addr_repr(addr)));
                    } else {
                        log::error(&format!("connection to {} failed: {e}", addr_repr(addr)));
                    }
                    attempt += 1;
                    if attempt >= 5 || e.kind() != std::io::ErrorKind::AddrInUse {
                        return Err(SockError::CantConnect(addr_repr(addr)));
                    }
                    log::error("Retrying in 1 second.");
                    std::thread::sleep(std::time::Duration::from_secs(1));
                }
            }
        }
    }
    Ok(out)
}
