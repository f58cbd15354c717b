//! Listening sockets: gunicorn's bind forms (`HOST:PORT`, `[V6]:PORT`,
//! `tcp://`, `unix:PATH`, `fd://N`), inherited sockets (`GUNICORN_FD` after
//! a USR2 re-exec, systemd's `LISTEN_FDS`/`LISTEN_PID`), socket options,
//! bind retries, the changed set of a HUP (`rebind`) and the strings the
//! `Listening at:` line shows.

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
    /// The `bind` entry it was made for (none when inherited): a HUP with
    /// the same entry keeps it, even where the entry alone does not say
    /// which socket it is (port 0, a host name).
    pub addr: Option<Address>,
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

/// The socket address a TCP `bind` entry names.
fn resolve(host: &str, port: u16) -> Result<std::net::SocketAddr, std::io::Error> {
    let ip: std::net::IpAddr = match host.parse() {
        Ok(ip) => ip,
        // `:8000`: Python binds ('', port) to every IPv4 address.
        Err(_) if host.is_empty() => std::net::Ipv4Addr::UNSPECIFIED.into(),
        Err(_) => {
            use std::net::ToSocketAddrs;
            (host, port)
                .to_socket_addrs()?
                .next()
                .ok_or_else(|| std::io::Error::other(format!("no address for {host}")))?
                .ip()
        }
    };
    Ok(std::net::SocketAddr::new(ip, port))
}

fn bind_one(addr: &Address, opts: &BindOptions) -> Result<Listener, std::io::Error> {
    let mut listener = match addr {
        Address::Tcp(host, port) => {
            let sa = resolve(host, *port)?;
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
            Listener {
                socket,
                unix_path: None,
                addr: None,
            }
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
            Listener {
                socket,
                unix_path: Some(path.clone()),
                addr: None,
            }
        }
        Address::Fd(fd) => from_fd(*fd)?,
    };
    listener.addr = Some(addr.clone());
    Ok(listener)
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
    Ok(Listener {
        socket,
        unix_path,
        addr: None,
    })
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
        .map(|b| parse_address(b, "8000").map_err(|e| SockError::Address(e.0)))
        .collect()
}

/// The entries that are bound: if any `fd://` entry exists only those
/// are used, as in gunicorn.
fn wanted(addrs: &[Address]) -> Vec<&Address> {
    if addrs.iter().any(|a| matches!(a, Address::Fd(_))) {
        addrs
            .iter()
            .filter(|a| matches!(a, Address::Fd(_)))
            .collect()
    } else {
        addrs.iter().collect()
    }
}

/// Bind every address, retrying each 5 times 1 s apart when it is in use
/// (gunicorn's `Connection in use: ...` lines, then `Can't connect to`).
/// If any `fd://` entry exists only those are used, as in gunicorn.
pub fn create(addrs: &[Address], opts: &BindOptions) -> Result<Vec<Listener>, SockError> {
    wanted(addrs)
        .into_iter()
        .map(|addr| bind_address(addr, opts, 5))
        .collect()
}

