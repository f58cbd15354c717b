//! Typed settings: the configuration read by name once per load (at start
//! and on each HUP), each value checked and clamped once, into one struct
//! per consumer. This is the only code that reads a [`pyconf::Config`] by
//! setting name; hooks keep their Python `cfg` view (`hooks::cfg`).
//!
//! ```text
//! gunicorn.conf.py + argv --pyconf--> Config --Settings::load--> Settings
//!   .start    entry: --print-config, --check-config, daemon, pythonpath
//!   .server   master: workers, sockets, pidfile, timeouts, recycling
//!   .worker   each worker: keep-alive, connections, runtime threads
//!   .limits   the HTTP gate (strict parsing, PROXY, forwarders)
//!   .tls      certificates; .http2 h2 over TLS or cleartext
//!   .python   the Python app: threads, root_path, asgi_*, worker_class
//!   .logging  error and access logs, syslog, logconfig*, logger_class
//!   .metrics  metrics_bind, statsd
//!   .reload   the file watcher; .control the control socket
//! ```

use std::sync::Arc;
use std::time::Duration;

use pyconf::Config;
use pyo3::prelude::*;

use crate::http::gate::{HeaderMapPolicy, Limits, ProxyProtocol};
use crate::http::h2::H2Settings;

/// Everything a load of the configuration decides, by consumer.
pub struct Settings {
    pub start: Start,
    pub server: Server,
    pub worker: Worker,
    pub limits: Arc<Limits>,
    pub tls: crate::http::tls::Settings,
    pub http2: Http2,
    pub python: PythonApp,
    pub logging: Logging,
    pub metrics: Metrics,
    pub reload: Reload,
    pub control: Control,
}

/// What only the start reads (before the master exists).
pub struct Start {
    pub print_config: bool,
    pub check_config: bool,
    /// Also read by the master: SIGWINCH stops the workers only in a
    /// daemon, as in gunicorn.
    pub daemon: bool,
    pub enable_stdio_inheritance: bool,
    /// `pythonpath`, split at commas.
    pub pythonpath: Vec<String>,
    /// `protocol = "uwsgi"`, which rgunicorn does not serve.
    pub uwsgi_protocol: bool,
    /// `dirty_workers` when `dirty_apps` is set (a dirty arbiter gunicorn
    /// would start), else 0.
    pub dirty_workers: i64,
}

/// The master's settings.
pub struct Server {
    /// `workers`, at least 1.
    pub workers: usize,
    pub bind: Vec<String>,
    pub backlog: i32,
    pub reuse_port: bool,
    pub umask: u32,
    /// The workers' user and group (`user`/`group`, as numbers).
    pub user: u32,
    pub group: u32,
    pub initgroups: bool,
    pub pidfile: Option<String>,
    /// `proc_name`, else `default_proc_name`, else "rgunicorn".
    pub proc_name: String,
    pub preload_app: bool,
    pub worker_tmp_dir: Option<String>,
    /// `raw_env`, as (name, value) pairs; `Err` names an entry without
    /// `=`, which fails the start (or the HUP) when the environment is set,
    /// as gunicorn's arbiter fails (`--check-config` does not see it).
    pub env: Result<Vec<(String, String)>, String>,
    /// How long the stop waits for workers, and a worker for its
    /// connections to drain.
    pub graceful_timeout: Duration,
    /// How long a replaced worker waits for its replacement to serve
    /// before it is retired anyway, and a reload for systemd's READY:
    /// `graceful_timeout`, at least 1 s, so that a replacement gets a
    /// chance to boot even with `graceful_timeout = 0`.
    pub replacement_grace: Duration,
    /// `timeout` in seconds as configured (the hooks' `server.timeout`).
    pub timeout_secs: i64,
    /// `timeout`, `None` when it is 0 or less (no worker is timed out).
    pub timeout: Option<Duration>,
    /// `max_requests`, `None` when 0 or less; with its jitter.
    pub max_requests: Option<u64>,
    pub max_requests_jitter: u64,
    /// `max_worker_lifetime` (seconds), `None` when 0; with its jitter.
    pub max_worker_lifetime: Option<u64>,
    pub max_worker_lifetime_jitter: u64,
    /// `max_worker_memory` in MiB, `None` when 0.
    pub max_worker_memory_mib: Option<u64>,
}

