//! Shared rings: the byte streams and request/response queues a backend and
//! a guest exchange through granted pages.
//!
//! Everything here reads guest memory through [`SharedMem`]: indexes with
//! atomics, data with copies into private buffers. The other side can change
//! any of it at any time, so each pass reads each index once, works on its
//! copy, and bounds every value it got from the page before using it.
//!
//! - [`ByteRing`]: one direction of a byte stream (a buffer and its two
//!   free-running indexes), the building block of the console and XenStore
//!   rings.
//! - [`console`]: the console page (`xencons_interface`), both sides.
//! - [`shared`]: the request/response ring of `ring.h` ([`shared::BackRing`],
//!   [`shared::FrontRing`]), generic over a protocol's slot layout.
//! - [`blkif`]: block device request and response slots (`blkif.h`).
//! - [`netif`]: network transmit and receive slots (`netif.h`).
//! - [`bench`]: round trips through simulated rings, for `bench/platform`.

pub mod bench;
pub mod blkif;
pub mod console;
pub mod netif;
pub mod shared;
mod slot_bytes;

use std::fmt;
use std::sync::atomic::Ordering;

use crate::platform::{OutOfRange, SharedMem};

pub use self::console::{ConsoleIndexes, ConsoleRing, RingSide};

/// Indexes the other side left in a state no correct peer produces: the
/// producer is further ahead of the consumer than the buffer holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BogusIndexes {
    /// The producer index as read.
    pub prod: u32,
    /// The consumer index as read.
    pub cons: u32,
    /// Size of the buffer.
    pub size: u32,
}

impl BogusIndexes {
    /// How far the producer claims to be ahead (`prod − cons`, wrapping).
    pub fn distance(&self) -> u32 {
        self.prod.wrapping_sub(self.cons)
    }
}

impl fmt::Display for BogusIndexes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "producer {} is {} bytes ahead of consumer {} in a {}-byte ring",
            self.prod,
            self.distance(),
            self.cons,
            self.size
        )
    }
}

/// Why a ring operation could not be done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingError {
    /// The shared memory is smaller than the ring's layout.
    TooSmall {
        /// Bytes the layout needs.
        need: usize,
        /// Bytes the memory has.
        have: usize,
    },
    /// An index word is misaligned or outside the memory.
    Memory(OutOfRange),
    /// The ring we produce into has bogus indexes, so there is no telling
    /// which bytes are free: nothing was written.
    BogusIndexes(BogusIndexes),
}

impl fmt::Display for RingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RingError::TooSmall { need, have } => {
                write!(f, "ring needs {need} bytes of shared memory, got {have}")
            }
            RingError::Memory(e) => write!(f, "ring index access failed: {e}"),
            RingError::BogusIndexes(b) => write!(f, "bogus ring indexes: {b}"),
        }
    }
}

impl std::error::Error for RingError {}

impl From<OutOfRange> for RingError {
    fn from(e: OutOfRange) -> RingError {
        RingError::Memory(e)
    }
}

/// What one consuming pass found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadReport {
    /// Bytes consumed (appended to the caller's buffer).
    pub bytes: usize,
    /// Set when the producer claimed more than the buffer holds: the pass
    /// then consumed only the last buffer-full before the producer index.
    pub clamped: Option<BogusIndexes>,
}

/// One direction of a byte stream in shared memory: a power-of-two buffer
/// and two free-running `u32` indexes, each masked with `size − 1` to find
/// its byte. The producer owns `prod`, the consumer owns `cons`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteRing {
    data: usize,
    size: u32,
    cons: usize,
    prod: usize,
}

impl ByteRing {
    /// A ring whose buffer of `size` bytes is at offset `data`, with its
    /// consumer and producer indexes at `cons` and `prod`. `size` must be a
    /// power of two (checked: a layout is fixed by the protocol, so a wrong
    /// one is a bug here, never something a guest can cause).
    pub const fn new(data: usize, size: u32, cons: usize, prod: usize) -> ByteRing {
        assert!(size.is_power_of_two(), "ring size must be a power of two");
        ByteRing {
            data,
            size,
            cons,
            prod,
        }
    }

    /// Size of the buffer.
    pub fn size(&self) -> u32 {
        self.size
    }

    fn mask(&self, index: u32) -> usize {
        (index & (self.size - 1)) as usize
    }

    /// Bytes the layout needs: up to the end of its furthest field.
    pub fn extent(&self) -> usize {
        (self.data + self.size as usize)
            .max(self.cons + 4)
            .max(self.prod + 4)
    }

