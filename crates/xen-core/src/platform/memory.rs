//! Memory shared with a guest: owned mappings, and a view that only ever
//! copies bytes in and out or uses atomics. Guest memory can change under
//! us at any time, so it is never turned into a `&[u8]`: a reader copies
//! once into private memory and validates the copy (the structural defence
//! against double fetches).

use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, AtomicU32, Ordering};

/// An access outside a shared region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutOfRange {
    /// Offset asked for.
    pub offset: usize,
    /// Length asked for.
    pub len: usize,
    /// Size of the region.
    pub size: usize,
}

impl std::fmt::Display for OutOfRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "access of {} bytes at offset {} outside a {}-byte region",
            self.len, self.offset, self.size
        )
    }
}

impl std::error::Error for OutOfRange {}

/// A view of shared memory: bounds-checked copies and atomics only.
#[derive(Clone, Copy)]
pub struct SharedMem<'a> {
    ptr: *mut u8,
    len: usize,
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
    /// A view of `len` bytes at `ptr`.
    ///
    /// # Safety
    /// `ptr..ptr+len` must stay mapped for `'a`; writes through the view need
    /// it mapped writable.
    pub unsafe fn new(ptr: *mut u8, len: usize) -> SharedMem<'a> {
        SharedMem {
            ptr,
            len,
            _life: PhantomData,
        }
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
            }),
        }
    }

    /// A part of the view.
    pub fn sub(&self, offset: usize, len: usize) -> Result<SharedMem<'a>, OutOfRange> {
        self.check(offset, len)?;
        // SAFETY: the range was checked to lie inside this view.
        Ok(unsafe { SharedMem::new(self.ptr.add(offset), len) })
    }

    /// Copies bytes out, once.
    pub fn read(&self, offset: usize, buf: &mut [u8]) -> Result<(), OutOfRange> {
        self.check(offset, buf.len())?;
        // SAFETY: the source range is inside the mapping (checked above) and
        // the destination is a private buffer that cannot overlap it.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr.add(offset), buf.as_mut_ptr(), buf.len()) };
        Ok(())
    }

    /// Copies bytes in.
    pub fn write(&self, offset: usize, data: &[u8]) -> Result<(), OutOfRange> {
        self.check(offset, data.len())?;
        // SAFETY: the destination range is inside the mapping (checked above)
        // and the source is a private buffer that cannot overlap it.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.add(offset), data.len()) };
        Ok(())
    }

    /// Sets bytes to `byte`.
    pub fn fill(&self, offset: usize, len: usize, byte: u8) -> Result<(), OutOfRange> {
        self.check(offset, len)?;
        // SAFETY: the range is inside the mapping (checked above).
        unsafe { std::ptr::write_bytes(self.ptr.add(offset), byte, len) };
        Ok(())
    }

    /// The 16-bit word at `offset` as an atomic (offset must be aligned).
    pub fn atomic_u16(&self, offset: usize) -> Result<&'a AtomicU16, OutOfRange> {
        self.check(offset, 2)?;
        let p = self.ptr.wrapping_add(offset);
        if !(p as usize).is_multiple_of(2) {
            return Err(OutOfRange {
                offset,
                len: 2,
                size: self.len,
            });
        }
        // SAFETY: in range and aligned (checked above); AtomicU16 has the
        // layout of u16, and every access to it goes through atomics.
        Ok(unsafe { &*(p as *const AtomicU16) })
    }

    /// The 32-bit word at `offset` as an atomic (offset must be aligned).
    pub fn atomic_u32(&self, offset: usize) -> Result<&'a AtomicU32, OutOfRange> {
        self.check(offset, 4)?;
        let p = self.ptr.wrapping_add(offset);
        if !(p as usize).is_multiple_of(4) {
            return Err(OutOfRange {
                offset,
                len: 4,
                size: self.len,
            });
        }
        // SAFETY: in range and aligned (checked above); AtomicU32 has the
        // layout of u32, and every access to it goes through atomics.
        Ok(unsafe { &*(p as *const AtomicU32) })
    }

    /// Loads a 32-bit word (acquire: what the writer wrote before its
    /// matching release store is visible after).
    pub fn load_u32(&self, offset: usize) -> Result<u32, OutOfRange> {
        Ok(self.atomic_u32(offset)?.load(Ordering::Acquire))
    }

    /// Stores a 32-bit word (release: our earlier writes are visible to a
    /// reader that acquires this value).
    pub fn store_u32(&self, offset: usize, v: u32) -> Result<(), OutOfRange> {
        self.atomic_u32(offset)?.store(v, Ordering::Release);
        Ok(())
    }
}

/// An owned memory mapping, unmapped when dropped.
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

impl Mmap {
    /// Maps `len` bytes of `fd` at `offset`, shared, read-only or writable.
    pub fn map_fd(fd: BorrowedFd<'_>, offset: u64, len: usize, writable: bool) -> io::Result<Mmap> {
        let prot = libc::PROT_READ | if writable { libc::PROT_WRITE } else { 0 };
        // SAFETY: a fresh mapping chosen by the kernel; arguments are plain
        // values and the result is checked.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                offset as libc::off_t,
            )
        };
        Self::from_raw(p, len, writable)
    }

    /// Reserves `len` bytes of address space with no access, to be filled
    /// with [`Mmap::place_fd`].
    pub fn reserve(len: usize) -> io::Result<Mmap> {
        // SAFETY: an anonymous, inaccessible fresh mapping; result checked.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        Self::from_raw(p, len, false)
    }

    /// Anonymous private read-write memory (for tests and bounce buffers).
    pub fn anonymous(len: usize) -> io::Result<Mmap> {
        // SAFETY: a fresh anonymous mapping; result checked.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        Self::from_raw(p, len, true)
    }

    /// Replaces `len` bytes at `at` inside this mapping with a shared mapping
    /// of `fd` at `offset`.
    pub fn place_fd(
        &mut self,
        at: usize,
        fd: BorrowedFd<'_>,
        offset: u64,
        len: usize,
        writable: bool,
    ) -> io::Result<()> {
        if at.checked_add(len).is_none_or(|end| end > self.len) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "placement outside the mapping",
            ));
        }
        let prot = libc::PROT_READ | if writable { libc::PROT_WRITE } else { 0 };
        // SAFETY: the target range lies inside this mapping, which we own
        // exclusively (&mut self): MAP_FIXED replaces only our own pages.
        let p = unsafe {
            libc::mmap(
                self.ptr.as_ptr().add(at).cast(),
                len,
                prot,
                libc::MAP_SHARED | libc::MAP_FIXED,
                fd.as_raw_fd(),
                offset as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        self.writable = writable;
        Ok(())
    }

    fn from_raw(p: *mut libc::c_void, len: usize, writable: bool) -> io::Result<Mmap> {
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(p.cast()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Mmap { ptr, len, writable })
    }

    /// The mapped bytes.
    pub fn mem(&self) -> SharedMem<'_> {
        // SAFETY: the range is mapped for as long as self lives.
        unsafe { SharedMem::new(self.ptr.as_ptr(), self.len) }
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

impl Drop for Mmap {
    fn drop(&mut self) {
        // SAFETY: we own the mapping and nothing refers to it after drop
        // (views borrow self).
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
