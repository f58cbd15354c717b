//! The PROXY protocol header (v1 text, v2 binary) before the first
//! request, as gunicorn reads it, from trusted peers only.

use super::*;

impl Framer {
    pub(super) fn proxy(&mut self, rest: &[u8], eof: bool) -> Result<Step<usize>, RequestError> {
        const V2_SIG: &[u8] = b"\r\n\r\n\x00\r\nQUIT\n";
        if rest.len() < 12 {
            return if eof {
                Err(RequestError::no_more_data())
            } else {
                Ok(Step::NeedMore)
            };
        }
        let mode = self.limits.proxy_protocol;
        if matches!(mode, ProxyProtocol::V2 | ProxyProtocol::Auto) && rest.starts_with(V2_SIG) {
            self.proxy_access()?;
            return self.proxy_v2(rest, eof);
        }
        if matches!(mode, ProxyProtocol::V1 | ProxyProtocol::Auto) && rest.starts_with(b"PROXY ") {
            self.proxy_access()?;
            return self.proxy_v1(rest, eof);
        }
        Ok(Step::Done(0))
    }

    pub(super) fn proxy_access(&self) -> Result<(), RequestError> {
        if self.trusted_proxy {
            Ok(())
        } else {
            Err(RequestError::new(
                "ForbiddenProxyRequest",
                403,
                "Forbidden",
                "Request forbidden".into(),
            ))
        }
    }

    pub(super) fn proxy_v1(&mut self, rest: &[u8], eof: bool) -> Result<Step<usize>, RequestError> {
        let Some(idx) = find(rest, b"\r\n") else {
            if rest.len() > MAX_REQUEST_LINE {
                // gunicorn waits without bound; a PROXY v1 line is at most
                // 107 bytes.
                return Err(RequestError::proxy_line(&rest[..MAX_REQUEST_LINE]));
            }
            return if eof {
                Err(RequestError::no_more_data())
            } else {
                Ok(Step::NeedMore)
            };
        };
        let line = &rest[..idx];
        let bits: Vec<&[u8]> = line.split(|&c| c == b' ').collect();
        if bits.len() != 6 {
            return Err(RequestError::proxy_line(line));
        }
        let proto = bits[1];
        // std's address parsers read ASCII bytes only (no Unicode digits
        // or spaces); inet_pton's grammar is the same.
        let parse = |b: &[u8], v6: bool| -> Option<IpAddr> {
            let s = std::str::from_utf8(b).ok().filter(|s| s.is_ascii())?;
            if v6 {
                s.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
            } else {
                s.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
            }
        };
        let v6 = match proto {
            b"TCP4" => false,
            b"TCP6" => true,
            _ => {
                let mut m = b"protocol '".to_vec();
                m.extend_from_slice(proto);
                m.extend_from_slice(b"' not supported");
                return Err(RequestError::proxy_line(&m));
            }
        };
        let (Some(s_addr), Some(d_addr)) = (parse(bits[2], v6), parse(bits[3], v6)) else {
            return Err(RequestError::proxy_line(line));
        };
        let invalid_port = || {
            let mut m = b"invalid port ".to_vec();
            m.extend_from_slice(line);
            RequestError::proxy_line(&m)
        };
        let (Some(sp), Some(dp)) = (port_number(bits[4]), port_number(bits[5])) else {
            return Err(invalid_port());
        };
        let (Ok(sp), Ok(dp)) = (u16::try_from(sp), u16::try_from(dp)) else {
            return Err(invalid_port());
        };
        self.set_proxy_info(ProxyInfo {
            proto: if v6 { "TCP6" } else { "TCP4" },
            client_addr: Some(s_addr),
            client_port: Some(sp),
            proxy_addr: Some(d_addr),
            proxy_port: Some(dp),
        });
        Ok(Step::Done(idx + 2))
    }

    pub(super) fn proxy_v2(&mut self, rest: &[u8], eof: bool) -> Result<Step<usize>, RequestError> {
        let need_more = |eof| {
            if eof {
                Err(RequestError::no_more_data())
            } else {
                Ok(Step::NeedMore)
            }
        };
        if rest.len() < 16 {
            return need_more(eof);
        }
        let ver_cmd = rest[12];
        let fam_proto = rest[13];
        let length = u16::from_be_bytes([rest[14], rest[15]]) as usize;
        if ver_cmd >> 4 != 2 {
            return Err(RequestError::proxy_header());
        }
        let command = ver_cmd & 0x0f;
        if command > 1 {
            return Err(RequestError::proxy_header());
        }
        let total = 16 + length;
        if rest.len() < total {
            return need_more(eof);
        }
        let unspec = ProxyInfo {
            proto: "LOCAL",
            client_addr: None,
            client_port: None,
            proxy_addr: None,
            proxy_port: None,
        };
        if command == 0 {
            self.set_proxy_info(unspec);
            return Ok(Step::Done(total));
        }
        if fam_proto & 0x0f != 1 {
            return Err(RequestError::proxy_header());
        }
        let a = &rest[16..total];
        let port = |b: &[u8]| u16::from_be_bytes([b[0], b[1]]);
        let info = match fam_proto >> 4 {
            1 => {
                if length < 12 {
                    return Err(RequestError::proxy_header());
                }
                ProxyInfo {
                    proto: "TCP4",
                    client_addr: Some(IpAddr::from([a[0], a[1], a[2], a[3]])),
                    proxy_addr: Some(IpAddr::from([a[4], a[5], a[6], a[7]])),
                    client_port: Some(port(&a[8..])),
                    proxy_port: Some(port(&a[10..])),
                }
            }
            2 => {
                if length < 36 {
                    return Err(RequestError::proxy_header());
                }
                let ip = |b: &[u8]| {
                    let mut o = [0u8; 16];
                    o.copy_from_slice(&b[..16]);
                    IpAddr::from(o)
                };
                ProxyInfo {
                    proto: "TCP6",
                    client_addr: Some(ip(&a[0..])),
                    proxy_addr: Some(ip(&a[16..])),
                    client_port: Some(port(&a[32..])),
                    proxy_port: Some(port(&a[34..])),
                }
            }
            0 => ProxyInfo {
                proto: "UNSPEC",
                ..unspec
            },
            _ => return Err(RequestError::proxy_header()),
        };
        self.set_proxy_info(info);
        Ok(Step::Done(total))
    }
}

/// A PROXY v1 port: ASCII decimal digits only, on the bytes as sent.
/// gunicorn's `int()` also takes surrounding whitespace (Unicode's too,
/// after its latin-1 decode), a sign and `_` separators; those are
/// refused here. `u32::MAX` stands for any value past it (out of range
/// either way).
pub(super) fn port_number(b: &[u8]) -> Option<u32> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0u32, |acc, &c| {
        acc.saturating_mul(10).saturating_add((c - b'0') as u32)
    }))
}
