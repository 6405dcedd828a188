//! What the operator allows a spoke to announce for steering: networks its
//! public addresses must lie in, and host names its probe URL may use. Set
//! when the spoke (or its fleet) is added, or later with `ferry-hub spoke
//! allow`; a spoke's hello is held to it, so an enrolled spoke cannot make
//! the DNS send clients to an address of its choosing, nor have clients
//! probe a URL of its choosing. Nothing allowed, nothing announced.

use std::net::IpAddr;

use ferry_common::prefix::Prefix;
use ferry_common::proto::SteeringAnnounce;
use serde::{Deserialize, Serialize};

/// The most networks and host names one allowance lists.
pub const MAX_ENTRIES: usize = 64;

/// Where a spoke may tell clients to reach it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllowedPublic {
    /// Networks its public addresses must lie in, `ADDR/LEN`.
    #[serde(default)]
    pub addrs: Vec<Prefix>,
    /// Host names its probe URL may use: a name, or `*.example.com` for
    /// any name below `example.com`. An address in the URL must lie in
    /// `addrs` instead.
    #[serde(default)]
    pub hosts: Vec<String>,
}

/// Why an allowance is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllowedError {
    /// A network does not parse as `ADDR/LEN`.
    #[error("'{0}' is not a network (ADDR/LEN)")]
    Network(String),
    /// A host name is not a DNS name (or a `*.` wildcard of one).
    #[error("'{0}' is not a host name")]
    Host(String),
    /// Too many entries.
    #[error("at most {MAX_ENTRIES} networks and {MAX_ENTRIES} host names")]
    TooMany,
}

/// What a hello's announcement became under an allowance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filtered {
    /// What steering takes: the allowed addresses, and the URL when its
    /// host is allowed (else empty); `None` when no address is allowed.
    pub announce: Option<SteeringAnnounce>,
    /// What was left out, for the log.
    pub refused: Vec<String>,
}

