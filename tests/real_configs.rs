//! Real-world gunicorn configs, served by gunicorn 27.0.1 and by rgunicorn.
//!
//! `tests/real_configs/` holds one small config per public repository,
//! each reproducing the pattern of a real config file (hooks and the
//! attributes they touch, settings from the environment, logging dicts,
//! logger and worker classes, TLS, proxies, loader edge cases), written
//! from a description of it and naming its source at the top;
//! `tests/real_configs/apps/` holds the modules they import and the apps
//! they serve. For each config, gunicorn and then rgunicorn start from a
//! fresh copy of that folder on a free port (from `-b`, or from the
//! environment variable the config reads). A server *serves* a config when
//! it starts, answers GET / (and the config's own paths) and exits 0 on
//! TERM; rgunicorn must answer with gunicorn's status and body (the copy's
//! path aside).
//!
//! The test prints a table and fails when rgunicorn does not serve a
//! config that gunicorn serves, except those listed in `EXPECTED_FAILURES`
//! (none now; the gevent family was, until gevent workers existed), and
//! answers otherwise only on the paths `KNOWN_DIFFERENCES` lists. It also fails
//! when gunicorn does not serve a config it should (a broken config or
//! venv) or serves one it should refuse, and when rgunicorn serves a
//! config gunicorn refuses.
//!
//! Python packages come from `target/test-venv` (tests/run installs them;
//! or `REAL_CONFIGS_VENV`): the servers get its site-packages as
//! PYTHONPATH, gunicorn is its `bin/gunicorn`.

use crate::common;

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use common::server::free_port;
use common::{rgunicorn, scratch_dir, text};

/// The bound of a start (until GET / is answered) and of the exit on TERM.
const BOUND: Duration = Duration::from_secs(20);

/// How many configs run at once (each runs its two servers one after the
/// other): the machine has 2 cores.
const PARALLEL: usize = 2;

/// Where a config gets its address from.
#[derive(Clone, Copy)]
enum Bind {
    /// `-b 127.0.0.1:PORT` on the command line (over the file's `bind`).
    Flag,
    /// The variable holds the port; the config builds `bind` from it.
    PortVar(&'static str),
    /// The variable holds `127.0.0.1:PORT`.
    AddrVar(&'static str),
}

#[derive(Clone, Copy, PartialEq)]
enum Tls {
    No,
    /// HTTPS; the client trusts the test CA.
    Server,
    /// HTTPS with the client certificate.
    Mutual,
}

#[derive(Clone, Copy)]
struct Case {
    /// The file in tests/real_configs/.
    config: &'static str,
    /// The app argument; `None` when the config names `wsgi_app`.
    app: Option<&'static str>,
    bind: Bind,
    /// Extra environment; `{dir}` is the working copy, `{udp}` a UDP
    /// port nothing listens on, `{port2}` a second free TCP port.
    env: &'static [(&'static str, &'static str)],
    /// Extra command-line arguments.
    args: &'static [&'static str],
    /// Paths compared besides `/`.
    paths: &'static [&'static str],
    /// Headers sent with every request.
    headers: &'static [(&'static str, &'static str)],
    tls: Tls,
    /// Set when gunicorn refuses the config (why): then rgunicorn must
    /// refuse it too.
    refused: Option<&'static str>,
}

const WEBAPP: Option<&str> = Some("webapp:app");
const ASGIAPP: Option<&str> = Some("asgiapp:app");
const PROM: (&str, &str) = ("PROMETHEUS_MULTIPROC_DIR", "{dir}/prom");

const BASE: Case = Case {
    config: "",
    app: WEBAPP,
    bind: Bind::Flag,
    env: &[],
    args: &[],
    paths: &[],
    headers: &[],
    tls: Tls::No,
    refused: None,
};

