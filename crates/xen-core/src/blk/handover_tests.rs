//! How requests reach storage and answers reach the guest: in batches,
//! in the guest's own pages where storage takes them, and answered as they
//! finish within a long pass.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::frontend::BlkOp;
use super::storage::{self, MemDisk, Storage};
use super::tests::{attach, opts, pattern, world, GUEST, OTHER, SECTORS};
use crate::ring::blkif::BlkifProtocol;

/// Storage that counts how requests reach it, around a [`MemDisk`].
struct Counting {
    disk: MemDisk,
    /// Requests handed over one by one with `submit`.
    singles: Arc<Mutex<usize>>,
    /// The size of each `submit_many` batch.
    batches: Arc<Mutex<Vec<usize>>>,
    /// What `accepts_guest_pages` says.
    accepts: bool,
    /// Segments seen in guest pages, and in the queue's own.
    kinds: Arc<Mutex<(usize, usize)>>,
}

impl Counting {
    fn new(accepts: bool) -> Counting {
        Counting {
            disk: MemDisk::new(SECTORS),
            singles: Arc::default(),
            batches: Arc::default(),
            accepts,
            kinds: Arc::default(),
        }
    }

    fn saw(&self, request: &storage::IoRequest) {
        let guest = request
            .segments
            .iter()
            .filter(|s| s.in_guest_page())
            .count();
        let mut kinds = self.kinds.lock().unwrap();
        kinds.0 += guest;
        kinds.1 += request.segments.len() - guest;
    }
}

impl Storage for Counting {
    fn geometry(&self) -> storage::Geometry {
        self.disk.geometry()
    }

    fn submit(&mut self, request: storage::IoRequest) {
        *self.singles.lock().unwrap() += 1;
        self.saw(&request);
        self.disk.submit(request);
    }

    fn submit_many(&mut self, requests: &mut Vec<storage::IoRequest>) {
        self.batches.lock().unwrap().push(requests.len());
        for request in requests.drain(..) {
            self.saw(&request);
            self.disk.submit(request);
        }
    }

    fn accepts_guest_pages(&self) -> bool {
        self.accepts
    }

    fn completions(&mut self, out: &mut Vec<storage::IoCompletion>) {
        self.disk.completions(out);
    }

    fn wake_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.disk.wake_fd()
    }
}

#[test]
fn requests_taken_together_reach_storage_together() {
    let w = world();
    let storage = Counting::new(false);
    let (singles, batches) = (storage.singles.clone(), storage.batches.clone());
    let mut o = opts(0, BlkifProtocol::native());
    o.queue_depth = Some(32);
    let mut d = attach(&w, GUEST, o, Box::new(storage), 0);
    // 32 writes pushed at once (one producer update, one notification): the
    // backend finds them together on the ring.
    let ops = (0..32u64).map(|i| BlkOp::Write(i * 8, pattern(4096, i as u8), 0));
    for id in d.front.submit_many(ops).unwrap() {
        d.front.wait(id).unwrap();
    }
    let writes = batches.lock().unwrap().clone();
    for i in [0u64, 17, 31] {
        assert_eq!(d.front.read(i * 8, 4096).unwrap(), pattern(4096, i as u8));
    }
    assert_eq!(
        *singles.lock().unwrap(),
        0,
        "the data path hands over batches only"
    );
    assert_eq!(writes.iter().sum::<usize>(), 32, "{writes:?}");
    assert!(writes.len() < 32, "32 writes in fewer batches: {writes:?}");
    assert_eq!(d.queue.stats().errors, 0);
}

/// Storage around a [`MemDisk`] that notes, as each request reaches it,
/// how many responses the frontend can see on the ring (`rsp_prod`).
struct Watching {
    disk: MemDisk,
    ring: Arc<std::sync::OnceLock<crate::platform::GrantMapping>>,
    seen: Arc<Mutex<Vec<u32>>>,
}

impl Storage for Watching {
    fn geometry(&self) -> storage::Geometry {
        self.disk.geometry()
    }

    fn submit(&mut self, request: storage::IoRequest) {
        let mut rsp_prod = [0u8; 4];
        // The shared ring's header: req_prod, req_event, rsp_prod, ...
        let ring = self.ring.get().expect("the ring mapped before any I/O");
        ring.mem().read(8, &mut rsp_prod).unwrap();
        self.seen.lock().unwrap().push(u32::from_le_bytes(rsp_prod));
        self.disk.submit(request);
    }

    fn completions(&mut self, out: &mut Vec<storage::IoCompletion>) {
        self.disk.completions(out);
    }

    fn wake_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.disk.wake_fd()
    }
}

#[test]
fn large_requests_found_together_are_answered_one_by_one() {
    let w = world();
    let ring = Arc::new(std::sync::OnceLock::new());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let storage = Watching {
        disk: MemDisk::new(SECTORS),
        ring: ring.clone(),
        seen: seen.clone(),
    };
    let mut o = opts(0, BlkifProtocol::native());
    o.queue_depth = Some(8);
    let mut d = attach(&w, GUEST, o, Box::new(storage), 32);
    let gntdev = w.platform.gntdev();
    assert!(ring
        .set(gntdev.map(GUEST, d.front.ring_refs(), false).unwrap())
        .is_ok());
    // A 1 MiB read as blkfront sends it: 8 requests of 128 KiB (32
    // indirect segments), pushed together.
    let ops = (0..8u64).map(|i| BlkOp::Read(i * 256, 128 * 1024, 0));
    for id in d.front.submit_many(ops).unwrap() {
        assert_eq!(d.front.wait(id).unwrap().len(), 128 * 1024);
    }
    // Each reached storage with every earlier one answered to the guest,
    // which could thus take its data while the next was read.
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 8, "{seen:?}");
    for (k, &rsp_prod) in seen.iter().enumerate() {
        assert_eq!(rsp_prod.wrapping_sub(seen[0]) as usize, k, "{seen:?}");
    }
    assert_eq!(d.queue.stats().errors, 0);
}

