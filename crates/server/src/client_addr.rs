//! Who the client is: the TCP peer, or, when the peer is a trusted reverse
//! proxy or load balancer (`--trusted-proxies`), the address it reports in
//! `X-Forwarded-For`. Never the header from anyone else: a client could
//! name any address in it.

use std::net::IpAddr;
use std::str::FromStr;

use axum::http::HeaderMap;

/// One network, e.g. `10.0.0.0/8`, or one address (`/32`, `/128`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    addr: IpAddr,
    prefix: u8,
}

impl Network {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Network {
    type Err = String;

    fn from_str(text: &str) -> Result<Network, String> {
        let text = text.trim();
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| {
            format!("{text:?} is not an IP address or CIDR (e.g. 10.0.0.0/8, 192.0.2.7, fd00::/8)")
        })?;
        let addr = canonical(addr);
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?}: the prefix length must be 0 to {max}"))?,
        };
        Ok(Network { addr, prefix })
    }
}

/// An IPv4 address written as IPv6 (`::ffff:10.0.0.1`, what a dual-stack
/// socket reports) is the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// The `--trusted-proxies` list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<Network>);

impl TrustedProxies {
    /// A comma- or space-separated list of IPs and CIDRs; empty trusts none.
    pub fn parse(text: &str) -> Result<TrustedProxies, String> {
        text.split([',', ' '])
            .filter(|part| !part.trim().is_empty())
            .map(Network::from_str)
            .collect::<Result<Vec<_>, _>>()
            .map(TrustedProxies)
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(ip))
    }

    /// The client of a request that came from `peer`: the peer itself,
    /// unless it is trusted; then the right-most `X-Forwarded-For` address
    /// that is not itself a trusted proxy (each proxy appends the address it
    /// saw, so entries left of the first untrusted one are the client's to
    /// write). A trusted peer with no usable header is the client.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if !self.trusts(peer) {
            return peer;
        }
        let mut client = peer;
        let hops = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .collect::<Vec<_>>();
        for hop in hops.iter().rev() {
            let Ok(ip) = hop.trim().parse::<IpAddr>() else {
                break; // garbage: stop at the last address a trusted hop wrote
            };
            client = canonical(ip);
            if !self.trusts(client) {
                break;
            }
        }
        client
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in xff {
            headers.append("x-forwarded-for", value.parse().unwrap());
        }
        headers
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn networks_and_addresses_parse_and_match() {
        let list = TrustedProxies::parse("10.0.0.0/8, 192.0.2.7 fd00::/8").unwrap();
        assert!(list.trusts(ip("10.200.1.1")));
        assert!(list.trusts(ip("::ffff:10.1.2.3")));
        assert!(list.trusts(ip("192.0.2.7")));
        assert!(!list.trusts(ip("192.0.2.8")));
        assert!(list.trusts(ip("fd12::1")));
        assert!(!list.trusts(ip("fe80::1")));
        assert!(TrustedProxies::parse("0.0.0.0/0")
            .unwrap()
            .trusts(ip("8.8.8.8")));
        assert_eq!(
            TrustedProxies::parse("").unwrap(),
            TrustedProxies::default()
        );
        for bad in ["10.0.0.0/33", "proxy.internal", "10.0.0/8", "::/129"] {
            let error = TrustedProxies::parse(bad).unwrap_err();
            assert!(error.contains(bad.split('/').next().unwrap()), "{error}");
        }
    }

    #[test]
    fn the_header_counts_only_from_a_trusted_peer() {
        let list = TrustedProxies::parse("10.0.0.0/8").unwrap();
        // From an untrusted peer, the header is the client's own claim.
        assert_eq!(
            list.client(ip("203.0.113.9"), &headers(&["198.51.100.1"])),
            ip("203.0.113.9")
        );
        // Nothing trusted: the peer, whatever the header says.
        assert_eq!(
            TrustedProxies::default().client(ip("10.0.0.1"), &headers(&["198.51.100.1"])),
            ip("10.0.0.1")
        );
        // Through the load balancer: the address it saw.
        assert_eq!(
            list.client(ip("10.0.0.1"), &headers(&["198.51.100.1"])),
            ip("198.51.100.1")
        );
        // A client-written entry on the left is ignored; trusted hops are skipped.
        assert_eq!(
            list.client(
                ip("10.0.0.1"),
                &headers(&["6.6.6.6, 198.51.100.1", "10.0.0.2"])
            ),
            ip("198.51.100.1")
        );
        // A trusted peer without the header, or with garbage, is the client.
        assert_eq!(list.client(ip("10.0.0.1"), &headers(&[])), ip("10.0.0.1"));
        assert_eq!(
            list.client(ip("10.0.0.1"), &headers(&["not-an-ip"])),
            ip("10.0.0.1")
        );
    }
}
