//! How the loop waits: for its doorbell, its sources' descriptors, its
//! timers and its event channels, in one of two ways.
//!
//! - epoll: one set holds every descriptor, the event channels' among them;
//!   a pass then reads the pending ports and writes each one back to unmask
//!   it: three system calls around every event (wait, read, write).
//! - io_uring, where the event channels are a device that reads pending
//!   ports and unmasks the ports written to it (Linux's `/dev/xen/evtchn`):
//!   a read of the device stays queued in the ring, and the unmasks of a
//!   pass are queued as one write; the next wait submits them and waits in
//!   the same system call. The epoll set (doorbell, descriptors) is one
//!   more entry in the ring, polled for readability. On a Xen PV dom0 every
//!   system call crosses the hypervisor twice, and a port's event costs one
//!   call instead of three.
//!
//! The ring is used only where it offers what is needed (the wait's
//! timeout argument, Linux 5.11); `XENRX_EVENT_WAIT=epoll` asks for epoll.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::Duration;

use io_uring::{opcode, types, IoUring, Probe};
use rustix::event::epoll;

use super::SourceId;
use crate::platform::{EventChannels, EvtchnError, Port};

const TOKEN_EVTCHN: u64 = 0;
const TOKEN_DOORBELL: u64 = 1;
/// Source ids are offset by this in epoll tokens.
const TOKEN_SOURCES: u64 = 2;

/// Ports read in one go, and unmasked in one write: as many as the device
/// hands out per read in Linux (a page of them is the most it takes per
/// write).
const PORTS_PER_CALL: usize = 256;

/// Which way to wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Way {
    /// io_uring where possible (unless `XENRX_EVENT_WAIT=epoll`).
    Best,
    /// As the ring does after a device answered its queued read with
    /// EAGAIN: poll the device in the ring, read the ports directly. For
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
    fn clear(&mut self) {
        self.doorbell = false;
        self.evtchn = false;
        self.ports.clear();
        self.sources.clear();
    }
}

/// The epoll set's answers, kept between waits.
struct Events(Vec<epoll::Event>);

// SAFETY: an event's data may be a pointer in general, which is why it is
// not `Send`; here it is only ever a token (`EventData::new_u64`), and the
// vector is the waiter's alone.
unsafe impl Send for Events {}

/// The loop's way of waiting.
pub(super) struct Waiter {
    epoll: OwnedFd,
    events: Events,
    uring: Option<Uring>,
}

impl Waiter {
    /// A waiter on `evtchn` and the doorbell, through io_uring where the
    /// event channels are a device and the kernel offers what is needed.
    pub fn new(
        evtchn: &dyn EventChannels,
        doorbell: BorrowedFd<'_>,
        way: Way,
    ) -> io::Result<Waiter> {
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        epoll::add(
            &epoll,
            doorbell,
            epoll::EventData::new_u64(TOKEN_DOORBELL),
            epoll::EventFlags::IN,
        )?;
        let wanted = std::env::var("XENRX_EVENT_WAIT").map_or(true, |v| v != "epoll");
        let uring = match evtchn.device() {
            Some(device) if wanted => Uring::new(device, epoll.as_raw_fd(), way).ok(),
            _ => None,
        };
        if uring.is_none() {
            epoll::add(
                &epoll,
                evtchn.fd(),
                epoll::EventData::new_u64(TOKEN_EVTCHN),
                epoll::EventFlags::IN,
            )?;
        }
        Ok(Waiter {
            epoll,
            events: Events(Vec::with_capacity(256)),
            uring,
        })
    }

    /// Which way it waits: `"io_uring"` or `"epoll"`.
    pub fn kind(&self) -> &'static str {
        match self.uring {
            Some(_) => "io_uring",
            None => "epoll",
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
        let look_in_epoll = match &mut self.uring {
            Some(uring) => uring.wait(timeout, ready)?,
            None => true,
        };
        if look_in_epoll {
            // Under io_uring the set said it has something: a look.
            let timeout = match self.uring {
                Some(_) => Some(Duration::ZERO),
                None => timeout,
            };
            self.wait_epoll(timeout, ready)?;
        }
        Ok(())
    }

