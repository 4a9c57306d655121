//! Thin wrappers over the Linux primitives the simulator is made of, through
//! rustix (no hand-written system calls): memfd (guest memory), eventfd
//! (event-channel ports) and epoll (a handle's pending set).

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::event::epoll::{self, EventData, EventFlags};
use rustix::event::{EventfdFlags, Timespec};
use rustix::fs::MemfdFlags;
use rustix::io::Errno;

/// A memfd of `size` bytes (zeroed), named for /proc/<pid>/maps.
pub fn memfd(name: &str, size: u64) -> io::Result<OwnedFd> {
    let fd = rustix::fs::memfd_create(name, MemfdFlags::CLOEXEC)?;
    rustix::fs::ftruncate(&fd, size)?;
    Ok(fd)
}

/// An eventfd: one event-channel port's doorbell.
pub struct EventFd(OwnedFd);

impl EventFd {
    /// A non-blocking eventfd with a zero counter.
    pub fn new() -> io::Result<EventFd> {
        Ok(EventFd(rustix::event::eventfd(
            0,
            EventfdFlags::NONBLOCK | EventfdFlags::CLOEXEC,
        )?))
    }

    /// Wraps a received eventfd descriptor.
    pub fn from_owned(fd: OwnedFd) -> EventFd {
        EventFd(fd)
    }

    /// Rings the doorbell.
    pub fn signal(&self) -> io::Result<()> {
        match rustix::io::write(&self.0, &1u64.to_ne_bytes()) {
            Ok(8) => Ok(()),
            Ok(_) => Err(io::Error::from(io::ErrorKind::WriteZero)),
            // A counter at its maximum already says "pending".
            Err(Errno::AGAIN) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Clears the doorbell; returns how many rings it had (0 if none).
    pub fn drain(&self) -> io::Result<u64> {
        let mut v = [0u8; 8];
        match rustix::io::read(&self.0, &mut v) {
            Ok(8) => Ok(u64::from_ne_bytes(v)),
            Ok(_) => Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
            Err(Errno::AGAIN) => Ok(0),
            Err(e) => Err(e.into()),
        }
    }

    /// A duplicate descriptor (to send to another process).
    pub fn try_clone(&self) -> io::Result<OwnedFd> {
        self.0.try_clone()
    }
}

impl AsFd for EventFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

/// An epoll set: the pending ports of one event-channel handle.
pub struct Epoll(OwnedFd);

/// One-shot: after one delivery the port stays quiet until re-armed, which
/// is how an event channel stays masked until unmasked.
fn one_shot() -> EventFlags {
    EventFlags::IN | EventFlags::ONESHOT
}

impl Epoll {
    /// An empty set.
    pub fn new() -> io::Result<Epoll> {
        Ok(Epoll(epoll::create(epoll::CreateFlags::CLOEXEC)?))
    }

    /// Watches `fd`, reporting `data` once when it becomes readable.
    pub fn add(&self, fd: BorrowedFd<'_>, data: u64) -> io::Result<()> {
        Ok(epoll::add(
            &self.0,
            fd,
            EventData::new_u64(data),
            one_shot(),
        )?)
    }

    /// Re-arms a watched `fd` after a delivery.
    pub fn rearm(&self, fd: BorrowedFd<'_>, data: u64) -> io::Result<()> {
        Ok(epoll::modify(
            &self.0,
            fd,
            EventData::new_u64(data),
            one_shot(),
        )?)
    }

    /// Stops watching `fd`.
    pub fn remove(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        Ok(epoll::delete(&self.0, fd)?)
    }

    /// Collects ready watches into `out` (their data), waiting at most
    /// `timeout_ms` (0: not at all, negative: forever).
    pub fn wait(&self, out: &mut Vec<u64>, timeout_ms: i32) -> io::Result<()> {
        let mut events = [MaybeUninit::<epoll::Event>::uninit(); 64];
        let mut timeout = (timeout_ms >= 0).then(|| Timespec {
            tv_sec: i64::from(timeout_ms / 1000),
            tv_nsec: i64::from(timeout_ms % 1000) * 1_000_000,
        });
        loop {
            let (ready, _) = match epoll::wait(&self.0, &mut events, timeout.as_ref()) {
                Ok(r) => r,
                Err(Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            };
            let full = ready.len() == 64;
            out.extend(ready.iter().map(|e| e.data.u64()));
            if !full {
                return Ok(());
            }
            // A full buffer: more may be ready; look again without waiting.
            timeout = Some(Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            });
        }
    }
}

impl AsFd for Epoll {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eventfd_rings_and_drains() {
        let e = EventFd::new().unwrap();
        assert_eq!(e.drain().unwrap(), 0);
        e.signal().unwrap();
        e.signal().unwrap();
        assert_eq!(e.drain().unwrap(), 2);
        assert_eq!(e.drain().unwrap(), 0);
    }

    #[test]
    fn epoll_one_shot_until_rearmed() {
        let ep = Epoll::new().unwrap();
        let e = EventFd::new().unwrap();
        ep.add(e.as_fd(), 42).unwrap();
        let mut out = Vec::new();
        ep.wait(&mut out, 0).unwrap();
        assert!(out.is_empty());
        e.signal().unwrap();
        ep.wait(&mut out, 0).unwrap();
        assert_eq!(out, [42]);
        out.clear();
        // Still readable, but disarmed: not reported again.
        ep.wait(&mut out, 0).unwrap();
        assert!(out.is_empty());
        ep.rearm(e.as_fd(), 42).unwrap();
        ep.wait(&mut out, 0).unwrap();
        assert_eq!(out, [42]);
        ep.remove(e.as_fd()).unwrap();
        assert!(ep.rearm(e.as_fd(), 42).is_err(), "no longer watched");
    }

    #[test]
    fn epoll_reports_more_ready_watches_than_one_buffer_holds() {
        let ep = Epoll::new().unwrap();
        let fds: Vec<EventFd> = (0..100).map(|_| EventFd::new().unwrap()).collect();
        for (i, e) in fds.iter().enumerate() {
            ep.add(e.as_fd(), i as u64).unwrap();
            e.signal().unwrap();
        }
        let mut out = Vec::new();
        ep.wait(&mut out, 1000).unwrap();
        out.sort_unstable();
        assert_eq!(out, (0..100).collect::<Vec<u64>>());
    }

    #[test]
    fn epoll_waits_at_most_its_timeout() {
        let ep = Epoll::new().unwrap();
        let e = EventFd::new().unwrap();
        ep.add(e.as_fd(), 7).unwrap();
        let start = std::time::Instant::now();
        let mut out = Vec::new();
        ep.wait(&mut out, 30).unwrap();
        assert!(out.is_empty());
        assert!(start.elapsed() >= std::time::Duration::from_millis(25));
    }

    #[test]
    fn memfd_is_sized() {
        let fd = memfd("test", 8192).unwrap();
        assert_eq!(rustix::fs::fstat(&fd).unwrap().st_size, 8192);
    }
}
