//! The zone's fixed parts: its apex, SOA and NS records, the hub's own
//! addresses and the TTL, built once from `[dns]`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_proto::rr::rdata::{NS, SOA};
use hickory_proto::rr::{Name, RData, Record};

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
    ) -> Result<Zone, String> {
        let fqdn = |s: &str| -> Result<Name, String> {
            let mut n = Name::from_ascii(s).map_err(|e| format!("'{s}': {e}"))?;
            n.set_fqdn(true);
            Ok(n.to_lowercase())
        };
        let origin = fqdn(origin)?;
        let hub = Name::from_ascii("hub")
            .and_then(|h| h.append_domain(&origin))
            .map_err(|e| e.to_string())?;
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
                .map_err(|e| e.to_string())?,
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
