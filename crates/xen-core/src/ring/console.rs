//! The console page (`xencons_interface`): two byte rings in one shared page.
//! The guest produces its output into `out` and consumes its input from
//! `in`; the backend does the opposite. [`ConsoleRing`] serves both sides
//! with the same code, only the direction differs.

use std::sync::atomic::Ordering;

use super::{ByteRing, ReadReport, RingError};
use crate::platform::SharedMem;

/// Offset of the `in` buffer (backend → guest).
pub const IN_OFFSET: usize = 0;
/// Size of the `in` buffer.
pub const IN_SIZE: u32 = 1024;
/// Offset of the `out` buffer (guest → backend).
pub const OUT_OFFSET: usize = 1024;
/// Size of the `out` buffer.
pub const OUT_SIZE: u32 = 2048;
/// Offset of `in_cons` (written by the guest).
pub const IN_CONS: usize = 3072;
/// Offset of `in_prod` (written by the backend).
pub const IN_PROD: usize = 3076;
/// Offset of `out_cons` (written by the backend).
pub const OUT_CONS: usize = 3080;
/// Offset of `out_prod` (written by the guest).
pub const OUT_PROD: usize = 3084;
/// Bytes of the page the interface uses (up to and including the
/// `connection` word at 3088, which this ring does not interpret).
pub const INTERFACE_SIZE: usize = 3092;

/// The `in` ring: backend → guest.
pub const IN_RING: ByteRing = ByteRing::new(IN_OFFSET, IN_SIZE, IN_CONS, IN_PROD);

/// The `out` ring: guest → backend.
pub const OUT_RING: ByteRing = ByteRing::new(OUT_OFFSET, OUT_SIZE, OUT_CONS, OUT_PROD);

/// Which end of the console a [`ConsoleRing`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingSide {
    /// The console daemon: reads `out`, writes `in`.
    Backend,
    /// The guest: reads `in`, writes `out`.
    Frontend,
}

/// The four indexes of a console page, as raw values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConsoleIndexes {
    /// Guest's consumer index of `in`.
    pub in_cons: u32,
    /// Backend's producer index of `in`.
    pub in_prod: u32,
    /// Backend's consumer index of `out`.
    pub out_cons: u32,
    /// Guest's producer index of `out`.
    pub out_prod: u32,
}

/// One side of a console page.
#[derive(Clone, Copy)]
pub struct ConsoleRing<'a> {
    mem: SharedMem<'a>,
    side: RingSide,
}

