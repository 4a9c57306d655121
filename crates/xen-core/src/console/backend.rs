//! The console backend: one guest's console page, served on its own thread.
//!
//! Each pass of the thread, in order: take the pending events; if the rate
//! limit allows, consume the guest's output (one copy out of the page, then
//! publish the consumer index), push waiting input, notify the guest once,
//! unmask the port; then hand the output to the sink and the
//! pseudo-terminal, outside the page lock. An event past the limit stays
//! masked until its window ends, so a guest that signals in a loop costs one
//! pass per event allowed, not one per signal.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::pty::Pty;
use super::{ConsoleConfig, ConsoleError, ConsoleEvent, ConsoleStats, Counters};
use crate::platform::poll::Notifier;
use crate::platform::sim::EventDoorbell;
use crate::platform::{DomId, EventChannels, GrantMapper, GrantMapping, GrantRef, Port};
use crate::ring::console::IN_SIZE;
use crate::ring::{ConsoleRing, RingError};

/// What the backend handle and its thread share.
struct Shared {
    evtchn: Arc<dyn EventChannels>,
    frontend: DomId,
    port: Port,
    /// The guest's page; `None` once stopped. Held while touching the ring,
    /// which also makes input from several threads (callers, the pty) one
    /// producer at a time, as the ring requires.
    page: Mutex<Option<GrantMapping>>,
    counters: Counters,
}

impl Shared {
    fn page(&self) -> MutexGuard<'_, Option<GrantMapping>> {
        self.page.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the backend's view of the page, if still mapped.
    fn with_ring<R>(&self, f: impl FnOnce(ConsoleRing<'_>) -> R) -> Option<R> {
        let page = self.page();
        let ring = ConsoleRing::backend(page.as_ref()?.mem()).ok()?;
        Some(f(ring))
    }
}

/// Counts events per fixed window, like xenconsoled.
struct RateLimit {
    limit: u32,
    window: Duration,
    start: Instant,
    count: u32,
}

impl RateLimit {
    /// Whether one more event may be served now; counts it if so.
    fn admit(&mut self, now: Instant) -> bool {
        if self.limit == 0 {
            return true;
        }
        if now.saturating_duration_since(self.start) >= self.window {
            self.start = now;
            self.count = 0;
        }
        if self.count < self.limit {
            self.count += 1;
            true
        } else {
            false
        }
    }

    fn window_end(&self) -> Instant {
        self.start + self.window
    }
}

/// A console backend. Stopping it (or dropping it) ends its thread, closes
/// its port and unmaps the page.
pub struct ConsoleBackend {
    shared: Arc<Shared>,
    worker: Mutex<Option<(Arc<EventDoorbell>, JoinHandle<()>)>>,
    pty_path: Option<PathBuf>,
}

impl ConsoleBackend {
    /// Serves the console of `frontend`: maps its page `ring_ref` writable,
    /// binds to its port `remote_port` and starts the thread. `evtchn` must
    /// be a handle of its own: the thread takes every event it delivers.
    /// `sink` gets the guest's output, on the backend's thread; it must not
    /// stop the backend itself (stopping waits for that thread).
    pub fn start(
        evtchn: Arc<dyn EventChannels>,
        gntdev: &dyn GrantMapper,
        frontend: DomId,
        ring_ref: GrantRef,
        remote_port: Port,
        config: ConsoleConfig,
        sink: Box<dyn FnMut(ConsoleEvent) + Send>,
    ) -> Result<ConsoleBackend, ConsoleError> {
        let page =
            gntdev
                .map(frontend, &[ring_ref], true)
                .map_err(|error| ConsoleError::MapRing {
                    frontend,
                    ring_ref,
                    error,
                })?;
        ConsoleRing::backend(page.mem()).map_err(ConsoleError::Ring)?;
        let pty = match config.pty {
            true => Some(Pty::open().map_err(ConsoleError::Pty)?),
            false => None,
        };
        let pty_path = pty.as_ref().map(|p| p.path().to_owned());
        let stop = Arc::new(EventDoorbell::new().map_err(ConsoleError::Thread)?);
        // Bound last: everything before it cleans up by being dropped.
        let port = evtchn
            .bind_interdomain(frontend, remote_port)
            .map_err(|error| ConsoleError::BindEventChannel {
                frontend,
                remote_port,
                error,
            })?;
        let shared = Arc::new(Shared {
            evtchn,
            frontend,
            port,
            page: Mutex::new(Some(page)),
            counters: Counters::default(),
        });
        let serve = ServeLoop {
            shared: shared.clone(),
            sink,
            pty,
            pty_input: Vec::new(),
            pty_input_broken: false,
            limit: RateLimit {
                limit: config.rate_limit_events,
                window: config.rate_limit_window,
                start: Instant::now(),
                count: 0,
            },
            held: false,
            notifier: Notifier::default(),
            output: Vec::new(),
            reports: Vec::new(),
            ports: Vec::new(),
        };
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!("xenrx-console-d{frontend}"))
            .spawn(move || serve.run(&stopped));
        match thread {
            Ok(thread) => Ok(ConsoleBackend {
                shared,
                worker: Mutex::new(Some((stop, thread))),
                pty_path,
            }),
            Err(e) => {
                let _ = shared.evtchn.unbind(port);
                Err(ConsoleError::Thread(e))
            }
        }
    }

