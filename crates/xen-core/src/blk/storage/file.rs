//! A disk in a raw image file or a block device.
//!
//! One of three engines does the I/O, each with one system call or one
//! ring entry per request: `preadv`/`pwritev` over all its segments,
//! `fdatasync`, `fallocate` or a discard ioctl. The io_uring engine
//! (`uring.rs`) is used where the kernel offers io_uring; a pool of
//! worker threads doing blocking calls (`pool.rs`) is the fallback, and can
//! be asked for. Either way finished requests queue up and an eventfd
//! becomes readable. An image in memory (tmpfs, ramfs) has its calls made
//! right away on the caller's thread instead (`inline.rs`), as they cannot
//! wait for a device. This file holds what they share: opening and probing
//! the disk, the discard decisions, and what one blocking request does.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rustix::event::EventfdFlags;
use rustix::fs::{AtFlags, FallocateFlags, FileType, FlockOperation, StatxFlags};
use rustix::io::Errno;
use rustix::ioctl::{opcode, Getter, Opcode, Setter};

use super::inline::Inline;
use super::uring::{self, Uring};
use super::{
    check_range, DiscardInfo, Geometry, IoCompletion, IoOp, IoRequest, IoSegment, Storage,
    StorageError, PAGE_SIZE, SECTOR_SIZE,
};

use super::pool::Pool;

/// How to open a [`FileDisk`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileOptions {
    /// Open read-only; writes and discards are refused.
    pub read_only: bool,
    /// Bypass the page cache (`O_DIRECT`). Requests must then be aligned to
    /// the geometry's logical sector size, or they fail with `EINVAL`.
    pub direct: bool,
    /// Worker threads doing the I/O under [`Engine::Threads`] (at least one
    /// is started); the io_uring engine needs none.
    pub workers: usize,
    /// What does the I/O.
    pub engine: Engine,
}

impl Default for FileOptions {
    fn default() -> FileOptions {
        FileOptions {
            read_only: false,
            direct: false,
            workers: 4,
            engine: Engine::Auto,
        }
    }
}

/// What does a [`FileDisk`]'s I/O.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Engine {
    /// [`Engine::Inline`] for an image file in memory (tmpfs, ramfs) opened
    /// without `direct`; otherwise io_uring when the kernel offers it (it
    /// may be missing, disabled by the `kernel.io_uring_disabled` sysctl,
    /// or refused by a seccomp filter), worker threads otherwise.
    #[default]
    Auto,
    /// Each request's system call made when it is submitted, on the
    /// submitting thread (the event loop's): for storage that never waits
    /// for a device.
    Inline,
    /// io_uring, or the open fails.
    Uring,
    /// Worker threads doing blocking system calls.
    Threads,
}

/// What holds the sectors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Backing {
    File,
    BlockDevice,
}

/// A disk in a raw image file or a block device.
///
/// Dropping it waits for the requests already submitted (their completions
/// are then discarded); [`FileDisk::close`] does the same and hands them back.
pub struct FileDisk {
    geometry: Geometry,
    io: Io,
}

/// The engine running.
enum Io {
    Threads(Pool),
    /// Boxed: the ring's state is ten times the pool's handle.
    Uring(Box<Uring>),
    Inline(Inline),
}

/// The completion of a request refused before it started.
fn refused(request: IoRequest, e: StorageError) -> IoCompletion {
    IoCompletion {
        tag: request.tag,
        result: Err(e),
        segments: request.segments,
    }
}

impl Io {
    /// Hands back a request finished without the engine's work.
    fn complete(&mut self, completion: IoCompletion) {
        match self {
            Io::Threads(pool) => pool.complete(completion),
            Io::Uring(ring) => ring.complete(completion),
            Io::Inline(inline) => inline.complete(completion),
        }
    }
}

