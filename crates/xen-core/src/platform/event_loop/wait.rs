//! How the loop waits: for its doorbell, its sources' descriptors, its
//! timers and its event channels, in one of two ways.
//!
//! - epoll: one set holds every descriptor, the event channels' among them;
//!   a pass then reads the pending ports and writes each one back to unmask
//!   it: three system calls around every event (wait, read, write).
//! - io_uring ([`uring`]), where the event channels are a device that reads
//!   pending ports and unmasks the ports written to it (Linux's
//!   `/dev/xen/evtchn`): a read of the device stays queued in the ring, the
//!   doorbell and each source's descriptor are polled in it, and a pass's
//!   unmasks are queued as one write; the next wait submits them and waits
//!   in the same system call. On a Xen PV dom0 every system call crosses
//!   the hypervisor twice, and a port's event costs one call instead of
//!   three.
//!
//! The ring is used only where it offers what is needed (the wait's
//! timeout argument, Linux 5.11); `XENRX_EVENT_WAIT=epoll` asks for epoll.

mod uring;

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::time::Duration;

use rustix::event::epoll;

use super::SourceId;
use crate::platform::{EventChannels, EvtchnError, Port};
use uring::Uring;

const TOKEN_EVTCHN: u64 = 0;
const TOKEN_DOORBELL: u64 = 1;
/// Source ids are offset by this in epoll tokens.
const TOKEN_SOURCES: u64 = 2;

/// Which way to wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Way {
    /// io_uring where possible (unless `XENRX_EVENT_WAIT=epoll`).
    Best,
    /// As the ring does after a device answered its queued read with an
    /// error: poll the device in the ring, read the ports directly. For
    /// the tests of that path.
    #[cfg(test)]
    PollThenRead,
}

/// What a wait found.
#[derive(Default)]
pub(super) struct Ready {
    /// The doorbell rang.
    pub doorbell: bool,
    /// The event channels have pending ports, still to be read.
    pub evtchn: bool,
    /// Pending ports the wait read already (each masked until unmasked).
    pub ports: Vec<Port>,
    /// Sources whose descriptors are readable.
    pub sources: Vec<SourceId>,
}

impl Ready {
    pub(super) fn clear(&mut self) {
        self.doorbell = false;
        self.evtchn = false;
        self.ports.clear();
        self.sources.clear();
    }
}

/// The loop's way of waiting.
pub(super) enum Waiter {
    Epoll(EpollWait),
    Uring(Box<Uring>),
}

impl Waiter {
    /// A waiter on `evtchn` and the doorbell, through io_uring where the
    /// event channels are a device and the kernel offers what is needed.
    pub fn new(
        evtchn: &dyn EventChannels,
        doorbell: BorrowedFd<'_>,
        way: Way,
    ) -> io::Result<Waiter> {
        let wanted = std::env::var("XENRX_EVENT_WAIT").map_or(true, |v| v != "epoll");
        if let Some(device) = evtchn.device().filter(|_| wanted) {
            if let Ok(uring) = Uring::new(device, doorbell, way) {
                return Ok(Waiter::Uring(Box::new(uring)));
            }
        }
        EpollWait::new(evtchn, doorbell).map(Waiter::Epoll)
    }

