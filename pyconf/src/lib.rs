//! pyconf: gunicorn's configuration, evaluated as gunicorn evaluates it.
//!
//! One declarative table ([`table::SETTINGS`]) of every gunicorn 27 setting
//! drives the command line ([`cli`]), the validators ([`validate`]), the
//! loading of `gunicorn.conf.py` in embedded CPython and `--print-config`
//! ([`config`]). The crate knows nothing about processes or HTTP.

pub mod cli;
pub mod computed;
pub mod config;
pub mod table;
pub mod validate;

pub use config::{load, Config, LoadError, Sources};
pub use table::{Setting, SETTINGS};