impl FileDisk {
    /// Checks a request against the disk and hands it to the engine; true
    /// when the io_uring engine holds it in its backlog, for
    /// [`FileDisk::start_backlog`] to start with the rest of a batch.
    fn take(&mut self, request: IoRequest) -> bool {
        if let Err(e) = check_range(&self.geometry, &request) {
            self.io.complete(refused(request, e));
            return false;
        }
        match &mut self.io {
            Io::Threads(pool) => {
                pool.submit(request);
                false
            }
            Io::Uring(ring) => ring.queue(request),
            Io::Inline(inline) => {
                inline.submit(request);
                false
            }
        }
    }

    /// Starts what [`FileDisk::take`] left in the io_uring backlog, with
    /// one entry into the kernel.
    fn start_backlog(&mut self) {
        if let Io::Uring(ring) = &mut self.io {
            ring.start_backlog();
        }
    }

    /// Opens the image file or block device at `path` (locked as
    /// [`FileImage::open`] locks it, for as long as the disk lives).
    pub fn open(path: impl AsRef<Path>, options: FileOptions) -> io::Result<FileDisk> {
        FileImage::open(path, options)?.disk()
    }

    /// Starts the engine `options` ask for on an opened disk.
    fn start(
        fd: OwnedFd,
        backing: Backing,
        geometry: Geometry,
        options: &FileOptions,
    ) -> io::Result<FileDisk> {
        let inline = match options.engine {
            Engine::Inline => true,
            Engine::Auto => backing == Backing::File && !options.direct && in_memory(&fd),
            Engine::Threads | Engine::Uring => false,
        };
        if inline {
            return Ok(FileDisk {
                geometry,
                io: Io::Inline(Inline::start(fd, backing)),
            });
        }
        let ring = match options.engine {
            Engine::Uring => Some(uring::probe()?),
            // Whatever keeps io_uring from us, the threads can do the work.
            Engine::Auto => uring::probe().ok(),
            Engine::Threads | Engine::Inline => None,
        };
        let io = match ring {
            Some(ring) => Io::Uring(Box::new(Uring::start(ring, fd, backing)?)),
            None => {
                let wake =
                    rustix::event::eventfd(0, EventfdFlags::NONBLOCK | EventfdFlags::CLOEXEC)?;
                Io::Threads(Pool::start(fd, backing, options.workers.max(1), wake)?)
            }
        };
        Ok(FileDisk { geometry, io })
    }

    /// The engine doing the I/O, never `Auto`.
    pub fn engine(&self) -> Engine {
        match self.io {
            Io::Threads(_) => Engine::Threads,
            Io::Uring(_) => Engine::Uring,
            Io::Inline(_) => Engine::Inline,
        }
    }

    /// Waits for every submitted request, stops the engine, and returns the
    /// completions not reaped yet.
    pub fn close(mut self) -> Vec<IoCompletion> {
        let mut out = Vec::new();
        match &mut self.io {
            Io::Threads(pool) => {
                pool.stop();
                pool.reap(&mut out);
            }
            Io::Uring(ring) => ring.stop(&mut out),
            Io::Inline(inline) => inline.take(&mut out),
        }
        out
    }
}

impl Storage for FileDisk {
    fn geometry(&self) -> Geometry {
        self.geometry
    }

    fn submit(&mut self, request: IoRequest) {
        if self.take(request) {
            self.start_backlog();
        }
    }

    fn submit_many(&mut self, requests: &mut Vec<IoRequest>) {
        let mut queued = false;
        for request in requests.drain(..) {
            queued |= self.take(request);
        }
        if queued {
            self.start_backlog();
        }
    }

    fn completions(&mut self, out: &mut Vec<IoCompletion>) {
        match &mut self.io {
            Io::Threads(pool) => pool.take(out),
            Io::Uring(ring) => ring.reap(out),
            Io::Inline(inline) => inline.take(out),
        }
    }

    fn woken(&mut self) {
        match &mut self.io {
            Io::Threads(pool) => pool.woken(),
            Io::Uring(ring) => ring.woken(),
            Io::Inline(_) => {}
        }
    }

    /// The kernel reads and writes the segments (a guest's page included)
    /// in its vectored calls: no copy in the backend.
    fn accepts_guest_pages(&self) -> bool {
        true
    }

