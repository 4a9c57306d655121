//! The io_uring engine of [`FileDisk`](super::FileDisk): one ring per disk,
//! one ring entry per request whatever its segment count (`READV`/`WRITEV`
//! over its pages, `FSYNC` with `DATASYNC` for a flush, `FALLOCATE` punching
//! a hole for a file's discard), and an eventfd registered with the ring as
//! the wake fd. `queue` takes requests and `start_backlog` enters the
//! kernel once for all of them; neither waits for I/O.
//!
//! Requests live in a slab of slots, as many as the submission queue has
//! entries, and a slot's index is its entries' `user_data`. A slot keeps
//! the request's pages and its iovec list where they are, untouched, from
//! the entry's submission to its completion; the lists are kept for the
//! next request, so a steady workload allocates nothing. Requests beyond
//! the slab wait in a backlog, started as completions free slots. With at
//! most one entry per slot in the queues, the submission queue never
//! overflows, nor the completion queue (twice as large).
//!
//! A short read or write goes on from where it stopped with a new entry,
//! as the thread engine's calls do; `EINTR` and `EAGAIN` are tried again.
//! A read that reaches the end of the file (one shrunk under the disk) has
//! the rest of its segments zero-filled, as the thread engine does: the
//! buffers are reused pages holding older data, never fresh zeroed ones,
//! so leaving them would show that data to the guest.
//!
//! What a ring cannot do goes elsewhere. A block device's discard is an
//! ioctl (`BLKDISCARD`, `BLKSECDISCARD`): io_uring's own block discard
//! command is recent (Linux 6.12) and has no secure variant, and
//! discards are rare and slow, so they go to one helper worker thread
//! (the thread engine's pool, ringing the same eventfd), as blkback does
//! them in its own thread, off the data path. What needs no system call
//! (an empty transfer or discard, a secure discard of a file) finishes in
//! `submit` and rings the eventfd.
//!
//! Dropping the engine waits for every request in the kernel: their pages
//! are the kernel's until their completion arrives.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use io_uring::{opcode, squeue, types, IoUring, Probe};
use rustix::event::EventfdFlags;
use rustix::io::Errno;

use super::file::{advance, discard_error, discard_method, Backing, DiscardMethod, IOV_MAX};
use super::pool::Pool;
use super::{IoCompletion, IoOp, IoRequest, StorageError};

/// Submission queue entries asked for: requests in the kernel at once (a
/// blkif ring of one page holds 32; larger rings fill the backlog first).
const ENTRIES: u32 = 128;

/// A ring, if the kernel offers io_uring with every operation used here.
/// Fails where io_uring is missing (`ENOSYS`), refused (`EPERM`: seccomp,
/// the `kernel.io_uring_disabled` sysctl) or too old.
pub(super) fn probe() -> io::Result<IoUring> {
    let ring = IoUring::new(ENTRIES)?;
    let mut probe = Probe::new();
    ring.submitter().register_probe(&mut probe)?;
    let needed = [
        (opcode::Readv::CODE, "READV"),
        (opcode::Writev::CODE, "WRITEV"),
        (opcode::Fsync::CODE, "FSYNC"),
        (opcode::Fallocate::CODE, "FALLOCATE"),
    ];
    for (code, name) in needed {
        if !probe.is_supported(code) {
            let why = format!("io_uring without {name}");
            return Err(io::Error::new(io::ErrorKind::Unsupported, why));
        }
    }
    Ok(ring)
}

/// A request lent to the kernel.
#[derive(Default)]
struct Slot {
    /// The request; `None` while the slot is free.
    request: Option<IoRequest>,
    /// Where the next transfer starts: (segment, byte in it).
    at: (usize, usize),
    /// The disk offset of `at`.
    offset: u64,
    /// The iovecs of the entry in flight, into `request`'s pages.
    iov: Vec<libc::iovec>,
}

// SAFETY: the only pointers in a slot are `iov`'s, into the pages of the
// request it owns: heap boxes that move with it and are shared with no one,
// or guest pages whose mappings its segments hold (and which are only ever
// copied, never borrowed): sending the slot to another thread sends what
// they point to too.
unsafe impl Send for Slot {}

