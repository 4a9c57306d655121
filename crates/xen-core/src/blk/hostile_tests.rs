//! A deliberately hostile frontend against a block queue, for the cases
//! `tests.rs` does not cover: a request or its indirect page rewritten in
//! shared memory while it is served, a grant given to another domain, a direct request with no
//! segment or more than its slot holds, a frontend whose domain is
//! destroyed with a request at storage. Each fails that request (one
//! event) or that device, and another device is served all along.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustix::event::{eventfd, EventfdFlags};

use super::frontend::{BlkFrontError, BlkOp, FrontOptions};
use super::storage::{IoCompletion, IoRequest, MemDisk, Storage};
use super::tests::{attach, opts, pattern, world, Device, GUEST, OTHER, SECTORS};
use super::*;
use crate::platform::{DomId, GrantTable};
use crate::ring::blkif::{
    BlkifProtocol, BlkifX86_64, DirectRequest, Request, Segment, BLKIF_OP_READ, BLKIF_OP_WRITE,
};

/// Far beyond any step here: only a guard against a hang.
const PATIENCE: Duration = Duration::from_secs(30);

/// Storage in front of a MemDisk that holds every request until the test
/// opens it: a backend caught with a request at storage.
struct Gate {
    disk: MemDisk,
    shared: Arc<Mutex<GateState>>,
    done: Vec<IoCompletion>,
    wake: Arc<OwnedFd>,
}

#[derive(Default)]
struct GateState {
    held: Vec<IoRequest>,
    open: bool,
}

/// The test's side of a [`Gate`].
#[derive(Clone)]
struct GateHandle {
    shared: Arc<Mutex<GateState>>,
    wake: Arc<OwnedFd>,
}

impl Gate {
    fn new(disk: MemDisk) -> (Gate, GateHandle) {
        let wake = Arc::new(eventfd(0, EventfdFlags::NONBLOCK | EventfdFlags::CLOEXEC).unwrap());
        let shared = Arc::<Mutex<GateState>>::default();
        let handle = GateHandle {
            shared: shared.clone(),
            wake: wake.clone(),
        };
        let gate = Gate {
            disk,
            shared,
            done: Vec::new(),
            wake,
        };
        (gate, handle)
    }

    /// Serves what is held once the gate is open.
    fn pass(&mut self) {
        let held = {
            let mut s = self.shared.lock().unwrap();
            if !s.open {
                return;
            }
            std::mem::take(&mut s.held)
        };
        for request in held {
            self.disk.submit(request);
        }
        self.disk.completions(&mut self.done);
    }
}

impl Storage for Gate {
    fn geometry(&self) -> storage::Geometry {
        self.disk.geometry()
    }
    fn submit(&mut self, request: IoRequest) {
        self.shared.lock().unwrap().held.push(request);
        self.pass();
        rustix::io::write(&*self.wake, &1u64.to_ne_bytes()).unwrap();
    }
    fn completions(&mut self, out: &mut Vec<IoCompletion>) {
        self.pass();
        out.append(&mut self.done);
    }
    fn woken(&mut self) {
        let mut b = [0u8; 8];
        let _ = rustix::io::read(&*self.wake, &mut b);
    }
    fn wake_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.wake.as_fd())
    }
    /// As the MemDisk: with persistent grants, the guest's pages themselves
    /// are read or written when the gate opens.
    fn accepts_guest_pages(&self) -> bool {
        self.disk.accepts_guest_pages()
    }
}

