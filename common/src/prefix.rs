//! Client networks: an address masked to a prefix length, as steering
//! groups clients (an IPv4 /24 or an IPv6 /48 by default) and as EDNS Client
//! Subnet carries them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

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
    pub fn parse(text: &str) -> Result<Prefix, String> {
        let (addr, len) = text
            .split_once('/')
            .ok_or_else(|| format!("'{text}' is not ADDRESS/LENGTH"))?;
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("'{addr}' is not an IP address"))?;
        let len: u8 = len
            .parse()
            .map_err(|_| format!("'{len}' is not a prefix length"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if len > max {
            return Err(format!("/{len} is longer than {max} bits"));
        }
        let p = Prefix::new(addr, len);
        if p.addr != addr {
            return Err(format!("'{text}' has host bits set; the network is {p}"));
        }
        Ok(p)
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
    type Err = String;
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
        assert!(
            Prefix::parse("10.0.0.1/8")
                .unwrap_err()
                .contains("host bits")
        );
        assert!(Prefix::parse("10.0.0.0/33").is_err());
        assert!(Prefix::parse("10.0.0.0").is_err());
        assert!(Prefix::parse("nope/8").is_err());
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(json, "\"10.0.0.0/8\"");
        assert_eq!(serde_json::from_str::<Prefix>(&json).unwrap(), p);
    }
}
