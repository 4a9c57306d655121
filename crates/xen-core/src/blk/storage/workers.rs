//! Worker threads for storage whose I/O blocks: the skeleton shared by the
//! raw-image thread engine (`pool.rs`) and the qcow2 engine (`qcow2.rs`).
//! Requests wait in a queue; each worker takes one, runs it with the
//! engine's [`Execute`], and pushes its completion on a list, ringing an
//! eventfd when that list stops being empty. The engines differ only in
//! what running a request means, and in their number of threads.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};

use super::{IoCompletion, IoRequest, StorageError};

/// What a worker does with one request, blocking.
pub(super) trait Execute: Send + Sync + 'static {
    /// Each worker's own state, reused by every request it runs (buffers
    /// that would otherwise be allocated per request).
    type Scratch: Default;

    /// Does `request`: its buffers are filled (a read) or left as they are.
    fn execute(
        &self,
        request: &mut IoRequest,
        scratch: &mut Self::Scratch,
    ) -> Result<(), StorageError>;
}

/// Worker threads taking requests from a queue, and the finished ones.
///
/// Dropping it waits for the requests already submitted (see
/// [`Workers::stop`]); their completions are then discarded.
pub(super) struct Workers<E: Execute> {
    shared: Arc<Shared<E>>,
    threads: Vec<JoinHandle<()>>,
}

struct Shared<E> {
    executor: E,
    queue: Mutex<Queue>,
    /// Signalled when a request is queued or the workers should stop.
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

/// Locks, shrugging off poison. Only for a mutex whose critical sections
/// are never left half-done: this file's are a push or a take (a caller
/// elsewhere says why its own are).
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl<E: Execute> Workers<E> {
    /// Starts `threads` threads (thread `i` named `name(i)`) running
    /// requests with `executor`, ringing `wake`: a non-blocking eventfd,
    /// which its owner may share (the io_uring engine shares its ring's).
    pub(super) fn spawn(
        executor: E,
        threads: usize,
        name: impl Fn(usize) -> String,
        wake: OwnedFd,
    ) -> io::Result<Workers<E>> {
        let shared = Arc::new(Shared {
            executor,
            queue: Mutex::new(Queue::default()),
            work: Condvar::new(),
            done: Mutex::new(Vec::new()),
            wake,
        });
        let mut workers = Workers {
            shared,
            threads: Vec::with_capacity(threads),
        };
        for i in 0..threads {
            let shared = Arc::clone(&workers.shared);
            // On failure `workers` is dropped, stopping the threads started.
            let thread = thread::Builder::new()
                .name(name(i))
                .spawn(move || shared.work())?;
            workers.threads.push(thread);
        }
        Ok(workers)
    }

    /// Queues a request for the next free worker.
    pub(super) fn submit(&self, request: IoRequest) {
        lock(&self.shared.queue).requests.push_back(request);
        self.shared.work.notify_one();
    }

    /// Hands back a request finished without a worker (refused, say) at
    /// the next `reap`, ringing the eventfd as a worker would.
    pub(super) fn complete(&self, completion: IoCompletion) {
        self.shared.complete(completion);
    }

    /// The doorbell rang: quiets it. A completion pushed after this read
    /// rings it again, so none waits behind a quiet fd.
    pub(super) fn woken(&self) {
        let mut count = [0u8; 8];
        let _ = rustix::io::read(&self.shared.wake, &mut count);
    }

    /// Moves finished requests into `out`, with no system call. Never
    /// blocks.
    pub(super) fn take(&self, out: &mut Vec<IoCompletion>) {
        out.append(&mut lock(&self.shared.done));
    }

    /// Quiets the doorbell, then takes what is finished.
    pub(super) fn reap(&self, out: &mut Vec<IoCompletion>) {
        self.woken();
        self.take(out);
    }

    /// The eventfd, readable while finished requests may be waiting.
    pub(super) fn wake_fd(&self) -> BorrowedFd<'_> {
        self.shared.wake.as_fd()
    }

    /// Lets the workers finish the queue, then joins them. Idempotent.
    pub(super) fn stop(&mut self) {
        lock(&self.shared.queue).stopping = true;
        self.shared.work.notify_all();
        for thread in self.threads.drain(..) {
            // A worker that panicked has nothing left to give back (the
            // qcow2 engine's do not: they run requests under catch_unwind).
            let _ = thread.join();
        }
    }
}

impl<E: Execute> Drop for Workers<E> {
    fn drop(&mut self) {
        self.stop();
    }
}

impl<E: Execute> Shared<E> {
    /// A worker's life: requests until the queue is empty and stopping.
    fn work(&self) {
        let mut scratch = E::Scratch::default();
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
            let result = self.executor.execute(&mut request, &mut scratch);
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
        // Only the completion that made the list non-empty rings: later
        // ones are taken with it, by the reap its ring causes (or by one
        // already past its doorbell read). A full counter already rings.
        if first {
            let _ = rustix::io::write(&self.wake, &1u64.to_ne_bytes());
        }
    }
}