/// Every config, in the table's order.
const CASES: &[Case] = &[
    // Hook-heavy configs.
    Case {
        config: "benoitc-gunicorn.py",
        paths: &["/info/env/SPAM", "/info/umask"],
        ..BASE
    },
    Case {
        config: "paperless-ngx-paperless-ngx.py",
        app: ASGIAPP,
        bind: Bind::PortVar("PAPERLESS_PORT"),
        env: &[("PAPERLESS_FORCE_SCRIPT_NAME", "/paperless")],
        paths: &["/scope"],
        ..BASE
    },
    Case {
        config: "meanother-project_promise.py",
        app: Some("promise_app:app"),
        paths: &["/info/env/DJANGO_SETTINGS_MODULE"],
        ..BASE
    },
    Case {
        config: "shaggyloris-simple-monitor.py",
        ..BASE
    },
    Case {
        config: "joeyorlando-self_driving_car.py",
        ..BASE
    },
    Case {
        config: "fugitivebreach-royalguard-oauth2.py",
        bind: Bind::PortVar("PORT"),
        ..BASE
    },
    Case {
        config: "stevarino-cubed-tube.py",
        refused: Some("umask '007' is no int literal (and raw_env holds '')"),
        ..BASE
    },
    Case {
        config: "goauthentik-authentik.py",
        app: Some("authentik_app:application"),
        env: &[("AUTHENTIK_WEB__WORKERS", "1")],
        paths: &["/metrics-files"],
        ..BASE
    },
    Case {
        config: "alphagov-notifications-utils.py",
        bind: Bind::PortVar("PORT"),
        paths: &["/info/software"],
        ..BASE
    },
    Case {
        config: "mozilla-ichnaea.py",
        app: Some("ichnaea_app:wsgi_app"),
        ..BASE
    },
    Case {
        config: "apache-airflow.py",
        app: Some("airflow_app:app"),
        ..BASE
    },
    Case {
        config: "PostHog-posthog.py",
        args: &["-k", "sync"],
        ..BASE
    },
    Case {
        config: "jvazquez-arthur-web.py",
        ..BASE
    },
    Case {
        config: "DataDog-dd-trace-py.py",
        app: None,
        ..BASE
    },
    Case {
        config: "open-telemetry-opentelemetry-python.py",
        app: Some("otel_app:app"),
        ..BASE
    },
    Case {
        config: "opensafely-core-airlock.py",
        ..BASE
    },
    Case {
        config: "opensafely-core-job-server.py",
        ..BASE
    },
    Case {
        config: "johang88-guessr.py",
        env: &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:{port2}")],
        ..BASE
    },
    Case {
        config: "fccn-nau-richie-site-factory.py",
        ..BASE
    },
    Case {
        config: "deis-controller.py",
        env: &[("GUNICORN_WORKERS", "2")],
        ..BASE
    },
    Case {
        config: "craig8-UUDEX.py",
        tls: Tls::Mutual,
        paths: &["/info/header/X-User-Cn"],
        ..BASE
    },
    Case {
        config: "willnx-sawmill_api.py",
        app: None,
        ..BASE
    },
    // Prometheus (multiprocess).
    Case {
        config: "cmendesce-znn-python.py",
        app: Some("znn_app:app"),
        env: &[PROM, ("METRICS_PORT", "{port2}")],
        ..BASE
    },
    Case {
        config: "WonderCode22-servicenow_component.py",
        env: &[PROM],
        ..BASE
    },
    Case {
        config: "mryab-efficient-dl-systems.py",
        app: Some("effdl_app:app"),
        env: &[PROM],
        ..BASE
    },
    // Settings from the environment.
    Case {
        config: "tiangolo-uvicorn-gunicorn-docker.py",
        app: Some("fastapi_main:app"),
        bind: Bind::PortVar("PORT"),
        env: &[("HOST", "127.0.0.1"), ("WEB_CONCURRENCY", "2")],
        ..BASE
    },
    Case {
        config: "mozilla-bedrock.py",
        bind: Bind::PortVar("PORT"),
        env: &[("GUNICORN_WORKER_CLASS", "sync"), ("WEB_CONCURRENCY", "2")],
        ..BASE
    },
    Case {
        config: "mozilla-kitsune.py",
        bind: Bind::PortVar("PORT"),
        env: &[
            ("GUNICORN_WORKER_CLASS", "gthread"),
            ("WSGI_NUM_WORKERS", "2"),
        ],
        ..BASE
    },
    Case {
        config: "inventree-InvenTree.py",
        env: &[
            ("INVENTREE_GUNICORN_WORKERS", "2"),
            ("INVENTREE_GUNICORN_TIMEOUT", "90"),
        ],
        ..BASE
    },
    Case {
        config: "karrioapi-karrio-gunicorn-cfg.py",
        app: ASGIAPP,
        bind: Bind::PortVar("KARRIO_HTTP_PORT"),
        env: &[("KARRIO_HTTP_HOST", "127.0.0.1"), ("KARRIO_WORKERS", "2")],
        args: &["-k", "karrio_workers.UvicornWorker"],
        ..BASE
    },
    Case {
        config: "arthur-barbosa18-accident-risk-prediction.py",
        app: Some("risk_app:app"),
        ..BASE
    },
    Case {
        config: "rayfok-intrin_posthoc_haidm.py",
        env: &[("WORKERS", "2")],
        ..BASE
    },
    Case {
        config: "gisquick-gisquick.py",
        bind: Bind::AddrVar("GUNICORN_BIND"),
        env: &[("GUNICORN_WORKERS", "2"), ("GUNICORN_TIMEOUT", "45")],
        ..BASE
    },
    Case {
        config: "pacificclimate-ncWMS-mm-rproxy.py",
        bind: Bind::AddrVar("GUNICORN_BIND"),
        env: &[
            ("GUNICORN_PRINT_CONFIG", "False"),
            ("GUNICORN_WORKERS", "2"),
        ],
        ..BASE
    },
    Case {
        config: "hackersandslackers-flask-assets-tutorial.py",
        app: None,
        env: &[("STATSD_ADDR", "127.0.0.1:{udp}")],
        ..BASE
    },
    Case {
        config: "toddbirchard-broiestbot-db.py",
        app: None,
        refused: Some("the config raises ValueError (no known ENVIRONMENT)"),
        ..BASE
    },
    Case {
        config: "Hydrophobefireman-flask-jwt-auth-template.py",
        ..BASE
    },
    Case {
        config: "LoveJustice-tinyhands.py",
        ..BASE
    },
    // Logging: logconfig_dict, logconfig, logger_class.
    Case {
        config: "City-of-Helsinki-parking-permits.py",
        app: None,
        ..BASE
    },
    Case {
        config: "acoustid-acoustid-server.py",
        ..BASE
    },
    Case {
        config: "Atomicbeast101-hawk-backup.py",
        ..BASE
    },
    Case {
        config: "rjw57-todolist.py",
        ..BASE
    },
    Case {
        config: "garethr-snyky.py",
        bind: Bind::PortVar("PORT"),
        ..BASE
    },
    Case {
        config: "Misha-creato-drf_booking.py",
        app: None,
        args: &["-k", "sync"],
        ..BASE
    },
    Case {
        config: "Flagsmith-flagsmith.py",
        env: &[("STATSD_ADDR", "127.0.0.1:{udp}")],
        ..BASE
    },
    // TLS.
    Case {
        config: "ammgws-ammcon-frontend.py",
        tls: Tls::Server,
        ..BASE
    },
    Case {
        config: "sunnyyuanz-ufy_app_ai.py",
        tls: Tls::Server,
        ..BASE
    },
    Case {
        config: "Medioec-ICT3x03-Team-33.py",
        tls: Tls::Server,
        ..BASE
    },
    Case {
        config: "rantahar-aware_filter.py",
        tls: Tls::Server,
        ..BASE
    },
    // Behind a proxy.
    Case {
        config: "SoniCoder-saleor.py",
        paths: &["/info/scheme"],
        headers: &[("X-Forwarded-Proto", "https")],
        ..BASE
    },
    Case {
        config: "Manigetz81-DigitalSizing.py",
        paths: &["/info/scheme"],
        headers: &[("X-Forwarded-Ssl", "on")],
        ..BASE
    },
    Case {
        config: "joacominatel-inventario-nextjs-flask.py",
        bind: Bind::AddrVar("GUNICORN_BIND"),
        paths: &["/info/scheme"],
        headers: &[("X-Forwarded-Protocol", "ssl")],
        ..BASE
    },
    Case {
        config: "ryan-marsh119-Secure-Tasker-Updated.py",
        headers: &[("X-Forwarded-For", "203.0.113.7")],
        ..BASE
    },
    Case {
        config: "nofusscomputing-centurion_erp_migrated.py",
        paths: &["/info/header/X-Real-Ip"],
        headers: &[("X-Real-Ip", "203.0.113.7")],
        ..BASE
    },
    // Plain configs and loader edge cases.
    Case {
        config: "pypi-warehouse.py",
        env: &[("STATSD_ADDR", "127.0.0.1:{udp}")],
        headers: &[("Warehouse-Hashed-IP", "abc123")],
        ..BASE
    },
    Case {
        config: "netbox-community-netbox.conf",
        ..BASE
    },
    Case {
        config: "bbhagat1234-python-docs-hello-world.py",
        refused: Some("the file is not valid Python"),
        ..BASE
    },
    Case {
        config: "bomvendador-zetic.py",
        bind: Bind::PortVar("PORT"),
        ..BASE
    },
    Case {
        config: "kamartem-new_admin_panel_sprint_2-gunicorn-wsgi.conf.py",
        app: None,
        ..BASE
    },
    Case {
        config: "openedx-ecommerce.py",
        ..BASE
    },
    Case {
        config: "ukhsa-collaboration-nsc-recommendationsp.py",
        paths: &["/info/software"],
        ..BASE
    },
    Case {
        config: "broadinstitute-seqr.py",
        ..BASE
    },
    Case {
        config: "LeeHanYeong-let-us-Go.py",
        app: Some("letusgo_app:app"),
        args: &["-k", "sync"],
        paths: &["/info/env/DJANGO_SETTINGS_MODULE"],
        ..BASE
    },
    // UvicornWorker and its subclasses.
    Case {
        config: "nexent-dev-faraja-yangu-tv-backend.py",
        app: ASGIAPP,
        ..BASE
    },
    Case {
        config: "saleor-saleor.py",
        app: ASGIAPP,
        ..BASE
    },
    Case {
        config: "shuryhin-oleksandr-acemaven.py",
        app: ASGIAPP,
        paths: &["/scope"],
        ..BASE
    },
    Case {
        config: "HuzaifaIrfan-Web-chatwoot-webhook.py",
        app: Some("fastapi_main:app"),
        ..BASE
    },
    // The gevent family (served since rgunicorn has gevent workers).
    Case {
        config: "alphagov-notifications-api.py",
        bind: Bind::PortVar("PORT"),
        env: &[PROM],
        ..BASE
    },
    Case {
        config: "cds-snc-notification-api.py",
        bind: Bind::PortVar("PORT"),
        ..BASE
    },
    Case {
        config: "danloh-rut.py",
        ..BASE
    },
    Case {
        config: "kokkzlya-my-flask-sa-codebase.py",
        ..BASE
    },
    Case {
        config: "MaxwellDPS-chaz.py",
        app: None,
        ..BASE
    },
    Case {
        config: "makeplane-plane.py",
        args: &["-k", "gevent"],
        ..BASE
    },
    Case {
        config: "wegamekinglc-service-streamer.py",
        ..BASE
    },
    Case {
        config: "mozilla-services-antenna.py",
        ..BASE
    },
    Case {
        config: "langgenius-dify.py",
        args: &["-k", "gevent"],
        ..BASE
    },
    Case {
        config: "thruflo-thruflo.py",
        refused: Some("egg:gunicorn#gevent: gunicorn 27 declares no worker entry points"),
        ..BASE
    },
    Case {
        config: "c4rlo-vimhelp.py",
        app: None,
        ..BASE
    },
];

