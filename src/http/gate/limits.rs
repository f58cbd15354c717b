//! The settings the gate applies ([`Limits`]: gunicorn's request limits,
//! strictness flags, `header_map`, the PROXY protocol and the trusted
//! peers), with gunicorn's normalisation of each.

use super::*;

/// gunicorn's `header_map` setting: what to do with a header field whose
/// name contains `_` (it would map to the same WSGI key as one with `-`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderMapPolicy {
    /// Default: the field is dropped (the app never sees it).
    Drop,
    /// The request is refused with 400.
    Refuse,
    /// The field is kept.
    Dangerous,
}

/// gunicorn's `proxy_protocol` setting (normalised: `True` is `Auto`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyProtocol {
    Off,
    V1,
    V2,
    Auto,
}

/// The settings the framer applies, with gunicorn's names and raw values
/// (the normalisation gunicorn applies, e.g. `limit_request_line >= 8190`
/// means 8190, is done here). `Default` is gunicorn 27.0.1's defaults.
#[derive(Clone, Debug)]
pub struct Limits {
    /// 0 = unlimited; values >= 8190 mean 8190.
    pub limit_request_line: i64,
    /// <= 0 or > 32768 mean 32768.
    pub limit_request_fields: i64,
    /// <= 0 means 8190.
    pub limit_request_field_size: i64,
    pub permit_unconventional_http_method: bool,
    pub permit_unconventional_http_version: bool,
    pub casefold_http_method: bool,
    pub permit_obsolete_folding: bool,
    pub strip_header_spaces: bool,
    pub header_map: HeaderMapPolicy,
    /// `(NAME, value)` pairs as in the config dict; the name is compared
    /// with the upper-cased field name, the value exactly.
    pub secure_scheme_headers: Vec<(String, String)>,
    /// Entries of `forwarded_allow_ips`: `*`, addresses or networks.
    pub forwarded_allow_ips: Vec<String>,
    pub forwarder_headers: Vec<String>,
    pub proxy_protocol: ProxyProtocol,
    pub proxy_allow_ips: Vec<String>,
    /// Not a gunicorn setting: how many bytes of a chunked request (head
    /// and body) are held back from hyper until the whole body is
    /// validated. A chunked request that fails within this many bytes never
    /// reaches the app, so the answer is exactly gunicorn's; a longer one
    /// is streamed, and a late error closes the connection after hyper's
    /// view of the body ends early (see [`GatedIo`]). 0 disables holding.
    pub hold_limit: usize,
    /// The two allow-lists parsed, on first use (the peer is checked per
    /// connection and, for Python apps, per request).
    pub parsed_allow: OnceLock<(Vec<AllowEntry>, Vec<AllowEntry>)>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            limit_request_line: 4094,
            limit_request_fields: 100,
            limit_request_field_size: 8190,
            permit_unconventional_http_method: false,
            permit_unconventional_http_version: false,
            casefold_http_method: false,
            permit_obsolete_folding: false,
            strip_header_spaces: false,
            header_map: HeaderMapPolicy::Drop,
            secure_scheme_headers: vec![
                ("X-FORWARDED-PROTOCOL".into(), "ssl".into()),
                ("X-FORWARDED-PROTO".into(), "https".into()),
                ("X-FORWARDED-SSL".into(), "on".into()),
            ],
            forwarded_allow_ips: vec!["127.0.0.1".into(), "::1".into()],
            forwarder_headers: vec!["SCRIPT_NAME".into(), "PATH_INFO".into()],
            proxy_protocol: ProxyProtocol::Off,
            proxy_allow_ips: vec!["127.0.0.1".into(), "::1".into()],
            hold_limit: 64 * 1024,
            parsed_allow: OnceLock::new(),
        }
    }
}

pub(super) const MAX_REQUEST_LINE: usize = 8190;
pub(super) const MAX_HEADERS: usize = 32768;
pub(super) const DEFAULT_MAX_HEADERFIELD_SIZE: usize = 8190;

impl Limits {
    /// The request line limit in bytes, 0 = unlimited.
    pub fn request_line_limit(&self) -> usize {
        match self.limit_request_line {
            n if n < 0 => MAX_REQUEST_LINE,
            n => (n as usize).min(MAX_REQUEST_LINE),
        }
    }

