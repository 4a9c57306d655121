//! Counters of a block queue, kept by the data path and read by anyone.
//!
//! The data path adds to per-queue atomics with relaxed stores (one queue
//! is served by one thread, so the cache lines stay with it); readers take
//! a snapshot whenever they like. Besides blkback's counters (`rd_req`,
//! `wr_req`, `f_req`, `ds_req`, `rd_sect`, `wr_sect`) each queue keeps a
//! latency histogram per kind of request, from the moment a request is
//! taken off the ring to the moment its response is ready: powers of two
//! of microseconds, as cheap to fill as to merge. The queue reads the clock
//! once per batch of requests taken and once per batch of completions, not
//! per request (as Linux's block layer caches the time per plug): a
//! request is timed from the start of the batch that took it to the batch
//! that answered it. Timing can be switched off ([`Counters::set_timing`]).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Latency buckets: upper bounds of 2^0 .. 2^24 microseconds (1 µs to
/// about 16.8 s), and one for anything slower.
pub const LATENCY_BUCKETS: usize = 26;

/// The upper bound of latency bucket `i` in microseconds (`None` for the
/// last, unbounded one).
pub fn latency_bound_us(i: usize) -> Option<u64> {
    (i + 1 < LATENCY_BUCKETS).then(|| 1u64 << i)
}

fn latency_bucket(us: u64) -> usize {
    // The smallest i with us <= 2^i.
    let i = if us <= 1 {
        0
    } else {
        (64 - (us - 1).leading_zeros()) as usize
    };
    i.min(LATENCY_BUCKETS - 1)
}

/// How long requests of one kind took: counts per bucket and their sum.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Latency {
    /// Requests per bucket (see [`latency_bound_us`]), not cumulative.
    pub buckets: [u64; LATENCY_BUCKETS],
    /// The sum of their latencies, in microseconds.
    pub sum_us: u64,
}

impl Latency {
    /// Requests counted.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }
}

/// The kinds of request timed separately.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Read = 0,
    Write = 1,
    /// A flush, a flush carrying data, or a barrier.
    Flush = 2,
    Discard = 3,
}

/// What a block queue has done.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlkStats {
    /// Requests taken off the ring.
    pub requests: u64,
    /// Responses published.
    pub responses: u64,
    /// Reads handed to storage (blkback's `rd_req`).
    pub reads: u64,
    /// Writes handed to storage (`wr_req`).
    pub writes: u64,
    /// Flushes handed to storage (asked for, or around barriers).
    pub flushes: u64,
    /// Flush and barrier requests accepted (`f_req`).
    pub flush_requests: u64,
    /// Discards handed to storage (`ds_req`).
    pub discards: u64,
    /// Sectors read (`rd_sect`).
    pub sectors_read: u64,
    /// Sectors written (`wr_sect`).
    pub sectors_written: u64,
    /// Times the queue stopped taking requests off the ring because one
    /// (a barrier, a flush carrying data) had to wait for every earlier
    /// request. blkback's `oo_req` counts waits for a free request slot,
    /// which this queue never lacks (the ring bounds what it takes).
    pub fence_waits: u64,
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
    /// Reads, from taken off the ring to answered.
    pub read_latency: Latency,
    /// Writes.
    pub write_latency: Latency,
    /// Flushes, flushes carrying data and barriers.
    pub flush_latency: Latency,
    /// Discards.
    pub discard_latency: Latency,
}

#[derive(Debug, Default)]
struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS],
    sum_us: AtomicU64,
}

impl Histogram {
    fn snapshot(&self) -> Latency {
        Latency {
            buckets: std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed)),
            sum_us: self.sum_us.load(Ordering::Relaxed),
        }
    }
}

#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) requests: AtomicU64,
    pub(super) responses: AtomicU64,
    pub(super) reads: AtomicU64,
    pub(super) writes: AtomicU64,
    pub(super) flushes: AtomicU64,
    pub(super) flush_requests: AtomicU64,
    pub(super) discards: AtomicU64,
    pub(super) sectors_read: AtomicU64,
    pub(super) sectors_written: AtomicU64,
    pub(super) fence_waits: AtomicU64,
    pub(super) bytes_read: AtomicU64,
    pub(super) bytes_written: AtomicU64,
    pub(super) errors: AtomicU64,
    pub(super) notifications: AtomicU64,
    pub(super) persistent_maps: AtomicU64,
    latency: [Histogram; 4],
    /// Timing switched off (the default is on).
    untimed: AtomicBool,
    /// How long the queue polls its ring after taking requests, in
    /// microseconds (0: never; a setting, read by the data path on each
    /// run as the timing switch is).
    poll_us: AtomicU64,
}

