//! The event loop over the simulated hypervisor's event channels.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::platform::sim::{DomainConfig, SimEvtchn, SimHypervisor};
use crate::platform::DomId;
use device::DeviceEvtchn;

mod device;
mod polling;
use polling::{
    a_polled_source_runs_when_it_has_work_with_no_event_at_all,
    a_polling_window_that_passes_without_work_ends_with_one_last_run,
    ports_kicks_and_removals_are_served_while_a_source_is_polled,
};

const BACK: DomId = 0;
const FRONT: DomId = 7;
/// Far beyond any step here, even on a loaded machine: only a guard against
/// a hang.
const PATIENCE: Duration = Duration::from_secs(30);

struct Setup {
    _hv: SimHypervisor,
    back: Arc<dyn EventChannels>,
    front: Arc<SimEvtchn>,
    event_loop: EventLoop,
}

/// How the back end's event channels look to the loop.
#[derive(Clone, Copy)]
enum Channels {
    /// The simulated handle itself (the loop waits with epoll).
    Simulated,
    /// The handle behind a device like `/dev/xen/evtchn` (io_uring).
    Device,
    /// The same, the ring polling the device and the loop reading it.
    DevicePolled,
}

fn setup(channels: Channels) -> Setup {
    let hv = SimHypervisor::new();
    hv.create_domain(DomainConfig::new(BACK)).unwrap();
    hv.create_domain(DomainConfig::new(FRONT)).unwrap();
    let host = hv.host();
    let sim = Arc::new(host.evtchn(BACK).unwrap());
    let back: Arc<dyn EventChannels> = match channels {
        Channels::Simulated => sim,
        Channels::Device | Channels::DevicePolled => Arc::new(DeviceEvtchn::new(sim)),
    };
    let front = Arc::new(host.evtchn(FRONT).unwrap());
    let way = match channels {
        Channels::DevicePolled => Way::PollThenRead,
        _ => Way::Best,
    };
    let event_loop = EventLoop::spawn_waiting("test-loop", back.clone(), way).unwrap();
    let expected = match channels {
        Channels::Simulated => "epoll",
        Channels::Device | Channels::DevicePolled => "io_uring",
    };
    assert_eq!(event_loop.wait_kind(), expected);
    Setup {
        _hv: hv,
        back,
        front,
        event_loop,
    }
}

/// A channel pair: the front end's port, and the back end's bound to it.
fn pair(s: &Setup) -> (Port, Port) {
    let fport = s.front.alloc_unbound(BACK).unwrap();
    let bport = s.back.bind_interdomain(FRONT, fport).unwrap();
    (fport, bport)
}

