//! Where a virtual disk's sectors live. The block backend hands storage
//! owned page buffers (never guest memory) in whole requests, and takes
//! them back with the result, so a steady workload allocates nothing.
//!
//! Storage is asynchronous: `submit` starts a request and returns at once;
//! results are collected with `completions`, when the fd of `wake_fd` is
//! readable (after `woken`), or at any other time (storage that finishes
//! inside `submit` has no fd: its results are ready right after). One
//! request is one system call or one queue entry, whatever its number of
//! segments (vectored I/O).

use std::fmt;
use std::os::fd::BorrowedFd;
use std::sync::Arc;

use crate::platform::GrantMapping;

pub mod file;
mod inline;
pub mod mem;
mod pool;
pub mod qcow2;
#[cfg(test)]
mod testkit;
mod uring;
mod workers;

pub use file::{Engine, FileDisk, FileImage, FileOptions};
pub use mem::MemDisk;
pub use qcow2::{is_qcow2, Qcow2Disk, Qcow2Options, WeakQcow2Disk};

/// Bytes in a sector as blkif counts them, whatever the disk's own.
pub const SECTOR_SIZE: u64 = 512;
/// Bytes in a page, the unit of a segment's buffer.
pub const PAGE_SIZE: usize = 4096;

/// One page of data, aligned for direct I/O.
#[repr(C, align(4096))]
pub struct Page(pub [u8; PAGE_SIZE]);

impl Page {
    /// A zeroed page on the heap.
    pub fn new_boxed() -> Box<Page> {
        Box::new(Page([0; PAGE_SIZE]))
    }
}

/// Part of a page that a request reads into or writes from: one of the
/// queue's own pages, or (zero copy, for storage that
/// [accepts guest pages](Storage::accepts_guest_pages)) a guest's page
/// mapped through a persistent grant, kept mapped while the segment holds
/// it.
pub struct IoSegment {
    buffer: Buffer,
    /// First byte used.
    start: u16,
    /// Bytes used (`start + len <= PAGE_SIZE`, kept so by the
    /// constructors: [`IoSegment::iovec`] relies on it).
    len: u16,
}

enum Buffer {
    Own(Box<Page>),
    /// The guest may change these bytes at any time: they are only ever
    /// copied with [`crate::platform::SharedMem`]'s copies or handed to the kernel, never
    /// borrowed as a Rust slice.
    Guest(Arc<GrantMapping>),
}

impl IoSegment {
    /// `len` bytes from `start` of one of our own pages.
    ///
    /// # Panics
    /// If `start + len` is past the end of the page.
    pub fn new(page: Box<Page>, start: u16, len: u16) -> IoSegment {
        assert!(
            usize::from(start) + usize::from(len) <= PAGE_SIZE,
            "a segment inside its page"
        );
        IoSegment {
            buffer: Buffer::Own(page),
            start,
            len,
        }
    }

    /// `len` bytes from `start` of the first page of a guest's writable
    /// mapping; `None` if the mapping is read-only or shorter than that.
    pub(crate) fn in_guest(map: Arc<GrantMapping>, start: u16, len: u16) -> Option<IoSegment> {
        let mem = map.mem();
        let fits = usize::from(start) + usize::from(len) <= PAGE_SIZE.min(mem.len());
        (fits && mem.writable()).then_some(IoSegment {
            buffer: Buffer::Guest(map),
            start,
            len,
        })
    }

    /// First byte used in the page.
    pub fn start(&self) -> u16 {
        self.start
    }

    /// Bytes used.
    pub fn len(&self) -> u16 {
        self.len
    }

    /// No bytes used.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The segment's own page, if it has one (to reuse it).
    pub fn into_page(self) -> Option<Box<Page>> {
        match self.buffer {
            Buffer::Own(page) => Some(page),
            Buffer::Guest(_) => None,
        }
    }

    /// Whether the bytes are in a guest's page.
    pub fn in_guest_page(&self) -> bool {
        matches!(self.buffer, Buffer::Guest(_))
    }

    /// The bytes this segment covers.
    ///
    /// # Panics
    /// For a segment in a guest's page, which only storage that
    /// [accepts guest pages](Storage::accepts_guest_pages) is given, and
    /// which reaches its bytes through the copies below.
    pub fn bytes(&self) -> &[u8] {
        &self.own().0[self.range()]
    }

