//! What the memory allocator holds, for `/metrics`: the bytes the program
//! has in use and the bytes the allocator keeps free for later. Resident
//! memory alone cannot tell a leak or a large working set from freed
//! memory the heap has not given back; these two can.
//!
//! Read from glibc's `mallinfo2` (all arenas and mapped chunks) at each
//! scrape. That call locks each arena in turn and walks its free lists,
//! which is fine at a scrape's pace. On other C libraries nothing is
//! registered.

// The one call into the C library, mallinfo2.
#![allow(unsafe_code)]

use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The allocator's figures at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeapStats {
    /// Bytes handed out and not yet freed (mapped chunks included).
    pub in_use: u64,
    /// Bytes freed and kept by the allocator for later allocations.
    pub free: u64,
}

/// The allocator's figures now, where the C library can tell them.
pub fn stats() -> Option<HeapStats> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 takes no arguments and returns a plain struct;
        // it takes the allocator's own locks.
        let m = unsafe { libc::mallinfo2() };
        Some(HeapStats {
            in_use: (m.uordblks + m.hblkhd) as u64,
            free: m.fordblks as u64,
        })
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        None
    }
}

/// `heap_in_use_bytes` and `heap_free_bytes`, under a daemon's prefix.
#[derive(Debug, Clone, Default)]
pub struct HeapMetrics {
    gauges: Option<(Gauge, Gauge)>,
}

impl HeapMetrics {
    /// Registers the two gauges where the allocator can be asked.
    pub fn register(registry: &mut Registry) -> Self {
        if stats().is_none() {
            return HeapMetrics::default();
        }
        let (in_use, free) = (Gauge::default(), Gauge::default());
        registry.register(
            "heap_in_use_bytes",
            "Bytes of heap memory in use by this process (allocated, not yet freed), read from the allocator at the scrape",
            in_use.clone(),
        );
        registry.register(
            "heap_free_bytes",
            "Bytes of heap memory freed and kept by the allocator for reuse rather than returned to the system",
            free.clone(),
        );
        HeapMetrics {
            gauges: Some((in_use, free)),
        }
    }

    /// Reads the allocator's figures into the gauges.
    pub fn observe(&self) {
        if let (Some((in_use, free)), Some(s)) = (&self.gauges, stats()) {
            in_use.set(s.in_use.min(i64::MAX as u64) as i64);
            free.set(s.free.min(i64::MAX as u64) as i64);
        }
    }
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    #[test]
    fn a_live_allocation_shows_in_use_and_is_counted_free_once_dropped() {
        let before = stats().unwrap();
        // Above the mmap threshold's ceiling in no case: 8 MiB is mapped on
        // its own, so it shows in `in_use` and leaves it when freed.
        let held = vec![1u8; 8 << 20];
        let during = stats().unwrap();
        assert!(
            during.in_use >= before.in_use + (8 << 20) - (1 << 20),
            "{before:?} then {during:?}"
        );
        drop(held);
        let after = stats().unwrap();
        assert!(
            after.in_use + (7 << 20) <= during.in_use,
            "{during:?} then {after:?}"
        );
    }

    #[test]
    fn the_gauges_are_registered_and_filled_at_observe() {
        let mut registry = Registry::with_prefix("ferry_test");
        let m = HeapMetrics::register(&mut registry);
        m.observe();
        let text = crate::metrics_text::encode(&registry);
        let line = text
            .lines()
            .find(|l| l.starts_with("ferry_test_heap_in_use_bytes "))
            .expect(&text);
        let v: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(v > 0.0, "{line}");
        assert!(text.contains("ferry_test_heap_free_bytes "), "{text}");
    }
}
