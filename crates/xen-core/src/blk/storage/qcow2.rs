//! A disk in a qcow2 image file, read and written through the `imago` crate.
//!
//! imago's `sync` build does blocking I/O, so each [`Qcow2Disk`] runs one
//! worker thread fed by a queue; finished requests queue up and an eventfd
//! becomes readable, as for [`FileDisk`](super::FileDisk). Several disks
//! (one per device queue) can share one open image: [`Qcow2Disk::try_clone`]
//! and [`WeakQcow2Disk`]. Two independent opens of one writable image would
//! each keep their own cluster allocator and metadata caches and corrupt it,
//! so an open image holds an advisory lock (`flock`) on its file, exclusive
//! when writable: a second open of it fails with `EBUSY` instead.
//!
//! Requests on one image run one at a time, under the image's lock: a
//! discard needs the image to itself (it invalidates mappings that other
//! requests hold inside imago), and one thread at a time keeps us clear of
//! relying on imago's internal locking across threads.
//!
//! Images come from the host's administrator, as for QEMU: by default the
//! backing image and external data file that an image's header names are
//! opened too ([`Qcow2Options::follow_references`]). An image whose format
//! was guessed ([`is_qcow2`]) from a file a guest could once write raw must
//! not follow them: the guest could have written a header naming any host
//! file as its backing image.

use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::BorrowedFd;
use std::os::unix::fs::FileExt;
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;
use std::sync::{Arc, Mutex, Weak};

use imago::file::File;
use imago::io_buffers::{IoVector, IoVectorMut};
use imago::qcow2::Qcow2;
use imago::{
    DenyImplicitOpenGate, FormatAccess, FormatDriverBuilder, PermissiveImplicitOpenGate,
    Storage as _, StorageOpenOptions,
};
use rustix::event::EventfdFlags;
use rustix::fs::FlockOperation;
use rustix::io::Errno;

use super::workers::{lock, Execute, Workers};
use super::{
    check_range, DiscardInfo, Geometry, IoCompletion, IoOp, IoRequest, Storage, StorageError,
    PAGE_SIZE, SECTOR_SIZE,
};

/// The first four bytes of every qcow2 image.
pub const QCOW2_MAGIC: [u8; 4] = *b"QFI\xfb";