    /// The maximum number of header fields.
    pub fn fields_limit(&self) -> usize {
        match self.limit_request_fields {
            n if n <= 0 || n as usize > MAX_HEADERS => MAX_HEADERS,
            n => n as usize,
        }
    }

    /// The maximum size of one header field (name, value, folds, CRLF).
    pub fn field_size_limit(&self) -> usize {
        match self.limit_request_field_size {
            n if n <= 0 => DEFAULT_MAX_HEADERFIELD_SIZE,
            n => n as usize,
        }
    }

    /// gunicorn's `max_buffer_headers`: the header block (and the trailer
    /// section) may not grow past this without its terminator.
    pub fn max_buffer_headers(&self) -> usize {
        self.fields_limit() * (self.field_size_limit() + 2) + 4
    }

    /// The value for hyper's `http1::Builder::max_buf_size`, so that hyper
    /// never refuses a head the framer accepted.
    pub fn hyper_max_buf_size(&self) -> usize {
        // The request line; for a marked head the target and the
        // `Content-Length` as sent again, in hex (see [`RawHead`]).
        let line = match self.request_line_limit() {
            0 => 1024 * 1024,
            n => n,
        };
        (self.max_buffer_headers() + 3 * line + 2 * self.field_size_limit() + 128).max(8192)
    }

    /// The value for hyper's `http1::Builder::max_headers`.
    pub fn hyper_max_headers(&self) -> usize {
        self.fields_limit()
    }

    /// Whether `peer` may set the scheme and forwarder headers
    /// (`forwarded_allow_ips`). `None` (a UNIX socket) is trusted.
    pub fn trusts_forwarder(&self, peer: Option<IpAddr>) -> bool {
        entries_allow(&self.allow_lists().0, peer)
    }

    /// Whether `peer` may send a PROXY protocol header (`proxy_allow_ips`).
    pub fn trusts_proxy(&self, peer: Option<IpAddr>) -> bool {
        entries_allow(&self.allow_lists().1, peer)
    }

    pub(super) fn allow_lists(&self) -> &(Vec<AllowEntry>, Vec<AllowEntry>) {
        self.parsed_allow.get_or_init(|| {
            let parse = |l: &[String]| l.iter().filter_map(|e| AllowEntry::parse(e)).collect();
            (
                parse(&self.forwarded_allow_ips),
                parse(&self.proxy_allow_ips),
            )
        })
    }
}

/// One entry of an allow-list: `*`, or an address with a prefix length.
#[derive(Clone, Copy, Debug)]
pub enum AllowEntry {
    Any,
    Net(IpAddr, Option<u8>),
}

impl AllowEntry {
    /// `None` for an entry that names no address (it never matches).
    pub(super) fn parse(entry: &str) -> Option<AllowEntry> {
        let entry = entry.trim();
        if entry == "*" {
            return Some(AllowEntry::Any);
        }
        let (addr, prefix) = match entry.split_once('/') {
            Some((a, p)) => (a, p.parse::<u8>().ok()),
            None => (entry, None),
        };
        addr.parse::<IpAddr>()
            .ok()
            .map(|net| AllowEntry::Net(net, prefix))
    }
}

/// gunicorn's `_ip_in_allow_list`: `*`, an address, or a network
/// (`ipaddress.ip_network`); `None` (not an IP peer) is always allowed.
pub(super) fn entries_allow(entries: &[AllowEntry], peer: Option<IpAddr>) -> bool {
    let Some(ip) = peer else { return true };
    entries.iter().any(|&entry| {
        let (net, prefix) = match entry {
            AllowEntry::Any => return true,
            AllowEntry::Net(net, prefix) => (net, prefix),
        };
        match (net, ip) {
            (IpAddr::V4(n), IpAddr::V4(i)) => {
                let bits = prefix.unwrap_or(32).min(32) as u32;
                let mask = if bits == 0 {
                    0
                } else {
                    u32::MAX << (32 - bits)
                };
                u32::from(n) & mask == u32::from(i) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(i)) => {
                let bits = prefix.unwrap_or(128).min(128) as u32;
                let mask = if bits == 0 {
                    0
                } else {
                    u128::MAX << (128 - bits)
                };
                u128::from(n) & mask == u128::from(i) & mask
            }
            _ => false,
        }
    })
}