impl GateHandle {
    /// Waits until `n` requests are held: the queue took them off the ring.
    fn wait_held(&self, n: usize) {
        let deadline = Instant::now() + PATIENCE;
        while self.shared.lock().unwrap().held.len() < n {
            assert!(Instant::now() < deadline, "the queue never submitted");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Lets the held requests, and every later one, through.
    fn open(&self) {
        self.shared.lock().unwrap().open = true;
        rustix::io::write(&*self.wake, &1u64.to_ne_bytes()).unwrap();
    }
}

/// A device of `domid` on a [`Gate`] in front of `disk`, its frontend set
/// up with `o`, offering `indirect` segments.
fn gated(
    w: &tests::World,
    domid: DomId,
    disk: &MemDisk,
    o: FrontOptions,
    indirect: u32,
) -> (Device, GateHandle) {
    let (gate, handle) = Gate::new(disk.clone());
    let d = attach(w, domid, o, Box::new(gate), indirect);
    (d, handle)
}

fn plain(w: &tests::World, domid: DomId) -> Device {
    attach(
        w,
        domid,
        opts(0, BlkifProtocol::X86_64),
        Box::new(MemDisk::new(SECTORS)),
        0,
    )
}

/// The queue's events so far.
fn events(d: &Device) -> Vec<QueueEvent> {
    d.events.lock().unwrap().clone()
}

/// A direct request in the native 64-bit layout, as raw slot bytes.
fn direct(operation: u8, nr_segments: u8, id: u64, sector: u64, seg: Segment) -> Vec<u8> {
    let r = Request::Direct(DirectRequest {
        operation,
        nr_segments,
        handle: 0,
        id,
        sector_number: sector,
        seg: [seg; 11],
    });
    r.encode::<BlkifX86_64>().as_ref().to_vec()
}

/// A write taken off the ring, then its slot rewritten (another operation,
/// sector, grant and id) while its data is at storage: the queue answers
/// the request it copied, and the rewrite has no effect at all.
#[test]
fn a_request_rewritten_while_at_storage_is_served_as_first_taken() {
    let w = world();
    let disk = MemDisk::new(SECTORS);
    let (mut d, gate) = gated(&w, GUEST, &disk, opts(0, BlkifProtocol::X86_64), 0);
    let mut other = plain(&w, OTHER);
    let id = d
        .front
        .submit(BlkOp::Write(8, pattern(4096, 7), 0))
        .unwrap();
    gate.wait_held(1);
    // Now a read of sector 0 into a grant that does not exist, id 4242.
    let bogus = Segment {
        gref: 3999,
        first_sect: 0,
        last_sect: 7,
    };
    d.front
        .rewrite_request(id, &direct(BLKIF_OP_READ, 1, 4242, 0, bogus))
        .unwrap();
    // Another device is served while this one's request is held.
    other.front.write(0, &pattern(4096, 1)).unwrap();
    gate.open();
    d.front.wait(id).unwrap();
    assert_eq!(disk.read_at(8 * 512, 4096), pattern(4096, 7));
    assert_eq!(disk.read_at(0, 4096), vec![0; 4096]);
    assert!(events(&d).is_empty(), "{:?}", events(&d));
    assert_eq!(d.queue.stats().errors, 0);
    // The device goes on.
    d.front.write(16, &pattern(512, 9)).unwrap();
    assert_eq!(d.front.read(16, 512).unwrap(), pattern(512, 9));
    assert_eq!(other.front.read(0, 4096).unwrap(), pattern(4096, 1));
}

/// An indirect write taken off the ring, then its segment list rewritten
/// in the guest's indirect page (grants that do not exist, sectors out of
/// order) while its data is at storage: the queue goes by the list it
/// copied, and the write lands whole.
#[test]
fn an_indirect_page_rewritten_while_at_storage_changes_nothing() {
    let w = world();
    let disk = MemDisk::new(SECTORS);
    // Persistent grants: the data is read from the guest's pages when
    // storage runs, after the rewrite; only the segment list was copied.
    let o = FrontOptions {
        persistent: true,
        ..opts(0, BlkifProtocol::X86_64)
    };
    let (mut d, handle) = gated(&w, GUEST, &disk, o, 256);
    let data = pattern(20 * 4096, 8);
    let id = d.front.submit(BlkOp::Write(64, data.clone(), 0)).unwrap();
    handle.wait_held(1);
    // Twenty data pages, then the indirect page: garbage over its segments.
    d.front.rewrite_page(id, 20, 0, &[0xff; 20 * 8]).unwrap();
    handle.open();
    d.front.wait(id).unwrap();
    assert_eq!(disk.read_at(64 * 512, data.len()), data);
    assert!(events(&d).is_empty(), "{:?}", events(&d));
    assert_eq!(d.queue.stats().errors, 0);
    assert_eq!(d.front.read(64, data.len()).unwrap(), data);
}

/// A grant reference the guest gave another domain, not the backend: the
/// request fails with one event, and nothing reaches the page or the disk.
#[test]
fn a_grant_given_to_another_domain_fails_that_request_only() {
    let w = world();
    let disk = MemDisk::new(SECTORS);
    disk.write_at(0, &pattern(4096, 3));
    let mut d = attach(
        &w,
        GUEST,
        opts(0, BlkifProtocol::X86_64),
        Box::new(disk.clone()),
        0,
    );
    let gnttab = w.host.gnttab(GUEST).unwrap();
    let frame = gnttab.alloc_page().unwrap();
    gnttab
        .page(frame)
        .unwrap()
        .write(0, &pattern(4096, 5))
        .unwrap();
    let foreign = gnttab.grant(OTHER, frame, false).unwrap();
    let seg = Segment {
        gref: foreign,
        first_sect: 0,
        last_sect: 7,
    };
    for (op, sector) in [(BLKIF_OP_WRITE, 0), (BLKIF_OP_READ, 0)] {
        let id = d.front.submit(BlkOp::Raw(op, sector, vec![seg])).unwrap();
        assert!(matches!(d.front.wait(id), Err(BlkFrontError::IoError(_))));
    }
    assert_eq!(events(&d).len(), 2, "{:?}", events(&d));
    assert!(events(&d)
        .iter()
        .all(|e| matches!(e, QueueEvent::Refused { .. })));
    // Neither the disk (the write) nor the page (the read) changed.
    assert_eq!(disk.read_at(0, 4096), pattern(4096, 3));
    let mut page = vec![0; 4096];
    gnttab.page(frame).unwrap().read(0, &mut page).unwrap();
    assert_eq!(page, pattern(4096, 5));
    d.front.write(8, &pattern(4096, 6)).unwrap();
    assert_eq!(d.front.read(8, 4096).unwrap(), pattern(4096, 6));
}

/// Direct reads and writes with no segment, or claiming more than the
/// eleven a slot holds, even where indirect requests are offered: each
/// fails alone, with one event, and the device goes on.
#[test]
fn direct_requests_with_no_segment_or_too_many_fail_alone() {
    let w = world();
    let mut d = attach(
        &w,
        GUEST,
        opts(0, BlkifProtocol::X86_64),
        Box::new(MemDisk::new(SECTORS)),
        256,
    );
    let seg = Segment {
        gref: 0,
        first_sect: 0,
        last_sect: 7,
    };
    let mut ids = Vec::new();
    for op in [BLKIF_OP_READ, BLKIF_OP_WRITE] {
        ids.push(d.front.submit(BlkOp::Raw(op, 0, Vec::new())).unwrap());
        for (n, id) in [(12u8, 700u64), (255, 701)] {
            let id = id + u64::from(op) * 10;
            ids.push(
                d.front
                    .push_raw_request(&direct(op, n, id, 0, seg))
                    .unwrap(),
            );
        }
    }
    for id in ids {
        assert!(
            matches!(d.front.wait(id), Err(BlkFrontError::IoError(_))),
            "{id:?}"
        );
    }
    assert_eq!(events(&d).len(), 6, "{:?}", events(&d));
    d.front.write(0, &pattern(8192, 2)).unwrap();
    assert_eq!(d.front.read(0, 8192).unwrap(), pattern(8192, 2));
}

/// The guest's domain is destroyed while its write is at storage (its
/// ports close, its pages stay mapped while the backend maps them): the
/// write finishes, its answer goes nowhere without a complaint, the
/// process goes on and another guest's device is served before, during
/// and after; the queue stops cleanly.
#[test]
fn a_frontend_destroyed_mid_request_harms_no_other_device() {
    let w = world();
    let disk = MemDisk::new(SECTORS);
    let (mut d, gate) = gated(&w, GUEST, &disk, opts(0, BlkifProtocol::X86_64), 0);
    let mut other = plain(&w, OTHER);
    let _ = d
        .front
        .submit(BlkOp::Write(8, pattern(4096, 4), 0))
        .unwrap();
    gate.wait_held(1);
    assert!(w.hv.destroy_domain(GUEST));
    other.front.write(0, &pattern(4096, 1)).unwrap();
    gate.open();
    // The queue answered into the ring it still maps; the notification to
    // a closed port goes nowhere, and there is nothing to report: the
    // device is taken down by xenbus, which sees the domain go (as blkback
    // is by its toolstack's removal).
    let deadline = Instant::now() + PATIENCE;
    while d.queue.stats().responses < 1 {
        assert!(Instant::now() < deadline, "{:?}", d.queue.stats());
        other.front.read(0, 512).unwrap();
    }
    assert!(events(&d).is_empty(), "{:?}", events(&d));
    // The write was taken before the guest went: it reached the disk.
    assert_eq!(disk.read_at(8 * 512, 4096), pattern(4096, 4));
    assert_eq!(other.front.read(0, 4096).unwrap(), pattern(4096, 1));
    d.queue.stop();
    other.front.write(8, &pattern(4096, 2)).unwrap();
    assert_eq!(other.front.read(8, 4096).unwrap(), pattern(4096, 2));
}
