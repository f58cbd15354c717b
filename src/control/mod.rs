//! The control socket (gunicorn 27's `gunicornc` interface, and a live
//! worker table): the wire protocol shared by both ends, the default path.
//!
//! - [`server`]: the master's side: the listening unix socket and its client
//!   connections, served non-blocking from the master's loop;
//! - [`commands`]: the command language (`show workers`, `worker add 2`...),
//!   parsed with gunicorn's error messages; the master executes them;
//! - [`client`]: the `rgunicornc` command (also the pip package's console
//!   script).
//!
//! The protocol is gunicorn's, so that either client talks to either
//! server: a frame is a 4-byte big-endian length then that many bytes of
//! UTF-8 JSON (at most 16 MiB). A request is `{"id", "command", "args"}`,
//! a response `{"id", "status": "ok", "data"}` or
//! `{"id", "status": "error", "error"}`; a connection carries any number
//! of requests, one answer each, in order.

pub mod client;
pub mod commands;
pub mod server;

use std::path::{Path, PathBuf};

use serde_json::Value;

/// The largest frame either side accepts (gunicorn's `MAX_MESSAGE_SIZE`).
pub const MAX_MESSAGE: usize = 16 * 1024 * 1024;

/// One frame: the length prefix and the JSON text of `v`.
pub fn encode(v: &Value) -> Vec<u8> {
    let payload = serde_json::to_vec(v).unwrap_or_else(|_| b"{}".to_vec());
    let mut out = Vec::with_capacity(4 + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&payload);
    out
}

/// Take the first complete frame's payload out of `buf`: `Ok(None)` while
/// it is incomplete, an error for a length above [`MAX_MESSAGE`].
pub fn take_frame(buf: &mut Vec<u8>) -> Result<Option<Vec<u8>>, String> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len > MAX_MESSAGE {
        return Err(format!("Message too large: {len}"));
    }
    if buf.len() < 4 + len {
        return Ok(None);
    }
    let payload = buf[4..4 + len].to_vec();
    buf.drain(..4 + len);
    Ok(Some(payload))
}

/// `path` made absolute from the working directory (as gunicorn's
/// `util.getcwd()`, which keeps `$PWD`'s spelling).
pub fn absolute(path: &str) -> PathBuf {
    let p = Path::new(path);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        Path::new(&pyconf::computed::getcwd()).join(p)
    }
}

/// The `control_socket` setting's default, the same function pyconf uses
/// (`$XDG_RUNTIME_DIR/gunicorn.ctl`, else `~/.gunicorn/gunicorn.ctl`).
pub fn default_path() -> PathBuf {
    match pyconf::computed::control_socket() {
        pyconf::computed::Computed::Str(s) => absolute(&s),
        _ => unreachable!("control_socket's default is a string"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_split() {
        let a = encode(&serde_json::json!({"id": 1, "command": "show workers"}));
        let b = encode(&serde_json::json!({"id": 2}));
        let mut buf = [a.clone(), b].concat();
        let first = take_frame(&mut buf).unwrap().unwrap();
        assert_eq!(first, a[4..].to_vec());
        assert!(take_frame(&mut buf).unwrap().is_some());
        assert!(buf.is_empty());
        let mut partial = a[..6].to_vec();
        assert_eq!(take_frame(&mut partial), Ok(None));
        let mut huge = ((MAX_MESSAGE + 1) as u32).to_be_bytes().to_vec();
        assert!(take_frame(&mut huge).is_err());
    }
}
