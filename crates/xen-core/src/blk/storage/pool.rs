//! The thread engine of [`FileDisk`](super::FileDisk): worker threads, each
//! doing one blocking system call per request ([`super::file::execute`]), taking
//! requests from a queue and ringing an eventfd when they finish. It is the
//! engine where io_uring is missing, and the io_uring engine's helper for
//! what a ring cannot do (block-device discards).

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};

use super::file::{execute, Backing, Iovecs};
use super::{IoCompletion, IoRequest};

/// Worker threads taking requests from a queue, and the finished ones.
pub(in crate::blk::storage) struct Pool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

struct Shared {
    fd: OwnedFd,
    backing: Backing,
    queue: Mutex<Queue>,
    /// Signalled when a request is queued or the pool stops.
    work: Condvar,
    done: Mutex<Vec<IoCompletion>>,
    /// An eventfd, readable while `done` may hold completions.
    wake: OwnedFd,
}

#[derive(Default)]
struct Queue {
    requests: VecDeque<IoRequest>,
    stopping: bool,
}

/// Locks, shrugging off poison: every critical section here is a push or a
/// take, never left half-done.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
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
        let shared = Arc::new(Shared {
            fd,
            backing,
            queue: Mutex::new(Queue::default()),
            work: Condvar::new(),
            done: Mutex::new(Vec::new()),
            wake,
        });
        let mut pool = Pool {
            shared,
            workers: Vec::with_capacity(workers),
        };
        for i in 0..workers {
            let shared = Arc::clone(&pool.shared);
            // On failure `pool` is dropped, stopping the workers started.
            let worker = thread::Builder::new()
                .name(format!("xenrx-blk-io{i}"))
                .spawn(move || shared.work())?;
            pool.workers.push(worker);
        }
        Ok(pool)
    }

    pub(in crate::blk::storage) fn submit(&self, request: IoRequest) {
        lock(&self.shared.queue).requests.push_back(request);
        self.shared.work.notify_one();
    }

    pub(in crate::blk::storage) fn complete(&self, completion: IoCompletion) {
        self.shared.complete(completion);
    }

    pub(in crate::blk::storage) fn reap(&self, out: &mut Vec<IoCompletion>) {
        // The doorbell first, then the queue: a completion pushed after the
        // take rings again, so none waits behind a quiet fd.
        let mut count = [0u8; 8];
        let _ = rustix::io::read(&self.shared.wake, &mut count);
        out.append(&mut lock(&self.shared.done));
    }

    pub(in crate::blk::storage) fn wake_fd(&self) -> BorrowedFd<'_> {
        self.shared.wake.as_fd()
    }

    /// Lets the workers finish the queue, then joins them. Idempotent.
    pub(in crate::blk::storage) fn stop(&mut self) {
        lock(&self.shared.queue).stopping = true;
        self.shared.work.notify_all();
        for worker in self.workers.drain(..) {
            // A worker that panicked has nothing left to give back.
            let _ = worker.join();
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Shared {
    /// A worker's life: requests until the queue is empty and stopping.
    fn work(&self) {
        let mut iovecs = Iovecs::default();
        loop {
            let mut request = {
                let mut queue = lock(&self.queue);
                loop {
                    if let Some(request) = queue.requests.pop_front() {
                        break request;
                    }
                    if queue.stopping {
                        return;
                    }
                    queue = self.work.wait(queue).unwrap_or_else(|p| p.into_inner());
                }
            };
            let result = execute(self.fd.as_fd(), self.backing, &mut request, &mut iovecs);
            self.complete(IoCompletion {
                tag: request.tag,
                result,
                segments: request.segments,
            });
        }
    }

    fn complete(&self, completion: IoCompletion) {
        let first = {
            let mut done = lock(&self.done);
            done.push(completion);
            done.len() == 1
        };
        // Only the completion that made the queue non-empty rings: later
        // ones are taken with it, by the reap its ring causes (or by one
        // already past its doorbell read). A full counter already rings.
        if first {
            let _ = rustix::io::write(&self.wake, &1u64.to_ne_bytes());
        }
    }
}
