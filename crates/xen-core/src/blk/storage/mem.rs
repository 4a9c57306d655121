//! A disk in memory, for tests and demos: sparse (a map of 4 KiB chunks, so
//! a 1 GiB disk costs only what was written), finishing every request inside
//! `submit`.
//!
//! Clones share the sectors, so a test can hand one `MemDisk` to a backend
//! and look at the disk through another.

use std::collections::HashMap;
use std::os::fd::BorrowedFd;
use std::sync::{Arc, Mutex, MutexGuard};

use super::{
    check_range, DiscardInfo, Geometry, IoCompletion, IoOp, IoRequest, IoSegment, Page, Storage,
    StorageError, PAGE_SIZE, SECTOR_SIZE,
};

/// Bytes in a chunk of the sparse map.
const CHUNK: u64 = PAGE_SIZE as u64;

/// What a chunk never written holds.
static ZEROS: [u8; PAGE_SIZE] = [0; PAGE_SIZE];

/// A sparse in-memory disk.
pub struct MemDisk {
    chunks: Arc<Mutex<Chunks>>,
    geometry: Geometry,
    done: Vec<IoCompletion>,
}

impl MemDisk {
    /// A zeroed, writable disk of `sectors` 512-byte sectors.
    pub fn new(sectors: u64) -> MemDisk {
        MemDisk {
            chunks: Arc::new(Mutex::new(Chunks::default())),
            geometry: Geometry {
                sectors,
                sector_size: SECTOR_SIZE as u32,
                physical_sector_size: SECTOR_SIZE as u32,
                read_only: false,
                volatile_cache: false,
                discard: Some(DiscardInfo {
                    granularity: CHUNK as u32,
                    alignment: 0,
                    secure: true,
                }),
            },
            done: Vec::new(),
        }
    }

    /// A disk holding `bytes`, its size rounded up to whole sectors.
    pub fn from_bytes(bytes: &[u8]) -> MemDisk {
        let disk = MemDisk::new((bytes.len() as u64).div_ceil(SECTOR_SIZE));
        disk.write_at(0, bytes);
        disk
    }

    /// The same disk, refusing writes and discards.
    pub fn read_only(mut self) -> MemDisk {
        self.geometry.read_only = true;
        self
    }

    /// The same disk, advertising other sector sizes (e.g. 4096 for a
    /// 4K-native disk). Requests are still counted in 512-byte sectors.
    pub fn with_sector_sizes(mut self, logical: u32, physical: u32) -> MemDisk {
        self.geometry.sector_size = logical;
        self.geometry.physical_sector_size = physical;
        self
    }

    /// The disk's bytes from `offset`.
    ///
    /// # Panics
    /// If the range is outside the disk.
    pub fn read_at(&self, offset: u64, len: usize) -> Vec<u8> {
        self.assert_inside(offset, len);
        let mut out = vec![0; len];
        self.lock().read(offset, &mut out);
        out
    }

    /// Puts `bytes` on the disk at `offset`, read-only or not (to prepare a
    /// test).
    ///
    /// # Panics
    /// If the range is outside the disk.
    pub fn write_at(&self, offset: u64, bytes: &[u8]) {
        self.assert_inside(offset, bytes.len());
        self.lock().write(offset, bytes);
    }

    /// Bytes of memory holding data (written and not since discarded).
    pub fn resident_bytes(&self) -> u64 {
        self.lock().map.len() as u64 * CHUNK
    }

    fn assert_inside(&self, offset: u64, len: usize) {
        let end = offset.checked_add(len as u64);
        assert!(
            end.is_some_and(|end| end <= self.geometry.sectors * SECTOR_SIZE),
            "{len} bytes at {offset} are outside a disk of {} sectors",
            self.geometry.sectors
        );
    }