/// The front end's pending ports, waiting for at least one.
fn front_pending(s: &Setup) -> Vec<Port> {
    let end = Instant::now() + PATIENCE;
    let mut out = Vec::new();
    while out.is_empty() && Instant::now() < end {
        s.front.pending(&mut out).unwrap();
        if out.is_empty() {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    out.sort_unstable();
    out
}

fn each_port_reaches_its_own_source_and_notifications_are_coalesced(s: Setup) {
    let (events_tx, events) = mpsc::channel();
    let mut ports = Vec::new();
    let mut handles = Vec::new();
    for i in 0..3u32 {
        let (fport, bport) = pair(&s);
        let tx = events_tx.clone();
        let source = move |why: Wake, cx: &mut Control<'_>| {
            if why.port {
                tx.send(i).unwrap();
                // Three requests for one notification.
                for _ in 0..3 {
                    cx.notify(bport);
                }
            }
        };
        handles.push(
            s.event_loop
                .add(Some(bport), Box::new(source), false)
                .unwrap(),
        );
        ports.push(fport);
    }
    s.front.notify(ports[2]).unwrap();
    assert_eq!(events.recv_timeout(PATIENCE), Ok(2));
    assert_eq!(front_pending(&s), vec![ports[2]], "one notification back");
    s.front.unmask(ports[2]).unwrap();
    s.front.notify(ports[0]).unwrap();
    assert_eq!(events.recv_timeout(PATIENCE), Ok(0));
    assert_eq!(front_pending(&s), vec![ports[0]]);
    drop(handles);
}

fn a_port_fires_again_only_after_the_pass_unmasks_it_and_a_held_port_stays_quiet(s: Setup) {
    let (fport, bport) = pair(&s);
    let runs = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = mpsc::channel();
    let counted = runs.clone();
    let source = move |why: Wake, cx: &mut Control<'_>| {
        if why.port {
            let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
            // The second event is held: nothing more until it is released.
            if n == 2 {
                cx.hold_port();
            }
            tx.send(n).unwrap();
        }
    };
    let _h = s
        .event_loop
        .add(Some(bport), Box::new(source), false)
        .unwrap();
    s.front.notify(fport).unwrap();
    assert_eq!(rx.recv_timeout(PATIENCE), Ok(1));
    s.front.notify(fport).unwrap();
    assert_eq!(rx.recv_timeout(PATIENCE), Ok(2));
    // Held: these are not delivered.
    for _ in 0..10 {
        s.front.notify(fport).unwrap();
    }
    assert!(rx.recv_timeout(Duration::from_millis(50)).is_err());
    // Its owner unmasks it: the event that came meanwhile is delivered.
    s.back.unmask(bport).unwrap();
    assert_eq!(rx.recv_timeout(PATIENCE), Ok(3));
    assert_eq!(runs.load(Ordering::SeqCst), 3);
}

fn timers_run_a_source_and_can_release_a_held_port(s: Setup) {
    let (fport, bport) = pair(&s);
    let (tx, rx) = mpsc::channel();
    let source = move |why: Wake, cx: &mut Control<'_>| {
        if why.port {
            cx.hold_port();
            cx.set_timer(Some(cx.now() + Duration::from_millis(20)));
            tx.send("port").unwrap();
        }
        if why.timer {
            cx.unmask_port();
            tx.send("timer").unwrap();
        }
    };
    let _h = s
        .event_loop
        .add(Some(bport), Box::new(source), false)
        .unwrap();
    let start = Instant::now();
    s.front.notify(fport).unwrap();
    assert_eq!(rx.recv_timeout(PATIENCE), Ok("port"));
    s.front.notify(fport).unwrap();
    assert_eq!(rx.recv_timeout(PATIENCE), Ok("timer"));
    assert!(
        start.elapsed() >= Duration::from_millis(20),
        "not before its time"
    );
    // Released: the event held back is delivered now.
    assert_eq!(rx.recv_timeout(PATIENCE), Ok("port"));
}

struct PipeSource {
    read: OwnedFd,
    tx: mpsc::Sender<Vec<u8>>,
}

impl Source for PipeSource {
    fn wake(&mut self, why: Wake, cx: &mut Control<'_>) {
        if why.fd {
            let mut buf = [0u8; 64];
            let n = rustix::io::read(&self.read, &mut buf).unwrap();
            self.tx.send(buf[..n].to_vec()).unwrap();
        }
        cx.poll_fd(true);
    }

    fn fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.read.as_fd())
    }
}

fn a_source_is_woken_by_its_descriptor(s: Setup) {
    let (read, write) = rustix::pipe::pipe().unwrap();
    let (tx, rx) = mpsc::channel();
    let _h = s
        .event_loop
        .add(None, Box::new(PipeSource { read, tx }), true)
        .unwrap();
    rustix::io::write(&write, b"hello").unwrap();
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), b"hello");
    // Read to the end, it waits for more, and is woken again.
    rustix::io::write(&write, b"again").unwrap();
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), b"again");
}