    /// The guest served.
    pub fn frontend(&self) -> DomId {
        self.shared.frontend
    }

    /// Our end of the event channel.
    pub fn local_port(&self) -> Port {
        self.shared.port
    }

    /// The pseudo-terminal's slave path (what the console's `tty` key
    /// names), if the console has one.
    pub fn pty_path(&self) -> Option<&Path> {
        self.pty_path.as_deref()
    }

    /// Puts as much of `data` as fits into the guest's input ring and
    /// notifies it; returns the bytes accepted (0 when the ring is full, its
    /// indexes are bogus, or the backend is stopped).
    pub fn write_input(&self, data: &[u8]) -> usize {
        let s = &self.shared;
        let written = s.with_ring(|ring| ring.write(data)).unwrap_or(Ok(0));
        let n = match written {
            Ok(n) => n,
            Err(RingError::BogusIndexes(_)) => {
                Counters::add(&s.counters.clamped, 1);
                0
            }
            Err(_) => 0,
        };
        if n > 0 {
            Counters::add(&s.counters.bytes_in, n as u64);
            if s.evtchn.notify(s.port).is_ok() {
                Counters::add(&s.counters.notifications, 1);
            }
        }
        n
    }

    /// The counters.
    pub fn stats(&self) -> ConsoleStats {
        self.shared.counters.snapshot()
    }

    /// Stops serving: ends the thread, closes the port, unmaps the page (so
    /// the guest can end its grant). Idempotent.
    pub fn stop(&self) {
        let worker = self.worker.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some((stop, thread)) = worker {
            let _ = stop.signal();
            let _ = thread.join();
        }
        let page = self.shared.page().take();
        if let Some(page) = page {
            let _ = self.shared.evtchn.unbind(self.shared.port);
            drop(page);
        }
    }
}

impl Drop for ConsoleBackend {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The backend's thread.
struct ServeLoop {
    shared: Arc<Shared>,
    sink: Box<dyn FnMut(ConsoleEvent) + Send>,
    pty: Option<Pty>,
    /// Bytes read from the pty that the guest's ring has not taken yet; the
    /// pty is not read again until they are in.
    pty_input: Vec<u8>,
    /// Reading the pty failed: stop polling it (output still goes there).
    pty_input_broken: bool,
    limit: RateLimit,
    /// Our port fired past the rate limit and is left masked.
    held: bool,
    notifier: Notifier,
    output: Vec<u8>,
    reports: Vec<ConsoleEvent>,
    ports: Vec<Port>,
}

/// Milliseconds until `end`, rounded up so a poll never wakes early.
fn poll_timeout(now: Instant, end: Instant) -> i32 {
    let us = end.saturating_duration_since(now).as_micros();
    us.div_ceil(1000).min(i32::MAX as u128) as i32
}

fn poll_entry(fd: BorrowedFd<'_>) -> libc::pollfd {
    libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    }
}

