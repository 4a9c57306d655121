//! Polling: a source that asked for it ([`Control::poll_for`]) is looked at
//! between the loop's waits instead of being woken by its port, until its
//! window ends. A block queue asks after each batch it took: while it is
//! polled its ring asks the guest for no event, so a request costs the
//! guest no notification and the loop no wake-up (on a Xen PV dom0, an
//! event's delivery and the thread's wake-up cost more than a small
//! request's I/O). The price is a CPU kept busy for the window.
//!
//! While sources are polled the loop still looks at its other events (a
//! wait that does not sleep) at least every [`LOOK_EVERY`], so ports,
//! descriptors, commands and timers are at most that late; under io_uring
//! at once when the ring holds completions, or entries it has not been
//! given yet (read in shared memory, without a system call).

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::{LoopState, SourceId, Wake};

/// How often, at most, a polling loop looks at its other events.
pub(super) const LOOK_EVERY: Duration = Duration::from_micros(50);

/// A source being polled, until `until` ([`Clock`] ticks).
pub(super) struct Polled {
    pub id: SourceId,
    pub until: u64,
}

/// The spin's clock: the CPU's time-stamp counter on x86-64, read without a
/// system call (on a Xen PV dom0 the kernel has no vDSO clock, and
/// `Instant::now` is a system call: 14-16 µs under emulation), scaled once
/// against `Instant`; elsewhere, or where the counter does not advance,
/// `Instant` itself.
#[derive(Clone, Copy)]
pub(super) enum Clock {
    /// Time-stamp counter ticks per millisecond.
    Tsc(u64),
    /// Nanoseconds since this instant.
    Monotonic(Instant),
}

/// The process's spin clock, scaled on first use: a 2 ms busy wait, once
/// (a queue asking to poll calls it from its owner's thread first, see
/// [`calibrate`]). A counter that does not run at a constant rate makes a
/// window inexact, not endless: every x86-64 CPU since 2008 has one that
/// does.
pub(super) fn clock() -> Clock {
    static CLOCK: OnceLock<Clock> = OnceLock::new();
    *CLOCK.get_or_init(|| {
        let fallback = Clock::Monotonic(Instant::now());
        #[cfg(target_arch = "x86_64")]
        {
            let (t0, i0) = paired();
            while i0.elapsed() < Duration::from_millis(2) {
                std::hint::spin_loop();
            }
            let (t1, i1) = paired();
            let ns = i1.saturating_duration_since(i0).as_nanos();
            let per_ms = u128::from(t1.wrapping_sub(t0)) * 1_000_000 / ns.max(1);
            // A counter that does not advance (or runs backwards) is no clock.
            if t1 > t0 && per_ms >= 1_000 {
                return Clock::Tsc(per_ms as u64);
            }
        }
        fallback
    })
}

/// Scales the spin clock now, so that the first poll does not stall the
/// loop's thread for it.
pub(crate) fn calibrate() {
    clock();
}

/// A counter reading and the time taken with it: of three tries, the one
/// whose two clock reads around it are closest (a thread preempted between
/// the reads would skew the scale).
#[cfg(target_arch = "x86_64")]
fn paired() -> (u64, Instant) {
    let read = || {
        let before = Instant::now();
        let t = tsc();
        let gap = before.elapsed();
        (gap, t, before + gap / 2)
    };
    let mut best = read();
    for _ in 0..2 {
        let r = read();
        if r.0 < best.0 {
            best = r;
        }
    }
    (best.1, best.2)
}

#[cfg(target_arch = "x86_64")]
fn tsc() -> u64 {
    // SAFETY: `rdtsc` exists on every x86-64 CPU and only reads a counter
    // into registers (the unsafe block is for older toolchains, where the
    // intrinsic is an unsafe function).
    #[allow(unused_unsafe)]
    unsafe {
        std::arch::x86_64::_rdtsc()
    }
}

impl Clock {
    /// Now, in ticks.
    pub fn now(self) -> u64 {
        match self {
            #[cfg(target_arch = "x86_64")]
            Clock::Tsc(_) => tsc(),
            #[cfg(not(target_arch = "x86_64"))]
            Clock::Tsc(_) => 0,
            Clock::Monotonic(base) => base.elapsed().as_nanos() as u64,
        }
    }

    /// `d` in ticks.
    pub fn ticks(self, d: Duration) -> u64 {
        let ns = d.as_nanos();
        let t = match self {
            Clock::Tsc(per_ms) => ns * u128::from(per_ms) / 1_000_000,
            Clock::Monotonic(_) => ns,
        };
        t.min(u128::from(u64::MAX / 2)) as u64
    }
}

impl LoopState {
    /// Starts or extends the polling of `id` for `window` from now.
    pub(super) fn poll_for(polling: &mut Vec<Polled>, id: SourceId, window: Duration) {
        let c = clock();
        let until = c.now().saturating_add(c.ticks(window));
        match polling.iter_mut().find(|p| p.id == id) {
            Some(p) => p.until = until,
            None => polling.push(Polled { id, until }),
        }
    }

    /// Looks at the polled sources until one has work or its window ended
    /// (each such source is woken, and polled no more unless it asks
    /// again), or until the loop's other events are due a look. Whether
    /// they are due: a pass that only serves polled work can do without.
    pub(super) fn spin(&mut self) -> bool {
        let c = clock();
        let look_at = self.last_look.saturating_add(c.ticks(LOOK_EVERY));
        loop {
            let now = c.now();
            if self.polling.is_empty() {
                return true;
            }
            let LoopState {
                polling,
                sources,
                found,
                ..
            } = self;
            polling.retain(|p| {
                let why = match sources.get(&p.id) {
                    None => return false,
                    Some(e) if e.source.has_work() => Wake {
                        polled: true,
                        ..Wake::default()
                    },
                    Some(_) if now >= p.until => Wake {
                        poll_over: true,
                        ..Wake::default()
                    },
                    Some(_) => return true,
                };
                found.push((p.id, why));
                false
            });
            let any = !self.found.is_empty();
            for i in 0..self.found.len() {
                let (id, why) = self.found[i];
                self.wake(id, why);
            }
            self.found.clear();
            // Work queued for the kernel or finished by it (io_uring) is
            // not left waiting for the next look.
            let due = now >= look_at || self.waiter.has_news();
            if any || due {
                return due;
            }
            std::hint::spin_loop();
        }
    }
}
