//! How much memory each transfer may hold in flight.
//!
//! A lone transfer moves fastest with large buffers (few system calls and
//! provider requests); hundreds at once must not multiply that into
//! gigabytes. Each direction has a budget of buffered bytes shared by the
//! transfers running now: every read or write asks for its size when it
//! starts, so buffers shrink as transfers are added and grow back as they
//! end, and a process's buffer memory stays near the budget whatever the
//! file sizes.

use std::sync::atomic::{AtomicUsize, Ordering};

/// A budget of buffered bytes shared by the transfers of one direction.
#[derive(Debug)]
pub struct Budget {
    active: AtomicUsize,
    total: usize,
    min: usize,
    max: usize,
}

/// Downloads: each holds about two chunks (one being read from the
/// provider, one being sent), so 256 KiB at most for a lone download.
pub static DOWNLOADS: Budget = Budget::new(8 << 20, 32 << 10, 256 << 10);

/// Uploads: each holds up to about three chunks (one being gathered from
/// the client, one waiting at the provider writer, one being written).
pub static UPLOADS: Budget = Budget::new(2 << 20, 32 << 10, 1 << 20);

impl Budget {
    /// A budget of `total` bytes; chunks between `min` and `max`.
    pub const fn new(total: usize, min: usize, max: usize) -> Budget {
        Budget {
            active: AtomicUsize::new(0),
            total,
            min,
            max,
        }
    }

    /// Counts a transfer until the lease is dropped.
    pub fn lease(&'static self) -> Lease {
        self.active.fetch_add(1, Ordering::Relaxed);
        Lease { budget: self }
    }

    /// Transfers holding a lease now.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// The chunk size for one read or write now: the budget shared among
    /// the active transfers, rounded down to a power of two, within
    /// `min..=max`.
    pub fn chunk(&self) -> usize {
        let share = self.total / self.active().max(1);
        let pow2 = if share == 0 {
            0
        } else {
            1usize << (usize::BITS - 1 - share.leading_zeros())
        };
        pow2.clamp(self.min, self.max)
    }
}

/// One transfer's place in a [`Budget`].
#[derive(Debug)]
pub struct Lease {
    budget: &'static Budget,
}

impl Lease {
    /// The chunk size to use for the next read or write.
    pub fn chunk(&self) -> usize {
        self.budget.chunk()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.budget.active.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static TEST: Budget = Budget::new(8 << 20, 32 << 10, 1 << 20);

    #[test]
    fn chunks_shrink_with_more_transfers_and_grow_back() {
        let first = TEST.lease();
        assert_eq!(first.chunk(), 1 << 20);
        let mut more: Vec<Lease> = (0..15).map(|_| TEST.lease()).collect();
        assert_eq!(TEST.active(), 16);
        assert_eq!(first.chunk(), 512 << 10);
        more.extend((0..240).map(|_| TEST.lease()));
        assert_eq!(first.chunk(), 32 << 10);
        // 1000 transfers: the floor holds.
        more.extend((0..744).map(|_| TEST.lease()));
        assert_eq!(first.chunk(), 32 << 10);
        drop(more);
        assert_eq!(TEST.active(), 1);
        assert_eq!(first.chunk(), 1 << 20);
        // 3 transfers share 8 MiB: 2.67 MiB each, capped at 1 MiB.
        let _two = (TEST.lease(), TEST.lease());
        assert_eq!(first.chunk(), 1 << 20);
    }

    #[test]
    fn non_power_of_two_shares_round_down() {
        let b = Budget::new(3 << 20, 4 << 10, 4 << 20);
        // 3 MiB / 1 → 2 MiB, not 3.
        assert_eq!(b.chunk(), 2 << 20);
    }
}
