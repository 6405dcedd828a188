//! The zone's fixed parts: its apex, SOA and NS records, the hub's own
//! addresses and the TTL, built once from `[dns]`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_proto::ProtoError;
use hickory_proto::rr::rdata::{NS, SOA};
use hickory_proto::rr::{Name, RData, Record};

/// Why the zone could not be built from `[dns]`. Each is a mistake in the
/// configuration; no retry helps.
#[derive(Debug, thiserror::Error)]
pub enum ZoneError {
    /// The zone, a name server or the hostmaster is not a domain name.
    #[error("'{name}': {source}")]
    BadName {
        /// The name as configured.
        name: String,
        /// What is wrong with it.
        source: ProtoError,
    },
    /// `hub.<zone>` or `hostmaster.<zone>` would be longer than a domain
    /// name may be: the zone is too long.
    #[error(transparent)]
    TooLong(ProtoError),
}

/// The zone's fixed parts, built once from the configuration.
#[derive(Debug)]
pub struct Zone {
    /// The zone's apex, lower case, fully qualified.
    pub origin: Name,
    /// `hub.<zone>`.
    pub hub_name: Name,
    /// TTL of every record and of negative answers.
    pub ttl: u32,
    /// The SOA record.
    pub soa: Record,
    /// The NS records.
    pub ns: Vec<Record>,
    /// The hub's own addresses.
    pub hub_v4: Vec<Ipv4Addr>,
    /// The hub's own IPv6 addresses.
    pub hub_v6: Vec<Ipv6Addr>,
}

impl Zone {
    /// The zone for `origin`; `nameservers` empty means `hub.<origin>`.
    pub fn new(
        origin: &str,
        nameservers: &[String],
        hostmaster: Option<&str>,
        ttl: u32,
        hub_addrs: &[IpAddr],
        serial: u32,
    ) -> Result<Zone, ZoneError> {
        let fqdn = |s: &str| -> Result<Name, ZoneError> {
            let mut n = Name::from_ascii(s).map_err(|source| ZoneError::BadName {
                name: s.into(),
                source,
            })?;
            n.set_fqdn(true);
            Ok(n.to_lowercase())
        };
        let origin = fqdn(origin)?;
        let hub = Name::from_ascii("hub")
            .and_then(|h| h.append_domain(&origin))
            .map_err(ZoneError::TooLong)?;
        let nameservers: Vec<Name> = if nameservers.is_empty() {
            vec![hub.clone()]
        } else {
            nameservers
                .iter()
                .map(|n| fqdn(n))
                .collect::<Result<_, _>>()?
        };
        let rname = match hostmaster {
            Some(h) => fqdn(h)?,
            None => Name::from_ascii("hostmaster")
                .and_then(|h| h.append_domain(&origin))
                .map_err(ZoneError::TooLong)?,
        };
        let soa = SOA::new(
            nameservers[0].clone(),
            rname,
            serial,
            3600,
            600,
            86_400,
            ttl,
        );
        let ns = nameservers
            .iter()
            .map(|n| Record::from_rdata(origin.clone(), ttl, RData::NS(NS(n.clone()))))
            .collect();
        Ok(Zone {
            soa: Record::from_rdata(origin.clone(), ttl, RData::SOA(soa)),
            ns,
            origin,
            hub_name: hub,
            ttl,
            hub_v4: hub_addrs
                .iter()
                .filter_map(|a| match a {
                    IpAddr::V4(v) => Some(*v),
                    IpAddr::V6(_) => None,
                })
                .collect(),
            hub_v6: hub_addrs
                .iter()
                .filter_map(|a| match a {
                    IpAddr::V6(v) => Some(*v),
                    IpAddr::V4(_) => None,
                })
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_cannot_be_domain_names_are_refused() {
        let err = Zone::new("edge..example.com", &[], None, 20, &[], 1).unwrap_err();
        assert!(
            matches!(&err, ZoneError::BadName { name, .. } if name == "edge..example.com"),
            "{err}"
        );
        assert!(
            err.to_string().starts_with("'edge..example.com': "),
            "{err}"
        );
        let err = Zone::new(
            "example.com",
            &["ns 1.example.com".into()],
            None,
            20,
            &[],
            1,
        );
        assert!(matches!(err, Err(ZoneError::BadName { .. })));
        // 245 bytes on the wire: `hub.` still fits in 255, `hostmaster.`
        // does not.
        let long = vec!["x".repeat(60); 4].join(".");
        let err = Zone::new(&long, &[], None, 20, &[], 1).unwrap_err();
        assert!(matches!(err, ZoneError::TooLong(_)), "{err}");
        let zone = Zone::new(&long, &[], Some("ops.example.com"), 20, &[], 1).unwrap();
        assert_eq!(zone.hub_name.to_string(), format!("hub.{long}."));
    }
}
