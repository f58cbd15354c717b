//! rgunicorn: a Rust drop-in replacement for the `gunicorn` command.
//!
//! The configuration layer lives in the `pyconf` crate; this crate owns how
//! the program starts ([`entry`]), the embedded interpreter ([`python`]) and
//! the loading of Python applications ([`pyapp`]).

pub mod entry;
pub mod health;
pub mod hooks;
pub mod http_error;
pub mod log;
pub mod master;
pub mod pidfile;
pub mod process;
pub mod pyapp;
pub mod python;
pub mod scoreboard;
pub mod sock;
pub mod strict_http;
pub mod worker;

pub use pyconf;
