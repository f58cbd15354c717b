//! TLS for the workers' connections, through rustls (ring provider), from
//! gunicorn's SSL settings. This module owns:
//!
//! - in the master, at start (and on HUP): reading and checking `certfile`,
//!   `keyfile`, `ca_certs`, `cert_reqs` and `ciphers`, and building the one
//!   rustls `ServerConfig` every worker inherits across fork as memory, so
//!   a bad certificate or key stops the start before any fork;
//! - refusing the `ssl_context` hook (it returns a Python `ssl.SSLContext`,
//!   which rustls can't use) when TLS is on;
//! - mapping an OpenSSL cipher list onto the rustls suites that have an
//!   equivalent, with a warning naming the rest;
//! - in the worker: the handshake, bounded by `header_read_timeout`, and
//!   `suppress_ragged_eofs` (a peer that closes without `close_notify`
//!   reads as a clean end of stream).
//!
//! As in gunicorn, TLS is on when `certfile` or `keyfile` is set, and then
//! every listener speaks it. `do_handshake_on_connect` needs no mapping:
//! gunicorn's workers complete the handshake right after accept either way
//! (they call `do_handshake()` themselves when it is off), and so does
//! rgunicorn. ALPN offers `http/1.1` only: HTTP/2 is not served yet.

use std::collections::HashSet;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::crypto::ring as provider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, SupportedCipherSuite};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::log;

/// gunicorn's SSL settings (read by `settings`).
#[derive(Clone, Debug, Default)]
pub struct Settings {
    pub certfile: Option<String>,
    pub keyfile: Option<String>,
    pub ca_certs: Option<String>,
    /// 0 = CERT_NONE, 1 = CERT_OPTIONAL, 2 = CERT_REQUIRED.
    pub cert_reqs: i64,
    pub ciphers: Option<String>,
    pub suppress_ragged_eofs: bool,
    /// `http_protocols` (`h1`, `h2`).
    pub http_protocols: Vec<String>,
    /// The `ssl_context` hook is not gunicorn's default.
    pub ssl_context_set: bool,
}

impl Settings {
    /// gunicorn's `cfg.is_ssl`.
    pub fn is_ssl(&self) -> bool {
        self.certfile.is_some() || self.keyfile.is_some()
    }
}

/// TLS settings that can't be served: the message the start fails with.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(pub String);

impl From<String> for TlsError {
    fn from(message: String) -> Self {
        TlsError(message)
    }
}

impl From<&str> for TlsError {
    fn from(message: &str) -> Self {
        TlsError(message.to_string())
    }
}

/// The TLS side of every connection of a worker: cheap to clone.
#[derive(Clone)]
pub struct Tls {
    acceptor: tokio_rustls::TlsAcceptor,
    suppress_ragged_eofs: bool,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("suppress_ragged_eofs", &self.suppress_ragged_eofs)
            .finish_non_exhaustive()
    }
}

/// What [`build`] made: the TLS config (None when TLS is off) and the
/// warnings to log.
#[derive(Debug, Default)]
pub struct Built {
    pub tls: Option<Tls>,
    pub warnings: Vec<String>,
}

/// In the master: the TLS config from the settings, its warnings logged;
/// `Err` is the start-up error (exit 1).
pub fn load(settings: &Settings) -> Result<Option<Tls>, TlsError> {
    let built = build(settings)?;
    for w in &built.warnings {
        log::warning(w);
    }
    Ok(built.tls)
}

/// `http://host:port` as gunicorn shows a TLS listener: `https://...`
/// (unix sockets are shown as they are).
pub fn listening_url(shown: &str) -> String {
    match shown.strip_prefix("http://") {
        Some(rest) => format!("https://{rest}"),
        None => shown.to_string(),
    }
}