/// More descriptors readable at once than the ring has entries, or room
/// for completions: every one reaches its source, and each again after.
fn hundreds_of_descriptors_ready_at_once_all_reach_their_sources(s: Setup) {
    const N: usize = 300;
    let (tx, rx) = mpsc::channel();
    let mut writers = Vec::new();
    let mut handles = Vec::new();
    for i in 0..N {
        let (read, write) = rustix::pipe::pipe().unwrap();
        let tx = tx.clone();
        let source = IndexedPipe { i, read, tx };
        handles.push(s.event_loop.add(None, Box::new(source), true).unwrap());
        writers.push(write);
    }
    for round in 0..2u8 {
        for w in &writers {
            rustix::io::write(w, &[round]).unwrap();
        }
        let mut seen = vec![false; N];
        for _ in 0..N {
            let (i, bytes) = rx.recv_timeout(PATIENCE).unwrap();
            assert_eq!(bytes, [round]);
            assert!(!seen[i], "source {i} woken twice for one byte");
            seen[i] = true;
        }
    }
}

/// A pipe's reader that says which it is.
struct IndexedPipe {
    i: usize,
    read: OwnedFd,
    tx: mpsc::Sender<(usize, Vec<u8>)>,
}

impl Source for IndexedPipe {
    fn wake(&mut self, why: Wake, cx: &mut Control<'_>) {
        if why.fd {
            let mut buf = [0u8; 64];
            let n = rustix::io::read(&self.read, &mut buf).unwrap();
            let _ = self.tx.send((self.i, buf[..n].to_vec()));
        }
        cx.poll_fd(true);
    }

    fn fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.read.as_fd())
    }
}

/// A removed source's descriptor is let go of: once its owner closes it,
/// nothing holds the pipe's reading end open (a TAP device taken off the
/// loop must be free to be opened again).
fn a_removed_source_s_descriptor_is_let_go_of(s: Setup) {
    let (read, write) = rustix::pipe::pipe().unwrap();
    let (tx, rx) = mpsc::channel();
    let h = s
        .event_loop
        .add(None, Box::new(PipeSource { read, tx }), true)
        .unwrap();
    rustix::io::write(&write, b"x").unwrap();
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), b"x");
    drop(h.remove().expect("handed back"));
    assert_eq!(
        rustix::io::write(&write, b"y"),
        Err(rustix::io::Errno::PIPE),
        "no reader left"
    );
}

fn a_removed_source_is_handed_back_and_its_port_no_longer_reaches_it(s: Setup) {
    let (fport, bport) = pair(&s);
    let (tx, rx) = mpsc::channel();
    let source = move |why: Wake, _cx: &mut Control<'_>| {
        if why.port {
            tx.send(()).unwrap();
        }
    };
    let h = s
        .event_loop
        .add(Some(bport), Box::new(source), false)
        .unwrap();
    s.front.notify(fport).unwrap();
    rx.recv_timeout(PATIENCE).unwrap();
    assert!(h.remove().is_some(), "handed back");
    // An event for the port while it has no source: taken and dropped.
    s.front.notify(fport).unwrap();
    // A new source for the port: it starts (kicked), and the port was left
    // unmasked, so the next event reaches it.
    let (tx2, rx2) = mpsc::channel();
    let again = move |why: Wake, _cx: &mut Control<'_>| tx2.send(why).unwrap();
    let _h2 = s
        .event_loop
        .add(Some(bport), Box::new(again), false)
        .unwrap();
    let first = rx2.recv_timeout(PATIENCE).unwrap();
    assert!(first.kicked);
    if !first.port {
        s.front.notify(fport).unwrap();
        assert!(rx2.recv_timeout(PATIENCE).unwrap().port);
    }
    assert!(rx.try_recv().is_err(), "the removed source did not run");
}

fn a_new_source_runs_once_at_once_so_an_earlier_event_is_not_lost(s: Setup) {
    let (tx, rx) = mpsc::channel();
    let source = move |why: Wake, _cx: &mut Control<'_>| tx.send(why).unwrap();
    let h = s.event_loop.add(None, Box::new(source), false).unwrap();
    assert!(rx.recv_timeout(PATIENCE).unwrap().kicked);
    h.kick();
    assert!(rx.recv_timeout(PATIENCE).unwrap().kicked);
}

