//! The OS calls the real-hypervisor platform makes, behind a trait so that
//! its logic (argument packing, error mapping, batching) is tested without
//! Xen.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

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
}

/// The real calls.
#[derive(Clone, Copy, Debug, Default)]
pub struct LinuxOps;

impl DeviceOps for LinuxOps {
    fn open(&self, path: &Path, nonblocking: bool) -> io::Result<OwnedFd> {
        let c = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let flags = libc::O_RDWR | libc::O_CLOEXEC | if nonblocking { libc::O_NONBLOCK } else { 0 };
        // SAFETY: a valid C string and flags; the result is checked.
        let fd = unsafe { libc::open(c.as_ptr(), flags) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: open returned a fresh descriptor we now own.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    unsafe fn ioctl(
        &self,
        fd: BorrowedFd<'_>,
        request: u64,
        arg: *mut libc::c_void,
    ) -> io::Result<i32> {
        // SAFETY: the caller guarantees `arg` matches `request`.
        let r = unsafe { libc::ioctl(fd.as_raw_fd(), request as libc::c_ulong, arg) };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(r)
        }
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
        // SAFETY: reads into a buffer we own, of the length given.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    fn write(&self, fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
        // SAFETY: writes from a buffer we own, of the length given.
        let n = unsafe { libc::write(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }
}