    /// The bytes this segment covers, to fill.
    ///
    /// # Panics
    /// As [`IoSegment::bytes`].
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        let range = self.range();
        match &mut self.buffer {
            Buffer::Own(page) => &mut page.0[range],
            Buffer::Guest(_) => panic!("{GUEST_PAGE_AS_SLICE}"),
        }
    }

    /// Copies the segment's bytes from `at` on into `out` (as many as it
    /// holds).
    ///
    /// # Panics
    /// If `at + out.len()` is more than the segment's length.
    pub fn read_at(&self, at: usize, out: &mut [u8]) {
        assert!(
            at + out.len() <= usize::from(self.len),
            "read past the segment"
        );
        let from = usize::from(self.start) + at;
        match &self.buffer {
            Buffer::Own(page) => out.copy_from_slice(&page.0[from..from + out.len()]),
            Buffer::Guest(map) => map.mem().read(from, out).expect("inside the page, checked"),
        }
    }

    /// Copies `data` into the segment from `at` on.
    ///
    /// # Panics
    /// If `at + data.len()` is more than the segment's length.
    pub fn write_at(&mut self, at: usize, data: &[u8]) {
        assert!(
            at + data.len() <= usize::from(self.len),
            "write past the segment"
        );
        let from = usize::from(self.start) + at;
        match &mut self.buffer {
            Buffer::Own(page) => page.0[from..from + data.len()].copy_from_slice(data),
            Buffer::Guest(map) => map
                .mem()
                .write(from, data)
                .expect("inside the page, checked"),
        }
    }

    /// Zeroes the segment's bytes from `at` to its end.
    pub fn zero_from(&mut self, at: usize) {
        let at = at.min(usize::from(self.len));
        let from = usize::from(self.start) + at;
        let n = usize::from(self.len) - at;
        match &mut self.buffer {
            Buffer::Own(page) => page.0[from..from + n].fill(0),
            Buffer::Guest(map) => map
                .mem()
                .fill(from, n, 0)
                .expect("inside the page, checked"),
        }
    }

    /// The segment's bytes from `skip` on, for a vectored system call or
    /// an io_uring entry, which the kernel reads from or writes into. The
    /// memory stays valid while the segment lives (an own page is boxed;
    /// a guest page's mapping is held).
    pub fn iovec(&mut self, skip: usize) -> libc::iovec {
        let skip = skip.min(usize::from(self.len));
        let from = usize::from(self.start) + skip;
        let base = match &mut self.buffer {
            Buffer::Own(page) => page.0.as_mut_ptr(),
            Buffer::Guest(map) => map.mem().as_ptr(),
        };
        libc::iovec {
            // In bounds: `start + len <= PAGE_SIZE`, checked when the
            // segment was made, and the buffer is at least a page.
            iov_base: base.wrapping_add(from).cast(),
            iov_len: usize::from(self.len) - skip,
        }
    }

    fn own(&self) -> &Page {
        match &self.buffer {
            Buffer::Own(page) => page,
            Buffer::Guest(_) => panic!("{GUEST_PAGE_AS_SLICE}"),
        }
    }

    fn range(&self) -> std::ops::Range<usize> {
        self.start as usize..(self.start + self.len) as usize
    }
}

const GUEST_PAGE_AS_SLICE: &str =
    "a segment in a guest's page has no slice: storage that accepts guest pages copies them";

/// What to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoOp {
    /// Fill the segments from the disk, from `offset` on.
    Read,
    /// Write the segments to the disk, from `offset` on.
    Write,
    /// Make every completed write durable (`fdatasync`).
    Flush,
    /// Forget `len` bytes from `offset`; `secure`: make them unrecoverable.
    Discard {
        /// Bytes to discard.
        len: u64,
        /// The data must not be recoverable afterwards.
        secure: bool,
    },
}

/// One storage request.
pub struct IoRequest {
    /// The caller's name for it, given back with the result.
    pub tag: u64,
    /// The operation.
    pub op: IoOp,
    /// Byte offset on the disk (a multiple of [`SECTOR_SIZE`]).
    pub offset: u64,
    /// Buffers, in disk order; empty for flush and discard.
    pub segments: Vec<IoSegment>,
}

impl IoRequest {
    /// Bytes the request reads or writes.
    pub fn data_len(&self) -> u64 {
        self.segments.iter().map(|s| u64::from(s.len())).sum()
    }
}