/// Whether the file or block device at `path` starts with the qcow2 magic.
///
/// A guess from the content: see the module's note before trusting it for
/// an image a guest could have written raw.
pub fn is_qcow2(path: impl AsRef<Path>) -> io::Result<bool> {
    let mut magic = [0; QCOW2_MAGIC.len()];
    match std::fs::File::open(path)?.read_exact(&mut magic) {
        Ok(()) => Ok(magic == QCOW2_MAGIC),
        // Shorter than the magic: not a qcow2 image (an empty raw one, say).
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

/// How to open a [`Qcow2Disk`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Qcow2Options {
    /// Open read-only; writes and discards are refused.
    pub read_only: bool,
    /// Open the backing image and external data file that the image's
    /// header names (read-only, for the backing image). Off: an image that
    /// names one fails to open.
    pub follow_references: bool,
}

impl Default for Qcow2Options {
    fn default() -> Qcow2Options {
        Qcow2Options {
            read_only: false,
            follow_references: true,
        }
    }
}

/// A disk in a qcow2 image: one handle (one queue's) on an open image.
///
/// Dropping it waits for the requests already submitted (their completions
/// are then discarded); the last handle on an image flushes it and closes
/// it. [`Qcow2Disk::close`] does the same and reports a failed final flush.
pub struct Qcow2Disk {
    /// Dropped first: stops the worker before the image can close.
    engine: Worker,
    image: Arc<Image>,
}

/// A reference to an open image that does not keep it open: gives another
/// handle on it while some [`Qcow2Disk`] still has it open.
#[derive(Clone, Default)]
pub struct WeakQcow2Disk(Weak<Image>);

impl WeakQcow2Disk {
    /// A new handle on the image, if it is still open.
    pub fn upgrade(&self) -> Option<io::Result<Qcow2Disk>> {
        self.0.upgrade().map(Qcow2Disk::start)
    }
}

impl Qcow2Disk {
    /// Opens the qcow2 image at `path`. A file that is not a qcow2 image, a
    /// damaged one, one using features imago does not know (zstd
    /// compression; the dirty bit of a crashed lazy-refcounts writer: run
    /// `qemu-img check -r all` first) or one locked by another open fails
    /// with an error naming the path.
    pub fn open(path: impl AsRef<Path>, options: Qcow2Options) -> io::Result<Qcow2Disk> {
        let path = path.as_ref();
        let context = |e: io::Error| {
            io::Error::new(
                e.kind(),
                format!("cannot open qcow2 image {}: {e}", path.display()),
            )
        };
        let lock = ImageLock::take(path, options.read_only).map_err(context)?;
        check_image(&lock.0).map_err(context)?;
        // A damaged image must fail here, not panic in the driver.
        let access = panic::catch_unwind(|| open_access(path, &options))
            .unwrap_or_else(|_| Err(invalid_data("the qcow2 driver panicked reading it")))
            .map_err(context)?;
        let image = Arc::new(Image {
            geometry: geometry(&access, options.read_only),
            access: Mutex::new(Some(access)),
            _lock: lock,
        });
        Qcow2Disk::start(image)
    }

    /// Another handle on the same open image, with a worker and a wake fd
    /// of its own (for another queue of the same device).
    pub fn try_clone(&self) -> io::Result<Qcow2Disk> {
        Qcow2Disk::start(Arc::clone(&self.image))
    }

    /// A reference to the image that does not keep it open.
    pub fn downgrade(&self) -> WeakQcow2Disk {
        WeakQcow2Disk(Arc::downgrade(&self.image))
    }

    fn start(image: Arc<Image>) -> io::Result<Qcow2Disk> {
        let engine = start_worker(Arc::clone(&image))?;
        Ok(Qcow2Disk { engine, image })
    }

    /// Waits for every submitted request, stops the worker, and returns the
    /// completions not reaped yet. If this was the image's last handle, the
    /// image is flushed, synced and closed; that failing is the error.
    pub fn close(self) -> io::Result<Vec<IoCompletion>> {
        let Qcow2Disk { mut engine, image } = self;
        engine.stop();
        let mut out = Vec::new();
        engine.reap(&mut out);
        drop(engine);
        if let Some(image) = Arc::into_inner(image) {
            let access = image.access.into_inner().unwrap_or_else(|p| p.into_inner());
            if let Some(access) = access {
                access.flush()?;
                access.sync()?;
            }
        }
        Ok(out)
    }
}

impl Storage for Qcow2Disk {
    fn geometry(&self) -> Geometry {
        self.image.geometry
    }

    fn submit(&mut self, request: IoRequest) {
        match check_range(&self.image.geometry, &request) {
            Ok(()) => self.engine.submit(request),
            Err(e) => self.engine.complete(IoCompletion {
                tag: request.tag,
                result: Err(e),
                segments: request.segments,
            }),
        }
    }

    fn completions(&mut self, out: &mut Vec<IoCompletion>) {
        self.engine.take(out);
    }

    fn woken(&mut self) {
        self.engine.woken();
    }

    fn wake_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.engine.wake_fd())
    }
}

// ---- The open image ----

/// An open image, shared by its handles.
struct Image {
    geometry: Geometry,
    /// `None` once the driver panicked: its state may be half-updated, so
    /// it is never used nor flushed again (it is leaked).
    access: Mutex<Option<FormatAccess<File>>>,
    /// The advisory lock on the image file; declared after `access` so
    /// that it is released only once the image is flushed and closed.
    _lock: ImageLock,
}

/// An advisory lock (`flock`) on an image file, held by an open file
/// description of its own.
struct ImageLock(std::fs::File);

impl ImageLock {
    /// Locks the image at `path`: shared to read, exclusive to write,
    /// failing at once if another open holds it.
    fn take(path: &Path, read_only: bool) -> io::Result<ImageLock> {
        let file = std::fs::File::open(path)?;
        let operation = if read_only {
            FlockOperation::NonBlockingLockShared
        } else {
            FlockOperation::NonBlockingLockExclusive
        };
        match rustix::fs::flock(&file, operation) {
            Ok(()) => Ok(ImageLock(file)),
            Err(Errno::WOULDBLOCK) => Err(io::Error::new(
                io::ErrorKind::ResourceBusy,
                "the image is in use (locked by another open)",
            )),
            Err(e) => Err(e.into()),
        }
    }
}

impl Drop for ImageLock {
    fn drop(&mut self) {
        // Unlocked explicitly, not just closed: a child process forked
        // meanwhile shares the open file description (and so the lock)
        // until it execs, which would keep a reopen out for that while.
        let _ = rustix::fs::flock(&self.0, FlockOperation::Unlock);
    }
}

/// The bits of an L1 or refcount table entry that hold a cluster offset.
const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;