    fn wait_epoll(
        &mut self,
        timeout: Option<Duration>,
        ready: &mut Ready,
    ) -> Result<(), EvtchnError> {
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

    /// Unmasks `ports` after a pass: at once under epoll; under io_uring
    /// with the next wait, in one write (the ring's order keeps it before
    /// the wait).
    pub fn unmask(&mut self, evtchn: &dyn EventChannels, ports: &[Port]) {
        if ports.is_empty() {
            return;
        }
        if let Some(uring) = &mut self.uring {
            if uring.queue_unmask(ports) {
                return;
            }
        }
        for &p in ports {
            // A port closed meanwhile has nothing to unmask.
            let _ = evtchn.unmask(p);
        }
    }

    /// Registers, re-arms or quiets a source's descriptor: polled for
    /// reading or not. Whether it is now registered.
    pub fn set_interest(
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

    /// Takes a source's descriptor out of the set.
    pub fn forget(&self, fd: BorrowedFd<'_>) {
        let _ = epoll::delete(&self.epoll, fd);
    }
}

/// What the ring's entries are.
const READ: u64 = 1;
const POLL_EPOLL: u64 = 2;
const POLL_DEVICE: u64 = 3;
const UNMASK: u64 = 4;
const CANCEL: u64 = 5;

/// The io_uring way. The buffers the kernel reads into and writes from are
/// boxed, so they stay where they are while the loop's state moves, and
/// they outlive every entry that uses them (see `Drop`).
struct Uring {
    ring: IoUring,
    device: RawFd,
    epoll: RawFd,
    /// Where the queued read puts the ports.
    read_buf: Box<[u32; PORTS_PER_CALL]>,
    /// What the queued unmask writes, and how many.
    unmask_buf: Box<[u32; PORTS_PER_CALL]>,
    /// Entries in the kernel (or queued for it).
    reading: bool,
    polling_epoll: bool,
    polling_device: bool,
    unmasking: bool,
    /// The device answered a queued read with an error (EAGAIN: a kernel
    /// that does not retry it when the device is ready): the ring polls it
    /// then, and the ports are read directly.
    poll_then_read: bool,
}

impl Uring {
    fn new(device: BorrowedFd<'_>, epoll: RawFd, way: Way) -> io::Result<Uring> {
        let ring = IoUring::new(8)?;
        let mut probe = Probe::new();
        ring.submitter().register_probe(&mut probe)?;
        let ops = [
            opcode::Read::CODE,
            opcode::Write::CODE,
            opcode::PollAdd::CODE,
            opcode::AsyncCancel::CODE,
        ];
        if !ring.params().is_feature_ext_arg() || !ops.iter().all(|&op| probe.is_supported(op)) {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "io_uring without a timeout for its wait, or without an operation used",
            ));
        }
        Ok(Uring {
            ring,
            device: device.as_raw_fd(),
            epoll,
            read_buf: Box::new([0; PORTS_PER_CALL]),
            unmask_buf: Box::new([0; PORTS_PER_CALL]),
            reading: false,
            polling_epoll: false,
            polling_device: false,
            unmasking: false,
            poll_then_read: way != Way::Best,
        })
    }

    fn push(&mut self, entry: io_uring::squeue::Entry) {
        // SAFETY: every entry's buffer is one of the boxes of `self`, which
        // stay allocated until the kernel is done with them (`Drop` waits
        // for that, or leaks them); at most five entries are ever in the
        // kernel at once, in a ring of eight.
        let pushed = unsafe { self.ring.submission().push(&entry) };
        debug_assert!(pushed.is_ok(), "the loop's ring has room for its entries");
    }

    /// Queues `ports`' unmask for the next wait; false when it cannot (an
    /// earlier one is still in the kernel, or too many ports), and the
    /// caller unmasks them directly.
    fn queue_unmask(&mut self, ports: &[Port]) -> bool {
        if self.unmasking || ports.len() > PORTS_PER_CALL {
            return false;
        }
        self.unmask_buf[..ports.len()].copy_from_slice(ports);
        let entry = opcode::Write::new(
            types::Fd(self.device),
            self.unmask_buf.as_ptr().cast(),
            (ports.len() * 4) as u32,
        )
        .offset(u64::MAX)
        .build()
        .user_data(UNMASK);
        self.push(entry);
        self.unmasking = true;
        true
    }

