//! Which health URLs the controller may probe.
//!
//! A health URL is given by a tenant and fetched by the service from inside the platform, so
//! it could be aimed at addresses no tenant should reach: the cloud's instance metadata
//! (credentials live there), link-local services, or this host itself (loopback, where
//! sidecars keep their admin ports). Those are refused unless an operator allows them
//! (`AUMOS_MLOPS_PROBE_ALLOWED_NETWORKS`). The check runs twice: on the URL when a deployment
//! is created, and on every address a host name resolves to when it is probed, so DNS cannot
//! be used to slip past it.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use url::{Host, Url};

/// Host names of cloud metadata services.
const METADATA_HOSTS: &[&str] = &[
    "metadata",
    "metadata.google.internal",
    "metadata.goog",
    "metadata.azure.internal",
    "instance-data",
    "instance-data.ec2.internal",
];

/// A network in CIDR notation, such as `10.0.0.0/8` or `fd00::/8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    address: IpAddr,
    prefix: u8,
}

impl Network {
    const fn v4(a: u8, b: u8, c: u8, d: u8, prefix: u8) -> Self {
        Self {
            address: IpAddr::V4(Ipv4Addr::new(a, b, c, d)),
            prefix,
        }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.address, canonical(ip)) {
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

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (address, prefix) = match s.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (s, None),
        };
        let address: IpAddr = address
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or network"))?;
        let address = canonical(address);
        let max = if address.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?} has a prefix length outside 0-{max}"))?,
        };
        Ok(Self { address, prefix })
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)
    }
}

/// An IPv4 address written as IPv6 is checked as IPv4: mapped (`::ffff:169.254.169.254`),
/// compatible (`::169.254.169.254`) or translated by NAT64 (`64:ff9b::169.254.169.254`).
fn canonical(ip: IpAddr) -> IpAddr {
    let IpAddr::V6(v6) = ip else {
        return ip;
    };
    if v6.is_loopback() || v6.is_unspecified() {
        return ip;
    }
    let s = v6.segments();
    let embedded = || Ipv4Addr::from((u32::from(s[6]) << 16) | u32::from(s[7]));
    if let Some(v4) = v6.to_ipv4_mapped() {
        IpAddr::V4(v4)
    } else if s[..6] == [0, 0, 0, 0, 0, 0] || s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        IpAddr::V4(embedded())
    } else {
        ip
    }
}

/// The addresses refused by default, with why.
fn refused(ip: IpAddr) -> Option<&'static str> {
    const DENIED_V4: &[(Network, &str)] = &[
        (
            Network::v4(169, 254, 0, 0, 16),
            "link-local and cloud metadata",
        ),
        (Network::v4(100, 100, 100, 200, 32), "cloud metadata"),
        (Network::v4(168, 63, 129, 16, 32), "cloud platform service"),
        (Network::v4(0, 0, 0, 0, 8), "this host"),
        (Network::v4(127, 0, 0, 0, 8), "loopback"),
        (Network::v4(224, 0, 0, 0, 4), "multicast"),
        (Network::v4(255, 255, 255, 255, 32), "broadcast"),
    ];
    match canonical(ip) {
        IpAddr::V4(v4) => DENIED_V4
            .iter()
            .find(|(net, _)| net.contains(IpAddr::V4(v4)))
            .map(|(_, why)| *why),
        IpAddr::V6(v6) => {
            let segments = v6.segments();
            if v6.is_unspecified() {
                Some("this host")
            } else if v6.is_loopback() {
                Some("loopback")
            } else if segments[0] & 0xffc0 == 0xfe80 {
                Some("link-local")
            } else if segments[0] & 0xff00 == 0xff00 {
                Some("multicast")
            } else if v6 == Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254) {
                Some("cloud metadata")
            } else {
                None
            }
        }
    }
}

/// What may be probed: everything except the refused addresses and metadata host names,
/// unless the operator allowed them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProbeTargetPolicy {
    allowed_networks: Vec<Network>,
    allowed_hosts: Vec<String>,
}