/// Refuses what imago would misread or damage further: a file that is not
/// qcow2; an encrypted image (imago does not check `crypt_method`, and
/// would hand out ciphertext and write plaintext); a truncated or damaged
/// one. imago reads missing tables as zeros, trusts where tables point, and
/// has no metadata overlap checks: it would allocate clusters over the
/// header and tables as if free, or write L2 entries into the header. So
/// the tables' extents and the L1 table's entries are checked here; deeper
/// damage (inside L2 tables and refcount blocks) is `qemu-img check`'s.
fn check_image(file: &std::fs::File) -> io::Result<()> {
    // The version 2 header, big-endian as every qcow2 field.
    let mut header = [0; 64];
    let got = read_at(file, &mut header, 0)?;
    if !header[..got].starts_with(&QCOW2_MAGIC) {
        return Err(invalid_data("not a qcow2 image (no QFI\\xfb magic)"));
    }
    if got < header.len() {
        return Err(invalid_data("truncated qcow2 header"));
    }
    let be32 = |at: usize| u64::from(u32::from_be_bytes(header[at..at + 4].try_into().unwrap()));
    let be64 = |at: usize| u64::from_be_bytes(header[at..at + 8].try_into().unwrap());
    let crypt_method = be32(32);
    if crypt_method != 0 {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("encrypted qcow2 images are not supported (crypt_method {crypt_method})"),
        ));
    }
    let cluster_bits = be32(20);
    if !(9..=21).contains(&cluster_bits) {
        // imago says what is wrong with it.
        return Ok(());
    }
    let cluster = 1u64 << cluster_bits;
    // (what, start, length): the header cluster, the L1 and refcount tables.
    let tables = [
        ("header", 0, cluster),
        ("L1 table", be64(40), be32(36) * 8),
        ("refcount table", be64(48), be32(56) << cluster_bits),
    ];
    // A seek, not the metadata's length, so that block devices work too.
    let file_len = (&*file).seek(SeekFrom::End(0))?;
    let place = |what: &str, start: u64, len: u64| -> io::Result<()> {
        if start.checked_add(len).is_none_or(|end| end > file_len) {
            return Err(invalid_data(&format!(
                "truncated or damaged: the {what} ({len} bytes at byte {start:#x}) \
                 ends past the end of the file ({file_len} bytes)"
            )));
        }
        // Saturating: the other tables may not have been checked yet.
        let overlaps =
            |&(_, at, n): &(&str, u64, u64)| start < at.saturating_add(n) && at < start + len;
        match tables.iter().find(|t| t.0 != what && overlaps(t)) {
            Some((other, ..)) => Err(invalid_data(&format!(
                "damaged: the {what} at byte {start:#x} overlaps the {other}"
            ))),
            None => Ok(()),
        }
    };
    for (what, start, len) in tables {
        place(what, start, len)?;
    }
    if tables[2].2 == 0 {
        return Err(invalid_data("damaged: no refcount table"));
    }
    // Where the L1 table puts L2 tables, and the refcount table refcount
    // blocks (QEMU's size limits on both tables bound what is read).
    let children = [
        (&tables[1], "L2 table", 32 << 20),
        (&tables[2], "refcount block", 8 << 20),
    ];
    for (&(table, start, len), child, max) in children {
        if len > max {
            return Err(invalid_data(&format!("damaged: a {table} of {len} bytes")));
        }
        let mut entries = vec![0; len as usize];
        read_at(file, &mut entries, start)?;
        for (i, entry) in entries.chunks_exact(8).enumerate() {
            let at = u64::from_be_bytes(entry.try_into().unwrap()) & OFFSET_MASK;
            if at != 0 {
                place(&format!("{child} of {table} entry {i}"), at, cluster)?;
            } else if i == 0 && child == "refcount block" {
                return Err(invalid_data("damaged: no refcount block for the header"));
            }
        }
    }
    Ok(())
}