fn a_thousand_sources_share_one_loop_and_one_thread(s: Setup) {
    let (tx, rx) = mpsc::channel();
    let mut fports = Vec::new();
    let mut handles = Vec::new();
    for i in 0..1000u32 {
        let (fport, bport) = pair(&s);
        let tx = tx.clone();
        let source = move |why: Wake, cx: &mut Control<'_>| {
            if why.port {
                tx.send((i, std::thread::current().id())).unwrap();
                cx.notify(bport);
            }
        };
        handles.push(
            s.event_loop
                .add(Some(bport), Box::new(source), false)
                .unwrap(),
        );
        fports.push(fport);
    }
    for &p in &fports {
        s.front.notify(p).unwrap();
    }
    let mut seen = vec![false; 1000];
    let mut threads = std::collections::HashSet::new();
    for _ in 0..1000 {
        let (i, t) = rx.recv_timeout(PATIENCE).unwrap();
        seen[i as usize] = true;
        threads.insert(t);
    }
    assert!(seen.iter().all(|s| *s));
    assert_eq!(threads.len(), 1);
    let mut answered = 0;
    let end = Instant::now() + PATIENCE;
    while answered < 1000 && Instant::now() < end {
        let mut out = Vec::new();
        s.front.pending(&mut out).unwrap();
        answered += out.len();
    }
    assert_eq!(answered, 1000, "every guest got its answer");
}

fn removing_after_the_loop_stopped_does_not_wait_forever(s: Setup) {
    let source = |_why: Wake, _cx: &mut Control<'_>| {};
    let h = s.event_loop.add(None, Box::new(source), false).unwrap();
    s.event_loop.stop();
    assert!(h.remove().is_none());
    assert!(s
        .event_loop
        .add(None, Box::new(|_: Wake, _: &mut Control<'_>| {}), false)
        .is_err());
}

fn a_probe_says_whether_the_loop_runs_sources(s: Setup) {
    assert!(s.event_loop.responds(PATIENCE));
    // A source that holds the loop's thread until released: the probe
    // gets no answer, and returns anyway.
    let (release, held) = mpsc::channel::<()>();
    let (entered, inside) = mpsc::channel::<()>();
    let held = Mutex::new(Some(held));
    let _blocker = s
        .event_loop
        .add(
            None,
            Box::new(move |_: Wake, _: &mut Control<'_>| {
                if let Some(held) = held.lock().unwrap().take() {
                    let _ = entered.send(());
                    let _ = held.recv();
                }
            }),
            false,
        )
        .unwrap();
    inside.recv_timeout(PATIENCE).unwrap();
    assert!(!s.event_loop.responds(Duration::from_millis(50)));
    release.send(()).unwrap();
    assert!(s.event_loop.responds(PATIENCE));
    s.event_loop.stop();
    assert!(!s.event_loop.responds(Duration::from_millis(50)));
}

/// A source kicking another from the loop's own thread (as a TAP device's
/// reader kicks the vif it hands frames to) runs it without the doorbell:
/// a chain of kicks, each made inside a pass, rings it not once, and a
/// source that kicks itself every pass does not keep the ports from being
/// served.
fn kicks_from_the_loop_thread_need_no_doorbell_and_starve_nothing(s: Setup) {
    let (fport, bport) = pair(&s);
    const LINKS: usize = 10;
    let (done_tx, done_rx) = mpsc::channel();
    // The last link of the chain says it ran; each other link kicks the next.
    let mut next: Option<Kicker> = None;
    let mut handles = Vec::new();
    for i in (0..LINKS).rev() {
        let kick_next = next.take();
        let done = done_tx.clone();
        let ran = Arc::new(AtomicUsize::new(0));
        let source = move |why: Wake, _: &mut Control<'_>| {
            // The run that follows the source's adding is not a link.
            if why.kicked && ran.fetch_add(1, Ordering::Relaxed) > 0 {
                match &kick_next {
                    Some(k) => k.kick(),
                    None => {
                        let _ = done.send(i);
                    }
                }
            }
        };
        let handle = s.event_loop.add(None, Box::new(source), false).unwrap();
        next = Some(handle.kicker());
        handles.push(handle);
    }
    // A source that kicks itself on every run, for as long as it lives.
    let spinner = Arc::new(std::sync::OnceLock::<Kicker>::new());
    let spins = Arc::new(AtomicUsize::new(0));
    let (me, count) = (spinner.clone(), spins.clone());
    let spinning = s
        .event_loop
        .add(
            None,
            Box::new(move |_: Wake, _: &mut Control<'_>| {
                count.fetch_add(1, Ordering::Relaxed);
                if let Some(k) = me.get() {
                    k.kick();
                }
            }),
            false,
        )
        .unwrap();
    let _ = spinner.set(spinning.kicker());
    spinning.kick();
    // Wait until the adds were taken (they each rang), then count.
    let end = Instant::now() + PATIENCE;
    while spins.load(Ordering::Relaxed) < 3 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(1));
    }
    let before = s.event_loop.inner.rings.load(Ordering::Relaxed);
    // One kick from outside starts the chain.
    next.as_ref().unwrap().kick();
    assert_eq!(done_rx.recv_timeout(PATIENCE), Ok(LINKS - 1));
    assert_eq!(
        s.event_loop.inner.rings.load(Ordering::Relaxed),
        before + 1,
        "only the kick from outside rang the doorbell"
    );
    // The spinner kicks itself without end, and the port is served still.
    let (port_tx, port_rx) = mpsc::channel();
    let _port_source = s
        .event_loop
        .add(
            Some(bport),
            Box::new(move |why: Wake, _: &mut Control<'_>| {
                if why.port {
                    let _ = port_tx.send(());
                }
            }),
            false,
        )
        .unwrap();
    s.front.notify(fport).unwrap();
    assert_eq!(port_rx.recv_timeout(PATIENCE), Ok(()));
    assert!(spins.load(Ordering::Relaxed) > 3);
}