    /// None for the inline engine: its requests are done in `submit`.
    fn wake_fd(&self) -> Option<BorrowedFd<'_>> {
        match &self.io {
            Io::Threads(pool) => Some(pool.wake_fd()),
            Io::Uring(ring) => Some(ring.wake_fd()),
            Io::Inline(_) => None,
        }
    }

    fn resize(&mut self, sectors: u64) {
        // The image or device changed size under us (its owner grew it).
        self.geometry.sectors = sectors;
    }
}

/// An image file or block device opened once and locked, from which each
/// queue gets its own [`FileDisk`] over the same open file.
///
/// The lock (`flock`, exclusive, or shared when read-only, as QEMU locks
/// images) belongs to the open file itself, which every queue's handle
/// shares (`dup`) and the kernel keeps while any of the handle's I/O is in
/// flight, even after the process died. So a second process cannot serve
/// the same disk beside this one, and a backend started again after a
/// crash waits (see [`FileImage::open`]) until the dead one's last write
/// landed: a write it replays cannot be overtaken by the old copy.
#[derive(Debug)]
pub struct FileImage {
    fd: OwnedFd,
    backing: Backing,
    geometry: Geometry,
    options: FileOptions,
}

impl FileImage {
    /// Opens and locks the image; a disk another process holds (or whose
    /// dead holder's I/O is still in flight) is refused with
    /// [`io::ErrorKind::WouldBlock`]: try again later.
    pub fn open(path: impl AsRef<Path>, options: FileOptions) -> io::Result<FileImage> {
        let path = path.as_ref();
        let file = open_file(path, &options)?;
        let lock = if options.read_only {
            FlockOperation::NonBlockingLockShared
        } else {
            FlockOperation::NonBlockingLockExclusive
        };
        match rustix::fs::flock(&file, lock) {
            Ok(()) => {}
            Err(Errno::WOULDBLOCK) => {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!(
                        "{}: in use by another process (it holds a lock on it)",
                        path.display()
                    ),
                ))
            }
            Err(e) => return Err(e.into()),
        }
        let (backing, geometry) = probe(&file, &options)?;
        Ok(FileImage {
            fd: file.into(),
            backing,
            geometry,
            options,
        })
    }

    /// Size and features when opened.
    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// The image's size now, in 512-byte sectors (whole logical sectors),
    /// measured on the open file (`fstat`, or `BLKGETSIZE64` for a block
    /// device): the file it was opened on, whatever its path names now,
    /// and without opening anything (a close after writing would wake
    /// udev's and other watchers of the path).
    pub fn measure(&self) -> io::Result<u64> {
        let bytes = match self.backing {
            Backing::File => file_bytes(&rustix::fs::fstat(&self.fd)?),
            Backing::BlockDevice => device_bytes(self.fd.as_fd())?,
        };
        Ok(whole_sectors(bytes, self.geometry.sector_size))
    }

    /// A queue's handle: the same open file (and lock), its own engine.
    pub fn disk(&self) -> io::Result<FileDisk> {
        let fd = rustix::io::fcntl_dupfd_cloexec(&self.fd, 0)?;
        FileDisk::start(fd, self.backing, self.geometry, &self.options)
    }
}

// ---- What the disk looks like ----

fn open_file(path: &Path, options: &FileOptions) -> io::Result<File> {
    let mut open = OpenOptions::new();
    open.read(true).write(!options.read_only);
    if options.direct {
        open.custom_flags(libc::O_DIRECT);
    }
    open.open(path)
}

/// `TMPFS_MAGIC` and `RAMFS_MAGIC` (linux/magic.h): file systems whose
/// files are pages in memory.
const MEMORY_FILE_SYSTEMS: [u64; 2] = [0x0102_1994, 0x8584_58f6];

/// Whether `fd`'s file lives in memory, so that reading or writing it never
/// waits for a device.
fn in_memory(fd: &OwnedFd) -> bool {
    rustix::fs::fstatfs(fd).is_ok_and(|st| MEMORY_FILE_SYSTEMS.contains(&(st.f_type as u64)))
}