impl Counters {
    pub(super) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Switches latency timing on or off, from the queue's next request.
    pub(super) fn set_timing(&self, on: bool) {
        self.untimed.store(!on, Ordering::Relaxed);
    }

    /// Sets how long the queue polls its ring after taking requests
    /// (zero: it never polls), from its next run.
    pub(super) fn set_poll(&self, window: Duration) {
        let us = u64::try_from(window.as_micros()).unwrap_or(u64::MAX);
        self.poll_us.store(us, Ordering::Relaxed);
    }

    /// The polling window (zero: no polling).
    pub(super) fn poll_window(&self) -> Duration {
        Duration::from_micros(self.poll_us.load(Ordering::Relaxed))
    }

    /// The time a request is taken off the ring, if timing is on.
    pub(super) fn clock(&self) -> Option<Instant> {
        (!self.untimed.load(Ordering::Relaxed)).then(Instant::now)
    }

    /// Counts a request of kind `kind` taken at `since` as answered at
    /// `now`.
    pub(super) fn answered(&self, kind: Kind, since: Option<Instant>, now: Option<Instant>) {
        let (Some(since), Some(now)) = (since, now) else {
            return;
        };
        let us =
            u64::try_from(now.saturating_duration_since(since).as_micros()).unwrap_or(u64::MAX);
        let h = &self.latency[kind as usize];
        h.buckets[latency_bucket(us)].fetch_add(1, Ordering::Relaxed);
        h.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    pub(super) fn snapshot(&self) -> BlkStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        BlkStats {
            requests: get(&self.requests),
            responses: get(&self.responses),
            reads: get(&self.reads),
            writes: get(&self.writes),
            flushes: get(&self.flushes),
            flush_requests: get(&self.flush_requests),
            discards: get(&self.discards),
            sectors_read: get(&self.sectors_read),
            sectors_written: get(&self.sectors_written),
            fence_waits: get(&self.fence_waits),
            bytes_read: get(&self.bytes_read),
            bytes_written: get(&self.bytes_written),
            errors: get(&self.errors),
            notifications: get(&self.notifications),
            persistent_maps: get(&self.persistent_maps),
            read_latency: self.latency[Kind::Read as usize].snapshot(),
            write_latency: self.latency[Kind::Write as usize].snapshot(),
            flush_latency: self.latency[Kind::Flush as usize].snapshot(),
            discard_latency: self.latency[Kind::Discard as usize].snapshot(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_latency_lands_in_the_smallest_bucket_that_holds_it() {
        assert_eq!(latency_bucket(0), 0);
        assert_eq!(latency_bucket(1), 0);
        assert_eq!(latency_bucket(2), 1);
        assert_eq!(latency_bucket(3), 2);
        assert_eq!(latency_bucket(4), 2);
        assert_eq!(latency_bucket(5), 3);
        assert_eq!(latency_bucket(1 << 24), 24);
        assert_eq!(latency_bucket((1 << 24) + 1), 25);
        assert_eq!(latency_bucket(u64::MAX), 25);
        for us in [1u64, 7, 100, 65_537, 1 << 20] {
            let i = latency_bucket(us);
            assert!(us <= latency_bound_us(i).unwrap());
            assert!(i == 0 || us > latency_bound_us(i - 1).unwrap());
        }
        assert_eq!(latency_bound_us(LATENCY_BUCKETS - 1), None);
    }

    #[test]
    fn timing_switched_off_counts_no_latency() {
        let c = Counters::default();
        let t = c.clock();
        assert!(t.is_some());
        c.answered(Kind::Read, t, c.clock());
        c.set_timing(false);
        let t = c.clock();
        assert!(t.is_none());
        c.answered(Kind::Write, t, c.clock());
        let s = c.snapshot();
        assert_eq!(s.read_latency.count(), 1);
        assert_eq!(s.write_latency.count(), 0);
    }
}
