//! File descriptors by number: the few places that must act on an fd they
//! do not own through a Rust type (a worker's inherited listeners, the
//! hooks' copies of them, the reloader's pipes, gevent's eventfd). Every
//! such `unsafe` is here, with the contract its caller keeps.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// Take ownership of `fd`, a listener this worker inherited from the
/// master. The caller keeps the contract: nothing else in the process
/// owns `fd` (the worker never drops its copy of the master's listener:
/// it leaves with `_exit`).
pub fn adopt_inherited(fd: RawFd) -> OwnedFd {
    // SAFETY: per this function's contract, `fd` is open and owned by
    // nothing else in this process.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Whether `fd` is an open listening socket.
pub fn is_listening(fd: RawFd) -> bool {
    // SAFETY: the fd is only borrowed for this call; a closed one makes
    // getsockopt fail.
    let sock = unsafe { BorrowedFd::borrow_raw(fd) };
    nix::sys::socket::getsockopt(&sock, nix::sys::socket::sockopt::AcceptConn).unwrap_or(false)
}

/// The inode of `fd` when it is an open socket.
pub fn socket_inode(fd: RawFd) -> Option<u64> {
    // SAFETY: the fd is only borrowed for this call; a closed one makes
    // fstat fail.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    nix::sys::stat::fstat(borrowed)
        .ok()
        .filter(|st| (st.st_mode & libc::S_IFMT) == libc::S_IFSOCK)
        .map(|st| st.st_ino)
}

/// Put `null` (an open `/dev/null`) in place of `fd`, which stays open
/// with the same number: whoever holds the number (an accept loop, a
/// Python socket) then sees errors or EOF instead of the old file. The
/// caller checked that `fd` is still what it means to replace.
pub fn replace_with(null: &std::fs::File, fd: RawFd) {
    // SAFETY: dup2 onto a number the caller identified (see above); both
    // fds are open, and dup2 closes the old file atomically.
    unsafe { libc::dup2(null.as_raw_fd(), fd) };
}

/// Write all of `data` to `fd` (a pipe end this process owns), retrying
/// on EINTR.
pub fn write_all(fd: RawFd, mut data: &[u8]) -> std::io::Result<()> {
    while !data.is_empty() {
        // SAFETY: write(2) from a live slice to an fd the caller owns.
        let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        data = &data[n as usize..];
    }
    Ok(())
}

/// A non-blocking eventfd: one side posts, the other watches it in its
/// event loop and takes the count.
pub struct EventFd(OwnedFd);

impl EventFd {
    pub fn new() -> std::io::Result<EventFd> {
        // SAFETY: eventfd(2) with valid flags; the fd it returns is owned
        // by the OwnedFd below and nowhere else.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd was just created and is owned by nothing else.
        Ok(EventFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Add one: the watcher's next poll finds the fd readable.
    pub fn post(&self) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: write(2) of 8 bytes from a local to the eventfd we own.
        unsafe { libc::write(self.0.as_raw_fd(), one.as_ptr().cast(), one.len()) };
    }

    /// Reset the count (non-blocking: nothing when it is already 0).
    pub fn take(&self) {
        let mut count = [0u8; 8];
        // SAFETY: read(2) into a local 8-byte buffer from the eventfd we own.
        unsafe { libc::read(self.0.as_raw_fd(), count.as_mut_ptr().cast(), count.len()) };
    }

    pub fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}