impl<'a> ConsoleRing<'a> {
    /// The backend's view of the page `mem`.
    pub fn backend(mem: SharedMem<'a>) -> Result<ConsoleRing<'a>, RingError> {
        ConsoleRing::new(mem, RingSide::Backend)
    }

    /// The guest's view of the page `mem`.
    pub fn frontend(mem: SharedMem<'a>) -> Result<ConsoleRing<'a>, RingError> {
        ConsoleRing::new(mem, RingSide::Frontend)
    }

    /// A view of `mem` for `side`; checks the page is big enough and its
    /// index words usable as atomics, so later passes only fail if the
    /// memory itself does.
    pub fn new(mem: SharedMem<'a>, side: RingSide) -> Result<ConsoleRing<'a>, RingError> {
        if mem.len() < INTERFACE_SIZE {
            return Err(RingError::TooSmall {
                need: INTERFACE_SIZE,
                have: mem.len(),
            });
        }
        for offset in [IN_CONS, IN_PROD, OUT_CONS, OUT_PROD] {
            mem.atomic_u32(offset)?;
        }
        Ok(ConsoleRing { mem, side })
    }

    /// Which side this is.
    pub fn side(&self) -> RingSide {
        self.side
    }

    /// The ring this side consumes.
    pub fn incoming(&self) -> ByteRing {
        match self.side {
            RingSide::Backend => OUT_RING,
            RingSide::Frontend => IN_RING,
        }
    }

    /// The ring this side produces into.
    pub fn outgoing(&self) -> ByteRing {
        match self.side {
            RingSide::Backend => IN_RING,
            RingSide::Frontend => OUT_RING,
        }
    }

    /// Consumes what the other side produced, appending it to `out`. Bogus
    /// indexes are clamped to the buffer and reported in the result.
    pub fn read(&self, out: &mut Vec<u8>) -> Result<ReadReport, RingError> {
        self.incoming().consume(&self.mem, out)
    }

    /// Produces as much of `data` as fits; returns the bytes written (fewer
    /// than asked, or 0, when the ring is full).
    pub fn write(&self, data: &[u8]) -> Result<usize, RingError> {
        self.outgoing().produce(&self.mem, data)
    }

    /// Free space in the outgoing ring.
    pub fn write_space(&self) -> Result<u32, RingError> {
        self.outgoing().free(&self.mem)
    }

    /// The indexes as they are now (each read once, acquire).
    pub fn indexes(&self) -> Result<ConsoleIndexes, RingError> {
        let load = |o| self.mem.load_u32(o);
        Ok(ConsoleIndexes {
            in_cons: load(IN_CONS)?,
            in_prod: load(IN_PROD)?,
            out_cons: load(OUT_CONS)?,
            out_prod: load(OUT_PROD)?,
        })
    }

    /// Overwrites all four indexes, as a hostile or buggy peer may.
    pub fn set_indexes(&self, ix: ConsoleIndexes) -> Result<(), RingError> {
        for (offset, value) in [
            (IN_CONS, ix.in_cons),
            (IN_PROD, ix.in_prod),
            (OUT_CONS, ix.out_cons),
            (OUT_PROD, ix.out_prod),
        ] {
            // Release, so a peer acquiring the index sees the page as it
            // was before (tests write data and then scramble indexes).
            self.mem.atomic_u32(offset)?.store(value, Ordering::Release);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::Mmap;
    use crate::ring::BogusIndexes;

    fn page() -> Mmap {
        Mmap::anonymous(4096).unwrap()
    }

    fn read_all(r: &ConsoleRing<'_>) -> (Vec<u8>, ReadReport) {
        let mut out = Vec::new();
        let rep = r.read(&mut out).unwrap();
        (out, rep)
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    #[test]
    fn layout_matches_console_h() {
        assert_eq!(IN_OFFSET + IN_SIZE as usize, OUT_OFFSET);
        assert_eq!(OUT_OFFSET + OUT_SIZE as usize, IN_CONS);
        assert_eq!(OUT_PROD + 4 + 4, INTERFACE_SIZE);
        assert_eq!(IN_RING.extent(), IN_PROD + 4);
        assert_eq!(OUT_RING.extent(), OUT_PROD + 4);
    }

    #[test]
    fn too_small_or_misaligned_memory_is_refused() {
        let m = page();
        let small = m.mem().sub(0, INTERFACE_SIZE - 1).unwrap();
        assert_eq!(
            ConsoleRing::backend(small).err(),
            Some(RingError::TooSmall {
                need: INTERFACE_SIZE,
                have: INTERFACE_SIZE - 1
            })
        );
        let odd = m.mem().sub(1, INTERFACE_SIZE).unwrap();
        assert!(matches!(
            ConsoleRing::frontend(odd).err(),
            Some(RingError::Memory(_))
        ));
    }

    #[test]
    fn both_sides_talk_through_one_page() {
        let m = page();
        let back = ConsoleRing::backend(m.mem()).unwrap();
        let front = ConsoleRing::frontend(m.mem()).unwrap();
        assert_eq!(front.write(b"boot: ok\n").unwrap(), 9);
        assert_eq!(back.write(b"root\n").unwrap(), 5);
        assert_eq!(read_all(&back).0, b"boot: ok\n");
        assert_eq!(read_all(&front).0, b"root\n");
        let ix = back.indexes().unwrap();
        assert_eq!(
            ix,
            ConsoleIndexes {
                in_cons: 5,
                in_prod: 5,
                out_cons: 9,
                out_prod: 9
            }
        );
        // Nothing more, and the bytes are where console.h puts them.
        assert_eq!(read_all(&back).1, ReadReport::default());
        let mut raw = [0u8; 4];
        m.mem().read(IN_OFFSET, &mut raw).unwrap();
        assert_eq!(&raw, b"root");
        m.mem().read(OUT_OFFSET, &mut raw).unwrap();
        assert_eq!(&raw, b"boot");
    }

    #[test]
    fn empty_and_exactly_full_rings() {
        let m = page();
        let back = ConsoleRing::backend(m.mem()).unwrap();
        let front = ConsoleRing::frontend(m.mem()).unwrap();
        assert_eq!(read_all(&back).1.bytes, 0);
        assert_eq!(front.write_space().unwrap(), OUT_SIZE);
        let data = pattern(OUT_SIZE as usize + 100, 1);
        assert_eq!(front.write(&data).unwrap(), OUT_SIZE as usize);
        assert_eq!(front.write_space().unwrap(), 0);
        assert_eq!(
            front.write(b"more").unwrap(),
            0,
            "a full ring takes nothing"
        );
        let (got, rep) = read_all(&back);
        assert_eq!(got, &data[..OUT_SIZE as usize]);
        assert_eq!(rep.clamped, None, "exactly full is not bogus");
        assert_eq!(front.write_space().unwrap(), OUT_SIZE);
        // The backend side fills `in` exactly too.
        assert_eq!(back.write(&data).unwrap(), IN_SIZE as usize);
        assert_eq!(back.write(b"x").unwrap(), 0);
        assert_eq!(read_all(&front).0, &data[..IN_SIZE as usize]);
    }

    #[test]
    fn indexes_wrap_across_u32_overflow() {
        let m = page();
        let back = ConsoleRing::backend(m.mem()).unwrap();
        let front = ConsoleRing::frontend(m.mem()).unwrap();
        let start = u32::MAX - 700;
        back.set_indexes(ConsoleIndexes {
            in_cons: start,
            in_prod: start,
            out_cons: start,
            out_prod: start,
        })
        .unwrap();
        let mut sent = Vec::new();
        let mut got = Vec::new();
        for round in 0..8u8 {
            let chunk = pattern(1500, round);
            let n = front.write(&chunk).unwrap();
            sent.extend_from_slice(&chunk[..n]);
            back.read(&mut got).unwrap();
        }
        assert_eq!(got, sent);
        let ix = back.indexes().unwrap();
        assert!(ix.out_prod < start, "the producer index wrapped past zero");
        assert_eq!(ix.out_prod, start.wrapping_add(sent.len() as u32));
        assert_eq!(ix.out_cons, ix.out_prod);
        // Same for `in`, where the buffer is smaller.
        let chunk = pattern(1000, 9);
        let mut seen = Vec::new();
        for _ in 0..3 {
            assert_eq!(back.write(&chunk).unwrap(), 1000);
            front.read(&mut seen).unwrap();
        }
        assert_eq!(seen.len(), 3000);
        assert!(seen.chunks(1000).all(|c| c == chunk));
        assert!(back.indexes().unwrap().in_prod < start);
    }

    #[test]
    fn a_distance_beyond_the_buffer_is_clamped_and_reported() {
        let m = page();
        let back = ConsoleRing::backend(m.mem()).unwrap();
        let out = pattern(OUT_SIZE as usize, 3);
        m.mem().write(OUT_OFFSET, &out).unwrap();
        // The guest claims 5000 bytes of a 2048-byte buffer.
        back.set_indexes(ConsoleIndexes {
            out_cons: 10,
            out_prod: 5010,
            ..Default::default()
        })
        .unwrap();
        let (got, rep) = read_all(&back);
        assert_eq!(
            rep.clamped,
            Some(BogusIndexes {
                prod: 5010,
                cons: 10,
                size: OUT_SIZE
            })
        );
        assert_eq!(rep.bytes, OUT_SIZE as usize, "one buffer-full, never more");
        assert_eq!(got.len(), OUT_SIZE as usize);
        // The last buffer-full before prod: it starts at prod's slot.
        let at = (5010 % OUT_SIZE) as usize;
        assert_eq!(&got[..OUT_SIZE as usize - at], &out[at..]);
        assert_eq!(&got[OUT_SIZE as usize - at..], &out[..at]);
        assert_eq!(back.indexes().unwrap().out_cons, 5010);
        // And the next pass is clean again.
        assert_eq!(read_all(&back).1, ReadReport::default());
    }

    #[test]
    fn a_consumer_ahead_of_the_producer_is_bogus_too() {
        let m = page();
        let back = ConsoleRing::backend(m.mem()).unwrap();
        // prod − cons wraps to a huge distance.
        back.set_indexes(ConsoleIndexes {
            out_cons: 100,
            out_prod: 99,
            in_cons: 7,
            in_prod: 3,
        })
        .unwrap();
        let (got, rep) = read_all(&back);
        assert_eq!(got.len(), OUT_SIZE as usize);
        assert_eq!(rep.clamped.map(|b| b.distance()), Some(u32::MAX));
        // Producing into `in` with its consumer ahead: refused, untouched.
        assert!(matches!(
            back.write(b"input"),
            Err(RingError::BogusIndexes(b)) if b.prod == 3 && b.cons == 7
        ));
        assert_eq!(back.indexes().unwrap().in_prod, 3);
    }

    #[test]
    fn garbage_between_passes_never_reads_outside_the_buffer() {
        let m = page();
        // Poison everything after the interface: a read outside the buffers
        // would bring these bytes back.
        m.mem()
            .fill(INTERFACE_SIZE, 4096 - INTERFACE_SIZE, 0xEE)
            .unwrap();
        m.mem().fill(OUT_OFFSET, OUT_SIZE as usize, b'o').unwrap();
        let back = ConsoleRing::backend(m.mem()).unwrap();
        let front = ConsoleRing::frontend(m.mem()).unwrap();
        let mut seed = 0x1234_5678u32;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed
        };
        let mut clamped = 0;
        for _ in 0..2000 {
            let (ip, ic, op, oc) = (next(), next(), next(), next());
            front
                .set_indexes(ConsoleIndexes {
                    in_cons: ic,
                    in_prod: ip,
                    out_cons: oc,
                    out_prod: op,
                })
                .unwrap();
            let mut out = Vec::new();
            let rep = back.read(&mut out).unwrap();
            assert!(out.len() <= OUT_SIZE as usize);
            assert!(out.iter().all(|b| *b == b'o'));
            clamped += usize::from(rep.clamped.is_some());
            assert_eq!(rep.clamped.is_some(), op.wrapping_sub(oc) > OUT_SIZE);
            // Input either fits the free space or is refused.
            match back.write(&[b'i'; 64]) {
                Ok(n) => assert!(n <= 64 && ip.wrapping_sub(ic) <= IN_SIZE),
                Err(RingError::BogusIndexes(_)) => assert!(ip.wrapping_sub(ic) > IN_SIZE),
                Err(e) => panic!("unexpected {e}"),
            }
        }
        assert!(clamped > 1900, "random indexes are almost always bogus");
        let mut tail = vec![0u8; 4096 - INTERFACE_SIZE];
        m.mem().read(INTERFACE_SIZE, &mut tail).unwrap();
        assert!(tail.iter().all(|b| *b == 0xEE), "nothing written past");
    }

    #[test]
    fn a_stream_between_two_threads_arrives_intact() {
        let m = page();
        let total = 1 << 20;
        let data = pattern(total, 7);
        let got = std::thread::scope(|s| {
            let mem = m.mem();
            let reader = s.spawn(move || {
                let back = ConsoleRing::backend(mem).unwrap();
                let mut got = Vec::with_capacity(total);
                while got.len() < total {
                    let rep = back.read(&mut got).unwrap();
                    assert_eq!(rep.clamped, None);
                    if rep.bytes == 0 {
                        std::thread::yield_now();
                    }
                }
                got
            });
            let front = ConsoleRing::frontend(m.mem()).unwrap();
            let mut sent = 0;
            while sent < total {
                // Odd-sized pieces so the copies split at every offset.
                let end = (sent + 777).min(total);
                match front.write(&data[sent..end]).unwrap() {
                    0 => std::thread::yield_now(),
                    n => sent += n,
                }
            }
            reader.join().unwrap()
        });
        assert!(got == data, "bytes arrive in order, none lost or torn");
    }
}
