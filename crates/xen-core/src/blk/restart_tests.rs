//! A block queue that dies with requests taken and not answered, and a
//! new one that takes its ring over from the journal: the guest sees each
//! request answered once, with the right data, and no reconnect.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::event::{eventfd, EventfdFlags};

use super::frontend::{BlkOp, FrontOptions, SimBlkFront};
use super::journal::QueueJournal;
use super::storage::{IoCompletion, IoRequest, MemDisk, Storage};
use super::tests::{offer, opts, pattern, world, World, BACK, GUEST, SECTORS};
use super::*;
use crate::ring::blkif::{BlkifAbi, BlkifProtocol, BlkifX86_32, BlkifX86_64};
use crate::ring::shared::RingProtocol;

/// Far beyond any step here: only a guard against a hang.
const PATIENCE: Duration = Duration::from_secs(30);

/// Storage that does the requests `pass` picks (by their number, on a
/// MemDisk) and holds the others for ever: a backend caught with requests
/// at storage, some finished after a held one.
struct Held {
    disk: MemDisk,
    pass: fn(usize) -> bool,
    submitted: usize,
    held: Vec<IoRequest>,
    done: Vec<IoCompletion>,
    wake: OwnedFd,
}

impl Held {
    fn new(disk: MemDisk, pass: fn(usize) -> bool) -> Held {
        Held {
            disk,
            pass,
            submitted: 0,
            held: Vec::new(),
            done: Vec::new(),
            wake: eventfd(0, EventfdFlags::NONBLOCK | EventfdFlags::CLOEXEC).unwrap(),
        }
    }
}

impl Storage for Held {
    fn geometry(&self) -> storage::Geometry {
        self.disk.geometry()
    }
    fn submit(&mut self, request: IoRequest) {
        self.submitted += 1;
        if !(self.pass)(self.submitted - 1) {
            self.held.push(request);
            return;
        }
        self.disk.submit(request);
        self.disk.completions(&mut self.done);
        rustix::io::write(&self.wake, &1u64.to_ne_bytes()).unwrap();
    }
    fn completions(&mut self, out: &mut Vec<IoCompletion>) {
        out.append(&mut self.done);
    }
    fn woken(&mut self) {
        let mut b = [0u8; 8];
        let _ = rustix::io::read(&self.wake, &mut b);
    }
    fn wake_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.wake.as_fd())
    }
}

fn ring_of(front: &SimBlkFront, persistent: bool) -> RingConfig {
    RingConfig {
        frontend: GUEST,
        ring_refs: front.ring_refs().to_vec(),
        remote_port: front.port(),
        protocol: front.protocol(),
        persistent,
    }
}

fn refused(r: Result<BlkQueue, BlkError>) -> BlkError {
    match r {
        Ok(_) => panic!("the queue started"),
        Err(e) => e,
    }
}

fn start(
    w: &World,
    ring: &RingConfig,
    storage: Box<dyn Storage>,
    restart: &Restart,
) -> Result<BlkQueue, BlkError> {
    let offer = offer(&*storage, 0);
    BlkQueue::start_with(&w.platform, ring, offer, storage, Box::new(|_| {}), restart)
}