#[test]
fn with_persistent_grants_storage_that_accepts_guest_pages_gets_them() {
    let w = world();
    // (persistent grants, storage accepts guest pages, I/O in place)
    for (persistent_grants, accepts, in_place) in [
        (true, true, true),
        (true, false, false),
        (false, true, false),
    ] {
        let storage = Counting::new(accepts);
        let (kinds, disk) = (storage.kinds.clone(), storage.disk.clone());
        let mut o = opts(0, BlkifProtocol::native());
        o.persistent = persistent_grants;
        let mut d = attach(&w, GUEST, o, Box::new(storage), 32);
        // Direct and indirect requests, at odd sectors within pages.
        let data = pattern(20 * 4096 + 1536, 5);
        d.front.write(3, &data).unwrap();
        assert_eq!(disk.read_at(3 * 512, data.len()), data);
        assert_eq!(d.front.read(3, data.len()).unwrap(), data);
        let (guest, own) = *kinds.lock().unwrap();
        let case = format!("persistent {persistent_grants}, accepts {accepts}");
        assert!(guest + own > 0, "{case}");
        if in_place {
            assert_eq!(own, 0, "{case}: every page had room in the cache");
        } else {
            assert_eq!(guest, 0, "{case}: guest pages handed to storage");
        }
        assert_eq!(d.queue.stats().errors, 0, "{case}");
        d.queue.stop();
        d.front.close().unwrap();
    }
}

#[test]
fn a_polling_queue_serves_requests_the_guest_sent_no_event_for_then_arms_its_ring() {
    const REQ_PROD: usize = 0;
    const REQ_EVENT: usize = 4;
    let w = world();
    let disk = MemDisk::new(SECTORS);
    let mut d = attach(
        &w,
        GUEST,
        opts(0, BlkifProtocol::native()),
        Box::new(disk.clone()),
        0,
    );
    let ring = w
        .platform
        .gntdev()
        .map(GUEST, d.front.ring_refs(), false)
        .unwrap();
    let header = |at| ring.mem().load_u32(at).unwrap();
    // Polled for far longer than the test: the first request is notified
    // (the ring was armed), then the queue polls and asks for no event.
    d.queue.set_poll(Duration::from_secs(600));
    d.front.write(0, &pattern(4096, 0)).unwrap();
    let notified = d.front.stats().notifications;
    for i in 1..=20u8 {
        d.front.write(u64::from(i) * 8, &pattern(4096, i)).unwrap();
    }
    assert_eq!(
        d.front.stats().notifications,
        notified,
        "no event asked for"
    );
    assert_eq!(disk.read_at(20 * 8 * 512, 4096), pattern(4096, 20));
    assert!(
        header(REQ_EVENT) <= header(REQ_PROD).wrapping_sub(20),
        "the ring left unarmed"
    );
    // A short window: after it, the queue arms the ring again (asks for an
    // event on the next request, as a queue that does not poll does).
    d.queue.set_poll(Duration::from_millis(1));
    d.front.write(21 * 8, &pattern(4096, 21)).unwrap();
    let end = Instant::now() + Duration::from_secs(30);
    while header(REQ_EVENT) != header(REQ_PROD).wrapping_add(1) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(header(REQ_EVENT), header(REQ_PROD).wrapping_add(1), "armed");
    d.front.write(22 * 8, &pattern(4096, 22)).unwrap();
    assert_eq!(
        d.front.stats().notifications,
        notified + 1,
        "the next request notified"
    );
    assert_eq!(
        d.front.read(21 * 8, 8192).unwrap(),
        [pattern(4096, 21), pattern(4096, 22)].concat()
    );
    assert_eq!(d.queue.stats().errors, 0);
}

#[test]
fn a_bogus_producer_index_seen_while_polling_fails_that_device_only() {
    let w = world();
    let protocol = BlkifProtocol::native();
    let mut bad = attach(
        &w,
        GUEST,
        opts(0, protocol),
        Box::new(MemDisk::new(SECTORS)),
        0,
    );
    let mut good = attach(
        &w,
        OTHER,
        opts(0, protocol),
        Box::new(MemDisk::new(SECTORS)),
        0,
    );
    for d in [&bad, &good] {
        d.queue.set_poll(Duration::from_secs(600));
    }
    bad.front.write(0, &pattern(4096, 1)).unwrap();
    good.front.write(0, &pattern(4096, 2)).unwrap();
    // No event: the polled queue finds the index itself.
    bad.front.set_req_prod(1000).unwrap();
    let end = Instant::now() + Duration::from_secs(60);
    let mut sector = 8;
    while !bad.failed() && Instant::now() < end {
        good.front.write(sector % 1024, &pattern(4096, 3)).unwrap();
        sector += 8;
    }
    assert!(bad.failed(), "the bad device failed");
    // The good one is still served, polled.
    let notified = good.front.stats().notifications;
    assert_eq!(good.front.read(8, 4096).unwrap(), pattern(4096, 3));
    assert_eq!(good.front.stats().notifications, notified);
    assert_eq!(good.queue.stats().errors, 0);
}