/// The io_uring engine.
pub(super) struct Uring {
    ring: IoUring,
    fd: OwnedFd,
    backing: Backing,
    /// The eventfd the ring signals (the helper's too): the wake fd.
    wake: OwnedFd,
    slots: Vec<Slot>,
    /// Indexes of the free slots.
    free: Vec<usize>,
    /// Requests waiting for a free slot, oldest first.
    backlog: VecDeque<IoRequest>,
    /// Requests finished in `submit`, waiting for `reap`.
    ready: Vec<IoCompletion>,
    /// Where a block device's discards go; `None` for a file.
    helper: Option<Pool>,
    /// Entries that went on with a request after a short transfer.
    #[cfg(test)]
    continued: u64,
}

impl Uring {
    /// Serves `fd` with `ring` (from [`probe`]).
    pub(super) fn start(ring: IoUring, fd: OwnedFd, backing: Backing) -> io::Result<Uring> {
        let wake = rustix::event::eventfd(0, EventfdFlags::NONBLOCK | EventfdFlags::CLOEXEC)?;
        ring.submitter().register_eventfd(wake.as_raw_fd())?;
        let helper = match backing {
            Backing::File => None,
            Backing::BlockDevice => {
                Some(Pool::start(fd.try_clone()?, backing, 1, wake.try_clone()?)?)
            }
        };
        let n = ring.params().sq_entries() as usize;
        Ok(Uring {
            ring,
            fd,
            backing,
            wake,
            slots: (0..n).map(|_| Slot::default()).collect(),
            free: (0..n).rev().collect(),
            backlog: VecDeque::with_capacity(n),
            ready: Vec::new(),
            helper,
            #[cfg(test)]
            continued: 0,
        })
    }

    /// Starts the backlogged requests that fit, entering the kernel once
    /// for all of them: after [`Uring::queue`] of a batch.
    pub(super) fn start_backlog(&mut self) {
        self.fill();
        self.enter();
    }

    /// Puts a request (checked against the disk already) in the backlog
    /// (true), or finishes at once one that needs no ring entry (false);
    /// [`Uring::start_backlog`] starts it.
    pub(super) fn queue(&mut self, request: IoRequest) -> bool {
        let finished = match request.op {
            IoOp::Read | IoOp::Write if request.data_len() == 0 => Some(Ok(())),
            IoOp::Discard { len, secure } => match discard_method(self.backing, secure) {
                DiscardMethod::Unsupported => Some(Err(StorageError::Unsupported)),
                // `fallocate` refuses an empty range; the pool skips it too.
                _ if len == 0 => Some(Ok(())),
                DiscardMethod::PunchHole => None,
                DiscardMethod::BlkDiscard | DiscardMethod::BlkSecDiscard => match &self.helper {
                    Some(helper) => {
                        helper.submit(request);
                        return false;
                    }
                    // Not reached: a block device has a helper.
                    None => Some(Err(StorageError::Unsupported)),
                },
            },
            _ => None,
        };
        if let Some(result) = finished {
            self.complete(IoCompletion {
                tag: request.tag,
                result,
                segments: request.segments,
            });
            return false;
        }
        self.backlog.push_back(request);
        true
    }

    /// Hands back a request finished without the ring (refused, or with
    /// nothing to do) at the next `reap`.
    pub(super) fn complete(&mut self, completion: IoCompletion) {
        self.ready.push(completion);
        // The first one rings; `reap` takes them all after reading the bell.
        if self.ready.len() == 1 {
            let _ = rustix::io::write(&self.wake, &1u64.to_ne_bytes());
        }
    }

    /// The eventfd fired: quiets it (it is polled level-triggered). The
    /// completions it announced are in the queues, taken by the next `reap`;
    /// one posted after this read rings again, so none waits behind a
    /// quiet fd (the kernel signals the eventfd after the completion is
    /// visible). `reap` itself makes no system call for an empty queue: a
    /// pass woken by the guest alone does not pay for the storage's fd.
    pub(super) fn woken(&mut self) {
        // The helper's workers ring this eventfd too (they share it).
        let _ = rustix::io::read(&self.wake, &mut [0u8; 8]);
    }

