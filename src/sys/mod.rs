//! The operating system: fork, exec, signals and process titles
//! ([`process`]), file descriptors by number ([`fd`]), listening sockets,
//! the shared-memory scoreboard, the pidfile and systemd's notify socket.
//! The `unsafe` for fork, exec, signals and raw fds lives here.

pub mod fd;
pub mod notify;
pub mod pidfile;
pub mod process;
pub mod scoreboard;
pub mod sock;