impl AllowedPublic {
    /// An allowance from the operator's words.
    pub fn parse(addrs: &[String], hosts: &[String]) -> Result<Self, AllowedError> {
        if addrs.len() > MAX_ENTRIES || hosts.len() > MAX_ENTRIES {
            return Err(AllowedError::TooMany);
        }
        // Host bits are cleared, not refused: 192.0.2.7/24 allows 192.0.2.0/24.
        let network = |text: &str| -> Option<Prefix> {
            let (addr, len) = text.trim().split_once('/')?;
            let addr: IpAddr = addr.parse().ok()?;
            let len: u8 = len.parse().ok()?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            (len <= max).then(|| Prefix::new(addr, len))
        };
        let addrs = addrs
            .iter()
            .map(|a| network(a).ok_or_else(|| AllowedError::Network(a.clone())))
            .collect::<Result<Vec<_>, _>>()?;
        let hosts = hosts
            .iter()
            .map(|h| {
                let h = h.trim().trim_end_matches('.').to_ascii_lowercase();
                let name = h.strip_prefix("*.").unwrap_or(&h);
                let label_ok = |l: &str| {
                    (1..=63).contains(&l.len())
                        && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                        && !l.starts_with('-')
                        && !l.ends_with('-')
                };
                if name.len() <= 253
                    && name.split('.').all(label_ok)
                    && name.parse::<IpAddr>().is_err()
                {
                    Ok(h)
                } else {
                    Err(AllowedError::Host(h))
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { addrs, hosts })
    }

    /// Whether nothing is allowed.
    pub fn is_empty(&self) -> bool {
        self.addrs.is_empty() && self.hosts.is_empty()
    }

    fn addr_allowed(&self, ip: IpAddr) -> bool {
        self.addrs.iter().any(|p| p.contains(ip))
    }

    fn host_allowed(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        if let Ok(ip) = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            return self.addr_allowed(ip);
        }
        self.hosts.iter().any(|h| match h.strip_prefix("*.") {
            Some(suffix) => host
                .strip_suffix(suffix)
                .is_some_and(|rest| rest.ends_with('.') && rest.len() > 1),
            None => *h == host,
        })
    }

    /// `announce` held to this allowance.
    pub fn filter(&self, announce: Option<SteeringAnnounce>) -> Filtered {
        let Some(mut a) = announce else {
            return Filtered {
                announce: None,
                refused: Vec::new(),
            };
        };
        let mut refused = Vec::new();
        a.public_addrs.retain(|ip| {
            let ok = self.addr_allowed(*ip);
            if !ok {
                refused.push(ip.to_string());
            }
            ok
        });
        let host = http::Uri::try_from(a.public_url.as_str())
            .ok()
            .filter(|u| matches!(u.scheme_str(), Some("http" | "https")))
            .and_then(|u| u.host().map(str::to_owned));
        if !host.is_some_and(|h| self.host_allowed(&h)) {
            if !a.public_url.is_empty() {
                refused.push(a.public_url.clone());
            }
            a.public_url = String::new();
        }
        Filtered {
            announce: (!a.public_addrs.is_empty()).then_some(a),
            refused,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn announce(addrs: &[&str], url: &str) -> Option<SteeringAnnounce> {
        Some(SteeringAnnounce {
            public_addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
            public_url: url.into(),
            capacity_transfers: 0,
        })
    }

    #[test]
    fn only_allowed_addresses_and_urls_get_through() {
        let allowed = AllowedPublic::parse(
            &["192.0.2.0/24".into(), "2001:db8::/48".into()],
            &["fra1.edge.example.com".into(), "*.pop.example.net".into()],
        )
        .unwrap();
        let f = allowed.filter(announce(
            &["192.0.2.7", "203.0.113.9"],
            "https://fra1.edge.example.com",
        ));
        let a = f.announce.unwrap();
        assert_eq!(a.public_addrs, vec!["192.0.2.7".parse::<IpAddr>().unwrap()]);
        assert_eq!(a.public_url, "https://fra1.edge.example.com");
        assert_eq!(f.refused, vec!["203.0.113.9"]);
        for (url, ok) in [
            ("https://x.pop.example.net:8443", true),
            ("https://pop.example.net", false),
            ("https://evilpop.example.net", false),
            ("http://192.0.2.9:8080", true),
            ("http://[2001:db8::1]:8080", true),
            ("http://198.51.100.1", false),
            ("https://attacker.example.org", false),
            ("ftp://fra1.edge.example.com", false),
            ("not a url", false),
        ] {
            let a = allowed
                .filter(announce(&["192.0.2.7"], url))
                .announce
                .unwrap();
            assert_eq!(!a.public_url.is_empty(), ok, "{url}");
        }
        // No allowed address: nothing to steer to.
        assert_eq!(
            allowed
                .filter(announce(&["198.51.100.1"], "https://fra1.edge.example.com"))
                .announce,
            None
        );
        assert_eq!(
            AllowedPublic::default()
                .filter(announce(&["192.0.2.7"], ""))
                .announce,
            None
        );
    }

    #[test]
    fn bad_networks_and_names_are_refused() {
        assert!(AllowedPublic::parse(&["192.0.2.0/33".into()], &[]).is_err());
        assert!(AllowedPublic::parse(&["example.com".into()], &[]).is_err());
        assert!(AllowedPublic::parse(&["192.0.2.0".into()], &[]).is_err());
        let cleared = AllowedPublic::parse(&["192.0.2.7/24".into()], &[]).unwrap();
        assert_eq!(cleared.addrs[0].to_string(), "192.0.2.0/24");
        assert!(AllowedPublic::parse(&[], &["a..b".into()]).is_err());
        assert!(AllowedPublic::parse(&[], &["-a.example".into()]).is_err());
        let many = vec!["192.0.2.0/24".to_owned(); MAX_ENTRIES + 1];
        assert_eq!(AllowedPublic::parse(&many, &[]), Err(AllowedError::TooMany));
        let ok =
            AllowedPublic::parse(&[" 10.0.0.0/8 ".into()], &["Edge.Example.COM.".into()]).unwrap();
        assert_eq!(ok.hosts, vec!["edge.example.com"]);
    }
}
