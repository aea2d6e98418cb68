//! Where a node may send HTTP/S deliveries (topic subscriptions), so that a
//! subscription cannot turn the broker into a proxy into its own network
//! (server-side request forgery).
//!
//! Outside the development mode, loopback, private, link-local, shared
//! (carrier-grade NAT), multicast and unspecified addresses are refused
//! unless `--http-allow` lists them; `--http-deny` refuses more. The check
//! is made on the addresses actually connected to: host names are resolved
//! through [`Destinations::resolver`], which drops refused addresses (so a
//! name that resolves to an internal address, or is re-pointed there after
//! the subscription was made, fails), and IP literals are checked before
//! the request is sent. Redirects are not followed.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// An address block, `ADDRESS/PREFIX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `10.0.0.0/8`, `fd00::/8` or a single address.
    pub fn parse(s: &str) -> Option<Cidr> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a.parse::<IpAddr>().ok()?, p.parse::<u8>().ok()?),
            None => {
                let a = s.parse::<IpAddr>().ok()?;
                (a, if a.is_ipv4() { 32 } else { 128 })
            }
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (prefix <= max).then_some(Cidr { addr, prefix })
    }

    /// Whether `ip` is in the block.
    pub fn contains(&self, ip: IpAddr) -> bool {
        fn bits(ip: IpAddr) -> (u128, u8) {
            match ip {
                IpAddr::V4(v) => (u128::from(u32::from(v)) << 96, 32),
                IpAddr::V6(v) => (u128::from(v), 128),
            }
        }
        let ip = canonical(ip);
        let ((a, alen), (b, blen)) = (bits(self.addr), bits(ip));
        if alen != blen {
            return false;
        }
        if self.prefix == 0 {
            return true;
        }
        let mask = u128::MAX << (128 - u32::from(self.prefix));
        a & mask == b & mask
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v) => v.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// The blocks refused by default: where a broker's own network lives.
const INTERNAL: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "::/128",
    "::1/128",
    "fc00::/7",
    "fe80::/10",
    "ff00::/8",
];

/// The rules for outbound HTTP/S destinations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destinations {
    allow: Vec<Cidr>,
    deny: Vec<Cidr>,
    block_internal: bool,
}

fn cidrs(flag: &str, list: Option<&str>) -> Result<Vec<Cidr>, String> {
    list.unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            Cidr::parse(s).ok_or_else(|| {
                format!("{flag}: each entry must be an address or ADDRESS/PREFIX, got {s:?}")
            })
        })
        .collect()
}

impl Destinations {
    /// The rules from `--http-allow` and `--http-deny`; internal addresses
    /// are allowed only in the development mode (`dev`).
    pub fn parse(allow: Option<&str>, deny: Option<&str>, dev: bool) -> Result<Self, String> {
        Ok(Destinations {
            allow: cidrs("--http-allow", allow)?,
            deny: cidrs("--http-deny", deny)?,
            block_internal: !dev,
        })
    }

    /// Anything goes (tests of other things).
    pub fn open() -> Self {
        Destinations {
            allow: Vec::new(),
            deny: Vec::new(),
            block_internal: false,
        }
    }

    /// Why `ip` may not be delivered to, if it may not.
    pub fn refusal(&self, ip: IpAddr) -> Option<String> {
        let ip = canonical(ip);
        if self.deny.iter().any(|c| c.contains(ip)) {
            return Some(format!("{ip} is refused by --http-deny"));
        }
        if self.allow.iter().any(|c| c.contains(ip)) {
            return None;
        }
        if self.block_internal
            && INTERNAL
                .iter()
                .filter_map(|c| Cidr::parse(c))
                .any(|c| c.contains(ip))
        {
            return Some(format!(
                "{ip} is a loopback, private or link-local address, refused outside the development mode unless --http-allow lists it"
            ));
        }
        None
    }

    /// Why a delivery to `url` may not be made, judging its host if it is
    /// an IP literal (names are judged as they resolve).
    pub fn refusal_of_url(&self, url: &str) -> Option<String> {
        let parsed = reqwest::Url::parse(url).ok()?;
        let host = parsed
            .host_str()?
            .trim_start_matches('[')
            .trim_end_matches(']');
        self.refusal(host.parse::<IpAddr>().ok()?)
    }

    /// A DNS resolver for reqwest that keeps only allowed addresses.
    pub fn resolver(self: &Arc<Self>) -> Arc<Resolver> {
        Arc::new(Resolver {
            rules: self.clone(),
        })
    }
}

/// Resolves names with the system, dropping refused addresses.
pub struct Resolver {
    rules: Arc<Destinations>,
}

impl reqwest::dns::Resolve for Resolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let rules = self.rules.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut why = None;
            let allowed: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| match rules.refusal(a.ip()) {
                    Some(r) => {
                        why = Some(r);
                        false
                    }
                    None => true,
                })
                .collect();
            if allowed.is_empty() {
                let reason = why.unwrap_or_else(|| "no address".into());
                return Err(format!("{host}: {reason}").into());
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_refused_outside_development_unless_allowed() {
        let prod = Destinations::parse(Some("10.1.2.0/24"), Some("203.0.113.7"), false).unwrap();
        for ip in [
            "127.0.0.1",
            "10.0.0.1",
            "172.20.1.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd12::1",
            "::ffff:127.0.0.1",
            "203.0.113.7",
        ] {
            assert!(prod.refusal(ip.parse().unwrap()).is_some(), "{ip}");
        }
        for ip in ["10.1.2.3", "93.184.216.34", "2606:2800:220:1::1"] {
            assert!(prod.refusal(ip.parse().unwrap()).is_none(), "{ip}");
        }
        let dev = Destinations::parse(None, None, true).unwrap();
        assert!(dev.refusal("127.0.0.1".parse().unwrap()).is_none());
        assert!(prod
            .refusal_of_url("http://169.254.169.254/latest/meta-data")
            .is_some());
        assert!(prod.refusal_of_url("http://[::1]:8080/x").is_some());
        assert!(prod.refusal_of_url("https://example.com/hook").is_none());
    }

    #[test]
    fn bad_lists_name_the_flag() {
        let e = Destinations::parse(Some("10.0.0.0/33"), None, false).unwrap_err();
        assert!(e.starts_with("--http-allow:"), "{e}");
        let e = Destinations::parse(None, Some("nonsense"), false).unwrap_err();
        assert!(e.starts_with("--http-deny:"), "{e}");
    }
}