/// Configs gunicorn serves and rgunicorn is known not to, each with why.
const EXPECTED_FAILURES: &[(&str, &str)] = &[];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The venv with gunicorn and the configs' packages.
fn venv() -> PathBuf {
    let v = std::env::var("REAL_CONFIGS_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo().join("target/test-venv"));
    assert!(
        v.join("bin/gunicorn").exists(),
        "no gunicorn in {}: run tests/run (it installs the test venv) or set REAL_CONFIGS_VENV",
        v.display()
    );
    v
}

fn site_packages() -> String {
    static SP: OnceLock<String> = OnceLock::new();
    SP.get_or_init(|| {
        let lib = venv().join("lib");
        let dir = std::fs::read_dir(&lib)
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.path().join("site-packages"))
            .find(|p| p.join("flask").exists())
            .unwrap_or_else(|| {
                panic!("flask is not installed in {}: run tests/run", lib.display())
            });
        dir.to_string_lossy().into_owned()
    })
    .clone()
}

/// A UDP port nothing listens on (for statsd).
fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let path = entry.path();
        let name = entry.file_name();
        if name == "__pycache__" {
            continue;
        }
        if path.is_dir() {
            copy_tree(&path, &to.join(&name));
        } else {
            std::fs::copy(&path, to.join(&name)).unwrap();
        }
    }
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate,
/// made once with the `openssl` command.
fn certs() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = scratch_dir("real-configs-certs");
        crate::common::certs::make(&dir);
        dir
    })
}

