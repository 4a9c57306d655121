//! One event loop per platform: a Rust thread waits on the platform's
//! event-channel handle (and on whatever descriptors and timers its sources
//! asked for), drains every pending port in one pass, runs the source
//! registered for each, sends the notifications the pass produced (one per
//! port, however many requests asked for it), and only then unmasks the
//! ports, so a port that fires during the work is seen again on the next
//! pass. No thread or timer per device: thousands of sources share it.
//! How it waits (epoll, or io_uring on Linux's `/dev/xen/evtchn`, where a
//! port's event then costs one system call instead of three) is in
//! `event_loop/wait.rs`. A source may also ask to be polled for a while
//! rather than woken by its port (`event_loop/poll.rs`).
//!
//! A source is a data path (a console, a block ring, a batch forwarder to
//! JavaScript): it owns its port's work, may hold its port masked past the
//! pass (rate limiting, or a consumer that unmasks it later), may ask for a
//! timer, and may have one descriptor of its own polled for reading (a
//! pseudo-terminal). Sources are added and removed from any thread through
//! a command queue; a removed source is handed back to its owner once the
//! loop no longer runs it.

use std::cell::Cell;
use std::collections::{BTreeSet, HashMap};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::thread::{JoinHandle, ThreadId};
use std::time::{Duration, Instant};

use super::{EventChannels, EvtchnError, Port};
use wait::{Ready, Waiter, Way};

/// Waits until `fd` is readable or `timeout` passed (`None`: no limit);
/// whether it is readable. The one blocking wait outside the loop, for
/// simulated peers and tests that wait on one descriptor.
pub fn wait_readable(fd: BorrowedFd<'_>, timeout: Option<Duration>) -> io::Result<bool> {
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        let ts = left.map(|d| rustix::event::Timespec {
            tv_sec: d.as_secs().min(i64::MAX as u64) as i64,
            tv_nsec: i64::from(d.subsec_nanos()),
        });
        let mut fds = [rustix::event::PollFd::new(
            &fd,
            rustix::event::PollFlags::IN,
        )];
        match rustix::event::poll(&mut fds, ts.as_ref()) {
            Ok(n) => return Ok(n > 0),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Notifications requested during a pass, sent once per port at its end.
#[derive(Default)]
pub struct Notifier {
    ports: BTreeSet<Port>,
}

impl Notifier {
    /// Asks for `port` to be notified at the end of the pass.
    pub fn notify(&mut self, port: Port) {
        self.ports.insert(port);
    }

    /// Sends the coalesced notifications; returns how many were sent. A
    /// port that fails (closed meanwhile) does not stop the others.
    pub fn flush(&mut self, channels: &dyn EventChannels) -> usize {
        let mut sent = 0;
        for port in std::mem::take(&mut self.ports) {
            if channels.notify(port).is_ok() {
                sent += 1;
            }
        }
        sent
    }
}

/// Why a source runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Wake {
    /// Its port fired (and is masked until the pass ends, unless held).
    pub port: bool,
    /// Its descriptor is readable.
    pub fd: bool,
    /// Its timer expired.
    pub timer: bool,
    /// It was just added, or kicked from another thread.
    pub kicked: bool,
    /// It is polled, and [`Source::has_work`] said it has work.
    pub polled: bool,
    /// Its polling window ended without work: it is polled no more.
    pub poll_over: bool,
}

impl Wake {
    fn any(&self) -> bool {
        self.port || self.fd || self.timer || self.kicked || self.polled || self.poll_over
    }

    fn merge(&mut self, other: Wake) {
        self.port |= other.port;
        self.fd |= other.fd;
        self.timer |= other.timer;
        self.kicked |= other.kicked;
        self.polled |= other.polled;
        self.poll_over |= other.poll_over;
    }
}

/// What a source may ask of the loop while it runs.
pub struct Control<'a> {
    notifier: &'a mut Notifier,
    asks: &'a mut Asks,
    /// The pass's time, read when a source first asks for it: a clock read
    /// is a system call where the kernel has no vDSO clock (a Xen PV
    /// dom0's), and most passes need none.
    now: &'a Cell<Option<Instant>>,
}

