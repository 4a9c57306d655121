//! The inline engine of [`FileDisk`](super::FileDisk), for an image in
//! memory (tmpfs, ramfs): each request's one system call is made on the
//! caller's thread, the event loop's, in `submit`, and its completion is
//! ready when `submit` returns.
//!
//! An image in memory does not wait for a device (unless the host swaps
//! its pages out): its I/O is a copy between the page cache and the
//! request's pages, and handing it to another thread costs more than the
//! copy. io_uring does a buffered read or write inline only on a file
//! system that takes non-blocking I/O (`FMODE_NOWAIT`), which tmpfs in
//! Linux 6.1 (Debian 12's) does not: each request then goes to one of
//! io_uring's kernel workers, and its completion wakes the loop a second
//! time. Inline, a request at depth 1 is served in the pass that took it.
//! The price is that the loop's thread does the copies of every disk it
//! serves in memory.

use std::os::fd::{AsFd, OwnedFd};

use super::file::{execute, Backing, Iovecs};
use super::{IoCompletion, IoRequest};

/// Requests done in `submit`, and their completions not taken yet.
pub(super) struct Inline {
    fd: OwnedFd,
    backing: Backing,
    iovecs: Iovecs,
    done: Vec<IoCompletion>,
}

impl Inline {
    pub(super) fn start(fd: OwnedFd, backing: Backing) -> Inline {
        Inline {
            fd,
            backing,
            iovecs: Iovecs::default(),
            done: Vec::new(),
        }
    }

    /// Does `request` now.
    pub(super) fn submit(&mut self, mut request: IoRequest) {
        let result = execute(
            self.fd.as_fd(),
            self.backing,
            &mut request,
            &mut self.iovecs,
        );
        self.complete(IoCompletion {
            tag: request.tag,
            result,
            segments: request.segments,
        });
    }

    /// Hands back a request finished without a system call.
    pub(super) fn complete(&mut self, completion: IoCompletion) {
        self.done.push(completion);
    }

    /// The completions not taken yet.
    pub(super) fn take(&mut self, out: &mut Vec<IoCompletion>) {
        out.append(&mut self.done);
    }
}
