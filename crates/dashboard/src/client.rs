//! The client's address, for login throttling.
//!
//! The TCP peer (axum's `ConnectInfo`, which [`crate::serve_router`] provides) is the
//! client, unless the peer is a configured trusted proxy: then `X-Forwarded-For` is read
//! from the right, skipping trusted proxies, and the first address that is not one is
//! the client. Without trusted proxies `X-Forwarded-For` is ignored (anyone can send it).
//! Behind a proxy that is not configured, every client has the proxy's address and
//! shares one throttle bucket.

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    str::FromStr,
};

use axum::{extract::ConnectInfo, http::request::Parts};

/// A reverse proxy (an address or a CIDR network) whose `X-Forwarded-For` is trusted.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TrustedProxy {
    net: IpAddr,
    prefix: u8,
}

impl fmt::Debug for TrustedProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.net, self.prefix)
    }
}

impl fmt::Display for TrustedProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A trusted proxy that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid trusted proxy {0:?}: expected an IP address or CIDR network (e.g. 10.0.0.5 or 10.0.0.0/8)"
)]
pub struct TrustedProxyError(String);

impl FromStr for TrustedProxy {
    type Err = TrustedProxyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || TrustedProxyError(s.to_string());
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let net: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?,
            None => max,
        };
        Ok(TrustedProxy {
            net: mask(net, prefix),
            prefix,
        })
    }
}

impl TrustedProxy {
    fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.net.is_ipv4() && mask(ip, self.prefix) == self.net
    }
}

/// `ip` with all but its first `prefix` bits cleared.
pub(crate) fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let m = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(prefix.min(32)))
            };
            IpAddr::V4((bits & m).into())
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let m = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(prefix.min(128)))
            };
            IpAddr::V6((bits & m).into())
        }
    }
}

/// The client address of a request (`None` when the server was not given peer
/// addresses, e.g. a router called in process).
pub(crate) fn client_ip(parts: &Parts, trusted: &[TrustedProxy]) -> Option<IpAddr> {
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_canonical())?;
    if !trusted.iter().any(|t| t.contains(peer)) {
        return Some(peer);
    }
    let hops: Vec<&str> = parts
        .headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        let Ok(ip) = hop.parse::<IpAddr>() else {
            break;
        };
        client = ip.to_canonical();
        if !trusted.iter().any(|t| t.contains(client)) {
            break;
        }
    }
    Some(client)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request;

    fn parts(peer: &str, xff: &[&str]) -> Parts {
        let mut req = Request::get("/").body(()).unwrap();
        for v in xff {
            req.headers_mut()
                .append("x-forwarded-for", v.parse().unwrap());
        }
        req.extensions_mut()
            .insert(ConnectInfo(SocketAddr::new(peer.parse().unwrap(), 1234)));
        req.into_parts().0
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn forwarded_for_counts_only_behind_a_trusted_proxy() {
        let proxies: Vec<TrustedProxy> =
            vec!["10.0.0.0/8".parse().unwrap(), "::1".parse().unwrap()];
        // Not configured: the peer, whatever the header says.
        assert_eq!(
            client_ip(&parts("203.0.113.9", &["198.51.100.1"]), &[]),
            ip("203.0.113.9")
        );
        // An untrusted peer cannot spoof through a header.
        assert_eq!(
            client_ip(&parts("203.0.113.9", &["198.51.100.1"]), &proxies),
            ip("203.0.113.9")
        );
        // Behind a trusted proxy: the rightmost untrusted hop.
        assert_eq!(
            client_ip(
                &parts("10.1.2.3", &["1.1.1.1, 198.51.100.1", "10.9.9.9"]),
                &proxies
            ),
            ip("198.51.100.1")
        );
        assert_eq!(
            client_ip(&parts("::1", &["198.51.100.7"]), &proxies),
            ip("198.51.100.7")
        );
        // Garbage stops the walk at the last good hop.
        assert_eq!(
            client_ip(&parts("10.1.2.3", &["junk, 10.2.2.2"]), &proxies),
            ip("10.2.2.2")
        );
        assert_eq!(client_ip(&parts("10.1.2.3", &[]), &proxies), ip("10.1.2.3"));
        // IPv4-mapped IPv6 peers are their IPv4 address.
        assert_eq!(
            client_ip(&parts("::ffff:10.0.0.1", &["192.0.2.1"]), &proxies),
            ip("192.0.2.1")
        );
    }

    #[test]
    fn trusted_proxies_parse() {
        assert!("10.0.0.0/33".parse::<TrustedProxy>().is_err());
        assert!("nope".parse::<TrustedProxy>().is_err());
        let p: TrustedProxy = "192.168.1.77/24".parse().unwrap();
        assert_eq!(p.to_string(), "192.168.1.0/24");
        assert!(p.contains("192.168.1.5".parse().unwrap()));
        assert!(!p.contains("192.168.2.5".parse().unwrap()));
    }
}