/// Reads into `buf` at `offset` until it is full or the file ends;
/// returns the bytes read.
fn read_at(file: &std::fs::File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

fn open_access(path: &Path, options: &Qcow2Options) -> io::Result<FormatAccess<File>> {
    // The image file itself is opened here, not through a gate, so that
    // the gate decides only about the files its header names.
    let file = File::open(
        StorageOpenOptions::new()
            .filename(path)
            .write(!options.read_only),
    )?;
    let builder = Qcow2::<File>::builder(file).write(!options.read_only);
    let qcow2 = if options.follow_references {
        builder.open(PermissiveImplicitOpenGate::default())?
    } else {
        builder.open(DenyImplicitOpenGate::default())?
    };
    Ok(FormatAccess::new(qcow2))
}

fn geometry(access: &FormatAccess<File>, read_only: bool) -> Geometry {
    Geometry {
        // A tail shorter than a sector is not part of the disk.
        sectors: access.size() / SECTOR_SIZE,
        sector_size: SECTOR_SIZE as u32,
        // The image file sits in the host's page cache, which works in
        // pages; a cluster costs more only when first allocated.
        physical_sector_size: PAGE_SIZE as u32,
        read_only,
        // imago caches metadata, and the file sits in the page cache.
        volatile_cache: true,
        // Zero clusters (qcow2 v3) are what a discard leaves behind; v2
        // images have none, and imago refuses to discard on them.
        discard: access
            .inner()
            .zero_granularity()
            .and_then(|cluster| u32::try_from(cluster).ok())
            .map(|granularity| DiscardInfo {
                granularity,
                alignment: 0,
                // Freed clusters keep their old data in the image file.
                secure: false,
            }),
    }
}

fn invalid_data(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

// ---- One request, blocking: what the worker does ----

fn execute(
    access: &mut FormatAccess<File>,
    geometry: &Geometry,
    request: &mut IoRequest,
) -> Result<(), StorageError> {
    let offset = request.offset;
    let result = match request.op {
        IoOp::Read => {
            let mut buffers = IoVectorMut::with_capacity(request.segments.len());
            for segment in request.segments.iter_mut().filter(|s| !s.is_empty()) {
                buffers.push(segment.bytes_mut());
            }
            // Unallocated clusters read as zeros, or from the backing image.
            access.readv(buffers, offset)
        }
        IoOp::Write => {
            let mut buffers = IoVector::with_capacity(request.segments.len());
            for segment in request.segments.iter().filter(|s| !s.is_empty()) {
                buffers.push(segment.bytes());
            }
            access.writev(buffers, offset)
        }
        // imago's flush writes its cached metadata; sync makes it and the
        // data durable (fsync of the image and its data file).
        IoOp::Flush => access.flush().and_then(|()| access.sync()),
        IoOp::Discard { secure: true, .. } => return Err(StorageError::Unsupported),
        IoOp::Discard { .. } if geometry.discard.is_none() => {
            return Err(StorageError::Unsupported)
        }
        IoOp::Discard { len: 0, .. } => Ok(()),
        // Whole clusters become zero clusters and their space is freed;
        // the partial clusters at either end are written with zeros.
        IoOp::Discard { len, .. } => access.discard_to_zero(offset, len),
    };
    result.map_err(|e| request_error(request, e))
}

/// A failed request's error, saying what failed where.
fn request_error(request: &IoRequest, e: io::Error) -> StorageError {
    let (what, len) = match request.op {
        IoOp::Read => ("read", request.data_len()),
        IoOp::Write => ("write", request.data_len()),
        IoOp::Flush => ("flush", 0),
        IoOp::Discard { len, .. } => ("discard", len),
    };
    if e.kind() == io::ErrorKind::Unsupported && what == "discard" {
        return StorageError::Unsupported;
    }
    let offset = request.offset;
    StorageError::Io(io::Error::new(
        e.kind(),
        format!("qcow2 {what} of {len} bytes at byte {offset:#x}: {e}"),
    ))
}

/// Runs a request on the image, catching a panic of the driver: the
/// request then fails, and so does every later one on the image.
fn run_on(image: &Image, request: &mut IoRequest) -> Result<(), StorageError> {
    // Poison is shrugged off: the request runs under `catch_unwind`, so
    // this critical section is never left half-done.
    let mut slot = lock(&image.access);
    let Some(access) = slot.as_mut() else {
        return Err(StorageError::Io(io::Error::other(
            "the qcow2 driver failed earlier on this image; it is no longer used",
        )));
    };
    let run = panic::catch_unwind(AssertUnwindSafe(|| {
        execute(access, &image.geometry, request)
    }));
    run.unwrap_or_else(|_| {
        if let Some(access) = slot.take() {
            // Flushing half-updated metadata could damage the image more.
            std::mem::forget(access);
        }
        Err(StorageError::Io(io::Error::other(
            "the qcow2 driver panicked; the image is no longer used",
        )))
    })
}

// ---- The engine: one worker thread per handle ----

/// A worker thread taking this handle's requests from a queue.
type Worker = Workers<Arc<Image>>;

/// The worker runs each request on the handle's image. Requests run under
/// `catch_unwind` ([`run_on`]): the worker does not panic.
impl Execute for Arc<Image> {
    type Scratch = ();

    fn execute(&self, request: &mut IoRequest, _: &mut ()) -> Result<(), StorageError> {
        run_on(self, request)
    }
}

fn start_worker(image: Arc<Image>) -> io::Result<Worker> {
    let wake = rustix::event::eventfd(0, EventfdFlags::NONBLOCK | EventfdFlags::CLOEXEC)?;
    // One thread: requests on an image run one at a time anyway.
    Workers::spawn(image, 1, |_| "xenrx-blk-qcow2".into(), wake)
}

#[cfg(test)]
#[path = "qcow2_tests.rs"]
mod tests;
