//! Packet buffers, reused: a packet's bytes are taken from the pool when
//! it is copied out of one guest and go back once it is copied into
//! another, so that the pure-Rust path allocates nothing per packet once
//! warm. One pool serves every vif of the process (a packet often leaves
//! a vif other than the one it came in on); each data path takes and
//! returns a batch's buffers under one lock.
//!
//! The pool is bounded by bytes of capacity: a burst of 64 KiB packets
//! leaves at most that much behind, the rest is freed.

use std::sync::{Mutex, OnceLock};

/// Capacity kept in the pool, at most.
const POOL_BYTES: usize = 32 << 20;

#[derive(Default)]
struct Pool {
    buffers: Vec<Vec<u8>>,
    bytes: usize,
}

impl Pool {
    fn take(&mut self, lens: impl Iterator<Item = usize>, out: &mut Vec<Vec<u8>>) {
        for len in lens {
            let mut b = match self.buffers.pop() {
                Some(b) => {
                    self.bytes -= b.capacity();
                    b
                }
                None => Vec::new(),
            };
            // Within capacity this neither allocates nor writes more than
            // the grown part.
            b.resize(len, 0);
            out.push(b);
        }
    }

    fn give(&mut self, buffers: impl Iterator<Item = Vec<u8>>) {
        for b in buffers {
            if self.bytes + b.capacity() <= POOL_BYTES {
                self.bytes += b.capacity();
                self.buffers.push(b);
            }
        }
    }
}

fn pool() -> &'static Mutex<Pool> {
    static POOL: OnceLock<Mutex<Pool>> = OnceLock::new();
    POOL.get_or_init(Mutex::default)
}

/// Buffers of the given lengths (zeroed where new, stale bytes where
/// reused: every byte is written by the copy that fills them), in order.
pub(crate) fn take(lens: impl Iterator<Item = usize>, out: &mut Vec<Vec<u8>>) {
    pool()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take(lens, out);
}

/// Gives buffers back (what does not fit in the pool is freed).
pub(crate) fn give(buffers: impl Iterator<Item = Vec<u8>>) {
    pool()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .give(buffers);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_given_back_is_taken_again_at_the_length_asked() {
        let mut p = Pool::default();
        let mut got = Vec::new();
        p.take([100usize].into_iter(), &mut got);
        let b = got.pop().unwrap();
        assert_eq!(b.len(), 100);
        let (ptr, cap) = (b.as_ptr() as usize, b.capacity());
        p.give(std::iter::once(b));
        assert_eq!(p.bytes, cap);
        p.take([60usize, 2000].into_iter(), &mut got);
        assert_eq!((got[0].len(), got[0].as_ptr() as usize), (60, ptr));
        assert_eq!(got[1].len(), 2000);
        assert_eq!(p.bytes, 0);
        // Beyond the bound, buffers are freed rather than kept.
        let huge = (0..(POOL_BYTES / 65536 + 8)).map(|_| Vec::with_capacity(65536));
        p.give(huge);
        assert!(p.bytes <= POOL_BYTES && p.bytes + 65536 > POOL_BYTES);
    }
}
