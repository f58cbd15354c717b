//! The operating system: fork, exec, signals and process titles
//! ([`process`], where the `unsafe` for them lives), listening sockets,
//! the shared-memory scoreboard, the pidfile and systemd's notify socket.

pub mod notify;
pub mod pidfile;
pub mod process;
pub mod scoreboard;
pub mod sock;
