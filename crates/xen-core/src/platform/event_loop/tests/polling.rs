//! Sources polled between the loop's waits (`event_loop/poll.rs`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use super::{pair, PipeSource, Setup, PATIENCE};
use crate::platform::event_loop::{Control, Source, Wake};
use crate::platform::EventChannels;

/// A source with work whenever its flag is set: it takes the work (clears
/// the flag), reports each run, and asks to be polled for `window` on its
/// first run and after each piece of work.
struct Flagged {
    work: Arc<AtomicBool>,
    window: Duration,
    runs: mpsc::Sender<Wake>,
}

impl Source for Flagged {
    fn wake(&mut self, why: Wake, cx: &mut Control<'_>) {
        let took = self.work.swap(false, Ordering::SeqCst);
        if (why.kicked || took) && !why.poll_over {
            cx.poll_for(self.window);
        }
        let _ = self.runs.send(why);
    }

    fn has_work(&self) -> bool {
        self.work.load(Ordering::SeqCst)
    }
}

fn flagged(s: &Setup, window: Duration) -> (Arc<AtomicBool>, mpsc::Receiver<Wake>, impl Drop) {
    let work = Arc::new(AtomicBool::new(false));
    let (runs, rx) = mpsc::channel();
    let source = Flagged {
        work: work.clone(),
        window,
        runs,
    };
    let handle = s.event_loop.add(None, Box::new(source), false).unwrap();
    assert!(rx.recv_timeout(PATIENCE).unwrap().kicked, "its first run");
    (work, rx, handle)
}

pub(super) fn a_polled_source_runs_when_it_has_work_with_no_event_at_all(s: Setup) {
    let (work, runs, _h) = flagged(&s, PATIENCE);
    // No port, no kick, no descriptor: only the flag in shared memory.
    for _ in 0..3 {
        work.store(true, Ordering::SeqCst);
        let why = runs.recv_timeout(PATIENCE).expect("run for its work");
        assert!(why.polled && !why.poll_over, "{why:?}");
        assert!(!work.load(Ordering::SeqCst), "the work was taken");
    }
}

pub(super) fn a_polling_window_that_passes_without_work_ends_with_one_last_run(s: Setup) {
    let (work, runs, _h) = flagged(&s, Duration::from_millis(1));
    let why = runs.recv_timeout(PATIENCE).expect("the window ends");
    assert!(why.poll_over && !why.polled, "{why:?}");
    // Polled no more: work now waits for an event (here, a kick).
    work.store(true, Ordering::SeqCst);
    assert!(
        runs.recv_timeout(Duration::from_millis(50)).is_err(),
        "not polled after its window"
    );
}

pub(super) fn ports_kicks_and_removals_are_served_while_a_source_is_polled(s: Setup) {
    // One source polled for as long as the test lasts, never with work.
    let (_work, polled_runs, polled) = flagged(&s, PATIENCE);
    let (fport, bport) = pair(&s);
    let (tx, rx) = mpsc::channel();
    let other = move |why: Wake, _cx: &mut Control<'_>| tx.send(why).unwrap();
    let h = s
        .event_loop
        .add(Some(bport), Box::new(other), false)
        .unwrap();
    assert!(rx.recv_timeout(PATIENCE).unwrap().kicked, "a command");
    s.front.notify(fport).unwrap();
    assert!(rx.recv_timeout(PATIENCE).unwrap().port, "a port");
    h.kick();
    assert!(rx.recv_timeout(PATIENCE).unwrap().kicked, "a kick");
    assert!(h.remove().is_some(), "a removal answered");
    // A descriptor polled from now on (under io_uring, a poll queued for
    // the kernel while the loop spins) wakes its source.
    let (read, write) = rustix::pipe::pipe().unwrap();
    let (pipe_tx, pipe_rx) = mpsc::channel();
    let pipe = PipeSource { read, tx: pipe_tx };
    let _p = s.event_loop.add(None, Box::new(pipe), true).unwrap();
    for byte in [b"x", b"y"] {
        rustix::io::write(&write, byte).unwrap();
        assert_eq!(
            pipe_rx.recv_timeout(PATIENCE).unwrap(),
            byte,
            "a descriptor"
        );
    }
    assert!(
        polled_runs.try_recv().is_err(),
        "the polled source had no work"
    );
    // The polled source itself can be removed while it is polled.
    drop(polled);
    assert!(s.event_loop.responds(PATIENCE));
}