    /// Moves finished requests into `out`, and starts waiting ones.
    pub(super) fn reap(&mut self, out: &mut Vec<IoCompletion>) {
        if let Some(helper) = &self.helper {
            helper.take(out);
        }
        loop {
            // One at a time, so that an entry going on can be queued.
            let Some(cqe) = self.ring.completion().next() else {
                break;
            };
            // `user_data` is a slot index: `push` sets nothing else.
            self.finish_entry(cqe.user_data() as usize, cqe.result(), out);
        }
        out.append(&mut self.ready);
        self.fill();
        self.enter();
    }

    pub(super) fn wake_fd(&self) -> BorrowedFd<'_> {
        self.wake.as_fd()
    }

    /// Waits for every request submitted (the backlog's and the helper's
    /// too) and puts their completions in `out`. Idempotent.
    pub(super) fn stop(&mut self, out: &mut Vec<IoCompletion>) {
        if let Some(helper) = &mut self.helper {
            helper.stop();
        }
        loop {
            self.reap(out);
            if self.backlog.is_empty() && self.free.len() == self.slots.len() {
                return;
            }
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EINTR | libc::EAGAIN | libc::EBUSY)
                    ) => {}
                Err(e) => return self.abandon(e, out),
            }
        }
    }

    /// The ring cannot be waited on: leaks the slots, whose pages the kernel
    /// may still fill, and fails the backlog's requests, which it never saw.
    fn abandon(&mut self, e: io::Error, out: &mut Vec<IoCompletion>) {
        std::mem::forget(std::mem::take(&mut self.slots));
        self.free.clear();
        for request in self.backlog.drain(..) {
            out.push(IoCompletion {
                tag: request.tag,
                result: Err(StorageError::Io(match e.raw_os_error() {
                    Some(errno) => io::Error::from_raw_os_error(errno),
                    None => e.kind().into(),
                })),
                segments: request.segments,
            });
        }
    }

    /// Starts backlogged requests in free slots.
    fn fill(&mut self) {
        while !self.free.is_empty() {
            let Some(request) = self.backlog.pop_front() else {
                return;
            };
            let index = self.free.pop().expect("a free slot");
            let slot = &mut self.slots[index];
            slot.at = (0, 0);
            // Past any empty segments at the start.
            advance(&request.segments, &mut slot.at, 0);
            slot.offset = request.offset;
            slot.request = Some(request);
            self.push(index);
        }
    }

    /// Queues slot `index`'s next entry (`request` and cursor set).
    fn push(&mut self, index: usize) {
        let entry = self.slots[index].entry(types::Fd(self.fd.as_raw_fd()), index);
        // SAFETY: the entry points at slot `index`'s iovecs (a read or a
        // write) and through them into its request's pages, or at nothing.
        // Both stay alive and unmoved, untouched by us, until the entry's
        // completion is taken in `finish_entry`: the slot is neither freed
        // nor refilled before (it returns to `free` only there), its iovec
        // list is rebuilt only by the next `push`, which follows that
        // completion, the pages are heap boxes that do not move with the
        // request or guest pages whose mapping the request's segments hold
        // (unmapped only after the last holder lets go), and `Drop` waits for every entry before freeing the
        // slab (or leaks it). `fd` outlives the ring's use of it likewise.
        let pushed = unsafe { self.ring.submission().push(&entry) };
        // Each slot has at most one entry queued or in the kernel, and
        // there are as many slots as submission queue entries.
        pushed.expect("a submission queue entry per slot");
    }

    /// Hands the queued entries to the kernel.
    fn enter(&mut self) {
        while !self.ring.submission().is_empty() {
            match self.ring.submit() {
                // The kernel may stop at a failed entry (which completes
                // with its error); the rest go in now.
                Ok(n) if n > 0 => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                // EAGAIN (no memory for now), EBUSY: the entries stay
                // queued, and the rung bell brings the caller back to try
                // again, even with nothing in flight to wake it.
                Ok(_) | Err(_) => {
                    let _ = rustix::io::write(&self.wake, &1u64.to_ne_bytes());
                    return;
                }
            }
        }
    }

    /// Takes the completion `res` of slot `index`'s entry: the request is
    /// done, or goes on with another entry.
    fn finish_entry(&mut self, index: usize, res: i32, out: &mut Vec<IoCompletion>) {
        let Some(slot) = self.slots.get_mut(index) else {
            return;
        };
        let Some(request) = &mut slot.request else {
            return;
        };
        let result = if res == -libc::EINTR || res == -libc::EAGAIN {
            return self.push(index);
        } else if res < 0 {
            let e = Errno::from_raw_os_error(-res);
            Err(match request.op {
                IoOp::Discard { .. } => discard_error(e),
                _ => StorageError::Io(e.into()),
            })
        } else if matches!(request.op, IoOp::Read | IoOp::Write) {
            let n = res as usize;
            advance(&request.segments, &mut slot.at, n);
            slot.offset += n as u64;
            if slot.at.0 == request.segments.len() {
                Ok(())
            } else if n > 0 {
                #[cfg(test)]
                {
                    self.continued += 1;
                }
                return self.push(index);
            } else if request.op == IoOp::Read {
                // The end of the file: a disk reads zeros there.
                let (first, skip) = slot.at;
                for (i, s) in request.segments[first..].iter_mut().enumerate() {
                    s.zero_from(if i == 0 { skip } else { 0 });
                }
                Ok(())
            } else {
                Err(StorageError::Io(io::ErrorKind::WriteZero.into()))
            }
        } else {
            Ok(())
        };
        // Nothing points into the pages any more.
        slot.iov.clear();
        let request = slot.request.take().expect("a busy slot");
        self.free.push(index);
        out.push(IoCompletion {
            tag: request.tag,
            result,
            segments: request.segments,
        });
    }
}