/// Check the settings and build the rustls config.
pub fn build(s: &Settings) -> Result<Built, TlsError> {
    let mut warnings = Vec::new();
    if !s.is_ssl() {
        return Ok(Built {
            tls: None,
            warnings,
        });
    }
    if s.ssl_context_set {
        return Err(
            "the ssl_context hook is set, but rgunicorn can't use a Python \
             ssl.SSLContext (its TLS is rustls): remove ssl_context and configure TLS \
             with certfile, keyfile, ca_certs, cert_reqs and ciphers"
                .into(),
        );
    }
    // gunicorn checks these at start too, with these messages.
    for (name, path) in [("certfile", &s.certfile), ("keyfile", &s.keyfile)] {
        if let Some(path) = path {
            if !std::path::Path::new(path).exists() {
                return Err(format!("{name} \"{path}\" does not exist").into());
            }
        }
    }
    let Some(certfile) = s.certfile.as_deref() else {
        return Err("keyfile is set but certfile is not: TLS needs a certificate".into());
    };
    let chain = load_certs("certfile", certfile)?;
    // The key may be in the certfile (gunicorn's and Python's rule).
    let (key_setting, key_path) = match s.keyfile.as_deref() {
        Some(k) => ("keyfile", k),
        None => ("certfile", certfile),
    };
    let key = load_key(key_setting, key_path)?;

    let mut provider = provider::default_provider();
    let all_suites = provider.cipher_suites.clone();
    let mut server_order = false;
    if let Some(list) = s.ciphers.as_deref() {
        let mapped = map_ciphers(list, &all_suites);
        if !mapped.unmapped.is_empty() {
            warnings.push(format!(
                "ciphers: no rustls equivalent for {}; left out (rustls offers {})",
                mapped.unmapped.join(", "),
                all_suites
                    .iter()
                    .map(|s| openssl_name(*s))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if mapped.suites.is_empty() {
            return Err(format!(
                "ciphers \"{list}\": no cipher can be selected (none of its names has a rustls equivalent)"
            ).into());
        }
        provider.cipher_suites = mapped.suites;
        server_order = true;
    }
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = [
        (&rustls::version::TLS13, rustls::ProtocolVersion::TLSv1_3),
        (&rustls::version::TLS12, rustls::ProtocolVersion::TLSv1_2),
    ]
    .into_iter()
    .filter(|(_, v)| {
        provider
            .cipher_suites
            .iter()
            .any(|s| s.version().version == *v)
    })
    .map(|(ver, _)| ver)
    .collect();
    let provider = Arc::new(provider);

    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| format!("TLS: {e}"))?;
    let roots = match (&s.ca_certs, s.cert_reqs) {
        (Some(path), _) => {
            if !std::path::Path::new(path).exists() {
                return Err(format!("ca_certs \"{path}\" does not exist").into());
            }
            let mut roots = RootCertStore::empty();
            for cert in load_certs("ca_certs", path)? {
                roots
                    .add(cert)
                    .map_err(|e| format!("ca_certs \"{path}\": {e}"))?;
            }
            Some(roots)
        }
        // Python's default context loads the system's CAs when no cafile
        // is given; they matter only when client certificates are asked.
        (None, 1 | 2) => {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = RootCertStore::empty();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                return Err(format!(
                    "cert_reqs = {} asks for client certificates, but ca_certs is not set \
                     and no system CA certificates were found: set ca_certs",
                    s.cert_reqs
                )
                .into());
            }
            Some(roots)
        }
        (None, _) => None,
    };
    let builder = match (s.cert_reqs, roots) {
        (0, _) => builder.with_no_client_auth(),
        (n @ (1 | 2), Some(roots)) => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
            let verifier = if n == 1 {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            let verifier = verifier
                .build()
                .map_err(|e| format!("ca_certs: can't verify client certificates: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
        (n, _) => {
            return Err(format!(
                "cert_reqs = {n}: must be 0 (CERT_NONE), 1 (CERT_OPTIONAL) or 2 (CERT_REQUIRED)"
            )
            .into())
        }
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => format!(
            "the private key in {key_setting} \"{key_path}\" does not match the certificate in certfile \"{certfile}\""
        ),
        e => format!("certfile \"{certfile}\" / {key_setting} \"{key_path}\": {e}"),
    })?;
    config.ignore_client_order = server_order;
    // gunicorn's ALPN offer: `http_protocols` in its order of preference
    // (h3 has no TLS-over-TCP name and is left out).
    config.alpn_protocols = s
        .http_protocols
        .iter()
        .filter_map(|p| match p.as_str() {
            "h1" => Some(b"http/1.1".to_vec()),
            "h2" => Some(b"h2".to_vec()),
            _ => None,
        })
        .collect();
    if config.alpn_protocols.is_empty() {
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
    }
    let config = Arc::new(config);
    Ok(Built {
        tls: Some(Tls {
            acceptor: tokio_rustls::TlsAcceptor::from(config),
            suppress_ragged_eofs: s.suppress_ragged_eofs,
        }),
        warnings,
    })
}

fn load_certs(setting: &str, path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{setting} \"{path}\": can't read PEM certificates: {e}"))?;
    if certs.is_empty() {
        return Err(format!(
            "{setting} \"{path}\": no certificate found (a PEM \"BEGIN CERTIFICATE\" block is expected)"
        ));
    }
    Ok(certs)
}

fn load_key(setting: &str, path: &str) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => format!(
            "{setting} \"{path}\": no private key found (an unencrypted PEM key is expected: \
             PKCS#8 \"BEGIN PRIVATE KEY\", \"BEGIN RSA PRIVATE KEY\" or \"BEGIN EC PRIVATE KEY\")"
        ),
        e => format!("{setting} \"{path}\": can't read the private key: {e}"),
    })
}