/// Waits until the queue's journal says `n` requests were taken since
/// `from`.
fn wait_taken(path: &Path, ring: &RingConfig, slots: u32, slot_size: usize, from: u32, n: u32) {
    let journal = QueueJournal::open(path, ring, slots, slot_size).unwrap();
    let deadline = Instant::now() + PATIENCE;
    while journal.taken().wrapping_sub(from) < n {
        assert!(Instant::now() < deadline, "{journal:?}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// What a crash between writing responses and publishing them leaves:
/// garbage in the slots of the requests from `rsp_prod` to `taken`.
fn scribble<P: BlkifAbi>(w: &World, ring: &RingConfig, taken: u32) {
    let map = w
        .platform
        .gntdev()
        .map(GUEST, &ring.ring_refs, true)
        .unwrap();
    let mem = map.mem();
    let rsp_prod = mem.load_u32(8).unwrap();
    let slots = crate::ring::shared::ring_size(mem.len(), P::SLOT_SIZE);
    for seq in rsp_prod..taken {
        let at = 64 + (seq % slots) as usize * P::SLOT_SIZE;
        mem.fill(at, P::SLOT_SIZE, 0xee).unwrap();
    }
}

fn take_over<P: BlkifAbi>(protocol: BlkifProtocol, persistent: bool) {
    let w = world();
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("vbd-5-51712-q0");
    let disk = MemDisk::new(SECTORS);
    let mut options: FrontOptions = opts(1, protocol);
    options.persistent = persistent;
    let evtchn = Arc::new(w.host.evtchn(GUEST).unwrap());
    let mut front = SimBlkFront::new(w.host.gnttab(GUEST).unwrap(), evtchn, BACK, options).unwrap();
    let ring = ring_of(&front, persistent);
    let slots = crate::ring::shared::ring_size(
        front.ring_refs().len() * 4096,
        <P as RingProtocol>::SLOT_SIZE,
    );
    let slot_size = <<P as RingProtocol>::Request as crate::ring::shared::SlotBytes>::LEN;

    // Ten writes answered, then thirty taken when the backend dies: every
    // third done at storage but not answered (an earlier one is not done),
    // the rest held.
    let first = start(
        &w,
        &ring,
        Box::new(Held::new(disk.clone(), |i| i < 10 || i % 3 == 0)),
        &Restart {
            journal: Some(journal.clone()),
            resume: false,
        },
    )
    .unwrap();
    let writes: Vec<(u64, Vec<u8>)> = (0..40u64)
        .map(|i| (i * 16, pattern(4096 * (1 + i as usize % 2), i as u8)))
        .collect();
    let ids = front
        .submit_many(
            writes
                .iter()
                .map(|(s, d)| BlkOp::Write(*s, d.clone(), 0))
                .collect::<Vec<_>>(),
        )
        .unwrap();
    for id in &ids[..10] {
        front.wait(*id).unwrap();
    }
    wait_taken(&journal, &ring, slots, slot_size, 0, 40);
    first.hand_over();
    assert!(journal.exists(), "a crash leaves the journal");
    scribble::<P>(&w, &ring, 40);

    // The new backend takes the ring over: no reconnect, the same port
    // and ring pages, and the thirty requests served from the journal.
    let second = start(
        &w,
        &ring,
        Box::new(disk.clone()),
        &Restart {
            journal: Some(journal.clone()),
            resume: true,
        },
    )
    .unwrap();
    for id in &ids[10..] {
        front.wait(*id).unwrap();
    }
    for (sector, data) in &writes {
        assert_eq!(&front.read(*sector, data.len()).unwrap(), data);
    }
    let s = second.stats();
    assert_eq!((s.writes, s.reads, s.errors), (30, 40, 0));
    // Each answered once: a second answer to any would have broken the
    // frontend (a response to an id not in flight).
    assert_eq!(front.stats().responses, front.stats().requests);
    second.stop();
    assert!(!journal.exists(), "stopped in order: nothing to take over");
}

#[test]
fn a_queue_that_dies_is_taken_over_from_its_journal_each_request_answered_once() {
    take_over::<BlkifX86_64>(BlkifProtocol::X86_64, false);
    take_over::<BlkifX86_32>(BlkifProtocol::X86_32, true);
}

#[test]
fn a_ring_is_not_taken_over_with_a_journal_that_does_not_fit_it() {
    let w = world();
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("q0");
    let evtchn = Arc::new(w.host.evtchn(GUEST).unwrap());
    let front = SimBlkFront::new(
        w.host.gnttab(GUEST).unwrap(),
        evtchn,
        BACK,
        opts(0, BlkifProtocol::X86_64),
    )
    .unwrap();
    let ring = ring_of(&front, false);
    // A ring with nothing outstanding, taken over: the frontend is still
    // notified once (it may sleep waiting for responses a dead backend
    // published without notifying).
    let journal_of_idle = dir.path().join("idle");
    let idle = start(
        &w,
        &ring,
        Box::new(MemDisk::new(SECTORS)),
        &Restart {
            journal: Some(journal_of_idle.clone()),
            resume: false,
        },
    )
    .unwrap();
    idle.hand_over();
    let taken = start(
        &w,
        &ring,
        Box::new(MemDisk::new(SECTORS)),
        &Restart {
            journal: Some(journal_of_idle),
            resume: true,
        },
    )
    .unwrap();
    let deadline = Instant::now() + PATIENCE;
    while taken.stats().notifications == 0 {
        assert!(Instant::now() < deadline, "no notification");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(taken.stats().notifications, 1);
    taken.stop();
    let restart = |resume| Restart {
        journal: Some(journal.clone()),
        resume,
    };
    // No journal at all.
    let err = refused(start(
        &w,
        &ring,
        Box::new(MemDisk::new(SECTORS)),
        &restart(true),
    ));
    assert!(matches!(err, BlkError::Journal(_)), "{err}");
    let err = refused(start(
        &w,
        &ring,
        Box::new(MemDisk::new(SECTORS)),
        &Restart {
            journal: None,
            resume: true,
        },
    ));
    assert!(err.to_string().contains("needs the journal"), "{err}");
    // Another ring's journal.
    let mut other = ring.clone();
    other.remote_port += 1;
    QueueJournal::create(&journal, &other, 32, 112, 0).unwrap();
    let err = refused(start(
        &w,
        &ring,
        Box::new(MemDisk::new(SECTORS)),
        &restart(true),
    ));
    assert!(err.to_string().contains("another ring"), "{err}");
    // A journal claiming more requests taken than the ring holds.
    let slots = crate::ring::shared::ring_size(4096, <BlkifX86_64 as RingProtocol>::SLOT_SIZE);
    QueueJournal::create(&journal, &ring, slots, 112, 0)
        .unwrap()
        .set_taken(3);
    let err = refused(start(
        &w,
        &ring,
        Box::new(MemDisk::new(SECTORS)),
        &restart(true),
    ));
    assert!(err.to_string().contains("the ring only 0"), "{err}");
    // The port and ring were let go each time: a plain start works.
    let q = start(&w, &ring, Box::new(MemDisk::new(SECTORS)), &restart(false)).unwrap();
    q.stop();
}