    fn lock(&self) -> MutexGuard<'_, Chunks> {
        // The map is consistent between statements: a panic elsewhere while
        // holding the lock leaves nothing half-done.
        self.chunks.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn execute(&self, request: &mut IoRequest) -> Result<(), StorageError> {
        check_range(&self.geometry, request)?;
        let mut chunks = self.lock();
        let mut offset = request.offset;
        match request.op {
            IoOp::Read => {
                for seg in &mut request.segments {
                    chunks.read_into(offset, seg);
                    offset += u64::from(seg.len());
                }
            }
            IoOp::Write => {
                for seg in &request.segments {
                    chunks.write_from(offset, seg);
                    offset += u64::from(seg.len());
                }
            }
            // Nothing is cached: every write is as durable as memory gets.
            IoOp::Flush => {}
            // Zeroed memory is unrecoverable, so secure is the same.
            IoOp::Discard { len, .. } => chunks.zero(offset, len),
        }
        Ok(())
    }
}

impl Clone for MemDisk {
    /// Another handle on the same sectors, with its own completions.
    fn clone(&self) -> MemDisk {
        MemDisk {
            chunks: Arc::clone(&self.chunks),
            geometry: self.geometry,
            done: Vec::new(),
        }
    }
}

impl Storage for MemDisk {
    fn geometry(&self) -> Geometry {
        self.geometry
    }

    fn submit(&mut self, mut request: IoRequest) {
        let result = self.execute(&mut request);
        self.done.push(IoCompletion {
            tag: request.tag,
            result,
            segments: request.segments,
        });
    }

    fn completions(&mut self, out: &mut Vec<IoCompletion>) {
        out.append(&mut self.done);
    }

    /// Segments are copied with their own copies (a guest's page never
    /// borrowed): one copy between the guest and the disk.
    fn accepts_guest_pages(&self) -> bool {
        true
    }

    fn wake_fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }

    fn resize(&mut self, sectors: u64) {
        // Sparse: growing costs nothing until written.
        self.geometry.sectors = sectors;
    }
}

/// The written chunks; a missing chunk reads as zeros.
#[derive(Default)]
struct Chunks {
    map: HashMap<u64, Box<Page>>,
}

/// The pieces of `len` bytes from `offset`, chunk by chunk:
/// `(chunk index, offset in the chunk, offset in the range, length)`.
fn pieces(offset: u64, len: u64) -> impl Iterator<Item = (u64, usize, usize, usize)> {
    let end = offset + len;
    let mut at = offset;
    std::iter::from_fn(move || {
        if at >= end {
            return None;
        }
        let within = at % CHUNK;
        let n = (CHUNK - within).min(end - at);
        let piece = (
            at / CHUNK,
            within as usize,
            (at - offset) as usize,
            n as usize,
        );
        at += n;
        Some(piece)
    })
}

impl Chunks {
    /// Hands `put` the bytes of `len` from `offset`, piece by piece, with
    /// each piece's place in the range; zeros where nothing was written.
    fn read_with(&self, offset: u64, len: u64, mut put: impl FnMut(usize, &[u8])) {
        for (index, within, pos, n) in pieces(offset, len) {
            match self.map.get(&index) {
                Some(page) => put(pos, &page.0[within..within + n]),
                None => put(pos, &ZEROS[..n]),
            }
        }
    }

    /// Has `fill` write the bytes of `len` from `offset`, piece by piece,
    /// with each piece's place in the range; chunks are made as needed.
    fn write_with(&mut self, offset: u64, len: u64, mut fill: impl FnMut(usize, &mut [u8])) {
        for (index, within, pos, n) in pieces(offset, len) {
            let page = self.map.entry(index).or_insert_with(Page::new_boxed);
            fill(pos, &mut page.0[within..within + n]);
        }
    }

    fn read(&self, offset: u64, out: &mut [u8]) {
        self.read_with(offset, out.len() as u64, |pos, bytes| {
            out[pos..pos + bytes.len()].copy_from_slice(bytes)
        });
    }

    /// As `read`, into a request's segment.
    fn read_into(&self, offset: u64, seg: &mut IoSegment) {
        self.read_with(offset, u64::from(seg.len()), |pos, bytes| {
            seg.write_at(pos, bytes)
        });
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        self.write_with(offset, data.len() as u64, |pos, dst| {
            dst.copy_from_slice(&data[pos..pos + dst.len()])
        });
    }