impl Tls {
    /// In the worker's connection task: the handshake, within `timeout`.
    /// `None` when it fails (logged as gunicorn does: a warning naming
    /// the client for a TLS error, debug for a client that went away).
    pub async fn accept<S>(&self, stream: S, timeout: Duration, peer: &str) -> Option<TlsConn<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        match tokio::time::timeout(timeout, self.acceptor.accept(stream)).await {
            Ok(Ok(stream)) => Some(TlsConn {
                inner: stream,
                suppress_ragged_eofs: self.suppress_ragged_eofs,
            }),
            Ok(Err(e)) => {
                match e.kind() {
                    io::ErrorKind::UnexpectedEof
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::BrokenPipe => log::debug("ssl connection closed"),
                    _ => log::warning(&format!("Invalid request from ip={peer}: {e}")),
                }
                None
            }
            Err(_) => {
                log::debug(&format!(
                    "TLS handshake from ip={peer} timed out after {}s",
                    timeout.as_secs()
                ));
                None
            }
        }
    }
}

/// A server-side TLS connection after its handshake.
pub struct TlsConn<S> {
    inner: tokio_rustls::server::TlsStream<S>,
    suppress_ragged_eofs: bool,
}

impl<S> TlsConn<S> {
    /// The ALPN protocol agreed on (`http/1.1`), if the client asked.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        self.inner.get_ref().1.alpn_protocol()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsConn<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            // A peer that closed without close_notify: rustls reports
            // UnexpectedEof; Python's suppress_ragged_eofs reads it as EOF.
            Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                if this.suppress_ragged_eofs {
                    Poll::Ready(Ok(()))
                } else {
                    log::debug("ssl connection closed");
                    Poll::Ready(Err(e))
                }
            }
            other => other,
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsConn<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// An OpenSSL cipher list mapped onto rustls suites.
#[derive(Debug, Default)]
pub struct MappedCiphers {
    /// In preference order: TLS 1.3 suites first, then TLS 1.2.
    pub suites: Vec<SupportedCipherSuite>,
    /// Names (or categories) asked for that rustls has no equivalent of.
    pub unmapped: Vec<String>,
}

/// The OpenSSL name of a rustls suite (TLS 1.3 suites keep their IANA name).
pub fn openssl_name(s: SupportedCipherSuite) -> String {
    use rustls::CipherSuite as C;
    match s.suite() {
        C::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 => "ECDHE-ECDSA-AES256-GCM-SHA384".into(),
        C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 => "ECDHE-ECDSA-AES128-GCM-SHA256".into(),
        C::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256 => "ECDHE-ECDSA-CHACHA20-POLY1305".into(),
        C::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => "ECDHE-RSA-AES256-GCM-SHA384".into(),
        C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => "ECDHE-RSA-AES128-GCM-SHA256".into(),
        C::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => "ECDHE-RSA-CHACHA20-POLY1305".into(),
        C::TLS13_AES_256_GCM_SHA384 => "TLS_AES_256_GCM_SHA384".into(),
        C::TLS13_AES_128_GCM_SHA256 => "TLS_AES_128_GCM_SHA256".into(),
        C::TLS13_CHACHA20_POLY1305_SHA256 => "TLS_CHACHA20_POLY1305_SHA256".into(),
        other => format!("{other:?}"),
    }
}