fn tls_client(mutual: bool) -> Arc<rustls::ClientConfig> {
    let dir = certs();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(dir.join("ca.pem")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let config = if mutual {
        let chain = CertificateDer::pem_file_iter(dir.join("client.pem"))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let key = PrivateKeyDer::from_pem_file(dir.join("client.key")).unwrap();
        builder.with_client_auth_cert(chain, key).unwrap()
    } else {
        builder.with_no_client_auth()
    };
    Arc::new(config)
}

/// One GET with `Connection: close`: (status, body).
fn get(case: &Case, port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut head = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n");
    for (k, v) in case.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("Connection: close\r\n\r\n");
    let sock = TcpStream::connect(("127.0.0.1", port))?;
    sock.set_read_timeout(Some(Duration::from_secs(5)))?;
    sock.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut buf = Vec::new();
    if case.tls == Tls::No {
        let mut sock = sock;
        sock.write_all(head.as_bytes())?;
        sock.read_to_end(&mut buf)?;
    } else {
        let conn = rustls::ClientConnection::new(
            tls_client(case.tls == Tls::Mutual),
            ServerName::try_from("127.0.0.1").unwrap(),
        )
        .map_err(std::io::Error::other)?;
        let mut tls = rustls::StreamOwned::new(conn, sock);
        tls.write_all(head.as_bytes())?;
        match tls.read_to_end(&mut buf) {
            Ok(_) => {}
            // A close without close_notify after a whole answer.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !buf.is_empty() => {}
            Err(e) => return Err(e),
        }
    }
    let resp = text(&buf);
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status line in {resp:?}")))?;
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .strip_prefix("transfer-encoding:")
            .is_some_and(|v| v.contains("chunked"))
    });
    // gunicorn frames a body of unknown length in chunks, rgunicorn may
    // give its length: the body is what is compared.
    Ok((
        status,
        if chunked {
            dechunk(body)?
        } else {
            body.to_string()
        },
    ))
}