/// What each worker applies, taken at its fork.
#[derive(Clone)]
pub struct Worker {
    /// `keepalive` (a UvicornWorker class's `timeout_keep_alive` replaces
    /// it: see the master).
    pub keepalive: Duration,
    /// `runtime_threads`, at least 1.
    pub runtime_threads: usize,
    /// `header_read_timeout`, at least 1 s.
    pub header_read_timeout: Duration,
    pub graceful_timeout: Duration,
    /// `worker_connections`, at least 1.
    pub worker_connections: usize,
}

/// HTTP/2: what `http_protocols` asks for and what is not served.
pub struct Http2 {
    pub settings: Option<H2Settings>,
    /// Asked for but not served (h3, `Upgrade: h2c`).
    pub warnings: Vec<String>,
}

/// The Python app's settings (a WSGI or ASGI app, or gevent's).
pub struct PythonApp {
    /// `worker_class` as configured: a string or a class object.
    pub worker_class: Py<PyAny>,
    /// `threads`, at least 1.
    pub threads: usize,
    /// `workers > 1` (`wsgi.multiprocess`).
    pub multiprocess: bool,
    /// `root_path` as configured.
    pub root_path: String,
    /// `errorlog` when it is a file (`wsgi.errors` writes there).
    pub errorlog_file: Option<String>,
    /// A `post_request` hook is set.
    pub post_request: bool,
    pub asgi_lifespan: Option<String>,
    /// `asgi_loop`, "auto" when unset.
    pub asgi_loop: String,
    /// `websocket_max_message_size` in bytes (0: no limit).
    pub websocket_max_message_size: usize,
}

/// Logging, as gunicorn's `Logger.setup` reads it.
pub struct Logging {
    pub errorlog: Option<String>,
    pub loglevel: String,
    pub accesslog: Option<String>,
    pub access_log_format: String,
    /// `capture_output`, which gunicorn applies only with an error log
    /// file: then that file.
    pub capture_output: Option<String>,
    pub syslog: Option<Syslog>,
    pub logconfig_dict: Py<PyAny>,
    pub logconfig_json: Py<PyAny>,
    pub logconfig: Py<PyAny>,
    pub logger_class: Py<PyAny>,
    /// gunicorn's `access_log_enabled`, but for a custom `logger_class`
    /// (which decides per record).
    pub access_log_configured: bool,
}

/// `syslog = True`.
pub struct Syslog {
    pub addr: String,
    pub facility: String,
    /// `syslog_prefix`, else the process name with `:` as `.`.
    pub prefix: String,
    /// Access lines go to syslog too.
    pub access: bool,
}

/// Metrics: the Prometheus exporter and statsd.
pub struct Metrics {
    pub metrics_bind: Option<String>,
    pub statsd: Option<Statsd>,
}

/// Where statsd packets go: `statsd_host` as the validator left it.
#[derive(Debug, Clone)]
pub enum StatsdTarget {
    Udp(String, u16),
    Unix(String),
}

/// The statsd settings, read by the master and inherited by workers.
#[derive(Debug, Clone)]
pub struct Statsd {
    pub target: StatsdTarget,
    /// `statsd_prefix`, ending with a dot as gunicorn's.
    pub prefix: String,
    pub tags: String,
}

/// `reload`: the file watcher.
pub struct Reload {
    pub enabled: bool,
    pub engine: ReloadEngine,
    pub extra_files: Vec<String>,
}

/// `reload_engine`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReloadEngine {
    /// inotify, or polling where inotify can't be had (gunicorn's `auto`
    /// falls back the same way when its inotify module is missing).
    Auto,
    Inotify,
    Poll,
}

/// The control socket.
pub struct Control {
    /// `control_socket`, `None` when disabled.
    pub path: Option<String>,
    pub mode: u32,
}

