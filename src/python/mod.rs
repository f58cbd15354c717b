//! Everything Python: the embedded interpreter, the app's import, the
//! hooks and the Python interfaces a worker serves through. The workers and
//! the master call into this folder; nothing here reaches back up to them.
//!
//! - [`embed`]: CPython in the binary (venvs, signals, `os.environ`).
//! - [`import`]: APP_MODULE imported (preloaded in the master, or in each
//!   worker), with gunicorn's errors.
//! - [`hooks`]: the server hooks and the `server`/`worker`/`cfg` objects
//!   they get; [`request_hooks`]: `pre_request`/`post_request`.
//! - [`worker_class`]: `worker_class` resolved to the interface served.
//! - [`wsgi`], [`asgi`], [`gevent`]: the interfaces (gevent's is WSGI on
//!   gevent's hub).
//! - [`logging`]: Python's `logging` set up as gunicorn's, writing through
//!   rgunicorn's logs.
//! - [`reloader`]: `reload`, the watcher of the imported files.
//! - [`patched`]: parts of gunicorn a config or app replaced, which
//!   rgunicorn never calls (a replaced response writer ends the start).

pub mod asgi;
pub mod embed;
pub mod gevent;
pub mod hooks;
pub mod import;
pub mod logging;
pub mod patched;
pub mod reloader;
pub mod request_hooks;
pub mod worker_class;
pub mod wsgi;
