//! Client networks: an address masked to a prefix length, as steering
//! groups clients (an IPv4 /24 or an IPv6 /48 by default) and as EDNS Client
//! Subnet carries them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why a text is not a network prefix. None of these change on a retry:
/// the text itself must change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    /// No `/` separates the address from the length.
    #[error("'{0}' is not ADDRESS/LENGTH")]
    NoLength(String),
    /// The part before the `/` is not an IPv4 or IPv6 address.
    #[error("'{0}' is not an IP address")]
    BadAddress(String),
    /// The part after the `/` is not a number from 0 to 255.
    #[error("'{0}' is not a prefix length")]
    BadLength(String),
    /// The length is more than the address family has bits (32 or 128).
    #[error("/{len} is longer than {max} bits")]
    TooLong {
        /// The length given.
        len: u8,
        /// The family's width.
        max: u8,
    },
    /// The address has bits set beyond the prefix length.
    #[error("'{text}' has host bits set; the network is {network}")]
    HostBits {
        /// The text given.
        text: String,
        /// The network it lies in.
        network: Prefix,
    },
}

/// A network: an address masked to a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Prefix {
    addr: IpAddr,
    len: u8,
}

impl Prefix {
    /// `addr` masked to `len` bits (capped at the family's width).
    pub fn new(addr: IpAddr, len: u8) -> Prefix {
        match addr {
            IpAddr::V4(a) => {
                let len = len.min(32);
                let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
                Prefix {
                    addr: IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask)),
                    len,
                }
            }
            IpAddr::V6(a) => {
                let len = len.min(128);
                let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
                Prefix {
                    addr: IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask)),
                    len,
                }
            }
        }
    }

    /// Parses `ADDR/LEN`; host bits must be zero.
    pub fn parse(text: &str) -> Result<Prefix, PrefixError> {
        let (addr, len) = text
            .split_once('/')
            .ok_or_else(|| PrefixError::NoLength(text.into()))?;
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| PrefixError::BadAddress(addr.into()))?;
        let len: u8 = len
            .parse()
            .map_err(|_| PrefixError::BadLength(len.into()))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if len > max {
            return Err(PrefixError::TooLong { len, max });
        }
        let network = Prefix::new(addr, len);
        if network.addr != addr {
            return Err(PrefixError::HostBits {
                text: text.into(),
                network,
            });
        }
        Ok(network)
    }

    /// The network's first address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn bits(&self) -> u8 {
        self.len
    }

    /// Whether `addr` is inside this prefix.
    pub fn contains(&self, addr: IpAddr) -> bool {
        addr.is_ipv4() == self.addr.is_ipv4() && Prefix::new(addr, self.len).addr == self.addr
    }
}

impl std::fmt::Display for Prefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl std::str::FromStr for Prefix {
    type Err = PrefixError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Prefix::parse(s)
    }
}

impl<'de> serde::Deserialize<'de> for Prefix {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Prefix::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for Prefix {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn prefixes_mask_and_parse() {
        assert_eq!(
            Prefix::new(ip("192.0.2.77"), 24).to_string(),
            "192.0.2.0/24"
        );
        assert_eq!(
            Prefix::new(ip("2001:db8:1:2:3::9"), 48).to_string(),
            "2001:db8:1::/48"
        );
        assert_eq!(Prefix::new(ip("10.1.2.3"), 0).to_string(), "0.0.0.0/0");
        assert_eq!(Prefix::new(ip("10.1.2.3"), 40).bits(), 32);
        assert_eq!(Prefix::new(ip("::1"), 0).to_string(), "::/0");
        let p = Prefix::parse("10.0.0.0/8").unwrap();
        assert!(p.contains(ip("10.200.1.1")));
        assert!(!p.contains(ip("11.0.0.1")));
        assert!(!p.contains(ip("::a00:1")));
        let err = Prefix::parse("10.0.0.1/8").unwrap_err();
        assert!(matches!(err, PrefixError::HostBits { .. }), "{err}");
        assert_eq!(
            err.to_string(),
            "'10.0.0.1/8' has host bits set; the network is 10.0.0.0/8"
        );
        assert_eq!(
            Prefix::parse("10.0.0.0/33"),
            Err(PrefixError::TooLong { len: 33, max: 32 })
        );
        assert!(matches!(
            Prefix::parse("10.0.0.0"),
            Err(PrefixError::NoLength(_))
        ));
        assert!(matches!(
            Prefix::parse("nope/8"),
            Err(PrefixError::BadAddress(_))
        ));
        assert!(matches!(
            Prefix::parse("::/x"),
            Err(PrefixError::BadLength(_))
        ));
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(json, "\"10.0.0.0/8\"");
        assert_eq!(serde_json::from_str::<Prefix>(&json).unwrap(), p);
    }
}