/// A chunked body's data.
fn dechunk(body: &str) -> std::io::Result<String> {
    let bad = || std::io::Error::other(format!("bad chunked body {body:?}"));
    let mut rest = body;
    let mut out = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n").ok_or_else(bad)?;
        let size =
            usize::from_str_radix(size.split(';').next().unwrap().trim(), 16).map_err(|_| bad())?;
        if size == 0 {
            return Ok(out);
        }
        out.push_str(after.get(..size).ok_or_else(bad)?);
        rest = after.get(size + 2..).ok_or_else(bad)?;
    }
}

/// What one server did with one config.
struct Run {
    /// (path, status, body) for `/` and the case's paths, once it answered.
    answers: Option<Vec<(String, u16, String)>>,
    /// Its exit status after TERM (or on its own).
    exit: Option<i32>,
    /// Why it did not serve, if it did not.
    problem: Option<String>,
    stderr: String,
    /// Its scratch directory (removed when both servers served).
    dir: PathBuf,
    /// From the start to the exit.
    secs: f64,
}

impl Run {
    fn served(&self) -> bool {
        self.answers.is_some() && self.exit == Some(0) && self.problem.is_none()
    }
}

/// The most telling line of a server's log: the last exception line of
/// a traceback (`SomeError: ...`), else the last line naming an error.
fn telling_line(log: &str) -> String {
    let lines: Vec<&str> = log
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let exception = |l: &&&str| {
        l.split_once(':').is_some_and(|(name, _)| {
            !name.contains(' ') && (name.ends_with("Error") || name.ends_with("Exception"))
        })
    };
    let marks = [
        "Error",
        "error",
        "Exception",
        "invalid",
        "Invalid",
        "not supported",
        "unsupported",
        "No module",
        "cannot",
        "Can't",
        "failed",
        "Failed",
    ];
    let line = lines
        .iter()
        .rev()
        .find(exception)
        .or_else(|| {
            lines
                .iter()
                .rev()
                .find(|l| marks.iter().any(|m| l.contains(m)))
        })
        .or(lines.last())
        .copied()
        .unwrap_or("(no output)");
    let mut line = line.to_string();
    if line.len() > 200 {
        let mut cut = 200;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
        line.push_str("...");
    }
    line
}

/// Wait (at most `within`) until the server is idle: the master's
/// children are the same and no process of the tree used CPU time over
/// 100 ms. A gunicorn worker still booting (in `post_fork`, importing the
/// app) does not act on TERM until its own handlers are installed, so
/// TERM goes to a server whose workers have all booted.
fn wait_settled(master: i32, within: Duration) {
    let cpu = |pid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                let f: Vec<u64> = s
                    .rsplit_once(')')?
                    .1
                    .split_whitespace()
                    .skip(11)
                    .take(2)
                    .filter_map(|v| v.parse().ok())
                    .collect();
                Some(f.iter().sum::<u64>())
            })
            .unwrap_or(0)
    };
    let snapshot = || {
        let mut pids = common::server::children(master);
        pids.sort_unstable();
        let times: Vec<u64> = std::iter::once(master)
            .chain(pids.iter().copied())
            .map(cpu)
            .collect();
        (pids, times)
    };
    let deadline = Instant::now() + within;
    let mut last = snapshot();
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        let now = snapshot();
        if now == last && !now.0.is_empty() {
            return;
        }
        last = now;
    }
}

