//! Peers found by DNS name: the pods of a Kubernetes StatefulSet behind a
//! headless Service are `NAME-0.SERVICE`, `NAME-1.SERVICE`, …, and a name
//! resolves while its pod exists.
//!
//! A [`PeerTemplate`] turns an ordinal into the peer's `host:port`. Whether a
//! name resolves is asked of the system resolver, except for names listed
//! in the hosts-style file named by `SLUICE_HOSTS_FILE`: tests (and hosts
//! without a DNS server) use it to say which peers exist. The file is read
//! on every lookup, so editing it adds or removes peers at once.

use std::collections::HashMap;
use std::net::IpAddr;

/// Environment variable naming an `/etc/hosts`-style file consulted before
/// the system resolver.
pub const HOSTS_FILE_ENV: &str = "SLUICE_HOSTS_FILE";

/// The placeholder a template's ordinal replaces.
const ORDINAL: &str = "{ordinal}";

/// `HOST:PORT` with `{ordinal}` in the host, e.g.
/// `sluice-{ordinal}.sluice-peers.default.svc.cluster.local:7070`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerTemplate(String);

impl PeerTemplate {
    /// Checks that `text` is `HOST:PORT` with `{ordinal}` in the host.
    pub fn parse(text: &str) -> Result<Self, String> {
        let rule =
            "must be HOST:PORT with {ordinal} in the host, e.g. sluice-{ordinal}.sluice-peers:7070";
        let Some((host, port)) = text.rsplit_once(':') else {
            return Err(format!("--peer-dns: {rule}, got {text:?}"));
        };
        if !host.contains(ORDINAL) || port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(format!("--peer-dns: {rule}, got {text:?}"));
        }
        Ok(PeerTemplate(text.to_string()))
    }

    /// The address of the peer with this ordinal.
    pub fn addr(&self, ordinal: u64) -> String {
        self.0.replace(ORDINAL, &ordinal.to_string())
    }
}

/// The ordinal at the end of a StatefulSet pod's host name (`sluice-2` →
/// 2), if it has one.
pub fn ordinal_of_hostname(hostname: &str) -> Option<u64> {
    let (_, n) = hostname.trim().rsplit_once('-')?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    n.parse().ok()
}

/// This host's name: `$HOSTNAME`, else the kernel's.
pub fn hostname() -> Option<String> {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
}

/// Names and addresses of the override file, if one is set and readable.
fn overrides() -> Option<HashMap<String, IpAddr>> {
    // The variable is read once (this runs for every call to a peer); the
    // file on every lookup.
    static PATH: std::sync::OnceLock<Option<std::ffi::OsString>> = std::sync::OnceLock::new();
    let path = PATH
        .get_or_init(|| std::env::var_os(HOSTS_FILE_ENV))
        .as_ref()?;
    match std::fs::read_to_string(path) {
        Ok(text) => Some(parse_hosts(&text)),
        Err(e) => {
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| {
                tracing::warn!(
                    path = %std::path::Path::new(&path).display(),
                    error = %e,
                    "{HOSTS_FILE_ENV} names a file that cannot be read; using the system resolver"
                )
            });
            None
        }
    }
}

/// Parses `/etc/hosts` lines: an address, then names; `#` starts a comment.
fn parse_hosts(text: &str) -> HashMap<String, IpAddr> {
    let mut map = HashMap::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut words = line.split_whitespace();
        let Some(ip) = words.next().and_then(|w| w.parse::<IpAddr>().ok()) else {
            continue;
        };
        for name in words {
            map.entry(name.to_ascii_lowercase()).or_insert(ip);
        }
    }
    map
}

fn split(addr: &str) -> Option<(&str, &str)> {
    addr.rsplit_once(':')
}

/// `addr` with its host replaced by the override file's address for it, if
/// the file lists it; otherwise `addr` unchanged (the system resolver
/// resolves it at each connection).
pub fn dialable(addr: &str) -> std::borrow::Cow<'_, str> {
    let Some((host, port)) = split(addr) else {
        return addr.into();
    };
    match overrides().and_then(|o| o.get(&host.to_ascii_lowercase()).copied()) {
        Some(IpAddr::V4(ip)) => format!("{ip}:{port}").into(),
        Some(IpAddr::V6(ip)) => format!("[{ip}]:{port}").into(),
        None => addr.into(),
    }
}

/// Whether `addr`'s host resolves now. With an override file, only its
/// names count (a test's cluster must not find real hosts).
pub async fn resolves(addr: &str) -> bool {
    let Some((host, _)) = split(addr) else {
        return false;
    };
    if host.parse::<IpAddr>().is_ok() {
        return true;
    }
    if let Some(o) = overrides() {
        return o.contains_key(&host.to_ascii_lowercase());
    }
    match tokio::net::lookup_host(addr).await {
        Ok(mut addrs) => addrs.next().is_some(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_need_the_ordinal_and_a_port() {
        let t = PeerTemplate::parse("sluice-{ordinal}.peers.ns.svc:7070").unwrap();
        assert_eq!(t.addr(2), "sluice-2.peers.ns.svc:7070");
        for bad in [
            "sluice-0.peers:7070",
            "sluice-{ordinal}.peers",
            "sluice-{ordinal}:0",
            "sluice-{ordinal}:x",
            "host:{ordinal}",
        ] {
            let err = PeerTemplate::parse(bad).unwrap_err();
            assert!(err.starts_with("--peer-dns:"), "{bad}: {err}");
        }
    }

    #[test]
    fn ordinals_come_from_the_end_of_the_host_name() {
        assert_eq!(ordinal_of_hostname("sluice-0"), Some(0));
        assert_eq!(ordinal_of_hostname("my-sluice-12\n"), Some(12));
        assert_eq!(ordinal_of_hostname("sluice"), None);
        assert_eq!(ordinal_of_hostname("sluice-"), None);
        assert_eq!(ordinal_of_hostname("sluice-a1"), None);
    }

    #[test]
    fn hosts_lines_map_names_to_addresses() {
        let map = parse_hosts(
            "# peers\n127.0.0.11 sluice-0.peers s0 # first\n\n::1 Sluice-1.peers\nnot-an-ip x\n",
        );
        assert_eq!(map["sluice-0.peers"].to_string(), "127.0.0.11");
        assert_eq!(map["s0"].to_string(), "127.0.0.11");
        assert_eq!(map["sluice-1.peers"].to_string(), "::1");
        assert!(!map.contains_key("x"));
    }
}