#[derive(Default)]
struct Asks {
    hold: bool,
    unmask: bool,
    timer: Option<Option<Instant>>,
    poll_fd: Option<bool>,
    poll: Option<Duration>,
}

impl Control<'_> {
    /// Notifies `port` at the end of the pass (once, however often asked).
    pub fn notify(&mut self, port: Port) {
        self.notifier.notify(port);
    }

    /// Leaves the source's port masked after this pass: no further event is
    /// delivered until [`Control::unmask_port`] in a later run, or until the
    /// owner unmasks it through the event channels.
    pub fn hold_port(&mut self) {
        self.asks.hold = true;
    }

    /// Unmasks the source's port at the end of this pass (after a hold).
    pub fn unmask_port(&mut self) {
        self.asks.unmask = true;
    }

    /// Runs the source again at `at` (replacing any earlier timer), or
    /// never (`None`).
    pub fn set_timer(&mut self, at: Option<Instant>) {
        self.asks.timer = Some(at);
    }

    /// Whether to wait for the source's descriptor to be readable.
    pub fn poll_fd(&mut self, readable: bool) {
        self.asks.poll_fd = Some(readable);
    }

    /// Polls the source for `window` from now (or from its last work, if
    /// asked again): before the loop sleeps it looks at
    /// [`Source::has_work`], and runs the source with [`Wake::polled`] as
    /// soon as that says so; when the window ends without work, it runs
    /// the source once more with [`Wake::poll_over`]. The loop's thread
    /// stays busy meanwhile; its other events are still seen.
    pub fn poll_for(&mut self, window: Duration) {
        self.asks.poll = Some(window);
    }

    /// The time of the pass: read once, when a source of the pass first
    /// asks, and the same for every source after it.
    pub fn now(&self) -> Instant {
        match self.now.get() {
            Some(t) => t,
            None => {
                let t = Instant::now();
                self.now.set(Some(t));
                t
            }
        }
    }
}

/// A data path run by the loop.
pub trait Source: Send {
    /// Does the work for `why`. Runs on the loop's thread: it must not
    /// block, and must not remove itself synchronously.
    fn wake(&mut self, why: Wake, cx: &mut Control<'_>);
    /// The descriptor to poll when the source asks for it, if it has one.
    /// It must stay the same while the source is in the loop.
    fn fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }
    /// While the source is polled ([`Control::poll_for`]), whether it has
    /// work: a look at shared memory, cheap and without side effects,
    /// asked over and over between the loop's waits.
    fn has_work(&self) -> bool {
        false
    }
    /// The loop stopped because the event channels failed.
    fn failed(&mut self, error: &EvtchnError) {
        let _ = error;
    }
}

impl<F: FnMut(Wake, &mut Control<'_>) + Send> Source for F {
    fn wake(&mut self, why: Wake, cx: &mut Control<'_>) {
        self(why, cx)
    }
}

/// Identifies a source in its loop.
pub type SourceId = u64;

enum Command {
    Add {
        id: SourceId,
        port: Option<Port>,
        source: Box<dyn Source>,
        poll_fd: bool,
    },
    Remove {
        id: SourceId,
        reply: Option<mpsc::Sender<Box<dyn Source>>>,
    },
    Kick(SourceId),
    Stop,
}

/// Commands for the loop; `None` once the loop has ended (nothing would
/// ever take them, and a waiting remover must not wait for it).
type Queue = Mutex<Option<Vec<Command>>>;

struct Inner {
    evtchn: Arc<dyn EventChannels>,
    doorbell: OwnedFd,
    commands: Queue,
    /// Commands were queued by the loop's own thread (a source kicking
    /// another, or removing itself) since the loop last waited.
    queued_here: AtomicBool,
    next_id: AtomicU64,
    thread: OnceLock<ThreadId>,
    /// How the loop waits: "io_uring" or "epoll".
    wait_kind: &'static str,
    /// How often the doorbell was rung, for the tests.
    #[cfg(test)]
    rings: AtomicU64,
}