impl Slot {
    /// The entry for the request's next step: from the cursor on for a
    /// transfer (at most [`IOV_MAX`] segments), the whole of anything else.
    fn entry(&mut self, fd: types::Fd, index: usize) -> squeue::Entry {
        let request = self.request.as_mut().expect("a busy slot");
        let entry = match request.op {
            IoOp::Read | IoOp::Write => {
                let skip = self.at.1;
                self.iov.clear();
                let segments = request.segments[self.at.0..].iter_mut().take(IOV_MAX);
                self.iov.extend(
                    segments
                        .enumerate()
                        .map(|(i, s)| s.iovec(if i == 0 { skip } else { 0 })),
                );
                // At most IOV_MAX, far below u32::MAX.
                let (iov, n) = (self.iov.as_ptr(), self.iov.len() as u32);
                match request.op {
                    IoOp::Read => opcode::Readv::new(fd, iov, n).offset(self.offset).build(),
                    _ => opcode::Writev::new(fd, iov, n).offset(self.offset).build(),
                }
            }
            IoOp::Flush => opcode::Fsync::new(fd)
                .flags(types::FsyncFlags::DATASYNC)
                .build(),
            IoOp::Discard { len, .. } => opcode::Fallocate::new(fd, len)
                .offset(request.offset)
                .mode(libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE)
                .build(),
        };
        entry.user_data(index as u64)
    }
}

impl Drop for Uring {
    fn drop(&mut self) {
        // The kernel may still be filling the pages of requests in flight:
        // nothing is freed before they complete.
        self.stop(&mut Vec::new());
    }
}

#[cfg(test)]
impl Uring {
    /// Slots in the slab: requests in the kernel at most.
    pub(super) fn slots(&self) -> usize {
        self.slots.len()
    }

    /// Requests waiting for a slot.
    pub(super) fn backlogged(&self) -> usize {
        self.backlog.len()
    }

    /// Entries that went on with a request after a short transfer.
    pub(super) fn continued(&self) -> u64 {
        self.continued
    }
}
