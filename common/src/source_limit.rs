//! Connections per source: how many connections one client may hold open
//! on a listener, so that a few clients cannot take every slot a
//! listener's global limit allows and starve everyone else (the health
//! checks of the load balancer included).
//!
//! A source is a host: an IPv4 address, or an IPv6 /64 (what one host
//! gets; its 2^64 addresses are no more sources than one). A v4 client on
//! a dual-stack socket is its v4 address. The table holds only sources
//! with a connection open, so its size is bounded by the listener's own
//! connection limit.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use prometheus_client::metrics::counter::Counter;

/// A client host, as a number: an IPv4 address in its IPv6-mapped form,
/// or an IPv6 address cut to its /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SourceKey(u128);

impl SourceKey {
    /// The host `addr` belongs to.
    pub fn of(addr: IpAddr) -> SourceKey {
        match addr {
            IpAddr::V4(a) => SourceKey((0xffff_u128 << 32) | u128::from(u32::from(a))),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => SourceKey::of(IpAddr::V4(v4)),
                None => SourceKey(u128::from(a) & !u128::from(u64::MAX)),
            },
        }
    }
}

/// The most connections one source may hold open, changeable while
/// serving (a lower limit refuses new connections only; none is cut).
#[derive(Debug)]
pub struct SourceLimit {
    max: AtomicUsize,
    open: Mutex<HashMap<SourceKey, usize>>,
    refused: Counter,
}

impl SourceLimit {
    /// A limit of `max` connections per source (at least 1), counting
    /// the connections it refuses in `refused`.
    pub fn new(max: usize, refused: Counter) -> Arc<SourceLimit> {
        Arc::new(SourceLimit {
            max: AtomicUsize::new(max.max(1)),
            open: Mutex::new(HashMap::new()),
            refused,
        })
    }

    /// The limit now.
    pub fn get(&self) -> usize {
        self.max.load(Ordering::Relaxed)
    }

    /// Sets the limit to `max` (at least 1).
    pub fn set(&self, max: usize) {
        self.max.store(max.max(1), Ordering::Relaxed);
    }

    /// A slot for one more connection from `addr`, held until the slot is
    /// dropped; `None` (and counted) when its source holds its share.
    pub fn admit(self: &Arc<Self>, addr: IpAddr) -> Option<SourceSlot> {
        let key = SourceKey::of(addr);
        let mut open = self.open.lock().expect("source table poisoned");
        let held = open.entry(key).or_insert(0);
        if *held >= self.get() {
            self.refused.inc();
            return None;
        }
        *held += 1;
        Some(SourceSlot {
            limit: self.clone(),
            key,
        })
    }

    /// Connections `addr`'s source holds open.
    pub fn held(&self, addr: IpAddr) -> usize {
        let open = self.open.lock().expect("source table poisoned");
        open.get(&SourceKey::of(addr)).copied().unwrap_or(0)
    }

    /// Sources with a connection open.
    pub fn sources(&self) -> usize {
        self.open.lock().expect("source table poisoned").len()
    }
}

/// One open connection of a source; dropping it frees the slot.
#[derive(Debug)]
pub struct SourceSlot {
    limit: Arc<SourceLimit>,
    key: SourceKey,
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut open = self.limit.open.lock().expect("source table poisoned");
        if let Some(held) = open.get_mut(&self.key) {
            *held -= 1;
            if *held == 0 {
                open.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_source_gets_its_share_and_no_more() {
        let refused = Counter::default();
        let limit = SourceLimit::new(2, refused.clone());
        let a = limit.admit(ip("192.0.2.1")).unwrap();
        let _b = limit.admit(ip("192.0.2.1")).unwrap();
        assert!(limit.admit(ip("192.0.2.1")).is_none());
        assert_eq!(refused.get(), 1);
        // Another host is served; the same IPv6 /64 is one host.
        let _c = limit.admit(ip("192.0.2.2")).unwrap();
        let _d = limit.admit(ip("2001:db8::1")).unwrap();
        let _e = limit.admit(ip("2001:db8::ffff:2")).unwrap();
        assert!(limit.admit(ip("2001:db8::3")).is_none());
        assert!(limit.admit(ip("2001:db8:0:1::3")).is_some());
        // A closed connection frees its slot; a v4-mapped address is v4.
        drop(a);
        assert_eq!(limit.held(ip("192.0.2.1")), 1);
        let _f = limit.admit(ip("::ffff:192.0.2.1")).unwrap();
        assert!(limit.admit(ip("192.0.2.1")).is_none());
    }

    #[test]
    fn the_table_forgets_sources_without_connections_and_the_limit_changes() {
        let limit = SourceLimit::new(1, Counter::default());
        let slots: Vec<_> = (0..100u32)
            .map(|i| {
                limit
                    .admit(IpAddr::V4(std::net::Ipv4Addr::from(i)))
                    .unwrap()
            })
            .collect();
        assert_eq!(limit.sources(), 100);
        drop(slots);
        assert_eq!(limit.sources(), 0);
        let one = limit.admit(ip("198.51.100.1")).unwrap();
        assert!(limit.admit(ip("198.51.100.1")).is_none());
        limit.set(2);
        assert!(limit.admit(ip("198.51.100.1")).is_some());
        limit.set(0);
        assert_eq!(limit.get(), 1, "never below one");
        drop(one);
        assert_eq!(limit.sources(), 0);
    }
}
