//! Memory shared with a guest: owned mappings, and a view that only ever
//! copies bytes in and out or uses atomics. Guest memory can change under
//! us at any time, so it is never turned into a `&[u8]`: a reader copies
//! once into private memory and validates the copy (the structural defence
//! against double fetches).

use std::io;
use std::marker::PhantomData;
use std::os::fd::BorrowedFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, AtomicU32, Ordering};

use rustix::mm::{self, MapFlags, ProtFlags};

use crate::platform::abi::PAGE_SIZE;
use crate::platform::shared_copy::{copy_in, copy_out, fill_bytes};

/// An access outside a shared region, or a write into a read-only one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutOfRange {
    /// Offset asked for.
    pub offset: usize,
    /// Length asked for.
    pub len: usize,
    /// Size of the region.
    pub size: usize,
    /// The region is read-only and the access would have written.
    pub read_only: bool,
}

impl std::fmt::Display for OutOfRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.read_only {
            return write!(
                f,
                "write of {} bytes at offset {} into a read-only {}-byte region",
                self.len, self.offset, self.size
            );
        }
        write!(
            f,
            "access of {} bytes at offset {} outside a {}-byte region",
            self.len, self.offset, self.size
        )
    }
}

impl std::error::Error for OutOfRange {}

/// A view of shared memory: bounds-checked copies and atomics only. A view
/// of a read-only mapping refuses every write with an error (a write would
/// fault the process): loads work on both.
#[derive(Clone, Copy)]
pub struct SharedMem<'a> {
    ptr: *mut u8,
    len: usize,
    writable: bool,
    _life: PhantomData<&'a ()>,
}

// SAFETY: the view only performs raw copies and atomic operations on memory
// that another party may change concurrently; it hands out no references to
// plain data, so sharing it between threads adds no data race Rust could
// reason about.
unsafe impl Send for SharedMem<'_> {}
// SAFETY: as for Send.
unsafe impl Sync for SharedMem<'_> {}