/// `BLKGETSIZE64`, `_IOR(0x12, 114, size_t)` in linux/fs.h.
const BLKGETSIZE64: Opcode = opcode::read::<usize>(0x12, 114);
/// `BLKDISCARD`, `_IO(0x12, 119)`: takes `u64 range[2]` (start, length).
const BLKDISCARD: Opcode = opcode::none(0x12, 119);
/// `BLKSECDISCARD`, `_IO(0x12, 125)`: takes `u64 range[2]` (start, length).
const BLKSECDISCARD: Opcode = opcode::none(0x12, 125);

fn probe(file: &File, options: &FileOptions) -> io::Result<(Backing, Geometry)> {
    let stat = rustix::fs::fstat(file)?;
    let (backing, bytes, logical, physical, discard) = match FileType::from_raw_mode(stat.st_mode) {
        FileType::RegularFile => {
            let direct = options.direct;
            let logical = if direct { direct_alignment(file) } else { 512 };
            let discard = DiscardInfo {
                granularity: PAGE_SIZE as u32,
                alignment: 0,
                // A punched hole's old blocks may still be on the medium.
                secure: false,
            };
            let bytes = file_bytes(&stat);
            // The page cache works in pages: smaller writes read first.
            let physical = logical.max(PAGE_SIZE as u32);
            (Backing::File, bytes, logical, physical, Some(discard))
        }
        FileType::BlockDevice => {
            let bytes = device_bytes(file.as_fd())?;
            let logical = rustix::fs::ioctl_blksszget(file)?;
            let physical = rustix::fs::ioctl_blkpbszget(file)?.max(logical);
            let (major, minor) = (
                rustix::fs::major(stat.st_rdev),
                rustix::fs::minor(stat.st_rdev),
            );
            let discard = block_discard_info(Path::new(&format!("/sys/dev/block/{major}:{minor}")));
            (Backing::BlockDevice, bytes, logical, physical, discard)
        }
        other => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("not a regular file or a block device: {other:?}"),
            ))
        }
    };
    if !logical.is_power_of_two() || !(512..=4096).contains(&logical) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unsupported logical sector size {logical}"),
        ));
    }
    let geometry = Geometry {
        sectors: whole_sectors(bytes, logical),
        sector_size: logical,
        physical_sector_size: physical,
        read_only: options.read_only,
        // The page cache, or the device's own write cache: flushes are
        // cheap when there is nothing to flush, so always offer them.
        volatile_cache: true,
        discard,
    };
    Ok((backing, geometry))
}

/// A regular file's size in bytes.
fn file_bytes(stat: &rustix::fs::Stat) -> u64 {
    u64::try_from(stat.st_size).unwrap_or(0)
}

/// A block device's size in bytes.
fn device_bytes(fd: BorrowedFd<'_>) -> io::Result<u64> {
    // SAFETY: BLKGETSIZE64 writes the device's size in bytes as a u64
    // (block/ioctl.c, `put_u64`), the type `Getter` reserves.
    Ok(unsafe { rustix::ioctl::ioctl(fd, Getter::<BLKGETSIZE64, u64>::new()) }?)
}

/// Whole logical sectors of `logical` bytes in `bytes`, counted in
/// 512-byte ones.
fn whole_sectors(bytes: u64, logical: u32) -> u64 {
    bytes / u64::from(logical) * (u64::from(logical) / SECTOR_SIZE)
}

/// The file system's offset alignment for direct I/O on `file`
/// (`STATX_DIOALIGN`, Linux 6.1); 512 when it does not say.
fn direct_alignment(file: &File) -> u32 {
    match rustix::fs::statx(file, "", AtFlags::EMPTY_PATH, StatxFlags::DIOALIGN) {
        Ok(st) if st.stx_mask & StatxFlags::DIOALIGN.bits() != 0 => {
            st.stx_dio_offset_align.max(SECTOR_SIZE as u32)
        }
        _ => SECTOR_SIZE as u32,
    }
}