/// Each test, with the loop waiting both ways.
macro_rules! both_ways {
    ($($name:ident),* $(,)?) => {
        mod with_epoll {
            $(#[test]
            fn $name() {
                super::$name(super::setup(super::Channels::Simulated));
            })*
        }
        mod with_io_uring {
            $(#[test]
            fn $name() {
                super::$name(super::setup(super::Channels::Device));
            })*
        }
        mod with_io_uring_polling_the_device {
            $(#[test]
            fn $name() {
                super::$name(super::setup(super::Channels::DevicePolled));
            })*
        }
    };
}

both_ways!(
    each_port_reaches_its_own_source_and_notifications_are_coalesced,
    a_port_fires_again_only_after_the_pass_unmasks_it_and_a_held_port_stays_quiet,
    timers_run_a_source_and_can_release_a_held_port,
    a_source_is_woken_by_its_descriptor,
    a_removed_source_s_descriptor_is_let_go_of,
    hundreds_of_descriptors_ready_at_once_all_reach_their_sources,
    a_removed_source_is_handed_back_and_its_port_no_longer_reaches_it,
    a_new_source_runs_once_at_once_so_an_earlier_event_is_not_lost,
    a_thousand_sources_share_one_loop_and_one_thread,
    removing_after_the_loop_stopped_does_not_wait_forever,
    a_probe_says_whether_the_loop_runs_sources,
    kicks_from_the_loop_thread_need_no_doorbell_and_starve_nothing,
    a_polled_source_runs_when_it_has_work_with_no_event_at_all,
    a_polling_window_that_passes_without_work_ends_with_one_last_run,
    ports_kicks_and_removals_are_served_while_a_source_is_polled,
);
