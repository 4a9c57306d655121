//! Counters of a block queue, kept by the data path and read by anyone.

use std::sync::atomic::{AtomicU64, Ordering};

/// What a block queue has done.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlkStats {
    /// Requests taken off the ring.
    pub requests: u64,
    /// Responses published.
    pub responses: u64,
    /// Reads handed to storage.
    pub reads: u64,
    /// Writes handed to storage.
    pub writes: u64,
    /// Flushes handed to storage (asked for, or around barriers).
    pub flushes: u64,
    /// Discards handed to storage.
    pub discards: u64,
    /// Bytes copied to the guest.
    pub bytes_read: u64,
    /// Bytes copied from the guest.
    pub bytes_written: u64,
    /// Requests answered with an error status.
    pub errors: u64,
    /// Notifications sent to the frontend.
    pub notifications: u64,
    /// Persistent grants mapped (each once while it stays cached; 0
    /// without `feature-persistent`).
    pub persistent_maps: u64,
}

#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) requests: AtomicU64,
    pub(super) responses: AtomicU64,
    pub(super) reads: AtomicU64,
    pub(super) writes: AtomicU64,
    pub(super) flushes: AtomicU64,
    pub(super) discards: AtomicU64,
    pub(super) bytes_read: AtomicU64,
    pub(super) bytes_written: AtomicU64,
    pub(super) errors: AtomicU64,
    pub(super) notifications: AtomicU64,
    pub(super) persistent_maps: AtomicU64,
}

impl Counters {
    pub(super) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(super) fn snapshot(&self) -> BlkStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        BlkStats {
            requests: get(&self.requests),
            responses: get(&self.responses),
            reads: get(&self.reads),
            writes: get(&self.writes),
            flushes: get(&self.flushes),
            discards: get(&self.discards),
            bytes_read: get(&self.bytes_read),
            bytes_written: get(&self.bytes_written),
            errors: get(&self.errors),
            notifications: get(&self.notifications),
            persistent_maps: get(&self.persistent_maps),
        }
    }
}