impl ServeLoop {
    fn run(mut self, stop: &EventDoorbell) {
        // The guest may have written, and signalled into the void, before
        // the port was bound: look at the page once before waiting.
        self.serve_ring();
        if let Err(e) = self.finish_pass(false) {
            (self.sink)(ConsoleEvent::Failed(e));
            return;
        }
        let shared = self.shared.clone();
        loop {
            let want_pty = self.wants_pty_input();
            let mut fds = [
                poll_entry(shared.evtchn.fd()),
                poll_entry(std::os::fd::AsFd::as_fd(stop)),
                libc::pollfd {
                    fd: self.pty.as_ref().map_or(-1, |p| p.master().as_raw_fd()),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            if !want_pty {
                // A negative descriptor is skipped by poll.
                fds[2].fd = -1;
            }
            let timeout = match self.held {
                true => poll_timeout(Instant::now(), self.limit.window_end()),
                false => -1,
            };
            // SAFETY: three valid pollfd entries, as counted.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), 3, timeout) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                (self.sink)(ConsoleEvent::Failed(e.into()));
                return;
            }
            if fds[1].revents != 0 {
                return;
            }
            if let Err(e) = self.pass(fds[0].revents != 0, fds[2].revents != 0) {
                (self.sink)(ConsoleEvent::Failed(e));
                return;
            }
        }
    }

    fn wants_pty_input(&self) -> bool {
        self.pty.is_some()
            && !self.pty_input_broken
            && self.pty_input.is_empty()
            && self
                .shared
                .with_ring(|r| r.write_space().unwrap_or(0) > 0)
                .unwrap_or(false)
    }

    /// One wake-up: events, then the pty, then the ring.
    fn pass(
        &mut self,
        evtchn_ready: bool,
        pty_ready: bool,
    ) -> Result<(), crate::platform::EvtchnError> {
        let now = Instant::now();
        let mut serve = false;
        if self.held && now >= self.limit.window_end() {
            // The window is over: serve the held event, counted against the
            // new window.
            self.held = false;
            self.limit.admit(now);
            serve = true;
        }
        if evtchn_ready {
            let shared = self.shared.clone();
            self.ports.clear();
            shared.evtchn.pending(&mut self.ports)?;
            for &p in &self.ports {
                if p != shared.port {
                    // Not ours (a handle should serve one console): leave it
                    // deliverable rather than masked forever.
                    shared.evtchn.unmask(p)?;
                    continue;
                }
                Counters::add(&shared.counters.events, 1);
                if self.limit.admit(now) {
                    serve = true;
                } else {
                    // Past the limit: leave the port masked, so the guest's
                    // further signals cost nothing until the window ends.
                    self.held = true;
                    Counters::add(&shared.counters.rate_limited, 1);
                }
            }
        }
        if pty_ready {
            self.read_pty();
        }
        if serve {
            self.serve_ring();
        }
        self.finish_pass(serve)
    }

    /// Notifies the guest, unmasks our port if the pass served it, and hands
    /// what the pass collected to the sink and the pty (outside the page
    /// lock, so a slow sink never holds up input).
    fn finish_pass(&mut self, unmask: bool) -> Result<(), crate::platform::EvtchnError> {
        let shared = self.shared.clone();
        let sent = self.notifier.flush(shared.evtchn.as_ref())?;
        Counters::add(&shared.counters.notifications, sent as u64);
        if unmask {
            shared.evtchn.unmask(shared.port)?;
        }
        for report in self.reports.drain(..) {
            (self.sink)(report);
        }
        if !self.output.is_empty() {
            let output = std::mem::take(&mut self.output);
            if let Some(pty) = &self.pty {
                let taken = pty.write(&output);
                Counters::add(&shared.counters.pty_dropped, (output.len() - taken) as u64);
            }
            (self.sink)(ConsoleEvent::Output(output));
        }
        Ok(())
    }

    /// Consumes the guest's output and pushes waiting input, under the page
    /// lock.
    fn serve_ring(&mut self) {
        let shared = self.shared.clone();
        shared.with_ring(|ring| {
            // The page was checked at start, so reading cannot fail: bogus
            // indexes come back clamped, in the report.
            if let Ok(report) = ring.read(&mut self.output) {
                if let Some(bogus) = report.clamped {
                    Counters::add(&shared.counters.clamped, 1);
                    self.reports.push(ConsoleEvent::BogusIndexes(bogus));
                }
                if report.bytes > 0 {
                    Counters::add(&shared.counters.bytes_out, report.bytes as u64);
                    // The guest may be waiting for space in `out`.
                    self.notifier.notify(shared.port);
                }
            }
            self.push_pty_input(ring);
        });
    }

    fn push_pty_input(&mut self, ring: ConsoleRing<'_>) {
        if self.pty_input.is_empty() {
            return;
        }
        let counters = &self.shared.counters;
        match ring.write(&self.pty_input) {
            Ok(n) => {
                self.pty_input.drain(..n);
                if n > 0 {
                    Counters::add(&counters.bytes_in, n as u64);
                    self.notifier.notify(self.shared.port);
                }
            }
            Err(RingError::BogusIndexes(bogus)) => {
                Counters::add(&counters.clamped, 1);
                self.reports.push(ConsoleEvent::BogusIndexes(bogus));
            }
            Err(_) => {}
        }
    }

    /// Reads what the pty has, up to the free space of the guest's ring,
    /// and pushes it.
    fn read_pty(&mut self) {
        let Some(pty) = &self.pty else { return };
        if !self.pty_input.is_empty() {
            return;
        }
        let space = self
            .shared
            .with_ring(|r| r.write_space().unwrap_or(0))
            .unwrap_or(0);
        let mut buf = vec![0u8; (space as usize).min(IN_SIZE as usize)];
        if buf.is_empty() {
            return;
        }
        match pty.read(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                self.pty_input = buf;
            }
            Err(_) => self.pty_input_broken = true,
        }
        self.shared.clone().with_ring(|r| self.push_pty_input(r));
    }
}
