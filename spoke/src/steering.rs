//! The spoke's part in steering: the kernel's round-trip times of the
//! client connections it accepts, gathered per client network and sent
//! with each heartbeat to every hub it holds a tunnel to (each hub gets
//! every sample, so all of them steer alike).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use ferry_common::prefix::Prefix;
use ferry_common::proto::{MAX_HEARTBEAT_RTTS, PrefixRtt};

/// Client networks held between heartbeats at most; samples from further
/// networks wait for the next interval.
const MAX_PREFIXES: usize = 4096;

#[derive(Debug, Default, Clone, Copy)]
struct Sum {
    total_us: u64,
    count: u32,
}

#[derive(Debug)]
struct State {
    v4_prefix: u8,
    v6_prefix: u8,
    /// One set of sums per hub, each emptied by that hub's heartbeats.
    sums: Vec<HashMap<Prefix, Sum>>,
}

/// RTT samples of client connections since each hub's last heartbeat.
#[derive(Debug)]
pub struct ClientRtts {
    state: Mutex<State>,
}

impl Default for ClientRtts {
    fn default() -> Self {
        Self::new(1)
    }
}

impl ClientRtts {
    /// Samples for `hubs` hubs.
    pub fn new(hubs: usize) -> Self {
        Self {
            state: Mutex::new(State {
                v4_prefix: 24,
                v6_prefix: 48,
                sums: vec![HashMap::new(); hubs.max(1)],
            }),
        }
    }

    /// Keeps samples for at least `hubs` hubs.
    pub fn ensure_hubs(&self, hubs: usize) {
        let mut s = self.lock();
        if s.sums.len() < hubs {
            s.sums.resize_with(hubs, HashMap::new);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("client RTTs poisoned")
    }

    /// Groups clients by the prefix lengths the hub uses.
    pub fn set_prefixes(&self, (v4, v6): (u8, u8)) {
        let mut s = self.lock();
        (s.v4_prefix, s.v6_prefix) = (v4.min(32), v6.min(128));
    }

    /// Takes one sample of a connection from `client`.
    pub fn record(&self, client: IpAddr, rtt: Duration) {
        let client = match client {
            // A v4 client on a dual-stack socket is its v4 network.
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(client, IpAddr::V4),
            v4 => v4,
        };
        let mut s = self.lock();
        let len = if client.is_ipv4() {
            s.v4_prefix
        } else {
            s.v6_prefix
        };
        let prefix = Prefix::new(client, len);
        let us = u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX);
        for sums in &mut s.sums {
            if !sums.contains_key(&prefix) && sums.len() >= MAX_PREFIXES {
                continue;
            }
            let sum = sums.entry(prefix).or_default();
            sum.total_us = sum.total_us.saturating_add(us);
            sum.count = sum.count.saturating_add(1);
        }
    }

    /// The mean per network, for one heartbeat to hub `hub`; the rest
    /// waits for its next one.
    pub fn take(&self, hub: usize) -> Vec<PrefixRtt> {
        let mut s = self.lock();
        let Some(sums) = s.sums.get_mut(hub) else {
            return Vec::new();
        };
        let keys: Vec<Prefix> = sums.keys().take(MAX_HEARTBEAT_RTTS).copied().collect();
        keys.into_iter()
            .filter_map(|p| {
                let sum = sums.remove(&p)?;
                let mean = sum.total_us / u64::from(sum.count.max(1));
                Some(PrefixRtt {
                    prefix: p.to_string(),
                    rtt_us: u32::try_from(mean).unwrap_or(u32::MAX),
                    samples: sum.count,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_averaged_per_network_and_taken_once() {
        let r = ClientRtts::new(2);
        r.record("192.0.2.1".parse().unwrap(), Duration::from_millis(10));
        r.record("192.0.2.200".parse().unwrap(), Duration::from_millis(20));
        r.record(
            "::ffff:198.51.100.7".parse().unwrap(),
            Duration::from_millis(5),
        );
        r.set_prefixes((16, 32));
        r.record(
            "2001:db8:aa::1".parse().unwrap(),
            Duration::from_micros(1500),
        );
        let mut got = r.take(0);
        got.sort_by(|a, b| a.prefix.cmp(&b.prefix));
        let flat: Vec<(String, u32, u32)> = got
            .into_iter()
            .map(|p| (p.prefix, p.rtt_us, p.samples))
            .collect();
        assert_eq!(
            flat,
            vec![
                ("192.0.2.0/24".into(), 15_000, 2),
                ("198.51.100.0/24".into(), 5_000, 1),
                ("2001:db8::/32".into(), 1_500, 1),
            ]
        );
        assert!(r.take(0).is_empty());
        // The other hub gets the same samples, once.
        assert_eq!(r.take(1).len(), 3);
        assert!(r.take(1).is_empty() && r.take(7).is_empty());
    }

    #[test]
    fn the_networks_held_are_bounded() {
        let r = ClientRtts::default();
        for i in 0..(MAX_PREFIXES as u32 + 100) {
            let ip = std::net::Ipv4Addr::from(0x0a00_0000 + (i << 8));
            r.record(IpAddr::V4(ip), Duration::from_millis(1));
        }
        let mut total = 0;
        loop {
            let batch = r.take(0);
            if batch.is_empty() {
                break;
            }
            assert!(batch.len() <= MAX_HEARTBEAT_RTTS);
            total += batch.len();
        }
        assert_eq!(total, MAX_PREFIXES);
    }
}