impl<'a> SharedMem<'a> {
    /// A writable view of `len` bytes at `ptr`.
    ///
    /// # Safety
    /// `ptr..ptr+len` must stay mapped readable and writable for `'a`.
    pub unsafe fn new(ptr: *mut u8, len: usize) -> SharedMem<'a> {
        SharedMem {
            ptr,
            len,
            writable: true,
            _life: PhantomData,
        }
    }

    /// A read-only view of `len` bytes at `ptr`: writes through it fail.
    ///
    /// # Safety
    /// `ptr..ptr+len` must stay mapped readable for `'a`.
    pub unsafe fn new_read_only(ptr: *mut u8, len: usize) -> SharedMem<'a> {
        SharedMem {
            ptr,
            len,
            writable: false,
            _life: PhantomData,
        }
    }

    /// Whether writes through the view are allowed.
    pub fn writable(&self) -> bool {
        self.writable
    }

    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the view is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The start address, for code that hands it to the kernel.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr
    }

    fn check(&self, offset: usize, len: usize) -> Result<(), OutOfRange> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(OutOfRange {
                offset,
                len,
                size: self.len,
                read_only: false,
            }),
        }
    }

    /// Like `check`, for an access that writes.
    fn check_write(&self, offset: usize, len: usize) -> Result<(), OutOfRange> {
        self.check(offset, len)?;
        if !self.writable {
            return Err(OutOfRange {
                offset,
                len,
                size: self.len,
                read_only: true,
            });
        }
        Ok(())
    }

    /// A part of the view (read-only if the view is).
    pub fn sub(&self, offset: usize, len: usize) -> Result<SharedMem<'a>, OutOfRange> {
        self.check(offset, len)?;
        Ok(SharedMem {
            // SAFETY: the range was checked to lie inside this view, so the
            // pointer stays inside the same mapping.
            ptr: unsafe { self.ptr.add(offset) },
            len,
            writable: self.writable,
            _life: PhantomData,
        })
    }

    /// Copies bytes out, once. The other side may be writing the same
    /// bytes, and a plain memcpy of memory that changes under it is
    /// undefined behaviour in Rust's model (the compiler may assume it does
    /// not change): the copy is inline assembly, opaque to the compiler
    /// (see `shared_copy`), or volatile word-sized loads, each reading
    /// memory once as it is at that moment.
    pub fn read(&self, offset: usize, buf: &mut [u8]) -> Result<(), OutOfRange> {
        self.check(offset, buf.len())?;
        // SAFETY: the source range is inside the mapping (checked above) and
        // readable; the destination is a private buffer that cannot overlap it.
        unsafe { copy_out(self.ptr.add(offset), buf) };
        Ok(())
    }

    /// Copies bytes in (see `read`).
    pub fn write(&self, offset: usize, data: &[u8]) -> Result<(), OutOfRange> {
        self.check_write(offset, data.len())?;
        // SAFETY: the destination range is inside the mapping (checked above)
        // and writable (check_write); the source is a private buffer that
        // cannot overlap it.
        unsafe { copy_in(data, self.ptr.add(offset)) };
        Ok(())
    }

    /// Sets bytes to `byte` (see `read`).
    pub fn fill(&self, offset: usize, len: usize, byte: u8) -> Result<(), OutOfRange> {
        self.check_write(offset, len)?;
        // SAFETY: inside the mapping and writable (checked above).
        unsafe { fill_bytes(self.ptr.add(offset), len, byte) };
        Ok(())
    }

    /// The aligned address of a `size`-byte word at `offset`.
    fn word(&self, offset: usize, size: usize) -> Result<*mut u8, OutOfRange> {
        self.check(offset, size)?;
        let p = self.ptr.wrapping_add(offset);
        if !(p as usize).is_multiple_of(size) {
            return Err(OutOfRange {
                offset,
                len: size,
                size: self.len,
                read_only: false,
            });
        }
        Ok(p)
    }

    /// The 16-bit word at `offset` as an atomic (offset must be aligned), to
    /// read and write it; an error on a read-only view, where a store would
    /// fault.
    pub fn atomic_u16(&self, offset: usize) -> Result<&'a AtomicU16, OutOfRange> {
        self.check_write(offset, 2)?;
        let p = self.word(offset, 2)?;
        // SAFETY: in range and aligned (checked above), and writable; AtomicU16
        // has the layout of u16, and every access to it goes through atomics.
        Ok(unsafe { &*(p as *const AtomicU16) })
    }

    /// The 32-bit word at `offset` as an atomic (offset must be aligned), to
    /// read and write it; an error on a read-only view.
    pub fn atomic_u32(&self, offset: usize) -> Result<&'a AtomicU32, OutOfRange> {
        self.check_write(offset, 4)?;
        let p = self.word(offset, 4)?;
        // SAFETY: in range and aligned (checked above), and writable; AtomicU32
        // has the layout of u32, and every access to it goes through atomics.
        Ok(unsafe { &*(p as *const AtomicU32) })
    }

    /// Loads the 16-bit word at `offset` (aligned) with `order`; works on
    /// read-only views too.
    pub fn load_u16_with(&self, offset: usize, order: Ordering) -> Result<u16, OutOfRange> {
        let p = self.word(offset, 2)?;
        // SAFETY: in range and aligned (checked above); the reference is only
        // used for this one atomic load, which never writes, so a read-only
        // mapping is fine.
        Ok(unsafe { &*(p as *const AtomicU16) }.load(order))
    }

    /// Loads the 32-bit word at `offset` (aligned) with `order`; works on
    /// read-only views too.
    pub fn load_u32_with(&self, offset: usize, order: Ordering) -> Result<u32, OutOfRange> {
        let p = self.word(offset, 4)?;
        // SAFETY: as in `load_u16_with`.
        Ok(unsafe { &*(p as *const AtomicU32) }.load(order))
    }

    /// Loads a 32-bit word (acquire: what the writer wrote before its
    /// matching release store is visible after).
    pub fn load_u32(&self, offset: usize) -> Result<u32, OutOfRange> {
        self.load_u32_with(offset, Ordering::Acquire)
    }

    /// Stores a 32-bit word (release: our earlier writes are visible to a
    /// reader that acquires this value).
    pub fn store_u32(&self, offset: usize, v: u32) -> Result<(), OutOfRange> {
        self.atomic_u32(offset)?.store(v, Ordering::Release);
        Ok(())
    }
}