/// Discard support of the block device whose sysfs directory is `dev`
/// (`/sys/dev/block/MAJ:MIN`; a partition's queue is its disk's).
/// Whether secure erase is offered is not in sysfs: a secure discard is
/// tried anyway and reports `Unsupported` if refused.
fn block_discard_info(dev: &Path) -> Option<DiscardInfo> {
    let read =
        |path: PathBuf| -> Option<u64> { std::fs::read_to_string(path).ok()?.trim().parse().ok() };
    let queue = [dev.join("queue"), dev.join("../queue")]
        .into_iter()
        .find(|q| q.is_dir())?;
    if read(queue.join("discard_max_bytes"))? == 0 {
        return None;
    }
    let granularity = read(queue.join("discard_granularity")).unwrap_or(0);
    Some(DiscardInfo {
        granularity: u32::try_from(granularity.max(SECTOR_SIZE)).ok()?,
        alignment: u32::try_from(read(dev.join("discard_alignment")).unwrap_or(0)).ok()?,
        secure: false,
    })
}

// ---- One request, blocking: what a worker does ----

/// Most iovecs one system call takes (`UIO_MAXIOV`); longer requests go on
/// as after a short transfer.
pub(super) const IOV_MAX: usize = 1024;

/// A worker's iovec buffer, reused by every request it does.
#[derive(Default)]
pub(super) struct Iovecs(Vec<libc::iovec>);

// SAFETY: the iovecs' pointers are written by `transfer_segments` (which
// clears the list first) and read only by the system call it makes within
// the same call, on the same thread; between requests the list holds stale
// values that nothing dereferences. Moving the buffer to another thread
// with the engine that owns it moves no access to any memory.
unsafe impl Send for Iovecs {}

pub(super) fn execute(
    fd: BorrowedFd<'_>,
    backing: Backing,
    request: &mut IoRequest,
    iovecs: &mut Iovecs,
) -> Result<(), StorageError> {
    match request.op {
        IoOp::Read | IoOp::Write => {
            let write = request.op == IoOp::Write;
            transfer_segments(
                fd,
                request.offset,
                &mut request.segments,
                write,
                &mut iovecs.0,
            )
        }
        IoOp::Flush => retry(|| rustix::fs::fdatasync(fd)).map_err(|e| StorageError::Io(e.into())),
        IoOp::Discard { len, secure } => {
            discard(fd, discard_method(backing, secure), request.offset, len)
        }
    }
}

/// Repeats a system call interrupted by a signal.
fn retry<T>(mut call: impl FnMut() -> rustix::io::Result<T>) -> rustix::io::Result<T> {
    loop {
        match call() {
            Err(Errno::INTR) => continue,
            result => return result,
        }
    }
}

/// Moves the cursor `(segment, byte in it)` on by `n` transferred bytes,
/// past any empty segments.
pub(super) fn advance(segments: &[IoSegment], at: &mut (usize, usize), mut n: usize) {
    while let Some(seg) = segments.get(at.0) {
        let left = usize::from(seg.len()) - at.1;
        if n < left {
            at.1 += n;
            return;
        }
        n -= left;
        *at = (at.0 + 1, 0);
    }
}

