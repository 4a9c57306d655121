//! The console backend: one guest's console page, served as a source of
//! the platform's event loop (no thread of its own).
//!
//! Each run, in order: take the port's event; if the rate limit allows,
//! consume the guest's output (one copy out of the page, then publish the
//! consumer index), push waiting input, ask for one notification of the
//! guest; then hand the output to the sink and the pseudo-terminal, outside
//! the page lock. An event past the limit leaves the port masked (held)
//! with a timer at the end of its window, so a guest that signals in a loop
//! costs one run per event allowed, not one per signal.

use std::os::fd::BorrowedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::pty::Pty;
use super::{ConsoleConfig, ConsoleError, ConsoleEvent, ConsoleStats, Counters};
use crate::platform::event_loop::{Control, Source, SourceHandle, Wake};
use crate::platform::{DomId, EventChannels, EvtchnError, GrantMapping, GrantRef, Platform, Port};
use crate::ring::console::IN_SIZE;
use crate::ring::{ConsoleRing, RingError};

/// What the backend handle and its source share.
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

/// A console backend. Stopping it (or dropping it) takes it off the event
/// loop, closes its port and unmaps the page.
pub struct ConsoleBackend {
    shared: Arc<Shared>,
    source: Mutex<Option<SourceHandle>>,
    pty_path: Option<PathBuf>,
    /// Keeps the event loop running while the console is on it.
    _platform: Arc<Platform>,
}

impl ConsoleBackend {
    /// Serves the console of `frontend` on `platform`: maps its page
    /// `ring_ref` writable, binds to its port `remote_port` and adds the
    /// console to the platform's event loop. `sink` gets the guest's output,
    /// on the loop's thread: it must not block, nor stop the backend itself.
    pub fn start(
        platform: &Arc<Platform>,
        frontend: DomId,
        ring_ref: GrantRef,
        remote_port: Port,
        config: ConsoleConfig,
        sink: Box<dyn FnMut(ConsoleEvent) + Send>,
    ) -> Result<ConsoleBackend, ConsoleError> {
        let page = platform
            .gntdev()
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
        let evtchn = platform.evtchn().clone();
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
        let source = ConsoleSource {
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
            notify: false,
            output: Vec::new(),
            reports: Vec::new(),
        };
        // The guest may have written, and signalled into the void, before
        // the port was bound: a new source runs once at once and looks at
        // the page.
        match platform
            .event_loop()
            .add(Some(port), Box::new(source), false)
        {
            Ok(handle) => Ok(ConsoleBackend {
                shared,
                source: Mutex::new(Some(handle)),
                pty_path,
                _platform: platform.clone(),
            }),
            Err(e) => {
                let _ = shared.evtchn.unbind(port);
                Err(ConsoleError::EventLoop(e))
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

    /// Stops serving: takes the console off the event loop (waiting until
    /// the loop no longer runs it), closes the port, unmaps the page (so the
    /// guest can end its grant). Idempotent.
    pub fn stop(&self) {
        let source = self.source.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(source) = source {
            drop(source.remove());
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

/// The console as a source of the event loop.
struct ConsoleSource {
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
    /// The run put output into, or took input out of, the ring.
    notify: bool,
    output: Vec<u8>,
    reports: Vec<ConsoleEvent>,
}

impl Source for ConsoleSource {
    fn wake(&mut self, why: Wake, cx: &mut Control<'_>) {
        let now = cx.now();
        let mut serve = why.kicked;
        if self.held && now >= self.limit.window_end() {
            // The window is over: serve the held event, counted against the
            // new window, and let the port deliver again.
            self.held = false;
            self.limit.admit(now);
            serve = true;
            cx.unmask_port();
        }
        if why.port {
            Counters::add(&self.shared.counters.events, 1);
            if self.limit.admit(now) {
                serve = true;
            } else {
                // Past the limit: leave the port masked, so the guest's
                // further signals cost nothing until the window ends.
                self.held = true;
                cx.hold_port();
                Counters::add(&self.shared.counters.rate_limited, 1);
            }
        }
        if why.fd {
            self.read_pty();
        }
        if serve {
            self.serve_ring();
        }
        if std::mem::take(&mut self.notify) {
            // One notification for the run, however many steps asked.
            cx.notify(self.shared.port);
            Counters::add(&self.shared.counters.notifications, 1);
        }
        self.hand_over();
        cx.set_timer(self.held.then(|| self.limit.window_end()));
        cx.poll_fd(self.wants_pty_input());
    }

    fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.pty.as_ref().map(|p| p.master())
    }

    fn failed(&mut self, error: &EvtchnError) {
        (self.sink)(ConsoleEvent::Failed(error.clone()));
    }
}

impl ConsoleSource {
    fn wants_pty_input(&self) -> bool {
        self.pty.is_some()
            && !self.pty_input_broken
            && self.pty_input.is_empty()
            && self
                .shared
                .with_ring(|r| r.write_space().unwrap_or(0) > 0)
                .unwrap_or(false)
    }

    /// Hands what the run collected to the sink and the pty (outside the
    /// page lock, so a slow sink never holds up input).
    fn hand_over(&mut self) {
        for report in self.reports.drain(..) {
            (self.sink)(report);
        }
        if !self.output.is_empty() {
            let output = std::mem::take(&mut self.output);
            if let Some(pty) = &self.pty {
                let taken = pty.write(&output);
                Counters::add(
                    &self.shared.counters.pty_dropped,
                    (output.len() - taken) as u64,
                );
            }
            (self.sink)(ConsoleEvent::Output(output));
        }
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
                    self.notify = true;
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
                    self.notify = true;
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
