//! The master's end of the control socket: the listening unix socket (its
//! path, mode, who owns it) and the client connections, all non-blocking
//! and polled by the master's loop with its signal pipe, as the Prometheus
//! exporter is (no thread, no tokio in the master; see LIFECYCLE.md).
//!
//! A client that trickles or stalls holds only its buffer: a partial frame
//! is dropped after [`PARTIAL_IDLE`], an idle connection after
//! [`IDLE`]; at most [`MAX_CONNECTIONS`] are held (the one idle longest
//! goes for a new one). Answers are queued and written as the client reads
//! them.

use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::commands::CommandError;
use super::{encode, take_frame};

/// A partial frame older than this closes its connection.
pub const PARTIAL_IDLE: Duration = Duration::from_secs(10);
/// A connection idle between requests this long is closed (gunicorn's 300 s).
pub const IDLE: Duration = Duration::from_secs(300);
/// Client connections held at once.
pub const MAX_CONNECTIONS: usize = 16;

/// Why the socket was not created.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A live server answers at the path (another master): not taken.
    #[error("{0} is in use by another running server")]
    InUse(PathBuf),
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
}

struct Conn {
    stream: UnixStream,
    input: Vec<u8>,
    output: Vec<u8>,
    last: Instant,
}

/// The listening socket and its clients.
pub struct ControlServer {
    listener: UnixListener,
    path: PathBuf,
    /// (st_dev, st_ino) of the socket file this server created: it is
    /// unlinked at exit only if the path still names it.
    id: (u64, u64),
    conns: Vec<Conn>,
}

impl ControlServer {
    /// Create the socket at `path` (absolute) with `mode`. A socket file
    /// already there is replaced when nothing answers on it (a stale one)
    /// or when `take_over` (a USR2 master replaces its parent's); a live
    /// one is left alone ([`StartError::InUse`]). The parent directory is
    /// created with mode 0700 when missing.
    pub fn start(path: &Path, mode: u32, take_over: bool) -> Result<ControlServer, StartError> {
        let io = |err: std::io::Error| StartError::Io {
            path: path.to_path_buf(),
            err,
        };
        if let Some(dir) = path.parent() {
            if !dir.exists() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(io)?;
            }
        }
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if !meta.file_type().is_socket() {
                return Err(io(std::io::Error::new(
                    ErrorKind::AlreadyExists,
                    "exists and is not a socket",
                )));
            }
            if !take_over && UnixStream::connect(path).is_ok() {
                return Err(StartError::InUse(path.to_path_buf()));
            }
            std::fs::remove_file(path).map_err(io)?;
        }
        // std's sockets are close-on-exec: a USR2 master makes its own.
        let listener = UnixListener::bind(path).map_err(io)?;
        listener.set_nonblocking(true).map_err(io)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io)?;
        let meta = std::fs::symlink_metadata(path).map_err(io)?;
        Ok(ControlServer {
            listener,
            path: path.to_path_buf(),
            id: (meta.dev(), meta.ino()),
            conns: Vec::new(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The listener and the connections, for the loop's poll.
    pub fn poll_fds(&self) -> Vec<BorrowedFd<'_>> {
        std::iter::once(self.listener.as_fd())
            .chain(self.conns.iter().map(|c| c.stream.as_fd()))
            .collect()
    }

    /// An answer waits for its client to read: the loop polls again soon.
    pub fn has_output(&self) -> bool {
        self.conns.iter().any(|c| !c.output.is_empty())
    }

    /// One loop turn: accept, read what arrived, answer each complete
    /// request with `handle(command, args)`, write what the clients take,
    /// drop the dead and the idle.
    pub fn serve(&mut self, mut handle: impl FnMut(&str, &[Value]) -> Result<Value, CommandError>) {
        while let Ok((stream, _)) = self.listener.accept() {
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            if self.conns.len() >= MAX_CONNECTIONS {
                if let Some(i) = (0..self.conns.len()).min_by_key(|&i| self.conns[i].last) {
                    self.conns.remove(i);
                }
            }
            self.conns.push(Conn {
                stream,
                input: Vec::new(),
                output: Vec::new(),
                last: Instant::now(),
            });
        }
        self.conns.retain_mut(|c| c.turn(&mut handle));
    }

    /// Close the socket; unlink the path if it still names this socket
    /// (a USR2 master may have put its own there).
    pub fn close(self) {
        if let Ok(meta) = std::fs::symlink_metadata(&self.path) {
            if (meta.dev(), meta.ino()) == self.id {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

impl Conn {
    /// Read, answer, write; false: close this connection.
    fn turn(
        &mut self,
        handle: &mut impl FnMut(&str, &[Value]) -> Result<Value, CommandError>,
    ) -> bool {
        let mut buf = [0u8; 8192];
        let mut eof = false;
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => {
                    self.input.extend_from_slice(&buf[..n]);
                    self.last = Instant::now();
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
        }
        loop {
            let payload = match take_frame(&mut self.input) {
                Ok(Some(p)) => p,
                Ok(None) => break,
                Err(_) => return false,
            };
            // Not JSON, or not an object: a protocol error ends the
            // connection, as in gunicorn.
            let Ok(Value::Object(req)) = serde_json::from_slice::<Value>(&payload) else {
                return false;
            };
            let id = req.get("id").cloned().unwrap_or(json!(0));
            let command = req.get("command").and_then(Value::as_str).unwrap_or("");
            let args = match req.get("args") {
                Some(Value::Array(a)) => a.as_slice(),
                _ => &[],
            };
            let resp = match handle(command.trim(), args) {
                Ok(data) => json!({"id": id, "status": "ok", "data": data}),
                Err(error) => json!({"id": id, "status": "error", "error": error.0}),
            };
            self.output.extend_from_slice(&encode(&resp));
        }
        while !self.output.is_empty() {
            match self.stream.write(&self.output) {
                Ok(0) => return false,
                Ok(n) => {
                    self.output.drain(..n);
                    self.last = Instant::now();
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
        }
        if eof {
            // The client closed its side: what is left of the answers gets
            // a short bounded write (a half-closed socket polls readable
            // forever, so it is not kept).
            if !self.output.is_empty() && self.stream.set_nonblocking(false).is_ok() {
                let _ = self
                    .stream
                    .set_write_timeout(Some(Duration::from_millis(100)));
                let _ = self.stream.write_all(&self.output);
            }
            return false;
        }
        let idle = self.last.elapsed();
        if !self.input.is_empty() || !self.output.is_empty() {
            idle < PARTIAL_IDLE
        } else {
            idle < IDLE
        }
    }
}