/// Start `program` on `case` in a fresh copy of tests/real_configs,
/// GET its paths, TERM it.
fn run(case: &Case, program: &Path, label: &str) -> Run {
    let scratch = scratch_dir(&format!("real-{label}"));
    let work = scratch.join("work");
    let configs = repo().join("tests/real_configs");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::copy(configs.join(case.config), work.join(case.config)).unwrap();
    copy_tree(&configs.join("apps"), &work);
    std::fs::create_dir_all(work.join("prom")).unwrap();
    if case.tls != Tls::No {
        for f in ["server.pem", "server.key", "ca.pem"] {
            std::fs::copy(certs().join(f), work.join(f)).unwrap();
        }
    }
    let work_str = work.to_string_lossy().into_owned();
    let port = free_port();
    let (udp, port2) = (free_udp_port().to_string(), free_port().to_string());
    let fill = |v: &str| {
        v.replace("{dir}", &work_str)
            .replace("{udp}", &udp)
            .replace("{port2}", &port2)
    };

    let mut cmd = Command::new(program);
    cmd.current_dir(&work)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        // The default control socket goes under HOME: one per run.
        .env("HOME", &work)
        .env("PYTHONPATH", site_packages())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(scratch.join("stdout.log")).unwrap())
        .stderr(std::fs::File::create(scratch.join("stderr.log")).unwrap());
    if let Some(app) = case.app {
        cmd.arg(app);
    }
    cmd.args(["-c", case.config]);
    match case.bind {
        Bind::Flag => {
            cmd.args(["-b", &format!("127.0.0.1:{port}")]);
        }
        Bind::PortVar(var) => {
            cmd.env(var, port.to_string());
        }
        Bind::AddrVar(var) => {
            cmd.env(var, format!("127.0.0.1:{port}"));
        }
    }
    cmd.args(case.args);
    for (k, v) in case.env {
        cmd.env(k, fill(v));
    }
    let mut child = cmd.spawn().unwrap();
    let log = || {
        let out = std::fs::read_to_string(scratch.join("stdout.log")).unwrap_or_default();
        let err = std::fs::read_to_string(scratch.join("stderr.log")).unwrap_or_default();
        format!("{err}{out}")
    };
    let mut outcome = Run {
        answers: None,
        exit: None,
        problem: None,
        stderr: String::new(),
        dir: scratch.clone(),
        secs: 0.0,
    };
    let began = Instant::now();

    // Ready once GET / is answered (any status), or exited, or timed out.
    let deadline = Instant::now() + BOUND;
    let ready = loop {
        if let Some(status) = child.try_wait().unwrap() {
            outcome.exit = status.code();
            outcome.problem = Some(format!(
                "exited ({}) before serving: {}",
                status.code().map_or("signal".into(), |c| c.to_string()),
                telling_line(&log())
            ));
            break false;
        }
        if get(case, port, "/").is_ok() {
            break true;
        }
        if Instant::now() > deadline {
            outcome.problem = Some(format!(
                "no answer on GET / within {}s: {}",
                BOUND.as_secs(),
                telling_line(&log())
            ));
            break false;
        }
        std::thread::sleep(Duration::from_millis(50));
    };

    if ready {
        let mut answers = Vec::new();
        for path in std::iter::once("/").chain(case.paths.iter().copied()) {
            match get(case, port, path) {
                Ok((status, body)) => {
                    answers.push((path.to_string(), status, body.replace(&work_str, "<dir>")))
                }
                Err(e) => {
                    outcome.problem = Some(format!("GET {path} failed: {e}"));
                    break;
                }
            }
        }
        outcome.answers = Some(answers);
        wait_settled(child.id() as i32, Duration::from_secs(10));
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + BOUND;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                outcome.exit = status.code();
                if status.code() != Some(0) && outcome.problem.is_none() {
                    outcome.problem = Some(format!(
                        "exit status {status} on TERM: {}",
                        telling_line(&log())
                    ));
                }
                break;
            }
            if Instant::now() > deadline {
                outcome
                    .problem
                    .get_or_insert(format!("still running {}s after TERM", BOUND.as_secs()));
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    // Whatever is left (a start that timed out, an exit that did not
    // come): TERM, then KILL after a bounded wait; reaped either way.
    common::server::stop_child(&mut child);
    outcome.secs = began.elapsed().as_secs_f64();
    outcome.stderr = log();
    outcome
}

/// Both servers on one config.
struct Outcome {
    config: &'static str,
    gunicorn: Run,
    rgunicorn: Run,
}

/// A config's check path (never `/`) where rgunicorn deliberately answers
/// otherwise, with why: the config is served (`/` as gunicorn), and the
/// difference is printed.
const KNOWN_DIFFERENCES: &[(&str, &str, &str)] = &[(
    "craig8-UUDEX.py",
    "/info/header/X-User-Cn",
    "the SyncWorker subclass's handle_request() adds this header; rgunicorn's Rust \
     workers do not run worker-class methods, and its start names handle_request() \
     in a warning (README: worker_class)",
)];