impl Inner {
    fn send(&self, command: Command) -> io::Result<()> {
        match &mut *self.commands.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(queue) => queue.push(command),
            None => {
                return Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "the event loop has ended",
                ))
            }
        }
        // The loop's own thread needs no doorbell: the loop looks at its
        // commands before it waits again, and does not wait for events
        // then (a pass that hands a receiver packets and kicks it, or a
        // port that kicks the source serving it, would otherwise cost a
        // write, a wake-up and a read of the doorbell).
        if self.on_loop_thread() {
            self.queued_here.store(true, Ordering::Relaxed);
            return Ok(());
        }
        #[cfg(test)]
        self.rings.fetch_add(1, Ordering::Relaxed);
        ring(self.doorbell.as_fd())
    }

    /// The loop ends: later commands fail, queued ones are dropped (their
    /// reply channels with them).
    fn close(&self) {
        self.commands
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
    }

    fn on_loop_thread(&self) -> bool {
        self.thread.get() == Some(&std::thread::current().id())
    }
}

fn ring(fd: BorrowedFd<'_>) -> io::Result<()> {
    match rustix::io::write(fd, &1u64.to_ne_bytes()) {
        // A counter at its maximum already says "pending".
        Ok(_) | Err(rustix::io::Errno::AGAIN) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn drain(fd: BorrowedFd<'_>) {
    let mut buf = [0u8; 8];
    let _ = rustix::io::read(fd, &mut buf);
}

/// The loop of one platform; stopping (or dropping) it ends its thread and
/// drops the sources still in it.
pub struct EventLoop {
    inner: Arc<Inner>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// Kicks one source ([`SourceHandle::kicker`]); kicking a source no
/// longer in the loop does nothing.
#[derive(Clone)]
pub struct Kicker {
    inner: Arc<Inner>,
    id: SourceId,
}

impl Kicker {
    /// Runs the source soon with [`Wake::kicked`], from any thread.
    pub fn kick(&self) {
        let _ = self.inner.send(Command::Kick(self.id));
    }
}

/// A source in a loop. Dropping it removes the source (waiting for the
/// loop to let go of it, unless on the loop's own thread).
pub struct SourceHandle {
    inner: Arc<Inner>,
    id: SourceId,
    removed: bool,
}

impl SourceHandle {
    /// The source's id in its loop.
    pub fn id(&self) -> SourceId {
        self.id
    }

    /// Runs the source soon with [`Wake::kicked`], from any thread.
    pub fn kick(&self) {
        let _ = self.inner.send(Command::Kick(self.id));
    }

    /// What kicks the source from elsewhere: something that hands it work
    /// from another thread (or another source) keeps one, while the handle
    /// stays with the source's owner.
    pub fn kicker(&self) -> Kicker {
        Kicker {
            inner: self.inner.clone(),
            id: self.id,
        }
    }

    /// Removes the source and hands it back once the loop no longer runs it
    /// (`None` when called on the loop's thread, or if the loop is gone:
    /// then the loop drops it).
    pub fn remove(mut self) -> Option<Box<dyn Source>> {
        self.remove_inner()
    }

    fn remove_inner(&mut self) -> Option<Box<dyn Source>> {
        if self.removed {
            return None;
        }
        self.removed = true;
        if self.inner.on_loop_thread() {
            let _ = self.inner.send(Command::Remove {
                id: self.id,
                reply: None,
            });
            return None;
        }
        let (tx, rx) = mpsc::channel();
        self.inner
            .send(Command::Remove {
                id: self.id,
                reply: Some(tx),
            })
            .ok()?;
        // The loop answers, or drops the sender when it ends.
        rx.recv().ok()
    }
}

impl Drop for SourceHandle {
    fn drop(&mut self) {
        self.remove_inner();
    }
}

impl EventLoop {
    /// Starts the loop of `evtchn` on a new thread named `name`. The loop
    /// takes every event the handle delivers: ports with no source are
    /// unmasked and otherwise ignored.
    pub fn spawn(name: &str, evtchn: Arc<dyn EventChannels>) -> io::Result<EventLoop> {
        EventLoop::spawn_waiting(name, evtchn, Way::Best)
    }

    fn spawn_waiting(
        name: &str,
        evtchn: Arc<dyn EventChannels>,
        way: Way,
    ) -> io::Result<EventLoop> {
        let doorbell = rustix::event::eventfd(
            0,
            rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
        )?;
        let waiter = Waiter::new(evtchn.as_ref(), doorbell.as_fd(), way)?;
        let inner = Arc::new(Inner {
            evtchn,
            doorbell,
            commands: Mutex::new(Some(Vec::new())),
            queued_here: AtomicBool::new(false),
            next_id: AtomicU64::new(0),
            thread: OnceLock::new(),
            wait_kind: waiter.kind(),
            #[cfg(test)]
            rings: AtomicU64::new(0),
        });
        let state = LoopState {
            inner: inner.clone(),
            waiter,
            ready: Ready::default(),
            sources: HashMap::new(),
            by_port: HashMap::new(),
            timers: BTreeSet::new(),
            notifier: Notifier::default(),
            woken: Vec::new(),
            running: Vec::new(),
            unmask: Vec::new(),
            polling: Vec::new(),
            found: Vec::new(),
            last_look: 0,
        };
        let started = inner.clone();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let _ = started.thread.set(std::thread::current().id());
                state.run();
                started.close();
            })?;
        Ok(EventLoop {
            inner,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// How the loop waits: `"io_uring"` where its event channels are a
    /// device like `/dev/xen/evtchn` and the kernel offers it (their reads
    /// and unmasks go in the same system call as the wait), else `"epoll"`.
    pub fn wait_kind(&self) -> &'static str {
        self.inner.wait_kind
    }

    /// The event channels the loop waits on.
    pub fn evtchn(&self) -> &Arc<dyn EventChannels> {
        &self.inner.evtchn
    }

    /// Adds a source for `port` (a port of this loop's handle, or none for a
    /// source that runs on its descriptor and timers only). It runs once
    /// right away ([`Wake::kicked`]): events that came before it was added
    /// are not lost. `poll_fd`: whether its descriptor is polled from the
    /// start.
    pub fn add(
        &self,
        port: Option<Port>,
        source: Box<dyn Source>,
        poll_fd: bool,
    ) -> io::Result<SourceHandle> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        self.inner.send(Command::Add {
            id,
            port,
            source,
            poll_fd,
        })?;
        Ok(SourceHandle {
            inner: self.inner.clone(),
            id,
            removed: false,
        })
    }

    /// Whether the loop's thread still runs sources, for a health check: a
    /// probe source is added, and the answer is whether it ran within
    /// `timeout`. The probe is removed without waiting, so a stuck loop
    /// cannot stick the caller.
    pub fn responds(&self, timeout: Duration) -> bool {
        if self.inner.on_loop_thread() {
            return true;
        }
        let (ran, seen) = mpsc::channel();
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let probe = move |_: Wake, _: &mut Control<'_>| {
            let _ = ran.send(());
        };
        let added = self.inner.send(Command::Add {
            id,
            port: None,
            source: Box::new(probe),
            poll_fd: false,
        });
        if added.is_err() {
            return false;
        }
        let answered = seen.recv_timeout(timeout).is_ok();
        let _ = self.inner.send(Command::Remove { id, reply: None });
        answered
    }

    /// Stops the loop and waits for its thread. Idempotent.
    pub fn stop(&self) {
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = thread {
            let _ = self.inner.send(Command::Stop);
            if !self.inner.on_loop_thread() {
                let _ = t.join();
            }
        }
    }
}

impl Drop for EventLoop {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Entry {
    source: Box<dyn Source>,
    port: Option<Port>,
    /// Why it runs in the current pass (collected before running).
    wake: Wake,
    timer: Option<Instant>,
    /// Its descriptor is in the epoll set, and whether for reading.
    fd_registered: bool,
    fd_polled: bool,
}

struct LoopState {
    inner: Arc<Inner>,
    waiter: Waiter,
    /// What the last wait found.
    ready: Ready,
    sources: HashMap<SourceId, Entry>,
    by_port: HashMap<Port, SourceId>,
    timers: BTreeSet<(Instant, SourceId)>,
    notifier: Notifier,
    /// Sources to run this pass, in the order they were woken.
    woken: Vec<SourceId>,
    /// Scratch of a pass, kept so that a pass allocates nothing: the
    /// sources it runs, and the ports to unmask after it.
    running: Vec<SourceId>,
    unmask: Vec<Port>,
    /// Sources being polled, and the scratch of a poll's findings.
    polling: Vec<poll::Polled>,
    found: Vec<(SourceId, Wake)>,
    /// When the loop last looked at its events ([`poll::clock`] ticks;
    /// read only while sources are polled).
    last_look: u64,
}

impl LoopState {
    fn run(mut self) {
        loop {
            // Commands the loop's thread queued itself are applied after a
            // look at the events that does not wait (so a source that
            // keeps kicking cannot starve the ports and descriptors).
            let queued_here = self.inner.queued_here.swap(false, Ordering::Relaxed);
            // Polled sources are looked at instead of sleeping; the events
            // then get a look that does not wait, unless one was taken very
            // recently and polled work is ready.
            let (mut look, mut spun) = (true, false);
            let timeout = if queued_here {
                Some(Duration::ZERO)
            } else if !self.polling.is_empty() {
                (look, spun) = (self.spin(), true);
                Some(Duration::ZERO)
            } else {
                self.timers.first().map(|(at, _)| {
                    let d = at.saturating_duration_since(Instant::now());
                    // Round up, so a timer never finds itself early.
                    d + Duration::from_nanos(u64::from(d.subsec_nanos() > 0))
                })
            };
            let mut ready = std::mem::take(&mut self.ready);
            if look {
                if let Err(e) = self.waiter.wait(timeout, &mut ready) {
                    self.fail(&e);
                    return;
                }
                if spun {
                    self.last_look = poll::clock().now();
                }
            } else {
                ready.clear();
            }
            // Commands first: a source added before its port fired must be
            // there when the port's event is taken.
            if ready.doorbell {
                drain(self.inner.doorbell.as_fd());
            }
            if (ready.doorbell || queued_here) && !self.commands() {
                return;
            }
            if ready.evtchn {
                if let Err(e) = self.inner.evtchn.pending(&mut ready.ports) {
                    self.fail(&e);
                    return;
                }
            }
            if !self.take_ports(&ready.ports) {
                return;
            }
            for &id in &ready.sources {
                self.wake(
                    id,
                    Wake {
                        fd: true,
                        ..Wake::default()
                    },
                );
            }
            self.ready = ready;
            self.expire_timers();
            self.pass();
        }
    }

    /// Wakes the sources of the pending `ports`; false when the loop is to
    /// stop. Ports without one (a source removed while its port fired) are
    /// unmasked and dropped, once the commands queued meanwhile are applied
    /// (a source added just before its port fired may not have rung the
    /// doorbell in this wait yet).
    fn take_ports(&mut self, ports: &[Port]) -> bool {
        let mut looked = false;
        for &port in ports {
            if !looked && !self.by_port.contains_key(&port) {
                looked = true;
                if !self.commands() {
                    return false;
                }
            }
            match self.by_port.get(&port) {
                Some(&id) => self.wake(
                    id,
                    Wake {
                        port: true,
                        ..Wake::default()
                    },
                ),
                None => self.unmask.push(port),
            }
        }
        true
    }

    fn wake(&mut self, id: SourceId, why: Wake) {
        if let Some(e) = self.sources.get_mut(&id) {
            if !e.wake.any() {
                self.woken.push(id);
            }
            e.wake.merge(why);
        }
    }

    fn expire_timers(&mut self) {
        if self.timers.is_empty() {
            return;
        }
        let now = Instant::now();
        while let Some(&(at, id)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            if let Some(e) = self.sources.get_mut(&id) {
                e.timer = None;
            }
            self.wake(
                id,
                Wake {
                    timer: true,
                    ..Wake::default()
                },
            );
        }
    }

    /// Applies the queued commands; false when the loop is to stop.
    fn commands(&mut self) -> bool {
        let commands = self
            .inner
            .commands
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default();
        let mut go_on = true;
        for command in commands {
            match command {
                Command::Add {
                    id,
                    port,
                    source,
                    poll_fd,
                } => {
                    let mut entry = Entry {
                        source,
                        port,
                        wake: Wake::default(),
                        timer: None,
                        fd_registered: false,
                        fd_polled: false,
                    };
                    set_fd_interest(&mut self.waiter, id, &mut entry, poll_fd);
                    if let Some(p) = port {
                        self.by_port.insert(p, id);
                    }
                    self.sources.insert(id, entry);
                    self.wake(
                        id,
                        Wake {
                            kicked: true,
                            ..Wake::default()
                        },
                    );
                }
                Command::Remove { id, reply } => {
                    if let Some(entry) = self.remove(id) {
                        if let Some(reply) = reply {
                            let _ = reply.send(entry.source);
                        }
                    }
                }
                Command::Kick(id) => self.wake(
                    id,
                    Wake {
                        kicked: true,
                        ..Wake::default()
                    },
                ),
                Command::Stop => go_on = false,
            }
        }
        go_on
    }

    fn remove(&mut self, id: SourceId) -> Option<Entry> {
        let entry = self.sources.remove(&id)?;
        if let Some(p) = entry.port {
            if self.by_port.get(&p) == Some(&id) {
                self.by_port.remove(&p);
            }
        }
        if let Some(at) = entry.timer {
            self.timers.remove(&(at, id));
        }
        if entry.fd_registered {
            if let Some(fd) = entry.source.fd() {
                self.waiter.forget(id, fd);
            }
        }
        self.woken.retain(|w| *w != id);
        self.polling.retain(|p| p.id != id);
        Some(entry)
    }

    /// Runs the woken sources, then sends the notifications and unmasks the
    /// ports that fired (unless held).
    fn pass(&mut self) {
        let now = Cell::new(None);
        // Disjoint borrows of the state: a source runs in place, and a pass
        // neither moves entries around nor allocates.
        let LoopState {
            inner,
            waiter,
            sources,
            timers,
            notifier,
            woken,
            running,
            unmask,
            polling,
            ..
        } = self;
        std::mem::swap(woken, running);
        for &id in running.iter() {
            let Some(entry) = sources.get_mut(&id) else {
                continue;
            };
            let why = std::mem::take(&mut entry.wake);
            let mut asks = Asks::default();
            entry.source.wake(
                why,
                &mut Control {
                    notifier,
                    asks: &mut asks,
                    now: &now,
                },
            );
            if let Some(p) = entry.port {
                if (why.port && !asks.hold) || asks.unmask {
                    unmask.push(p);
                }
            }
            if let Some(at) = asks.timer {
                if let Some(old) = entry.timer.take() {
                    timers.remove(&(old, id));
                }
                if let Some(at) = at {
                    timers.insert((at, id));
                    entry.timer = Some(at);
                }
            }
            if let Some(window) = asks.poll {
                LoopState::poll_for(polling, id, window);
            }
            if let Some(readable) = asks.poll_fd {
                if readable != entry.fd_polled || !entry.fd_registered {
                    set_fd_interest(waiter, id, entry, readable);
                }
            }
        }
        running.clear();
        notifier.flush(inner.evtchn.as_ref());
        waiter.unmask(inner.evtchn.as_ref(), unmask);
        unmask.clear();
    }

    fn fail(&mut self, error: &EvtchnError) {
        for entry in self.sources.values_mut() {
            entry.source.failed(error);
        }
    }
}

/// Registers, re-arms or quiets a source's descriptor in the wait.
fn set_fd_interest(waiter: &mut Waiter, id: SourceId, entry: &mut Entry, readable: bool) {
    let Some(fd) = entry.source.fd() else {
        return;
    };
    if waiter.set_interest(id, fd, entry.fd_registered, readable) {
        entry.fd_registered = true;
        entry.fd_polled = readable;
    }
}

mod poll;
pub(crate) use poll::calibrate as calibrate_poll_clock;
#[cfg(test)]
mod tests;
mod wait;