/// Why a storage request failed.
#[derive(Debug)]
pub enum StorageError {
    /// The operation is not offered by this storage (a discard on a file
    /// system that cannot punch holes).
    Unsupported,
    /// The range is outside the disk.
    OutOfRange,
    /// The disk is read-only.
    ReadOnly,
    /// The operating system refused.
    Io(std::io::Error),
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageError::Unsupported => f.write_str("operation not supported by the storage"),
            StorageError::OutOfRange => f.write_str("range outside the disk"),
            StorageError::ReadOnly => f.write_str("the disk is read-only"),
            StorageError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for StorageError {}

/// A finished request, with its buffers.
pub struct IoCompletion {
    /// The request's tag.
    pub tag: u64,
    /// Its outcome.
    pub result: Result<(), StorageError>,
    /// The request's buffers, given back (filled, for a read).
    pub segments: Vec<IoSegment>,
}

/// Discard support a disk advertises (`feature-discard` and friends).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiscardInfo {
    /// Bytes: discards should cover whole multiples of it.
    pub granularity: u32,
    /// Bytes: where the first granule starts.
    pub alignment: u32,
    /// Secure discard is offered.
    pub secure: bool,
}

/// What a frontend is told about the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Size in 512-byte sectors.
    pub sectors: u64,
    /// Logical sector size in bytes (512 or 4096).
    pub sector_size: u32,
    /// Physical sector size in bytes.
    pub physical_sector_size: u32,
    /// Writes are refused.
    pub read_only: bool,
    /// Completed writes may sit in a volatile cache until a flush
    /// (`feature-flush-cache`).
    pub volatile_cache: bool,
    /// Discard support, if any.
    pub discard: Option<DiscardInfo>,
}

/// A virtual disk's storage.
pub trait Storage: Send {
    /// Size and features.
    fn geometry(&self) -> Geometry;
    /// Starts a request. Never blocks on I/O.
    fn submit(&mut self, request: IoRequest);
    /// Starts every request in `requests` (leaving it empty), in order, as
    /// [`Storage::submit`] would one by one. Storage that hands requests to
    /// the kernel does so once for the whole batch: the block data path
    /// gathers what it takes off the ring in a pass and starts it here.
    fn submit_many(&mut self, requests: &mut Vec<IoRequest>) {
        for request in requests.drain(..) {
            self.submit(request);
        }
    }
    /// Moves finished requests into `out`. Never blocks.
    fn completions(&mut self, out: &mut Vec<IoCompletion>);
    /// The fd of `wake_fd` was found readable: storage quiets it here (it
    /// is polled level-triggered), so that `completions` need not make a
    /// system call when nothing woke it. Call it before `completions`.
    /// Storage without an fd, or whose `completions` quiets the fd itself,
    /// keeps the default, which does nothing.
    fn woken(&mut self) {}
    /// Whether requests may carry segments in a guest's pages (zero copy
    /// with persistent grants). Storage that says so never borrows a
    /// segment's bytes ([`IoSegment::bytes`]): it hands them to the kernel
    /// ([`IoSegment::iovec`]) or copies them ([`IoSegment::read_at`],
    /// [`IoSegment::write_at`]). Others get the queue's own pages, the data
    /// copied in and out for them.
    fn accepts_guest_pages(&self) -> bool {
        false
    }
    /// Readable when finished requests are waiting; `None` if requests
    /// finish inside `submit`.
    fn wake_fd(&self) -> Option<BorrowedFd<'_>>;
    /// The disk now has `sectors` 512-byte sectors (its image grew, or
    /// shrank): later requests are judged against that. Storage of a fixed
    /// size keeps refusing what lies past its end.
    fn resize(&mut self, sectors: u64) {
        let _ = sectors;
    }
}

/// Checks that a request fits the disk: the common part of every storage's
/// `submit`.
pub fn check_range(geometry: &Geometry, request: &IoRequest) -> Result<(), StorageError> {
    let len = match request.op {
        IoOp::Read | IoOp::Write => request.data_len(),
        IoOp::Discard { len, .. } => len,
        IoOp::Flush => 0,
    };
    let end = request
        .offset
        .checked_add(len)
        .ok_or(StorageError::OutOfRange)?;
    if end > geometry.sectors * SECTOR_SIZE {
        return Err(StorageError::OutOfRange);
    }
    if geometry.read_only && matches!(request.op, IoOp::Write | IoOp::Discard { .. }) {
        return Err(StorageError::ReadOnly);
    }
    Ok(())
}