impl Outcome {
    /// rgunicorn served it, and answered as gunicorn did (but on a
    /// [`KNOWN_DIFFERENCES`] path).
    fn rgunicorn_serves(&self) -> bool {
        let known = |path: &str| {
            KNOWN_DIFFERENCES
                .iter()
                .any(|(c, p, _)| *c == self.config && *p == path && path != "/")
        };
        let kept = |answers: &Option<Vec<(String, u16, String)>>| {
            answers.as_ref().map(|a| {
                a.iter()
                    .filter(|(path, ..)| !known(path))
                    .cloned()
                    .collect::<Vec<_>>()
            })
        };
        self.rgunicorn.served() && kept(&self.rgunicorn.answers) == kept(&self.gunicorn.answers)
    }

    /// Why rgunicorn does not serve it as gunicorn does.
    fn why_not(&self) -> String {
        if let Some(p) = &self.rgunicorn.problem {
            return p.clone();
        }
        let (ours, theirs) = (
            self.rgunicorn.answers.as_deref().unwrap_or_default(),
            self.gunicorn.answers.as_deref().unwrap_or_default(),
        );
        for (a, b) in ours.iter().zip(theirs) {
            if a != b {
                return format!(
                    "GET {}: {} {:?}, gunicorn: {} {:?}",
                    a.0, a.1, a.2, b.1, b.2
                );
            }
        }
        String::new()
    }
}

fn expected_failure(config: &str) -> Option<&'static str> {
    EXPECTED_FAILURES
        .iter()
        .find(|(c, _)| *c == config)
        .map(|(_, why)| *why)
}