/// An owned memory mapping, unmapped when dropped. Every byte of it is
/// accessible: address space reserved with no access is a [`Reservation`]
/// until every page of it has been placed.
pub struct Mmap {
    ptr: NonNull<u8>,
    len: usize,
    writable: bool,
}

// SAFETY: the mapping is plain process memory; access goes through
// SharedMem, which is itself Send and Sync.
unsafe impl Send for Mmap {}
// SAFETY: as for Send.
unsafe impl Sync for Mmap {}

fn protection(writable: bool) -> ProtFlags {
    if writable {
        ProtFlags::READ | ProtFlags::WRITE
    } else {
        ProtFlags::READ
    }
}

impl Mmap {
    /// Maps `len` bytes of `fd` at `offset`, shared, read-only or writable.
    pub fn map_fd(fd: BorrowedFd<'_>, offset: u64, len: usize, writable: bool) -> io::Result<Mmap> {
        // SAFETY: a fresh mapping at an address the kernel chooses (no
        // hint, no MAP_FIXED), so no existing memory is affected.
        let p = unsafe {
            mm::mmap(
                std::ptr::null_mut(),
                len,
                protection(writable),
                MapFlags::SHARED,
                fd,
                offset,
            )
        }?;
        Self::from_raw(p, len, writable)
    }

    /// Reserves `len` bytes (whole pages) of address space with no access,
    /// to be filled with [`Reservation::place_fd`] and turned into a mapping
    /// by [`Reservation::finish`].
    pub fn reserve(len: usize) -> io::Result<Reservation> {
        Reservation::new(len)
    }

    /// Anonymous private read-write memory (for tests and bounce buffers).
    pub fn anonymous(len: usize) -> io::Result<Mmap> {
        // SAFETY: a fresh anonymous mapping at an address the kernel chooses;
        // no existing memory is affected.
        let p = unsafe {
            mm::mmap_anonymous(
                std::ptr::null_mut(),
                len,
                protection(true),
                MapFlags::PRIVATE,
            )
        }?;
        Self::from_raw(p, len, true)
    }

    fn from_raw(p: *mut std::ffi::c_void, len: usize, writable: bool) -> io::Result<Mmap> {
        let ptr = NonNull::new(p.cast()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Mmap { ptr, len, writable })
    }

    /// The mapped bytes.
    pub fn mem(&self) -> SharedMem<'_> {
        // SAFETY: the range is mapped, and accessible (a PROT_NONE
        // reservation only becomes an Mmap once fully placed), for as long
        // as self lives; writable exactly when mapped so.
        unsafe {
            match self.writable {
                true => SharedMem::new(self.ptr.as_ptr(), self.len),
                false => SharedMem::new_read_only(self.ptr.as_ptr(), self.len),
            }
        }
    }

    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the mapping is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the mapping may be written.
    pub fn writable(&self) -> bool {
        self.writable
    }
}

impl std::fmt::Debug for Mmap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Mmap({} bytes {})",
            self.len,
            if self.writable { "rw" } else { "ro" }
        )
    }
}