impl Settings {
    /// Read `cfg` once.
    pub fn load(py: Python<'_>, cfg: &Config) -> Settings {
        let secs = |name: &str| Duration::from_secs(cfg.int(py, name).max(0) as u64);
        let positive = |name: &str| Some(cfg.int(py, name)).filter(|&n| n > 0).map(|n| n as u64);
        let proc_name = cfg
            .string(py, "proc_name")
            .or_else(|| cfg.string(py, "default_proc_name"))
            .unwrap_or_else(|| "rgunicorn".into());
        let graceful_timeout = secs("graceful_timeout");
        let timeout_secs = cfg.int(py, "timeout");
        let tls = tls(py, cfg);
        let http2 = http2(py, cfg, &tls);
        let errorlog = cfg.string(py, "errorlog");
        let logging = logging(py, cfg, errorlog.clone(), &proc_name);
        Settings {
            start: Start {
                print_config: cfg.bool(py, "print_config"),
                check_config: cfg.bool(py, "check_config"),
                daemon: cfg.bool(py, "daemon"),
                enable_stdio_inheritance: cfg.bool(py, "enable_stdio_inheritance"),
                pythonpath: cfg
                    .string(py, "pythonpath")
                    .map(|p| p.split(',').map(str::to_string).collect())
                    .unwrap_or_default(),
                uwsgi_protocol: cfg.string(py, "protocol").as_deref() == Some("uwsgi"),
                dirty_workers: if cfg.list(py, "dirty_apps").is_empty() {
                    0
                } else {
                    cfg.int(py, "dirty_workers")
                },
            },
            server: Server {
                workers: cfg.int(py, "workers").max(1) as usize,
                bind: cfg.list(py, "bind"),
                backlog: cfg.int(py, "backlog").clamp(0, i32::MAX as i64) as i32,
                reuse_port: cfg.bool(py, "reuse_port"),
                umask: cfg.int(py, "umask") as u32,
                user: cfg.int(py, "user") as u32,
                group: cfg.int(py, "group") as u32,
                initgroups: cfg.bool(py, "initgroups"),
                pidfile: cfg.string(py, "pidfile"),
                proc_name,
                preload_app: cfg.bool(py, "preload_app"),
                worker_tmp_dir: cfg.string(py, "worker_tmp_dir"),
                env: cfg.env(py),
                graceful_timeout,
                replacement_grace: graceful_timeout.max(Duration::from_secs(1)),
                timeout_secs,
                timeout: (timeout_secs > 0).then(|| Duration::from_secs(timeout_secs as u64)),
                max_requests: positive("max_requests"),
                max_requests_jitter: cfg.int(py, "max_requests_jitter").max(0) as u64,
                max_worker_lifetime: positive("max_worker_lifetime"),
                max_worker_lifetime_jitter: cfg.int(py, "max_worker_lifetime_jitter").max(0) as u64,
                max_worker_memory_mib: positive("max_worker_memory"),
            },
            worker: Worker {
                keepalive: secs("keepalive"),
                runtime_threads: cfg.int(py, "runtime_threads").max(1) as usize,
                header_read_timeout: secs("header_read_timeout").max(Duration::from_secs(1)),
                graceful_timeout,
                worker_connections: cfg.int(py, "worker_connections").max(1) as usize,
            },
            limits: Arc::new(limits(py, cfg)),
            tls,
            http2,
            python: PythonApp {
                worker_class: cfg.get(py, "worker_class").unbind(),
                threads: cfg.int(py, "threads").max(1) as usize,
                multiprocess: cfg.int(py, "workers") > 1,
                root_path: cfg.string(py, "root_path").unwrap_or_default(),
                errorlog_file: errorlog.filter(|p| p != "-"),
                post_request: cfg.hook_is_set(py, "post_request"),
                asgi_lifespan: cfg.string(py, "asgi_lifespan"),
                asgi_loop: cfg.string(py, "asgi_loop").unwrap_or_else(|| "auto".into()),
                websocket_max_message_size: usize::try_from(
                    cfg.int(py, "websocket_max_message_size"),
                )
                .unwrap_or(0),
            },
            logging,
            metrics: Metrics {
                metrics_bind: cfg.string(py, "metrics_bind"),
                statsd: statsd(py, cfg),
            },
            reload: Reload {
                enabled: cfg.bool(py, "reload"),
                engine: match cfg.string(py, "reload_engine").as_deref() {
                    Some("poll") => ReloadEngine::Poll,
                    Some("inotify") => ReloadEngine::Inotify,
                    _ => ReloadEngine::Auto,
                },
                extra_files: cfg.list(py, "reload_extra_files"),
            },
            control: Control {
                path: cfg
                    .string(py, "control_socket")
                    .filter(|_| !cfg.bool(py, "control_socket_disable")),
                mode: cfg.int(py, "control_socket_mode") as u32,
            },
        }
    }
}