/// The OpenSSL words a TLS 1.2 suite answers to, besides its names:
/// the aliases of `openssl ciphers` that describe it.
fn tls12_tags(name: &str) -> Vec<&'static str> {
    let mut tags = vec![
        "ALL", "DEFAULT", "HIGH", "TLSv1.2", "AEAD", "ECDHE", "EECDH", "kECDHE", "kEECDH", "ECDH",
    ];
    if name.contains("-ECDSA-") {
        tags.extend(["ECDSA", "aECDSA"]);
    } else {
        tags.extend(["RSA", "aRSA"]);
    }
    if name.contains("AES256-GCM") {
        tags.extend(["AES", "AESGCM", "AES256", "SHA384"]);
    } else if name.contains("AES128-GCM") {
        tags.extend(["AES", "AESGCM", "AES128", "SHA256"]);
    } else if name.contains("CHACHA20") {
        tags.extend(["CHACHA20", "SHA256"]);
    }
    tags
}

/// Map an OpenSSL cipher list (`:`, `,`, `;` or space separated; `!`, `-`
/// and `+` prefixes; `A+B` intersections; `@STRENGTH`-style directives
/// ignored) onto `available`. As in OpenSSL the list picks the TLS 1.2
/// suites and leaves TLS 1.3 alone, unless it names TLS 1.3 suites
/// (`TLS_AES_256_GCM_SHA384`): then only those are offered. A word that
/// matches nothing in rustls is reported in `unmapped` when it asks for
/// something (excluding what rustls never offers needs no warning).
pub fn map_ciphers(list: &str, available: &[SupportedCipherSuite]) -> MappedCiphers {
    let is13 = |s: &SupportedCipherSuite| matches!(s, SupportedCipherSuite::Tls13(_));
    let names: Vec<(SupportedCipherSuite, String, String)> = available
        .iter()
        .map(|s| (*s, openssl_name(*s), format!("{:?}", s.suite())))
        .collect();
    // Does suite `i` match one `A+B+C` element (case-sensitive, as OpenSSL)?
    let matches = |i: usize, word: &str| -> bool {
        let (suite, openssl, iana) = &names[i];
        word.split('+').all(|part| {
            part == openssl || part == iana || (!is13(suite) && tls12_tags(openssl).contains(&part))
        })
    };
    let mut tls12: Vec<usize> = Vec::new();
    let mut tls13: Vec<usize> = Vec::new();
    let mut banned: HashSet<usize> = HashSet::new();
    let mut unmapped = Vec::new();
    for word in list
        .split([':', ',', ';', ' '])
        .map(str::trim)
        .filter(|w| !w.is_empty())
    {
        if word.starts_with('@') {
            continue;
        }
        let (op, body) = match word.as_bytes()[0] {
            b'!' | b'-' | b'+' => (word.as_bytes()[0], &word[1..]),
            _ => (b' ', word),
        };
        let hits: Vec<usize> = (0..names.len()).filter(|&i| matches(i, body)).collect();
        match op {
            b'!' => {
                banned.extend(&hits);
                tls12.retain(|i| !hits.contains(i));
                tls13.retain(|i| !hits.contains(i));
            }
            b'-' => {
                tls12.retain(|i| !hits.contains(i));
                tls13.retain(|i| !hits.contains(i));
            }
            b'+' => {
                // Move what is already selected to the end.
                for list in [&mut tls12, &mut tls13] {
                    let (moved, kept): (Vec<usize>, Vec<usize>) =
                        list.iter().partition(|i| hits.contains(i));
                    *list = kept.into_iter().chain(moved).collect();
                }
            }
            _ => {
                if hits.is_empty() {
                    unmapped.push(word.to_string());
                }
                for i in hits {
                    let list = if is13(&names[i].0) {
                        &mut tls13
                    } else {
                        &mut tls12
                    };
                    if !banned.contains(&i) && !list.contains(&i) {
                        list.push(i);
                    }
                }
            }
        }
    }
    let named13 = !tls13.is_empty();
    let mut suites: Vec<SupportedCipherSuite> = if named13 {
        tls13.iter().map(|&i| names[i].0).collect()
    } else if tls12.is_empty() {
        // Nothing selected at all: OpenSSL's "No cipher can be selected".
        Vec::new()
    } else {
        (0..names.len())
            .filter(|&i| is13(&names[i].0) && !banned.contains(&i))
            .map(|i| names[i].0)
            .collect()
    };
    suites.extend(tls12.iter().map(|&i| names[i].0));
    MappedCiphers { suites, unmapped }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &str) -> (Vec<String>, Vec<String>) {
        let all = provider::default_provider().cipher_suites;
        let m = map_ciphers(list, &all);
        (m.suites.into_iter().map(openssl_name).collect(), m.unmapped)
    }

    const TLS13: [&str; 3] = [
        "TLS_AES_256_GCM_SHA384",
        "TLS_AES_128_GCM_SHA256",
        "TLS_CHACHA20_POLY1305_SHA256",
    ];

    #[test]
    fn one_tls12_name_keeps_tls13_as_openssl() {
        let (suites, unmapped) = names("ECDHE-RSA-AES128-GCM-SHA256");
        let mut want: Vec<String> = TLS13.iter().map(|s| s.to_string()).collect();
        want.push("ECDHE-RSA-AES128-GCM-SHA256".into());
        assert_eq!(suites, want);
        assert!(unmapped.is_empty());
    }

    #[test]
    fn tls13_names_restrict_tls13() {
        let (suites, _) = names("TLS_AES_256_GCM_SHA384");
        assert_eq!(suites, vec!["TLS_AES_256_GCM_SHA384"]);
        let (suites, _) = names("TLS_CHACHA20_POLY1305_SHA256:ECDHE-ECDSA-AES256-GCM-SHA384");
        assert_eq!(
            suites,
            vec![
                "TLS_CHACHA20_POLY1305_SHA256",
                "ECDHE-ECDSA-AES256-GCM-SHA384"
            ]
        );
    }

    #[test]
    fn aliases_intersections_and_exclusions() {
        let (suites, unmapped) = names("ECDHE+AESGCM:!aECDSA");
        assert_eq!(
            suites[3..],
            ["ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-RSA-AES128-GCM-SHA256"]
        );
        assert!(unmapped.is_empty());
        let (suites, unmapped) = names("HIGH:!aNULL:!MD5:@STRENGTH");
        assert_eq!(suites.len(), 9);
        assert!(unmapped.is_empty(), "{unmapped:?}");
        // `-` removes, a later word may add back; `!` removes for good.
        let (suites, _) = names("AES128:-aRSA:ECDHE-RSA-AES128-GCM-SHA256");
        assert_eq!(
            suites[3..],
            [
                "ECDHE-ECDSA-AES128-GCM-SHA256",
                "ECDHE-RSA-AES128-GCM-SHA256"
            ]
        );
        let (suites, _) = names("!aRSA:AES128");
        assert_eq!(suites[3..], ["ECDHE-ECDSA-AES128-GCM-SHA256"]);
        // `+` moves to the end.
        let (suites, _) = names("CHACHA20:AES128:+CHACHA20");
        assert_eq!(
            suites[3..],
            [
                "ECDHE-ECDSA-AES128-GCM-SHA256",
                "ECDHE-RSA-AES128-GCM-SHA256",
                "ECDHE-ECDSA-CHACHA20-POLY1305",
                "ECDHE-RSA-CHACHA20-POLY1305"
            ]
        );
    }

    #[test]
    fn names_without_equivalent_are_reported() {
        let (suites, unmapped) =
            names("DHE-RSA-AES256-GCM-SHA384,ECDHE-RSA-AES256-GCM-SHA384 AES256-SHA:!RC4");
        assert_eq!(suites[3..], ["ECDHE-RSA-AES256-GCM-SHA384"]);
        assert_eq!(unmapped, vec!["DHE-RSA-AES256-GCM-SHA384", "AES256-SHA"]);
        let (suites, unmapped) = names("FOO:!aNULL");
        assert!(suites.is_empty());
        assert_eq!(unmapped, vec!["FOO"]);
    }

    #[test]
    fn iana_names_map_too() {
        let (suites, unmapped) = names("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256");
        assert_eq!(suites[3..], ["ECDHE-RSA-AES128-GCM-SHA256"]);
        assert!(unmapped.is_empty());
    }

    #[test]
    fn listening_url_is_https() {
        assert_eq!(
            listening_url("http://127.0.0.1:8000"),
            "https://127.0.0.1:8000"
        );
        assert_eq!(listening_url("unix:/tmp/s"), "unix:/tmp/s");
    }

    #[test]
    fn tls_off_without_cert_or_key() {
        let built = build(&Settings::default()).unwrap();
        assert!(built.tls.is_none());
        let err = build(&Settings {
            certfile: Some("/nonexistent/cert.pem".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(err.0, "certfile \"/nonexistent/cert.pem\" does not exist");
        let err = build(&Settings {
            certfile: Some("/nonexistent/cert.pem".into()),
            ssl_context_set: true,
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.0.contains("ssl_context"), "{err}");
    }
}