impl ProbeTargetPolicy {
    /// Parses a comma-separated allow-list of networks, addresses and host names.
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut policy = Self::default();
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let looks_like_ip = entry.contains(':')
                || entry
                    .chars()
                    .all(|c| c.is_ascii_digit() || c == '.' || c == '/');
            if looks_like_ip {
                policy.allowed_networks.push(entry.parse()?);
            } else {
                policy.allowed_hosts.push(entry.to_ascii_lowercase());
            }
        }
        Ok(policy)
    }

    /// Whether the controller may connect to `ip`; the reason when it may not.
    pub fn check_address(&self, ip: IpAddr) -> Result<(), String> {
        let Some(why) = refused(ip) else {
            return Ok(());
        };
        if self.allowed_networks.iter().any(|n| n.contains(ip)) {
            return Ok(());
        }
        Err(format!(
            "{ip} is a {why} address, which health checks may not reach \
             (AUMOS_MLOPS_PROBE_ALLOWED_NETWORKS can allow it)"
        ))
    }

    /// Checks a health URL as given by a client and returns it parsed.
    pub fn check_url(&self, text: &str) -> Result<Url, String> {
        let url = Url::parse(text.trim()).map_err(|e| format!("is not a valid URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("must be http or https, not {}", url.scheme()));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("must not carry credentials; health endpoints are probed without".into());
        }
        match url.host() {
            None => Err("must name a host".into()),
            Some(Host::Ipv4(ip)) => self.check_address(IpAddr::V4(ip)).map(|()| url),
            Some(Host::Ipv6(ip)) => self.check_address(IpAddr::V6(ip)).map(|()| url),
            Some(Host::Domain(name)) => {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                let allowed = self.allowed_hosts.contains(&name);
                if METADATA_HOSTS.contains(&name.as_str()) && !allowed {
                    return Err(format!(
                        "{name} is a cloud metadata service, which health checks may not \
                         reach (AUMOS_MLOPS_PROBE_ALLOWED_NETWORKS can allow it)"
                    ));
                }
                let local = name == "localhost" || name.ends_with(".localhost");
                if local && !allowed {
                    self.check_address(IpAddr::V4(Ipv4Addr::LOCALHOST))?;
                }
                Ok(url)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_and_link_local_targets_are_refused() {
        let policy = ProbeTargetPolicy::default();

        for url in [
            "http://169.254.169.254/latest/meta-data/",
            "http://[::ffff:169.254.169.254]/",
            "http://[fe80::1]/health",
            "http://[fd00:ec2::254]/",
            "http://metadata.google.internal/computeMetadata/v1/",
            "http://0.0.0.0:8080/health",
            "http://100.100.100.200/",
            "http://127.0.0.1:15000/config_dump",
            "http://[::1]:9000/",
            "http://localhost:8080/health",
            "http://[64:ff9b::a9fe:a9fe]/",
            "http://[::a9fe:a9fe]/",
            "http://168.63.129.16/machine",
        ] {
            assert!(policy.check_url(url).is_err(), "{url} must be refused");
        }
    }

    #[test]
    fn ordinary_service_addresses_are_accepted() {
        let policy = ProbeTargetPolicy::default();

        for url in [
            "http://10.0.3.7:8080/health",
            "https://model-b.serving.svc.cluster.local/healthz",
            "http://[2001:db8::5]/health",
        ] {
            assert!(policy.check_url(url).is_ok(), "{url} must be accepted");
        }
    }

    #[test]
    fn only_http_without_credentials_is_accepted() {
        let policy = ProbeTargetPolicy::default();

        assert!(policy.check_url("ftp://10.0.0.1/health").is_err());
        assert!(policy.check_url("file:///etc/passwd").is_err());
        assert!(policy.check_url("http://user:pw@10.0.0.1/").is_err());
        assert!(policy.check_url("not a url").is_err());
    }

    #[test]
    fn an_allow_list_lets_an_operator_open_a_refused_network() {
        let policy = ProbeTargetPolicy::parse("169.254.10.0/24, metadata").unwrap();

        assert!(policy.check_url("http://169.254.10.9/health").is_ok());
        assert!(policy.check_url("http://169.254.169.254/").is_err());
        assert!(policy.check_url("http://metadata/health").is_ok());
        assert!(ProbeTargetPolicy::parse("10.0.0.0/40").is_err());
        let local = ProbeTargetPolicy::parse("127.0.0.0/8").unwrap();
        assert!(local.check_url("http://127.0.0.1:9000/health").is_ok());
        assert!(local.check_url("http://localhost:9000/health").is_ok());
    }
}