/// Reads (`write` false) or writes the segments from `offset` on, one
/// vectored system call per [`IOV_MAX`] segments, going on after a short
/// transfer. A read past the end of the file finds zeros, as a disk does.
fn transfer_segments(
    fd: BorrowedFd<'_>,
    mut offset: u64,
    segments: &mut [IoSegment],
    write: bool,
    iov: &mut Vec<libc::iovec>,
) -> Result<(), StorageError> {
    let mut at = (0, 0);
    while at.0 < segments.len() {
        iov.clear();
        iov.extend(
            segments[at.0..]
                .iter_mut()
                .take(IOV_MAX)
                .enumerate()
                .map(|(i, s)| s.iovec(if i == 0 { at.1 } else { 0 })),
        );
        let wanted = iov.iter().any(|v| v.iov_len > 0);
        let pos = libc::off_t::try_from(offset).map_err(|_| StorageError::OutOfRange)?;
        // At most IOV_MAX, far below c_int::MAX.
        let count = iov.len() as libc::c_int;
        let n = retry(|| {
            // SAFETY: every iovec covers bytes of a segment of `segments`
            // (IoSegment::iovec), which this function borrows mutably for the
            // call: a boxed page of ours or a guest page whose mapping the
            // segment holds. The kernel touches only those bytes, and is done
            // with them when the call returns. `iov` lives across the call.
            let n = unsafe {
                if write {
                    libc::pwritev(fd.as_raw_fd(), iov.as_ptr(), count, pos)
                } else {
                    libc::preadv(fd.as_raw_fd(), iov.as_ptr(), count, pos)
                }
            };
            usize::try_from(n)
                .map_err(|_| Errno::from_io_error(&io::Error::last_os_error()).unwrap_or(Errno::IO))
        })
        .map_err(|e| StorageError::Io(e.into()))?;
        if n == 0 && wanted {
            if write {
                return Err(StorageError::Io(io::ErrorKind::WriteZero.into()));
            }
            // The end of the file: a disk reads zeros there.
            for (i, s) in segments[at.0..].iter_mut().enumerate() {
                s.zero_from(if i == 0 { at.1 } else { 0 });
            }
            return Ok(());
        }
        offset += n as u64;
        advance(segments, &mut at, n);
    }
    Ok(())
}

/// How a discard is done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum DiscardMethod {
    /// `fallocate(PUNCH_HOLE | KEEP_SIZE)`: the range reads zeros after.
    PunchHole,
    /// The `BLKDISCARD` ioctl.
    BlkDiscard,
    /// The `BLKSECDISCARD` ioctl.
    BlkSecDiscard,
    /// Not offered.
    Unsupported,
}

pub(super) fn discard_method(backing: Backing, secure: bool) -> DiscardMethod {
    match (backing, secure) {
        (Backing::File, false) => DiscardMethod::PunchHole,
        // A punched hole's old blocks may still be on the medium.
        (Backing::File, true) => DiscardMethod::Unsupported,
        (Backing::BlockDevice, false) => DiscardMethod::BlkDiscard,
        (Backing::BlockDevice, true) => DiscardMethod::BlkSecDiscard,
    }
}

fn discard(
    fd: BorrowedFd<'_>,
    method: DiscardMethod,
    offset: u64,
    len: u64,
) -> Result<(), StorageError> {
    if method == DiscardMethod::Unsupported {
        return Err(StorageError::Unsupported);
    }
    if len == 0 {
        return Ok(());
    }
    let range = [offset, len];
    let result = retry(|| match method {
        DiscardMethod::PunchHole => {
            let mode = FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE;
            rustix::fs::fallocate(fd, mode, offset, len)
        }
        // SAFETY: BLKDISCARD reads a `u64[2]` (start, length) from its
        // argument (block/ioctl.c, blk_ioctl_discard), and `Setter` passes a
        // pointer to its own `[u64; 2]`, alive for the call.
        DiscardMethod::BlkDiscard => unsafe {
            rustix::ioctl::ioctl(fd, Setter::<BLKDISCARD, [u64; 2]>::new(range))
        },
        // SAFETY: BLKSECDISCARD takes the same `u64[2]` range as BLKDISCARD
        // (block/ioctl.c, blk_ioctl_secure_erase).
        DiscardMethod::BlkSecDiscard => unsafe {
            rustix::ioctl::ioctl(fd, Setter::<BLKSECDISCARD, [u64; 2]>::new(range))
        },
        DiscardMethod::Unsupported => Err(Errno::OPNOTSUPP),
    });
    result.map_err(discard_error)
}

/// A file system or device that cannot discard says `EOPNOTSUPP`.
pub(super) fn discard_error(e: Errno) -> StorageError {
    match e {
        Errno::OPNOTSUPP => StorageError::Unsupported,
        e => StorageError::Io(e.into()),
    }
}

#[cfg(test)]
#[path = "file_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "image_tests.rs"]
mod image_tests;