    /// Which way it waits: `"io_uring"` or `"epoll"`.
    pub fn kind(&self) -> &'static str {
        match self {
            Waiter::Epoll(_) => "epoll",
            Waiter::Uring(_) => "io_uring",
        }
    }

    /// Waits up to `timeout` (`None`: no limit; zero: only a look) for
    /// anything, and says what into `ready` (the doorbell is left for the
    /// caller to drain). Interrupted by a signal, it returns with nothing
    /// found.
    pub fn wait(
        &mut self,
        timeout: Option<Duration>,
        ready: &mut Ready,
    ) -> Result<(), EvtchnError> {
        ready.clear();
        match self {
            Waiter::Epoll(w) => w.wait(timeout, ready),
            Waiter::Uring(w) => w.wait(timeout, ready),
        }
    }

    /// Whether the events are due a look at once, as far as can be told
    /// without a system call: under io_uring, entries queued for the kernel
    /// or to be armed again (an unmask, the event channels' read, a
    /// descriptor's poll), or completions waiting in the ring; under epoll
    /// nothing tells short of a wait.
    pub fn has_news(&mut self) -> bool {
        match self {
            Waiter::Epoll(_) => false,
            Waiter::Uring(w) => w.has_news(),
        }
    }

    /// Unmasks `ports` after a pass: at once under epoll; under io_uring
    /// with the next wait, in one write (the ring's order keeps it before
    /// the wait).
    pub fn unmask(&mut self, evtchn: &dyn EventChannels, ports: &[Port]) {
        if ports.is_empty() {
            return;
        }
        if let Waiter::Uring(w) = self {
            if w.queue_unmask(ports) {
                return;
            }
        }
        for &p in ports {
            // A port closed meanwhile has nothing to unmask.
            let _ = evtchn.unmask(p);
        }
    }

    /// Polls a source's descriptor for reading, or stops. `registered`:
    /// whether it was given before (and not forgotten since). Whether it
    /// is now registered.
    pub fn set_interest(
        &mut self,
        id: SourceId,
        fd: BorrowedFd<'_>,
        registered: bool,
        readable: bool,
    ) -> bool {
        match self {
            Waiter::Epoll(w) => w.set_interest(id, fd, registered, readable),
            Waiter::Uring(w) => {
                w.set_interest(id, fd, readable);
                true
            }
        }
    }

    /// Stops polling a source's descriptor for good (the source is gone).
    pub fn forget(&mut self, id: SourceId, fd: BorrowedFd<'_>) {
        match self {
            Waiter::Epoll(w) => {
                let _ = epoll::delete(&w.epoll, fd);
            }
            Waiter::Uring(w) => w.forget(id),
        }
    }
}

/// The epoll set's answers, kept between waits.
struct Events(Vec<epoll::Event>);

// SAFETY: an event's data may be a pointer in general, which is why it is
// not `Send`; here it is only ever a token (`EventData::new_u64`), and the
// vector is the waiter's alone.
unsafe impl Send for Events {}

/// The epoll way: one set, the event channels' descriptor in it.
pub(super) struct EpollWait {
    epoll: OwnedFd,
    events: Events,
}

impl EpollWait {
    fn new(evtchn: &dyn EventChannels, doorbell: BorrowedFd<'_>) -> io::Result<EpollWait> {
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        for (fd, token) in [(doorbell, TOKEN_DOORBELL), (evtchn.fd(), TOKEN_EVTCHN)] {
            epoll::add(
                &epoll,
                fd,
                epoll::EventData::new_u64(token),
                epoll::EventFlags::IN,
            )?;
        }
        Ok(EpollWait {
            epoll,
            events: Events(Vec::with_capacity(256)),
        })
    }

    fn wait(&mut self, timeout: Option<Duration>, ready: &mut Ready) -> Result<(), EvtchnError> {
        let ts = timeout.map(|d| rustix::event::Timespec {
            tv_sec: d.as_secs().min(i64::MAX as u64) as i64,
            tv_nsec: i64::from(d.subsec_nanos()),
        });
        let events = &mut self.events.0;
        events.clear();
        match epoll::wait(
            &self.epoll,
            rustix::buffer::spare_capacity(events),
            ts.as_ref(),
        ) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(EvtchnError::from(io::Error::from(e))),
        }
        for ev in events.iter() {
            match ev.data.u64() {
                TOKEN_EVTCHN => ready.evtchn = true,
                TOKEN_DOORBELL => ready.doorbell = true,
                token => ready.sources.push(token - TOKEN_SOURCES),
            }
        }
        Ok(())
    }

    fn set_interest(
        &self,
        id: SourceId,
        fd: BorrowedFd<'_>,
        registered: bool,
        readable: bool,
    ) -> bool {
        let flags = match readable {
            true => epoll::EventFlags::IN,
            false => epoll::EventFlags::empty(),
        };
        let data = epoll::EventData::new_u64(id + TOKEN_SOURCES);
        let done = match registered {
            true => epoll::modify(&self.epoll, fd, data, flags),
            false => epoll::add(&self.epoll, fd, data, flags),
        };
        done.is_ok()
    }
}