/// Bind one address, `attempts` times at most (1 s apart) while it is in use.
fn bind_address(addr: &Address, opts: &BindOptions, attempts: u32) -> Result<Listener, SockError> {
    if let Address::Unix(path) = addr {
        use std::os::unix::fs::FileTypeExt;
        if std::fs::symlink_metadata(path).is_ok_and(|m| !m.file_type().is_socket()) {
            return Err(SockError::NotASocket(path.clone()));
        }
    }
    let mut attempt = 0;
    loop {
        match bind_one(addr, opts) {
            Ok(l) => return Ok(l),
            Err(e) => {
                if e.kind() == std::io::ErrorKind::AddrInUse {
                    log::error(&format!("Connection in use: {}", addr_repr(addr)));
                } else if e.kind() == std::io::ErrorKind::AddrNotAvailable {
                    log::error(&format!("Invalid address: {}", addr_repr(addr)));
                } else {
                    log::error(&format!("connection to {} failed: {e}", addr_repr(addr)));
                }
                attempt += 1;
                if attempt >= attempts || e.kind() != std::io::ErrorKind::AddrInUse {
                    return Err(SockError::CantConnect(addr_repr(addr)));
                }
                log::error("Retrying in 1 second.");
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
        }
    }
}

/// Whether `l` is the socket the `bind` entry `addr` asks for: made for
/// it, or (inherited) bound to the very address it names.
fn serves(l: &Listener, addr: &Address) -> bool {
    if l.addr.as_ref() == Some(addr) {
        return true;
    }
    match addr {
        // Port 0 names no particular socket.
        Address::Tcp(_, 0) => false,
        Address::Tcp(host, port) => {
            let local = l.socket.local_addr().ok().and_then(|a| a.as_socket());
            local.is_some() && resolve(host, *port).ok() == local
        }
        Address::Unix(path) => l.unix_path.as_deref() == Some(path.as_str()),
        Address::Fd(fd) => l.fd() == *fd,
    }
}

/// A changed `bind` (HUP): the listeners of `current` that already serve
/// an entry of `addrs` are kept, the other entries are bound (once each,
/// no retries: the master is serving meanwhile). On success `current`
/// becomes the new set, in `addrs` order, and the listeners no entry
/// wants any more are returned. On failure nothing changes: what was bound
/// is closed again and `current` is left as it was.
pub fn rebind(
    current: &mut Vec<Listener>,
    addrs: &[Address],
    opts: &BindOptions,
) -> Result<Vec<Listener>, SockError> {
    let wanted = wanted(addrs);
    let mut taken = vec![false; current.len()];
    let mut plan: Vec<Option<usize>> = Vec::with_capacity(wanted.len());
    for addr in &wanted {
        let i = (0..current.len()).find(|&i| !taken[i] && serves(&current[i], addr));
        if let Some(i) = i {
            taken[i] = true;
        }
        plan.push(i);
    }
    let mut fresh: Vec<Option<Listener>> = Vec::with_capacity(wanted.len());
    for (addr, kept) in wanted.iter().zip(&plan) {
        let bound = match (kept, addr) {
            (Some(_), _) => Ok(None),
            // Another descriptor of the master (the control socket's, a
            // log file's) is not to be taken for a listener.
            (None, Address::Fd(fd)) => Err(SockError::Address(format!(
                "fd://{fd}: only a descriptor handed over at start can be a listener"
            ))),
            (None, addr) => bind_address(addr, opts, 1).map(Some),
        };
        match bound {
            Ok(l) => fresh.push(l),
            Err(e) => {
                for l in fresh.into_iter().flatten() {
                    close(l, true);
                }
                return Err(e);
            }
        }
    }
    let mut old: Vec<Option<Listener>> = current.drain(..).map(Some).collect();
    for (kept, new) in plan.into_iter().zip(fresh) {
        let l = match kept {
            Some(i) => old[i].take(),
            None => new,
        };
        current.extend(l);
    }
    Ok(old.into_iter().flatten().collect())
}

/// Close a listener, and remove its unix socket file if `unlink`.
pub fn close(l: Listener, unlink: bool) {
    if let (true, Some(path)) = (unlink, &l.unix_path) {
        let _ = std::fs::remove_file(path);
    }
}

/// How many connections wait in a TCP listener's accept queue (Linux's
/// `tcp_info.tcpi_unacked` of a listening socket); `None` for a socket
/// that is not a TCP listener or when the kernel does not say.
pub fn accept_queue_len(listener: std::os::fd::BorrowedFd<'_>) -> Option<u32> {
    use std::os::fd::AsRawFd;
    // SAFETY: tcp_info is plain integers, so all-zero is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: the descriptor is borrowed open for the call; `info` and
    // `len` are valid for writes of `len` bytes, which is all the kernel
    // writes (it may write fewer and says so in `len`).
    let rc = unsafe {
        libc::getsockopt(
            listener.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    // TCP_LISTEN in Linux's include/net/tcp_states.h.
    const TCP_LISTEN: u8 = 10;
    let listening = info.tcpi_state == TCP_LISTEN;
    (rc == 0 && listening).then_some(info.tcpi_unacked)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> BindOptions {
        BindOptions {
            backlog: 16,
            reuse_port: false,
            umask: 0,
            owner: (
                nix::unistd::geteuid().as_raw(),
                nix::unistd::getegid().as_raw(),
            ),
        }
    }

    fn port(l: &Listener) -> u16 {
        l.socket.local_addr().unwrap().as_socket().unwrap().port()
    }

    #[test]
    fn rebind_keeps_what_stays_and_hands_back_what_goes() {
        let any = Address::Tcp("127.0.0.1".into(), 0);
        let mut current = create(std::slice::from_ref(&any), &opts()).unwrap();
        let kept = port(&current[0]);
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let new = Address::Tcp("127.0.0.1".into(), free.local_addr().unwrap().port());
        drop(free);
        // The same entry keeps its socket, port 0 included.
        let removed = rebind(&mut current, &[any.clone(), new.clone()], &opts()).unwrap();
        assert!(removed.is_empty());
        assert_eq!(current.len(), 2);
        assert_eq!(port(&current[0]), kept);
        // An inherited socket (no entry) is kept for the address it has.
        current[1].addr = None;
        let removed = rebind(&mut current, std::slice::from_ref(&new), &opts()).unwrap();
        assert_eq!(removed.len(), 1);
        assert_eq!(port(&removed[0]), kept);
        assert_eq!(current.len(), 1);
        assert_eq!(current[0].addr, None);
    }

    #[test]
    fn a_failed_rebind_changes_nothing() {
        let mut current = create(&[Address::Tcp("127.0.0.1".into(), 0)], &opts()).unwrap();
        let before = port(&current[0]);
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let in_use = Address::Tcp("127.0.0.1".into(), taken.local_addr().unwrap().port());
        let Err(err) = rebind(&mut current, &[in_use], &opts()) else {
            panic!("bound a port in use");
        };
        assert!(matches!(err, SockError::CantConnect(_)), "{err}");
        assert_eq!(current.len(), 1);
        assert_eq!(port(&current[0]), before);
        // A descriptor not handed over at start is not taken.
        let Err(err) = rebind(&mut current, &[Address::Fd(0)], &opts()) else {
            panic!("took fd 0 for a listener");
        };
        assert!(err.to_string().contains("fd://0"), "{err}");
        assert_eq!(port(&current[0]), before);
    }

    #[test]
    fn the_accept_queue_length_counts_connections_not_yet_accepted() {
        use std::os::fd::AsFd;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        assert_eq!(accept_queue_len(listener.as_fd()), Some(0));
        let clients: Vec<_> = (0..3)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        assert_eq!(accept_queue_len(listener.as_fd()), Some(3));
        drop(listener.accept().unwrap());
        assert_eq!(accept_queue_len(listener.as_fd()), Some(2));
        // Not a listener: no answer.
        assert_eq!(accept_queue_len(clients[0].as_fd()), None);
    }
}