impl Drop for Mmap {
    fn drop(&mut self) {
        // SAFETY: we own the mapping and nothing refers to it after drop
        // (views borrow self). A failure would leave the range mapped, which
        // is a leak, not unsoundness.
        let _ = unsafe { mm::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// Address space reserved with no access (`PROT_NONE`), filled page by page
/// with shared mappings of descriptors. It is not memory: it offers no view
/// of its bytes, and becomes an [`Mmap`] only once every page has been
/// placed ([`Reservation::finish`]), so no safe call can touch a page that
/// would fault. Dropping it unmaps whatever was placed.
pub struct Reservation {
    /// The range, inaccessible where not placed; never handed out.
    range: Mmap,
    /// Which pages (of [`PAGE_SIZE`]) have been placed.
    placed: Vec<bool>,
    /// Pages not placed yet.
    missing: usize,
    /// Whether every placement so far is writable.
    writable: bool,
}

impl Reservation {
    /// Reserves `len` bytes, a non-zero multiple of [`PAGE_SIZE`].
    pub fn new(len: usize) -> io::Result<Reservation> {
        if len == 0 || !len.is_multiple_of(PAGE_SIZE) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("a reservation is whole pages, not {len} bytes"),
            ));
        }
        // SAFETY: a fresh anonymous, inaccessible mapping at an address the
        // kernel chooses; no existing memory is affected.
        let p = unsafe {
            mm::mmap_anonymous(
                std::ptr::null_mut(),
                len,
                ProtFlags::empty(),
                MapFlags::PRIVATE | MapFlags::NORESERVE,
            )
        }?;
        let pages = len / PAGE_SIZE;
        Ok(Reservation {
            range: Mmap::from_raw(p, len, false)?,
            placed: vec![false; pages],
            missing: pages,
            writable: true,
        })
    }

    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.range.len
    }

    /// Whether the reservation is empty (never: it is at least a page).
    pub fn is_empty(&self) -> bool {
        self.range.len == 0
    }

    /// Pages not placed yet.
    pub fn missing_pages(&self) -> usize {
        self.missing
    }

    /// Replaces the `len` bytes at `at` (whole pages) with a shared mapping
    /// of `fd` at `offset`, read-only or writable.
    pub fn place_fd(
        &mut self,
        at: usize,
        fd: BorrowedFd<'_>,
        offset: u64,
        len: usize,
        writable: bool,
    ) -> io::Result<()> {
        if len == 0
            || !at.is_multiple_of(PAGE_SIZE)
            || !len.is_multiple_of(PAGE_SIZE)
            || at.checked_add(len).is_none_or(|end| end > self.range.len)
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "placement of {len} bytes at {at} is not whole pages inside a {}-byte reservation",
                    self.range.len
                ),
            ));
        }
        // SAFETY: the target range is whole pages inside the reservation,
        // which we own exclusively (&mut self) and of which no view exists:
        // MAP_FIXED replaces only our own pages.
        let placed = unsafe {
            mm::mmap(
                self.range.ptr.as_ptr().add(at).cast(),
                len,
                protection(writable),
                MapFlags::SHARED | MapFlags::FIXED,
                fd,
                offset,
            )
        };
        // A failed MAP_FIXED may already have discarded what was there: the
        // pages count as placed only if this placement succeeded.
        let ok = placed.is_ok();
        for page in &mut self.placed[at / PAGE_SIZE..(at + len) / PAGE_SIZE] {
            if *page != ok {
                *page = ok;
                if ok {
                    self.missing -= 1;
                } else {
                    self.missing += 1;
                }
            }
        }
        placed?;
        self.writable &= writable;
        Ok(())
    }

    /// The mapping, once every page has been placed; otherwise an error
    /// (and the reservation is unmapped).
    pub fn finish(self) -> io::Result<Mmap> {
        if self.missing != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} of {} pages of the reservation were never placed",
                    self.missing,
                    self.placed.len()
                ),
            ));
        }
        let mut map = self.range;
        map.writable = self.writable;
        Ok(map)
    }
}

impl std::fmt::Debug for Reservation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Reservation({} pages, {} missing)",
            self.placed.len(),
            self.missing
        )
    }
}

#[cfg(test)]
mod mmap_tests {
    use std::os::fd::AsFd;

    use super::*;

