//! The OS calls the real-hypervisor platform makes, behind a trait so that
//! its logic (argument packing, error mapping, batching) is tested without
//! Xen.

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{Mode, OFlags};
use rustix::ioctl::{Ioctl, IoctlOutput, Opcode};

use crate::platform::memory::Mmap;

/// Device access: open, ioctl, mmap, read, write.
pub trait DeviceOps: Send + Sync + 'static {
    /// Opens a device read-write (non-blocking if asked).
    fn open(&self, path: &Path, nonblocking: bool) -> io::Result<OwnedFd>;
    /// An ioctl; returns its non-negative result.
    ///
    /// # Safety
    /// `arg` must point to the argument `request` expects, valid for the
    /// kernel to read and write for the call's duration.
    unsafe fn ioctl(
        &self,
        fd: BorrowedFd<'_>,
        request: u64,
        arg: *mut libc::c_void,
    ) -> io::Result<i32>;
    /// A shared mapping of `len` bytes of the device at `offset`.
    fn mmap(&self, fd: BorrowedFd<'_>, len: usize, writable: bool, offset: u64)
        -> io::Result<Mmap>;
    /// read(2).
    fn read(&self, fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize>;
    /// write(2).
    fn write(&self, fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize>;
    /// Whether the descriptors opened are the devices themselves, so that
    /// reads and writes may also go another way than [`DeviceOps::read`]
    /// and [`DeviceOps::write`] (io_uring). Not for a fake.
    fn real_devices(&self) -> bool {
        false
    }
}

/// The real calls.
#[derive(Clone, Copy, Debug, Default)]
pub struct LinuxOps;

/// An ioctl whose argument is a raw pointer, checked by the caller (see
/// [`DeviceOps::ioctl`]); its output is the call's non-negative result.
struct RawIoctl {
    opcode: Opcode,
    arg: *mut libc::c_void,
}

// SAFETY: `DeviceOps::ioctl`'s contract: `arg` points to the argument
// `opcode` expects, valid for the kernel to read and write for the call.
// The call may write through it (IS_MUTATING), and the output is only the
// returned integer, read from no pointer.
unsafe impl Ioctl for RawIoctl {
    type Output = i32;
    const IS_MUTATING: bool = true;

    fn opcode(&self) -> Opcode {
        self.opcode
    }

    fn as_ptr(&mut self) -> *mut libc::c_void {
        self.arg
    }

    unsafe fn output_from_ptr(
        out: IoctlOutput,
        _extract_output: *mut libc::c_void,
    ) -> rustix::io::Result<i32> {
        Ok(out)
    }
}

impl DeviceOps for LinuxOps {
    fn open(&self, path: &Path, nonblocking: bool) -> io::Result<OwnedFd> {
        let mut flags = OFlags::RDWR | OFlags::CLOEXEC;
        if nonblocking {
            flags |= OFlags::NONBLOCK;
        }
        Ok(rustix::fs::open(path, flags, Mode::empty())?)
    }

    unsafe fn ioctl(
        &self,
        fd: BorrowedFd<'_>,
        request: u64,
        arg: *mut libc::c_void,
    ) -> io::Result<i32> {
        let opcode =
            Opcode::try_from(request).map_err(|_| io::Error::from_raw_os_error(libc::ENOTTY))?;
        // SAFETY: the caller guarantees that `arg` is what `request` takes.
        Ok(unsafe { rustix::ioctl::ioctl(fd, RawIoctl { opcode, arg }) }?)
    }

    fn mmap(
        &self,
        fd: BorrowedFd<'_>,
        len: usize,
        writable: bool,
        offset: u64,
    ) -> io::Result<Mmap> {
        Mmap::map_fd(fd, offset, len, writable)
    }

    fn read(&self, fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
        Ok(rustix::io::read(fd, buf)?)
    }

    fn write(&self, fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
        Ok(rustix::io::write(fd, buf)?)
    }

    fn real_devices(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;

    /// `c_ulong` is u32 on 32-bit targets.
    #[allow(clippy::unnecessary_cast)]
    const FIONREAD: u64 = libc::FIONREAD as u64;

    /// The real calls, on devices every Linux has.
    #[test]
    fn linux_ops_open_read_write_and_ioctl() {
        let ops = LinuxOps;
        let null = ops.open(Path::new("/dev/null"), true).unwrap();
        assert_eq!(ops.write(null.as_fd(), b"abc").unwrap(), 3);
        assert_eq!(ops.read(null.as_fd(), &mut [0u8; 4]).unwrap(), 0);
        let flags = rustix::fs::fcntl_getfl(&null).unwrap();
        assert!(flags.contains(OFlags::NONBLOCK | OFlags::RDWR));
        assert!(rustix::io::fcntl_getfd(&null)
            .unwrap()
            .contains(rustix::io::FdFlags::CLOEXEC));
        let err = ops
            .open(Path::new("/dev/xenrx-no-such-device"), false)
            .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT));

        // FIONREAD on a pipe: the kernel writes the argument, and the
        // errno of a request the device does not know comes back.
        let (r, w) = rustix::pipe::pipe().unwrap();
        rustix::io::write(&w, b"hello").unwrap();
        let mut pending: libc::c_int = 0;
        // SAFETY: FIONREAD takes a pointer to an int, alive for the call.
        let ret = unsafe {
            ops.ioctl(
                r.as_fd(),
                FIONREAD,
                (&mut pending as *mut libc::c_int).cast(),
            )
        }
        .unwrap();
        assert_eq!((ret, pending), (0, 5));
        // SAFETY: as above; /dev/null knows no FIONREAD.
        let err = unsafe {
            ops.ioctl(
                null.as_fd(),
                FIONREAD,
                (&mut pending as *mut libc::c_int).cast(),
            )
        }
        .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOTTY));
    }
}