/// The program name the configuration is parsed for (`argv[0]`'s file
/// name), which gunicorn's messages use.
pub fn prog_name(argv: &[String]) -> String {
    std::path::Path::new(argv.first().map(String::as_str).unwrap_or("rgunicorn"))
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| "rgunicorn".into())
}

/// Evaluate the configuration as gunicorn does: defaults, the config
/// file, `GUNICORN_CMD_ARGS`, then `argv` (at start and on each HUP).
pub fn read_config(py: Python<'_>, argv: &[String]) -> Result<Config, pyconf::LoadError> {
    let prog = prog_name(argv);
    let cmd_args_env = std::env::var("GUNICORN_CMD_ARGS").ok();
    let sources = pyconf::Sources {
        prog: &prog,
        version: env!("CARGO_PKG_VERSION"),
        args: argv.get(1..).unwrap_or(&[]),
        cmd_args_env: cmd_args_env.as_deref(),
    };
    pyconf::load(py, &sources)
}

/// The request-strictness settings. gunicorn's normalisation of the
/// limits (e.g. `limit_request_line >= 8190` means 8190) is [`Limits`]'.
pub fn limits(py: Python<'_>, cfg: &Config) -> Limits {
    let secure: std::collections::HashMap<String, String> = cfg
        .get(py, "secure_scheme_headers")
        .extract()
        .unwrap_or_default();
    Limits {
        limit_request_line: cfg.int(py, "limit_request_line"),
        limit_request_fields: cfg.int(py, "limit_request_fields"),
        limit_request_field_size: cfg.int(py, "limit_request_field_size"),
        permit_unconventional_http_method: cfg.bool(py, "permit_unconventional_http_method"),
        permit_unconventional_http_version: cfg.bool(py, "permit_unconventional_http_version"),
        casefold_http_method: cfg.bool(py, "casefold_http_method"),
        permit_obsolete_folding: cfg.bool(py, "permit_obsolete_folding"),
        strip_header_spaces: cfg.bool(py, "strip_header_spaces"),
        header_map: match cfg.string(py, "header_map").as_deref() {
            Some("refuse") => HeaderMapPolicy::Refuse,
            Some("dangerous") => HeaderMapPolicy::Dangerous,
            _ => HeaderMapPolicy::Drop,
        },
        secure_scheme_headers: secure.into_iter().collect(),
        forwarded_allow_ips: cfg.list(py, "forwarded_allow_ips"),
        forwarder_headers: cfg.list(py, "forwarder_headers"),
        proxy_protocol: match cfg.string(py, "proxy_protocol").as_deref() {
            Some("v1") => ProxyProtocol::V1,
            Some("v2") => ProxyProtocol::V2,
            Some("auto") => ProxyProtocol::Auto,
            _ => ProxyProtocol::Off,
        },
        proxy_allow_ips: cfg.list(py, "proxy_allow_ips"),
        ..Limits::default()
    }
}

/// gunicorn's SSL settings.
pub fn tls(py: Python<'_>, cfg: &Config) -> crate::http::tls::Settings {
    crate::http::tls::Settings {
        certfile: cfg.string(py, "certfile"),
        keyfile: cfg.string(py, "keyfile"),
        ca_certs: cfg.string(py, "ca_certs"),
        cert_reqs: cfg.int(py, "cert_reqs"),
        ciphers: cfg.string(py, "ciphers"),
        suppress_ragged_eofs: cfg.bool(py, "suppress_ragged_eofs"),
        http_protocols: cfg.list(py, "http_protocols"),
        ssl_context_set: cfg.hook_is_set(py, "ssl_context"),
    }
}

fn http2(py: Python<'_>, cfg: &Config, tls: &crate::http::tls::Settings) -> Http2 {
    let cleartext = cfg.string(py, "http2_cleartext").unwrap_or_default();
    let int = |name| cfg.int(py, name).clamp(0, u32::MAX as i64) as u32;
    let (settings, warnings) = H2Settings::decide(
        &tls.http_protocols,
        &cleartext,
        tls.is_ssl(),
        [
            int("http2_max_concurrent_streams"),
            int("http2_initial_window_size"),
            int("http2_max_frame_size"),
            int("http2_max_header_list_size"),
        ],
    );
    Http2 { settings, warnings }
}