    fn memfd(pages: usize) -> std::os::fd::OwnedFd {
        let fd = rustix::fs::memfd_create("mmap-test", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        rustix::fs::ftruncate(&fd, (pages * PAGE_SIZE) as u64).unwrap();
        fd
    }

    #[test]
    fn a_reservation_is_memory_only_once_every_page_is_placed() {
        let fd = memfd(3);
        let m = Mmap::map_fd(fd.as_fd(), 0, 3 * PAGE_SIZE, true).unwrap();
        m.mem().fill(PAGE_SIZE, PAGE_SIZE, 0x42).unwrap();

        // Two of three pages placed: still no memory to read.
        let mut r = Mmap::reserve(3 * PAGE_SIZE).unwrap();
        assert_eq!(r.missing_pages(), 3);
        r.place_fd(0, fd.as_fd(), PAGE_SIZE as u64, PAGE_SIZE, true)
            .unwrap();
        r.place_fd(2 * PAGE_SIZE, fd.as_fd(), 0, PAGE_SIZE, true)
            .unwrap();
        assert_eq!(r.missing_pages(), 1);
        let err = r.finish().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("1 of 3 pages"), "{err}");

        // Every page placed (one twice): a mapping of the placed frames.
        let mut r = Mmap::reserve(3 * PAGE_SIZE).unwrap();
        r.place_fd(0, fd.as_fd(), PAGE_SIZE as u64, 2 * PAGE_SIZE, true)
            .unwrap();
        r.place_fd(PAGE_SIZE, fd.as_fd(), 0, PAGE_SIZE, false)
            .unwrap();
        assert_eq!(r.missing_pages(), 1);
        r.place_fd(2 * PAGE_SIZE, fd.as_fd(), PAGE_SIZE as u64, PAGE_SIZE, true)
            .unwrap();
        let map = r.finish().unwrap();
        assert_eq!(map.len(), 3 * PAGE_SIZE);
        assert!(!map.writable(), "one page was placed read-only");
        let mut b = [0u8; 3];
        for (i, byte) in b.iter_mut().enumerate() {
            map.mem()
                .read(i * PAGE_SIZE + 7, std::slice::from_mut(byte))
                .unwrap();
        }
        assert_eq!(b, [0x42, 0, 0x42]);
    }