    /// Consumes everything the producer published, appending it to `out`.
    ///
    /// A producer index further ahead than the buffer holds (a hostile or
    /// broken peer) is clamped: the pass takes the last buffer-full before
    /// it and reports the indexes it found. Nothing outside the buffer is
    /// ever read.
    pub fn consume(&self, mem: &SharedMem<'_>, out: &mut Vec<u8>) -> Result<ReadReport, RingError> {
        // Acquire on the producer index, which the other side writes: the
        // bytes it stored before publishing this value are visible to the
        // copies below (the read barrier after reading `prod`).
        let prod = mem.atomic_u32(self.prod)?.load(Ordering::Acquire);
        // Our own index: only its value matters, no data depends on its
        // ordering. A peer may have scribbled on it; the distance check
        // below bounds whatever we got.
        let mut cons = mem.atomic_u32(self.cons)?.load(Ordering::Relaxed);

        let mut report = ReadReport::default();
        let mut avail = prod.wrapping_sub(cons);
        if avail > self.size {
            report.clamped = Some(BogusIndexes {
                prod,
                cons,
                size: self.size,
            });
            cons = prod.wrapping_sub(self.size);
            avail = self.size;
        }
        if avail == 0 {
            return Ok(report);
        }

        // Copy the bytes out once, in at most two pieces (before and after
        // the end of the buffer). Only the copy is handed on.
        let start = out.len();
        out.resize(start + avail as usize, 0);
        let at = self.mask(cons);
        let first = (self.size as usize - at).min(avail as usize);
        mem.read(self.data + at, &mut out[start..start + first])?;
        mem.read(self.data, &mut out[start + first..])?;
        report.bytes = avail as usize;

        // Release on our index: the copies above are complete before the
        // producer can see the space as free and overwrite it (the full
        // barrier before updating `cons`).
        mem.atomic_u32(self.cons)?.store(prod, Ordering::Release);
        Ok(report)
    }

    /// Bytes the consumer has not taken yet, or the bogus indexes.
    pub fn used(&self, mem: &SharedMem<'_>) -> Result<u32, RingError> {
        // Acquire on the consumer index, as in `produce`.
        let cons = mem.atomic_u32(self.cons)?.load(Ordering::Acquire);
        // Relaxed: our own index.
        let prod = mem.atomic_u32(self.prod)?.load(Ordering::Relaxed);
        self.distance(prod, cons)
    }

    fn distance(&self, prod: u32, cons: u32) -> Result<u32, RingError> {
        let used = prod.wrapping_sub(cons);
        if used > self.size {
            return Err(RingError::BogusIndexes(BogusIndexes {
                prod,
                cons,
                size: self.size,
            }));
        }
        Ok(used)
    }

    /// Bytes free for the producer.
    pub fn free(&self, mem: &SharedMem<'_>) -> Result<u32, RingError> {
        Ok(self.size - self.used(mem)?)
    }

    /// Produces as much of `data` as fits; returns how much that was (0 for
    /// a full ring). Fails without writing if the indexes are bogus, since
    /// then no byte of the buffer is known to be free.
    pub fn produce(&self, mem: &SharedMem<'_>, data: &[u8]) -> Result<usize, RingError> {
        // Acquire on the consumer index, which the other side writes: its
        // copies out of the space it freed are complete before we overwrite
        // that space.
        let cons = mem.atomic_u32(self.cons)?.load(Ordering::Acquire);
        // Relaxed: our own index; the store below orders what matters.
        let prod = mem.atomic_u32(self.prod)?.load(Ordering::Relaxed);
        let free = self.size - self.distance(prod, cons)?;
        let n = (free as usize).min(data.len());
        if n == 0 {
            return Ok(0);
        }

        let at = self.mask(prod);
        let first = (self.size as usize - at).min(n);
        mem.write(self.data + at, &data[..first])?;
        mem.write(self.data, &data[first..n])?;

        // Release on our index: the bytes above are visible before the
        // consumer can see the new producer index (the write barrier before
        // publishing `prod`).
        mem.atomic_u32(self.prod)?
            .store(prod.wrapping_add(n as u32), Ordering::Release);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::Mmap;

    const RING: ByteRing = ByteRing::new(0, 16, 16, 20);

    fn set(mem: &SharedMem<'_>, prod: u32, cons: u32) {
        mem.store_u32(RING.prod, prod).unwrap();
        mem.store_u32(RING.cons, cons).unwrap();
    }

    #[test]
    fn produce_then_consume_in_two_pieces_across_the_buffer_end() {
        let m = Mmap::anonymous(4096).unwrap();
        let mem = m.mem();
        set(&mem, 12, 12);
        assert_eq!(RING.produce(&mem, b"abcdefgh").unwrap(), 8);
        let mut raw = [0u8; 16];
        mem.read(0, &mut raw).unwrap();
        assert_eq!(&raw[12..], b"abcd");
        assert_eq!(&raw[..4], b"efgh");
        let mut out = b"x".to_vec();
        let r = RING.consume(&mem, &mut out).unwrap();
        assert_eq!(r.bytes, 8);
        assert_eq!(out, b"xabcdefgh", "appended after what was there");
        assert_eq!(mem.load_u32(RING.cons).unwrap(), 20);
    }

    #[test]
    fn indexes_outside_the_layout_are_an_error_not_a_panic() {
        let m = Mmap::anonymous(4096).unwrap();
        let mem = m.mem().sub(0, 18).unwrap();
        let mut out = Vec::new();
        assert!(matches!(
            RING.consume(&mem, &mut out),
            Err(RingError::Memory(_))
        ));
        assert!(matches!(
            RING.produce(&mem, b"a"),
            Err(RingError::Memory(_))
        ));
        assert_eq!(RING.extent(), 24);
    }

    #[test]
    fn producing_into_bogus_indexes_writes_nothing() {
        let m = Mmap::anonymous(4096).unwrap();
        let mem = m.mem();
        set(&mem, 100, 0);
        let e = RING.produce(&mem, b"abc").unwrap_err();
        assert_eq!(
            e,
            RingError::BogusIndexes(BogusIndexes {
                prod: 100,
                cons: 0,
                size: 16
            })
        );
        assert_eq!(mem.load_u32(RING.prod).unwrap(), 100);
        assert!(RING.free(&mem).is_err());
        assert!(e.to_string().contains("100 bytes ahead"));
    }
}