fn logging(py: Python<'_>, cfg: &Config, errorlog: Option<String>, proc_name: &str) -> Logging {
    let syslog = cfg.bool(py, "syslog");
    let syslog_access = syslog && !cfg.bool(py, "disable_redirect_access_to_syslog");
    let accesslog = cfg.string(py, "accesslog");
    let logconfig_any = ["logconfig", "logconfig_dict", "logconfig_json"]
        .iter()
        .any(|name| cfg.get(py, name).is_truthy().unwrap_or(false));
    Logging {
        access_log_configured: accesslog.is_some() || logconfig_any || syslog_access,
        capture_output: errorlog
            .clone()
            .filter(|path| path != "-" && cfg.bool(py, "capture_output")),
        errorlog,
        loglevel: cfg.string(py, "loglevel").unwrap_or_default(),
        accesslog,
        access_log_format: cfg.string(py, "access_log_format").unwrap_or_default(),
        syslog: syslog.then(|| Syslog {
            addr: cfg.string(py, "syslog_addr").unwrap_or_default(),
            facility: cfg.string(py, "syslog_facility").unwrap_or_default(),
            prefix: cfg
                .string(py, "syslog_prefix")
                .unwrap_or_else(|| proc_name.replace(':', ".")),
            access: syslog_access,
        }),
        logconfig_dict: cfg.get(py, "logconfig_dict").unbind(),
        logconfig_json: cfg.get(py, "logconfig_json").unbind(),
        logconfig: cfg.get(py, "logconfig").unbind(),
        logger_class: cfg.get(py, "logger_class").unbind(),
    }
}

/// [`statsd_settings`], with a warning for a `statsd_host` of a form
/// not supported.
fn statsd(py: Python<'_>, cfg: &Config) -> Option<Statsd> {
    let statsd = statsd_settings(py, cfg);
    if statsd.is_none() && !cfg.get(py, "statsd_host").is_none() {
        crate::log::warning("statsd_host: only host:port and unix paths are supported");
    }
    statsd
}

/// `statsd_host`, `statsd_prefix` and `dogstatsd_tags`; `None` when
/// `statsd_host` is unset or of a form not supported.
pub fn statsd_settings(py: Python<'_>, cfg: &Config) -> Option<Statsd> {
    let host = cfg.get(py, "statsd_host");
    let target = if let Ok((h, p)) = host.extract::<(String, u16)>() {
        StatsdTarget::Udp(h, p)
    } else if let Ok(path) = host.extract::<String>() {
        StatsdTarget::Unix(path)
    } else {
        return None;
    };
    Some(Statsd {
        target,
        prefix: statsd_prefix(&cfg.string(py, "statsd_prefix").unwrap_or_default()),
        tags: cfg.string(py, "dogstatsd_tags").unwrap_or_default(),
    })
}

/// gunicorn's prefix rule (`sub(r"^(.+[^.]+)\.*$", "\g<1>.", prefix)`):
/// one trailing dot after a prefix of two characters or more.
pub fn statsd_prefix(prefix: &str) -> String {
    let trimmed = prefix.trim_end_matches('.');
    if trimmed.chars().count() >= 2 {
        format!("{trimmed}.")
    } else {
        prefix.to_string()
    }
}

/// `show config` of the control socket: the values of `keys`, as the
/// configuration holds them.
pub fn values<'py>(
    py: Python<'py>,
    cfg: &Config,
    keys: &[&str],
) -> Vec<(String, Bound<'py, PyAny>)> {
    keys.iter()
        .filter(|k| pyconf::SETTINGS.iter().any(|s| s.name == **k))
        .map(|k| (k.to_string(), cfg.get(py, k)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statsd_prefix_as_gunicorn() {
        assert_eq!(statsd_prefix(""), "");
        assert_eq!(statsd_prefix("app"), "app.");
        assert_eq!(statsd_prefix("app..."), "app.");
        assert_eq!(statsd_prefix("a"), "a");
        assert_eq!(statsd_prefix("a.b"), "a.b.");
    }
}
