//! A pseudo-terminal for a console: the backend holds the master, users
//! attach to the slave path (what the toolstack publishes as the console's
//! `tty`).

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// A master/slave pair in raw mode.
pub(super) struct Pty {
    master: OwnedFd,
    /// Kept open for the console's lifetime: with no slave open at all,
    /// reading the master fails (EIO) and polls as hung up, so a console
    /// nobody is attached to would spin.
    _slave: OwnedFd,
    path: PathBuf,
}

impl Pty {
    /// Opens a new pair; the master is non-blocking, the line discipline
    /// raw (no echo, no line editing, no newline translation: the guest's
    /// bytes pass unchanged both ways).
    pub(super) fn open() -> io::Result<Pty> {
        // SAFETY: plain flags; the result is checked.
        let fd =
            check(unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) })?;
        // SAFETY: posix_openpt returned a fresh descriptor we now own.
        let master = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: a valid master descriptor; results checked.
        check(unsafe { libc::grantpt(master.as_raw_fd()) })?;
        // SAFETY: as above.
        check(unsafe { libc::unlockpt(master.as_raw_fd()) })?;
        let mut name = [0 as libc::c_char; 128];
        // SAFETY: the buffer holds `name.len()` bytes, as told; ptsname_r
        // returns an errno value rather than setting errno.
        let err = unsafe { libc::ptsname_r(master.as_raw_fd(), name.as_mut_ptr(), name.len()) };
        if err != 0 {
            return Err(io::Error::from_raw_os_error(err));
        }
        // SAFETY: on success ptsname_r wrote a NUL-terminated string into
        // the buffer.
        let cpath = unsafe { CStr::from_ptr(name.as_ptr()) };
        let path = PathBuf::from(cpath.to_string_lossy().into_owned());

        // SAFETY: a valid descriptor; results checked.
        let flags = check(unsafe { libc::fcntl(master.as_raw_fd(), libc::F_GETFL) })?;
        // SAFETY: as above.
        check(unsafe { libc::fcntl(master.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) })?;

        // SAFETY: a NUL-terminated path and plain flags; result checked.
        let fd = check(unsafe {
            libc::open(
                cpath.as_ptr(),
                libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
            )
        })?;
        // SAFETY: open returned a fresh descriptor we now own.
        let slave = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: termios is plain data; zeroed is a valid starting value
        // that tcgetattr overwrites.
        let mut tio: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: a valid terminal descriptor and termios; result checked.
        check(unsafe { libc::tcgetattr(slave.as_raw_fd(), &mut tio) })?;
        // SAFETY: modifies the termios in place.
        unsafe { libc::cfmakeraw(&mut tio) };
        // SAFETY: a valid terminal descriptor and termios; result checked.
        check(unsafe { libc::tcsetattr(slave.as_raw_fd(), libc::TCSANOW, &tio) })?;

        Ok(Pty {
            master,
            _slave: slave,
            path,
        })
    }

    /// The slave's path.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// The master, for polling.
    pub(super) fn master(&self) -> BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.master.as_fd()
    }

    /// Writes what the terminal takes without blocking; returns that count.
    /// A full terminal (nobody reading) takes nothing: the caller drops the
    /// rest, as xenconsoled does, rather than hold up the guest.
    pub(super) fn write(&self, data: &[u8]) -> usize {
        let mut done = 0;
        while done < data.len() {
            // SAFETY: writes from a valid slice, its length as told.
            let n = unsafe {
                libc::write(
                    self.master.as_raw_fd(),
                    data[done..].as_ptr().cast(),
                    data.len() - done,
                )
            };
            if n > 0 {
                done += n as usize;
                continue;
            }
            if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            break;
        }
        done
    }

    /// Reads what is there without blocking (0: nothing yet). The end of
    /// the terminal is an error, so the caller stops polling it.
    pub(super) fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            // SAFETY: reads into a valid buffer, its length as told.
            let n =
                unsafe { libc::read(self.master.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n > 0 {
                return Ok(n as usize);
            }
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => return Ok(0),
                _ => return Err(e),
            }
        }
    }
}
