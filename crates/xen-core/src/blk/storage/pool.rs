//! The thread engine of [`FileDisk`](super::FileDisk): worker threads, each
//! doing one blocking system call per request ([`super::file::execute`]), taking
//! requests from a queue and ringing an eventfd when they finish. It is the
//! engine where io_uring is missing, and the io_uring engine's helper for
//! what a ring cannot do (block-device discards).

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use super::file::{execute, Backing, Iovecs};
use super::workers::{Execute, Workers};
use super::{IoRequest, StorageError};

/// Worker threads taking requests from a queue, and the finished ones.
pub(in crate::blk::storage) type Pool = Workers<RawFile>;

/// What the pool's workers do requests on: a raw image file or a block
/// device.
pub(in crate::blk::storage) struct RawFile {
    fd: OwnedFd,
    backing: Backing,
}

impl Execute for RawFile {
    /// Each worker's iovec buffers, so that a request allocates none.
    type Scratch = Iovecs;

    fn execute(&self, request: &mut IoRequest, iovecs: &mut Iovecs) -> Result<(), StorageError> {
        execute(self.fd.as_fd(), self.backing, request, iovecs)
    }
}

impl Pool {
    /// Starts `workers` threads doing requests on `fd`, ringing `wake` (a
    /// non-blocking eventfd, which the io_uring engine shares with its ring).
    pub(in crate::blk::storage) fn start(
        fd: OwnedFd,
        backing: Backing,
        workers: usize,
        wake: OwnedFd,
    ) -> io::Result<Pool> {
        let name = |i| format!("xenrx-blk-io{i}");
        Workers::spawn(RawFile { fd, backing }, workers, name, wake)
    }
}