    /// As `write`, from a request's segment.
    fn write_from(&mut self, offset: u64, seg: &IoSegment) {
        self.write_with(offset, u64::from(seg.len()), |pos, dst| {
            seg.read_at(pos, dst)
        });
    }

    /// Zeroes a range, freeing the chunks it covers whole.
    fn zero(&mut self, offset: u64, len: u64) {
        for (index, within, _, n) in pieces(offset, len) {
            if n == PAGE_SIZE {
                self.map.remove(&index);
            } else if let Some(page) = self.map.get_mut(&index) {
                page.0[within..within + n].fill(0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::{
        bare, check_guest_pages, check_out_of_range, check_read_only, check_round_trip, pattern,
        run, write,
    };
    use super::*;

    const GIB: u64 = 1 << 30;

    #[test]
    fn round_trip_across_segments_at_odd_offsets() {
        check_round_trip(&mut MemDisk::new(64));
    }

    #[test]
    fn guest_pages_are_copied_in_place() {
        check_guest_pages(&mut MemDisk::new(64));
    }

    #[test]
    fn out_of_range_is_refused() {
        check_out_of_range(&mut MemDisk::new(100), 100 * 512);
    }

    #[test]
    fn read_only_refuses_writes_and_discards() {
        let mut disk = MemDisk::from_bytes(&pattern(8192, 4)).read_only();
        check_read_only(&mut disk);
        assert!(disk.read_at(0, 8192) == pattern(8192, 4));
    }

    #[test]
    fn a_gib_disk_is_sparse() {
        let mut disk = MemDisk::new(GIB / SECTOR_SIZE);
        assert_eq!(disk.resident_bytes(), 0);
        let data = pattern(1024, 9);
        run(&mut disk, write(1, GIB - 1024, &[(3072, 1024)], &data))
            .result
            .unwrap();
        assert_eq!(disk.resident_bytes(), CHUNK);
        assert!(disk.read_at(GIB - 1024, 1024) == data);
        assert!(disk.read_at(0, 4096).iter().all(|&b| b == 0));
    }

    #[test]
    fn discard_zeroes_and_frees_whole_chunks() {
        for secure in [false, true] {
            let data = pattern(16384, 5);
            let mut disk = MemDisk::from_bytes(&data);
            assert_eq!(disk.resident_bytes(), 4 * CHUNK);
            // Half of chunk 0, all of chunk 1, a sector of chunk 2.
            let op = IoOp::Discard { len: 6656, secure };
            run(&mut disk, bare(1, op, 2048)).result.unwrap();
            let mut expect = data.clone();
            expect[2048..2048 + 6656].fill(0);
            assert!(disk.read_at(0, 16384) == expect);
            assert_eq!(disk.resident_bytes(), 3 * CHUNK);
        }
    }

    #[test]
    fn flush_succeeds_and_geometry_says_so() {
        let mut disk = MemDisk::new(8);
        let g = disk.geometry();
        assert_eq!((g.sectors, g.sector_size, g.read_only), (8, 512, false));
        assert!(!g.volatile_cache);
        assert!(g.discard.is_some_and(|d| d.secure));
        assert!(disk.wake_fd().is_none());
        run(&mut disk, bare(1, IoOp::Flush, 0)).result.unwrap();
    }

    #[test]
    fn from_bytes_rounds_up_to_a_sector() {
        let disk = MemDisk::from_bytes(&[7; 513]);
        assert_eq!(disk.geometry().sectors, 2);
        assert_eq!(disk.read_at(512, 512)[..2], [7, 0]);
    }

    #[test]
    fn clones_share_the_sectors() {
        let disk = MemDisk::new(8);
        let mut backend: Box<dyn Storage> = Box::new(disk.clone());
        run(backend.as_mut(), write(1, 512, &[(0, 512)], &[3; 512]))
            .result
            .unwrap();
        assert_eq!(disk.read_at(512, 512), vec![3; 512]);
    }

    #[test]
    #[should_panic(expected = "outside a disk")]
    fn read_at_outside_panics() {
        MemDisk::new(1).read_at(256, 512);
    }
}