    /// Arms what is not armed, submits, waits, and takes the completions;
    /// whether the epoll set has something.
    fn wait(&mut self, timeout: Option<Duration>, ready: &mut Ready) -> Result<bool, EvtchnError> {
        if !self.reading && !self.poll_then_read {
            let entry = opcode::Read::new(
                types::Fd(self.device),
                self.read_buf.as_mut_ptr().cast(),
                (PORTS_PER_CALL * 4) as u32,
            )
            .offset(u64::MAX)
            .build()
            .user_data(READ);
            self.push(entry);
            self.reading = true;
        }
        if self.poll_then_read && !self.polling_device {
            let entry = opcode::PollAdd::new(types::Fd(self.device), libc::POLLIN as u32)
                .build()
                .user_data(POLL_DEVICE);
            self.push(entry);
            self.polling_device = true;
        }
        if !self.polling_epoll {
            let entry = opcode::PollAdd::new(types::Fd(self.epoll), libc::POLLIN as u32)
                .build()
                .user_data(POLL_EPOLL);
            self.push(entry);
            self.polling_epoll = true;
        }
        let submitter = self.ring.submitter();
        let entered = match timeout {
            Some(d) if d.is_zero() => submitter.submit(),
            Some(d) => {
                let ts = types::Timespec::new()
                    .sec(d.as_secs())
                    .nsec(d.subsec_nanos());
                let args = types::SubmitArgs::new().timespec(&ts);
                submitter.submit_with_args(1, &args)
            }
            None => submitter.submit_and_wait(1),
        };
        match entered {
            Ok(_) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR)) => {}
            Err(e) => return Err(EvtchnError::from(e)),
        }
        let mut epoll_ready = false;
        for cqe in self.ring.completion() {
            let res = cqe.result();
            match cqe.user_data() {
                READ => {
                    self.reading = false;
                    if res > 0 {
                        let n = res as usize / 4;
                        ready.ports.extend_from_slice(&self.read_buf[..n]);
                    } else if res < 0 && res != -libc::EINTR {
                        // EAGAIN: the kernel did not wait for the device to
                        // be ready. Anything else: the ring cannot read it.
                        // Either way, the ports are read directly from now
                        // on, where an error of the device itself shows.
                        self.poll_then_read = true;
                        ready.evtchn = true;
                    }
                }
                POLL_DEVICE => {
                    self.polling_device = false;
                    ready.evtchn = true;
                }
                POLL_EPOLL => {
                    self.polling_epoll = false;
                    epoll_ready = true;
                }
                UNMASK => self.unmasking = false,
                _ => {}
            }
        }
        Ok(epoll_ready)
    }
}

impl Drop for Uring {
    fn drop(&mut self) {
        // The kernel may still write into the read buffer: cancel what is in
        // it and wait until it says so, or leak the buffers if it will not.
        for (busy, what) in [
            (self.reading, READ),
            (self.polling_epoll, POLL_EPOLL),
            (self.polling_device, POLL_DEVICE),
        ] {
            if busy {
                self.push(opcode::AsyncCancel::new(what).build().user_data(CANCEL));
            }
        }
        for _ in 0..100 {
            if !(self.reading || self.polling_epoll || self.polling_device || self.unmasking) {
                return;
            }
            if self.ring.submitter().submit_and_wait(1).is_err() {
                break;
            }
            for cqe in self.ring.completion() {
                match cqe.user_data() {
                    READ => self.reading = false,
                    POLL_EPOLL => self.polling_epoll = false,
                    POLL_DEVICE => self.polling_device = false,
                    UNMASK => self.unmasking = false,
                    _ => {}
                }
            }
        }
        let leaked = std::mem::replace(&mut self.read_buf, Box::new([0; PORTS_PER_CALL]));
        Box::leak(leaked);
        let leaked = std::mem::replace(&mut self.unmask_buf, Box::new([0; PORTS_PER_CALL]));
        Box::leak(leaked);
    }
}