    #[test]
    fn placements_are_whole_pages_inside_the_reservation() {
        let fd = memfd(2);
        assert!(Mmap::reserve(0).is_err());
        assert!(Mmap::reserve(PAGE_SIZE + 1).is_err());
        let mut r = Mmap::reserve(2 * PAGE_SIZE).unwrap();
        for (at, len) in [
            (2 * PAGE_SIZE, PAGE_SIZE),
            (PAGE_SIZE, 2 * PAGE_SIZE),
            (1, PAGE_SIZE),
            (0, 100),
            (0, 0),
            (usize::MAX - PAGE_SIZE + 1, PAGE_SIZE),
        ] {
            let err = r.place_fd(at, fd.as_fd(), 0, len, true).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{at} {len}");
        }
        assert_eq!(r.missing_pages(), 2, "nothing was placed");
        // A placement the kernel refuses (offset not page-aligned) counts
        // for nothing either, even over a page placed before (the kernel
        // may have discarded it).
        r.place_fd(0, fd.as_fd(), 0, PAGE_SIZE, true).unwrap();
        assert_eq!(r.missing_pages(), 1);
        assert!(r.place_fd(0, fd.as_fd(), 1, PAGE_SIZE, true).is_err());
        assert_eq!(r.missing_pages(), 2);
        r.place_fd(0, fd.as_fd(), 0, 2 * PAGE_SIZE, true).unwrap();
        assert!(r.finish().unwrap().writable());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_and_fills_move_every_byte_at_any_alignment_and_length() {
        let m = Mmap::anonymous(4096).unwrap();
        let mem = m.mem();
        let data: Vec<u8> = (0..4000u32).map(|i| (i * 7 + 3 + i / 251) as u8).collect();
        // Both sides of the bulk-copy threshold (shared_copy).
        let lens = [
            0,
            1,
            7,
            8,
            9,
            15,
            16,
            63,
            64,
            65,
            255,
            256,
            257,
            300,
            1000,
            4000 - 17,
        ];
        for start in 0..17 {
            for len in lens {
                mem.fill(0, 4096, 0xee).unwrap();
                // A fill covers exactly its range.
                mem.fill(start, len, 0x11).unwrap();
                let mut filled = vec![0u8; len + 2];
                mem.read(start.saturating_sub(1), &mut filled[..len + 1])
                    .unwrap();
                let (before, inside) = match start {
                    0 => (None, &filled[..len]),
                    _ => (Some(filled[0]), &filled[1..len + 1]),
                };
                assert!(
                    inside.iter().all(|b| *b == 0x11),
                    "fill start {start} len {len}"
                );
                assert!(
                    before.is_none_or(|b| b == 0xee),
                    "fill start {start} len {len}"
                );
                mem.fill(0, 4096, 0xee).unwrap();
                mem.write(start, &data[..len]).unwrap();
                let mut back = vec![0u8; len + 2];
                mem.read(start.saturating_sub(1), &mut back[..len + 1])
                    .unwrap();
                let got = if start == 0 {
                    &back[..len]
                } else {
                    &back[1..len + 1]
                };
                assert_eq!(got, &data[..len], "start {start} len {len}");
                if start > 0 {
                    assert_eq!(
                        back[0], 0xee,
                        "nothing written before, start {start} len {len}"
                    );
                }
                let mut after = [0u8; 1];
                mem.read(start + len, &mut after).unwrap();
                assert_eq!(
                    after[0], 0xee,
                    "nothing written after, start {start} len {len}"
                );
            }
        }
    }

    #[test]
    fn a_read_only_mapping_refuses_writes_with_an_error_and_still_reads() {
        let fd = rustix::fs::memfd_create("ro-test", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        rustix::fs::ftruncate(&fd, 4096).unwrap();
        let rw = Mmap::map_fd(std::os::fd::AsFd::as_fd(&fd), 0, 4096, true).unwrap();
        rw.mem().store_u32(8, 0xfeed).unwrap();
        let ro = Mmap::map_fd(std::os::fd::AsFd::as_fd(&fd), 0, 4096, false).unwrap();
        let mem = ro.mem();
        assert!(!mem.writable());
        let refused =
            |e: OutOfRange| assert!(e.read_only && e.to_string().contains("read-only"), "{e}");
        refused(mem.write(0, b"x").unwrap_err());
        refused(mem.fill(0, 4, 0).unwrap_err());
        refused(mem.store_u32(8, 1).unwrap_err());
        refused(mem.atomic_u32(8).err().unwrap());
        refused(mem.atomic_u16(8).err().unwrap());
        // A part of a read-only view is read-only too.
        refused(mem.sub(4, 8).unwrap().write(0, b"x").unwrap_err());
        assert_eq!(mem.load_u32(8).unwrap(), 0xfeed);
        assert_eq!(mem.load_u16_with(8, Ordering::Relaxed).unwrap(), 0xfeed);
        let mut buf = [0u8; 4];
        mem.read(8, &mut buf).unwrap();
        assert_eq!(u32::from_ne_bytes(buf), 0xfeed);
        // Out of range stays out of range, not "read-only".
        assert!(!mem.read(4095, &mut buf).unwrap_err().read_only);
    }

    #[test]
    fn bounds_are_checked() {
        let m = Mmap::anonymous(8192).unwrap();
        let mem = m.mem();
        mem.write(8190, b"ab").unwrap();
        let mut b = [0u8; 2];
        mem.read(8190, &mut b).unwrap();
        assert_eq!(&b, b"ab");
        assert!(mem.read(8191, &mut b).is_err());
        assert!(mem.write(usize::MAX, b"x").is_err());
        assert!(mem.atomic_u32(8190).is_err());
        assert!(mem.atomic_u32(1).is_err(), "unaligned");
        mem.store_u32(4, 7).unwrap();
        assert_eq!(mem.load_u32(4).unwrap(), 7);
        let sub = mem.sub(4096, 4096).unwrap();
        assert_eq!(sub.len(), 4096);
        assert!(mem.sub(4097, 4096).is_err());
    }
}
