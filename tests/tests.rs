//! rgunicorn's integration tests, one test binary with a module per area
//! (one link for all of them). Each module spawns the built binary (and,
//! where behaviours are compared, gunicorn 27.0.1 from `GUNICORN_BIN`'s
//! venv), binds free ports and waits on readiness.
//!
//! Run one area with `cargo test --test tests <module>::`, e.g.
//! `cargo test --test tests master_lifecycle::`.

mod common;

mod access_log;
mod asgi;
mod config_vs_gunicorn;
mod conformance;
mod control_socket;
mod gate_vs_gunicorn;
mod gevent;
mod hook_errors;
mod hook_objects;
mod http2;
mod layout;
mod logging;
mod master_lifecycle;
mod metrics;
mod patched_gunicorn;
mod process_management;
mod readme_quickstart;
mod readme_settings;
mod real_configs;
mod recycling;
mod reload;
mod request_hooks;
mod rust_app;
mod slow_clients;
mod sockets;
mod systemd;
mod tls;
mod venv;
mod wsgi;