#[test]
fn real_configs_served_as_by_gunicorn() {
    let started = Instant::now();
    let gunicorn = venv().join("bin/gunicorn");
    // Failed runs keep their directories until the next run of this test.
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let ours = format!("-{}-", std::process::id());
    for entry in std::fs::read_dir(tmp).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("real-") && !name.contains(&ours) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    for (config, _) in EXPECTED_FAILURES {
        assert!(
            CASES.iter().any(|c| c.config == *config),
            "{config} is in EXPECTED_FAILURES but not in CASES"
        );
    }
    let results: Arc<Mutex<Vec<Option<Outcome>>>> =
        Arc::new(Mutex::new((0..CASES.len()).map(|_| None).collect()));
    let next = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..PARALLEL)
        .map(|_| {
            let (results, next, gunicorn) = (results.clone(), next.clone(), gunicorn.clone());
            std::thread::spawn(move || loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(case) = CASES.get(i) else { break };
                let stem = case
                    .config
                    .trim_end_matches(".py")
                    .trim_end_matches(".conf");
                let theirs = run(case, &gunicorn, &format!("{stem}-gunicorn"));
                let ours = run(case, &rgunicorn(), &format!("{stem}-rgunicorn"));
                let out = Outcome {
                    config: case.config,
                    gunicorn: theirs,
                    rgunicorn: ours,
                };
                // Failed runs keep theirs (logs, files) to look at.
                if out.gunicorn.served() && out.rgunicorn_serves() {
                    let _ = std::fs::remove_dir_all(&out.gunicorn.dir);
                    let _ = std::fs::remove_dir_all(&out.rgunicorn.dir);
                }
                results.lock().unwrap()[i] = Some(out);
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let results: Vec<Outcome> = Arc::try_unwrap(results)
        .ok()
        .unwrap()
        .into_inner()
        .unwrap()
        .into_iter()
        .map(Option::unwrap)
        .collect();

    let yes_no = |b: bool| if b { "yes" } else { "no" };
    let width = CASES.iter().map(|c| c.config.len()).max().unwrap();
    let mut table = format!(
        "{:width$}  gunicorn  rgunicorn  seconds    why not\n",
        "config"
    );
    let (mut m, mut n, mut gevent_total, mut gevent_served) = (0, 0, 0, 0);
    let mut failures = Vec::new();
    for (case, out) in CASES.iter().zip(&results) {
        let theirs = out.gunicorn.served();
        let ours = out.rgunicorn_serves();
        let why = match (case.refused, theirs) {
            (Some(_), true) => format!(
                "gunicorn serves it, expected to refuse: {}",
                case.refused.unwrap()
            ),
            (Some(reason), false) if out.rgunicorn.answers.is_some() => {
                format!("rgunicorn serves what gunicorn refuses ({reason})")
            }
            (Some(reason), false) => format!(
                "both refuse ({reason}); gunicorn: {}",
                out.gunicorn.problem.as_deref().unwrap_or("")
            ),
            (None, false) => format!(
                "GUNICORN does not serve it: {}",
                out.gunicorn.problem.as_deref().unwrap_or("answers differ")
            ),
            (None, true) if ours => String::new(),
            (None, true) => out.why_not(),
        };
        let secs = format!("{:.1}+{:.1}", out.gunicorn.secs, out.rgunicorn.secs);
        table.push_str(&format!(
            "{:width$}  {:8}  {:9}  {secs:9}  {why}\n",
            case.config,
            yes_no(theirs),
            yes_no(ours)
        ));
        let gevent = expected_failure(case.config);
        match (case.refused, theirs) {
            (Some(_), true) => failures.push(format!("{}: {why}", case.config)),
            (Some(_), false) if out.rgunicorn.answers.is_some() => {
                failures.push(format!("{}: {why}", case.config))
            }
            (Some(_), false) => {}
            (None, false) => failures.push(format!("{}: {why}", case.config)),
            (None, true) => {
                if gevent.is_some() {
                    gevent_total += 1;
                    gevent_served += usize::from(ours);
                    if ours {
                        failures.push(format!(
                            "{}: served, but listed in EXPECTED_FAILURES: take it off",
                            case.config
                        ));
                    }
                } else {
                    m += 1;
                    n += usize::from(ours);
                    if !ours {
                        failures.push(format!("{}: {why}", case.config));
                    }
                }
            }
        }
    }
    let summary = format!(
        "rgunicorn serves {n} of the {m} configs gunicorn serves; gevent: {} expected failures ({gevent_total} gevent configs gunicorn serves)",
        gevent_total - gevent_served
    );
    // The logs of each failing rgunicorn run, for the report.
    for (case, out) in CASES.iter().zip(&results) {
        if case.refused.is_none() && out.gunicorn.served() && !out.rgunicorn_serves() {
            let tail: Vec<&str> = out.rgunicorn.stderr.lines().rev().take(12).collect();
            eprintln!("--- rgunicorn on {} (last lines):", case.config);
            for line in tail.iter().rev() {
                eprintln!("    {line}");
            }
        }
    }
    // Not failures, but what a config's user would see: what rgunicorn
    // says has no effect (settings it takes without acting on them, worker
    // class code its Rust workers do not run), and tracebacks only
    // rgunicorn logged (a hook that raised where gunicorn's did not) in
    // configs it serves.
    let mut no_effect: std::collections::BTreeMap<String, Vec<&str>> = Default::default();
    let mut notes = Vec::new();
    for (case, out) in CASES.iter().zip(&results) {
        let mut seen = std::collections::BTreeSet::new();
        for line in out.rgunicorn.stderr.lines() {
            if !line.contains("no effect") {
                continue;
            }
            let Some(at) = line
                .find("setting `")
                .or_else(|| line.find("worker_class "))
            else {
                continue;
            };
            // Up to the end of the message (a JSON formatter quotes it).
            let mut message = &line[at..];
            if line.trim_start().starts_with('{') {
                message = message.split("\", \"").next().unwrap_or_default();
                message = message.trim_end_matches('}').trim_end_matches('"');
            }
            if seen.insert(message.to_string()) {
                no_effect
                    .entry(message.to_string())
                    .or_default()
                    .push(case.config);
            }
        }
        let traceback = |r: &Run| r.stderr.contains("Traceback (most recent call last)");
        if out.rgunicorn_serves() && traceback(&out.rgunicorn) && !traceback(&out.gunicorn) {
            notes.push(format!(
                "{}: {}",
                case.config,
                telling_line(&out.rgunicorn.stderr)
            ));
        }
    }
    if !no_effect.is_empty() {
        eprintln!("\nrgunicorn warned that these have no effect:");
        for (message, configs) in &no_effect {
            eprintln!("    {message}\n        in {}", configs.join(", "));
        }
    }
    if !notes.is_empty() {
        eprintln!("\nServed, but rgunicorn logged a traceback gunicorn did not:");
        for note in &notes {
            eprintln!("    {note}");
        }
    }
    // The table and the count last, where a reader of the output looks.
    eprintln!(
        "\n{table}\n{summary}\n({:.0} s)",
        started.elapsed().as_secs_f64()
    );
    assert!(
        m >= 40,
        "gunicorn serves only {m} of the configs outside the gevent family"
    );
    assert!(failures.is_empty(), "{summary}\n{}", failures.join("\n"));
}
