//! The io_uring way of waiting: a read of the event-channel device queued
//! in the ring, polls of the doorbell and of each source's descriptor, and
//! a pass's unmasks as one write, all submitted by the wait that follows.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::time::Duration;

use io_uring::{opcode, squeue, types, IoUring, Probe};

use super::{Ready, Way};
use crate::platform::event_loop::SourceId;
use crate::platform::{EvtchnError, Port};

/// Ports read in one go, and unmasked in one write: as many as the device
/// hands out per read in Linux (a page of them is the most it takes per
/// write).
const PORTS_PER_CALL: usize = 256;

/// Entries the ring takes at once: more wait in it until the next submit
/// (a burst of sources polling their descriptors, as when many are added).
const ENTRIES: u32 = 64;

/// What the ring's entries are (a source's poll: its id with this bit).
const READ: u64 = 1;
const POLL_DEVICE: u64 = 2;
const POLL_DOORBELL: u64 = 3;
const UNMASK: u64 = 4;
const CANCEL: u64 = 5;
const SOURCE: u64 = 1 << 63;

/// A source's descriptor, polled in the ring.
struct Poll {
    fd: RawFd,
    /// The source wants to know when it is readable.
    wanted: bool,
    /// A poll is in the ring.
    armed: bool,
}

/// The buffers the kernel reads into and writes from are boxed, so they
/// stay where they are while the loop's state moves, and they outlive
/// every entry that uses them (see `Drop`).
pub(in crate::platform::event_loop) struct Uring {
    ring: IoUring,
    device: RawFd,
    doorbell: RawFd,
    /// Where the queued read puts the ports.
    read_buf: Box<[u32; PORTS_PER_CALL]>,
    /// What the queued unmask writes.
    unmask_buf: Box<[u32; PORTS_PER_CALL]>,
    /// Entries in the kernel (or queued for it).
    reading: bool,
    polling_device: bool,
    polling_doorbell: bool,
    unmasking: bool,
    /// The device answered a queued read with an error (EAGAIN: a kernel
    /// that does not retry it when the device is ready): the ring polls it
    /// then, and the ports are read directly.
    poll_then_read: bool,
    polls: HashMap<SourceId, Poll>,
    /// Sources whose poll fired and who still want one: armed again by the
    /// next wait, after they have run (a poll fires while its descriptor
    /// is readable, as epoll's level-triggered wait).
    rearm: Vec<SourceId>,
    /// Entries the ring had no room for.
    backlog: Vec<squeue::Entry>,
}

impl Uring {
    pub fn new(device: BorrowedFd<'_>, doorbell: BorrowedFd<'_>, way: Way) -> io::Result<Uring> {
        let ring = IoUring::new(ENTRIES)?;
        let mut probe = Probe::new();
        ring.submitter().register_probe(&mut probe)?;
        let ops = [
            opcode::Read::CODE,
            opcode::Write::CODE,
            opcode::PollAdd::CODE,
            opcode::AsyncCancel::CODE,
        ];
        let params = ring.params();
        if !params.is_feature_ext_arg()
            || !params.is_feature_nodrop()
            || !ops.iter().all(|&op| probe.is_supported(op))
        {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "io_uring without a timeout for its wait, or without an operation used",
            ));
        }
        Ok(Uring {
            ring,
            device: device.as_raw_fd(),
            doorbell: doorbell.as_raw_fd(),
            read_buf: Box::new([0; PORTS_PER_CALL]),
            unmask_buf: Box::new([0; PORTS_PER_CALL]),
            reading: false,
            polling_device: false,
            polling_doorbell: false,
            unmasking: false,
            poll_then_read: way != Way::Best,
            polls: HashMap::new(),
            rearm: Vec::new(),
            backlog: Vec::new(),
        })
    }

    /// Queues an entry, submitting what is queued first if the ring is
    /// full. If the kernel takes nothing more now (completions it could
    /// not post yet), the entry waits in the backlog for the next wait.
    fn push(&mut self, entry: squeue::Entry) {
        if self.backlog.is_empty() && self.try_push(&entry) {
            return;
        }
        self.backlog.push(entry);
    }

    fn try_push(&mut self, entry: &squeue::Entry) -> bool {
        for _ in 0..2 {
            // SAFETY: the only buffers entries point to are the boxes of
            // `self`, which stay allocated until the kernel is done with
            // them (`Drop` waits for that, or leaks them).
            if unsafe { self.ring.submission().push(entry) }.is_ok() {
                return true;
            }
            if self.ring.submit().is_err() {
                return false;
            }
        }
        false
    }

    /// Queues what waited in the backlog, in order, as far as it goes.
    fn push_backlog(&mut self) {
        let mut backlog = std::mem::take(&mut self.backlog);
        let mut queued = 0;
        while queued < backlog.len() && self.try_push(&backlog[queued]) {
            queued += 1;
        }
        backlog.drain(..queued);
        self.backlog = backlog;
    }

    /// Leaves the buffers to the kernel for good (the ring would not say
    /// it is done with them).
    fn leak(&mut self) {
        let leaked = std::mem::replace(&mut self.read_buf, Box::new([0; PORTS_PER_CALL]));
        Box::leak(leaked);
        let leaked = std::mem::replace(&mut self.unmask_buf, Box::new([0; PORTS_PER_CALL]));
        Box::leak(leaked);
    }

    fn poll(fd: RawFd, user_data: u64) -> squeue::Entry {
        opcode::PollAdd::new(types::Fd(fd), libc::POLLIN as u32)
            .build()
            .user_data(user_data)
    }

    /// Queues `ports`' unmask for the next wait; false when it cannot (an
    /// earlier one is still in the kernel, or too many ports), and the
    /// caller unmasks them directly.
    pub fn queue_unmask(&mut self, ports: &[Port]) -> bool {
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

    /// Entries not submitted yet (queued, or to be armed again by the
    /// next wait: the device's read, the doorbell's and descriptors'
    /// polls), or completions not taken (the rings' indexes read in shared
    /// memory, no system call).
    pub fn has_news(&mut self) -> bool {
        !self.backlog.is_empty()
            || !self.rearm.is_empty()
            || !self.polling_doorbell
            || if self.poll_then_read {
                !self.polling_device
            } else {
                !self.reading
            }
            || !self.ring.submission().is_empty()
            || !self.ring.completion().is_empty()
    }

    pub fn set_interest(&mut self, id: SourceId, fd: BorrowedFd<'_>, readable: bool) {
        let poll = self.polls.entry(id).or_insert(Poll {
            fd: fd.as_raw_fd(),
            wanted: false,
            armed: false,
        });
        poll.wanted = readable;
        if readable && !poll.armed {
            poll.armed = true;
            let entry = Self::poll(poll.fd, SOURCE | id);
            self.push(entry);
        }
    }

    /// The source is gone: its poll is cancelled at once, so that the ring
    /// no longer holds its descriptor open.
    pub fn forget(&mut self, id: SourceId) {
        if let Some(poll) = self.polls.remove(&id) {
            if poll.armed {
                self.push(
                    opcode::AsyncCancel::new(SOURCE | id)
                        .build()
                        .user_data(CANCEL),
                );
                // Behind a backlog, the cancel goes in once it has.
                self.push_backlog();
                let _ = self.ring.submit();
            }
        }
    }

    /// Arms what is not armed, submits, waits, and takes the completions.
    pub fn wait(
        &mut self,
        timeout: Option<Duration>,
        ready: &mut Ready,
    ) -> Result<(), EvtchnError> {
        self.push_backlog();
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
            self.push(Self::poll(self.device, POLL_DEVICE));
            self.polling_device = true;
        }
        if !self.polling_doorbell {
            self.push(Self::poll(self.doorbell, POLL_DOORBELL));
            self.polling_doorbell = true;
        }
        for i in 0..self.rearm.len() {
            let id = self.rearm[i];
            let fd = match self.polls.get_mut(&id) {
                Some(p) if p.wanted && !p.armed => {
                    p.armed = true;
                    p.fd
                }
                _ => continue,
            };
            self.push(Self::poll(fd, SOURCE | id));
        }
        self.rearm.clear();
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
        self.reap(ready);
        Ok(())
    }

    fn reap(&mut self, ready: &mut Ready) {
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
                POLL_DOORBELL => {
                    self.polling_doorbell = false;
                    ready.doorbell = true;
                }
                UNMASK => self.unmasking = false,
                data if data & SOURCE != 0 => {
                    let id = data & !SOURCE;
                    // A forgotten source's poll is not its any more.
                    let Some(poll) = self.polls.get_mut(&id) else {
                        continue;
                    };
                    poll.armed = false;
                    if poll.wanted {
                        ready.sources.push(id);
                        // A descriptor the ring cannot poll is armed again
                        // only when its source asks.
                        if res >= 0 {
                            self.rearm.push(id);
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

impl Drop for Uring {
    fn drop(&mut self) {
        // The kernel may still write into the read buffer (and read the
        // unmask buffer): cancel the read and wait until both are done, or
        // leak the buffers if the ring will not say. Polls hold no memory
        // of ours; closing the ring ends them. Entries still in the backlog
        // never reached the kernel: nothing is to be waited for of them
        // (waiting would never end).
        for entry in std::mem::take(&mut self.backlog) {
            match entry.get_user_data() {
                READ => self.reading = false,
                UNMASK => self.unmasking = false,
                _ => {}
            }
        }
        let cancel = opcode::AsyncCancel::new(READ).build().user_data(CANCEL);
        if self.reading && !self.try_push(&cancel) {
            self.leak();
            return;
        }
        for _ in 0..100 {
            if !(self.reading || self.unmasking) {
                return;
            }
            if self.ring.submitter().submit_and_wait(1).is_err() {
                break;
            }
            for cqe in self.ring.completion() {
                match cqe.user_data() {
                    READ => self.reading = false,
                    UNMASK => self.unmasking = false,
                    _ => {}
                }
            }
        }
        self.leak();
    }
}
