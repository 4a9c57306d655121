//! The block queue against the simulated blkfront on a simulated host: data
//! round trips through both layouts, direct and indirect, and what a
//! hostile frontend gets. Nothing sleeps: the frontend blocks on its port.

use std::sync::{Arc, Mutex};

use super::frontend::{BlkFrontError, BlkOp, FrontOptions, SimBlkFront};
use super::request::Offer;
use super::storage::{FileDisk, FileOptions, IoSegment, MemDisk, Storage};
use super::*;
use crate::platform::sim::{SimHost, SimHypervisor};
use crate::platform::{DomId, GrantTable, Platform};
use crate::ring::blkif::{BlkifProtocol, Segment, BLKIF_OP_READ, BLKIF_OP_WRITE};

pub(super) const BACK: DomId = 0;
pub(super) const GUEST: DomId = 5;
pub(super) const OTHER: DomId = 6;
pub(super) const SECTORS: u64 = 8192;

pub(super) struct World {
    pub(super) hv: SimHypervisor,
    pub(super) host: SimHost,
    pub(super) platform: Arc<Platform>,
}

pub(super) fn world() -> World {
    let (hv, host) = crate::testutil::sim_host(&[BACK, GUEST, OTHER]);
    let platform = Arc::new(Platform::simulated(&host, BACK).unwrap());
    World { hv, host, platform }
}

pub(super) fn offer(storage: &dyn Storage, indirect: u32) -> Offer {
    Offer {
        geometry: storage.geometry(),
        barrier: true,
        max_indirect_segments: indirect,
    }
}

pub(super) type Events = Arc<Mutex<Vec<QueueEvent>>>;

pub(super) struct Device {
    pub(super) front: SimBlkFront,
    pub(super) queue: BlkQueue,
    pub(super) events: Events,
}

impl Device {
    /// Whether the queue reported that it failed.
    pub(super) fn failed(&self) -> bool {
        self.events
            .lock()
            .unwrap()
            .iter()
            .any(|e| matches!(e, QueueEvent::Failed(_)))
    }
}

pub(super) fn attach(
    w: &World,
    domid: DomId,
    opts: FrontOptions,
    storage: Box<dyn Storage>,
    indirect: u32,
) -> Device {
    let evtchn = Arc::new(w.host.evtchn(domid).unwrap());
    let mut opts = opts;
    opts.max_indirect_segments = (indirect > 0).then_some(indirect);
    let front_persistent = opts.persistent;
    let front = SimBlkFront::new(w.host.gnttab(domid).unwrap(), evtchn, BACK, opts).unwrap();
    let ring = RingConfig {
        frontend: domid,
        ring_refs: front.ring_refs().to_vec(),
        remote_port: front.port(),
        protocol: front.protocol(),
        persistent: front_persistent,
    };
    let events: Events = Arc::default();
    let sink = events.clone();
    let offer = offer(&*storage, indirect);
    let queue = BlkQueue::start(
        &w.platform,
        &ring,
        offer,
        storage,
        Box::new(move |e| sink.lock().unwrap().push(e)),
    )
    .unwrap();
    Device {
        front,
        queue,
        events,
    }
}

pub(super) fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i * 7 + i / 4096) % 251) as u8 ^ seed)
        .collect()
}

pub(super) fn opts(order: u32, protocol: BlkifProtocol) -> FrontOptions {
    FrontOptions {
        ring_page_order: order,
        protocol,
        ..FrontOptions::default()
    }
}

#[test]
fn data_round_trips_through_both_layouts_direct_and_indirect() {
    let w = world();
    for (order, protocol, indirect) in [
        (0, BlkifProtocol::X86_64, 0),
        (2, BlkifProtocol::X86_32, 0),
        (0, BlkifProtocol::X86_64, 256),
        (4, BlkifProtocol::X86_32, 32),
    ] {
        let disk = MemDisk::new(SECTORS);
        let mut d = attach(
            &w,
            GUEST,
            opts(order, protocol),
            Box::new(disk.clone()),
            indirect,
        );
        // 40 pages: 4 direct requests, or 1-2 indirect ones.
        let data = pattern(40 * 4096, order as u8);
        d.front.write(16, &data).unwrap();
        assert_eq!(
            disk.read_at(16 * 512, data.len()),
            data,
            "{protocol:?} order {order}"
        );
        assert_eq!(d.front.read(16, data.len()).unwrap(), data);
        // Within pages: a sector and a half page at odd places.
        d.front.write(3, &pattern(512, 9)).unwrap();
        assert_eq!(
            d.front.read(2, 1536).unwrap()[512..1024],
            pattern(512, 9)[..]
        );
        let s = d.queue.stats();
        assert_eq!(s.errors, 0);
        assert_eq!(s.requests, s.responses);
        assert!(d.events.lock().unwrap().is_empty());
        d.queue.stop();
        d.front.close().unwrap();
    }
}

#[test]
fn a_deep_queue_of_mixed_requests_all_complete_on_a_file() {
    let w = world();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.img");
    std::fs::write(&path, vec![0u8; (SECTORS * 512) as usize]).unwrap();
    let file = FileDisk::open(&path, FileOptions::default()).unwrap();
    let mut o = opts(2, BlkifProtocol::X86_64);
    o.queue_depth = Some(32);
    let mut d = attach(&w, GUEST, o, Box::new(file), 64);
    let ops: Vec<BlkOp> = (0..200u64)
        .map(|i| {
            BlkOp::Write(
                (i * 37) % (SECTORS - 64),
                pattern(4096 * (1 + i as usize % 20), i as u8),
                0,
            )
        })
        .collect();
    let ids = d.front.submit_many(ops).unwrap();
    for id in ids {
        d.front.wait(id).unwrap();
    }
    d.front.flush().unwrap();
    // The last write to each place wins; read one back and compare with
    // the file itself.
    let last = 199u64;
    let sector = (last * 37) % (SECTORS - 64);
    let want = pattern(4096 * (1 + last as usize % 20), last as u8);
    assert_eq!(d.front.read(sector, want.len()).unwrap(), want);
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(&bytes[(sector * 512) as usize..][..want.len()], &want[..]);
    let s = d.queue.stats();
    assert_eq!(
        (s.errors, s.requests, s.responses),
        (0, s.responses, s.requests)
    );
    assert!(s.flushes >= 1);
}

#[test]
fn requests_the_disk_cannot_serve_fail_alone_and_the_device_goes_on() {
    let w = world();
    let disk = MemDisk::new(SECTORS);
    let mut d = attach(&w, GUEST, opts(0, BlkifProtocol::X86_64), Box::new(disk), 0);
    // Past the end.
    assert!(matches!(
        d.front.read(SECTORS - 1, 1024),
        Err(BlkFrontError::IoError(_))
    ));
    // An unknown operation.
    let seg = Segment {
        gref: 0,
        first_sect: 0,
        last_sect: 0,
    };
    let id = d.front.submit(BlkOp::Raw(99, 0, vec![seg])).unwrap();
    assert!(matches!(
        d.front.wait(id),
        Err(BlkFrontError::NotSupported(_))
    ));
    // first_sect > last_sect, and a sector 8 of a page.
    for (first, last) in [(5, 4), (0, 8)] {
        let bad = Segment {
            gref: 0,
            first_sect: first,
            last_sect: last,
        };
        let id = d
            .front
            .submit(BlkOp::Raw(BLKIF_OP_READ, 0, vec![bad]))
            .unwrap();
        assert!(matches!(d.front.wait(id), Err(BlkFrontError::IoError(_))));
    }
    // A grant that is not the guest's to give (never granted).
    let bogus = Segment {
        gref: 4000,
        first_sect: 0,
        last_sect: 7,
    };
    let id = d
        .front
        .submit(BlkOp::Raw(BLKIF_OP_WRITE, 0, vec![bogus]))
        .unwrap();
    assert!(matches!(d.front.wait(id), Err(BlkFrontError::IoError(_))));
    // Indirect was not offered: EOPNOTSUPP.
    let many = vec![
        Segment {
            gref: 0,
            first_sect: 0,
            last_sect: 7
        };
        12
    ];
    let id = d.front.submit(BlkOp::Raw(BLKIF_OP_READ, 0, many)).unwrap();
    assert!(matches!(
        d.front.wait(id),
        Err(BlkFrontError::NotSupported(_))
    ));
    // Each got one line, and the device still works.
    let refusals = d.events.lock().unwrap().len();
    assert_eq!(refusals, 6, "{:?}", d.events.lock().unwrap());
    d.front.write(0, &pattern(4096, 1)).unwrap();
    assert_eq!(d.front.read(0, 4096).unwrap(), pattern(4096, 1));
    assert_eq!(d.queue.stats().errors, 6);
}

#[test]
fn a_bogus_producer_index_fails_that_device_only() {
    let w = world();
    let mut bad = attach(
        &w,
        GUEST,
        opts(0, BlkifProtocol::X86_64),
        Box::new(MemDisk::new(SECTORS)),
        0,
    );
    let mut good = attach(
        &w,
        OTHER,
        opts(0, BlkifProtocol::X86_64),
        Box::new(MemDisk::new(SECTORS)),
        0,
    );
    bad.front.set_req_prod(1000).unwrap();
    bad.front.notify().unwrap();
    // The good device is served meanwhile, and after.
    good.front.write(0, &pattern(8192, 3)).unwrap();
    // The event loop ran the bad device's pass before this one finished
    // (one loop, passes in order), or will: wait for its report.
    while !bad.failed() {
        good.front.read(0, 512).unwrap();
    }
    assert_eq!(good.front.read(0, 8192).unwrap(), pattern(8192, 3));
    assert_eq!(bad.queue.stats().responses, 0);
}

#[test]
fn a_write_from_a_frontend_that_vanished_never_reaches_the_disk() {
    let w = world();
    let disk = MemDisk::new(SECTORS);
    let mut d = attach(
        &w,
        GUEST,
        opts(0, BlkifProtocol::X86_64),
        Box::new(disk.clone()),
        0,
    );
    d.front.write(0, &pattern(4096, 5)).unwrap();
    d.front.set_quiet(true);
    let _ = d
        .front
        .submit(BlkOp::Write(8, pattern(4096, 6), 0))
        .unwrap();
    // Its grants are gone before the backend looks.
    d.front.abandon();
    d.front.notify().ok();
    d.queue.stop();
    // The write of vanished pages never reached the disk.
    assert_eq!(disk.read_at(8 * 512, 4096), vec![0; 4096]);
    assert_eq!(disk.read_at(0, 4096), pattern(4096, 5));
}

#[test]
fn garbage_in_an_indirect_page_fails_that_request_only() {
    let w = world();
    let disk = MemDisk::new(SECTORS);
    let mut d = attach(
        &w,
        GUEST,
        opts(0, BlkifProtocol::X86_64),
        Box::new(disk),
        256,
    );
    // Twenty segments in an indirect page, one of them nonsense.
    let mut segs = vec![
        Segment {
            gref: 0,
            first_sect: 0,
            last_sect: 7
        };
        20
    ];
    segs[13] = Segment {
        gref: 0,
        first_sect: 6,
        last_sect: 2,
    };
    let id = d.front.submit(BlkOp::Raw(BLKIF_OP_READ, 0, segs)).unwrap();
    assert!(matches!(d.front.wait(id), Err(BlkFrontError::IoError(_))));
    let events = d.events.lock().unwrap().clone();
    assert!(
        matches!(&events[..], [QueueEvent::Refused { reason, .. }] if reason.contains("segment 13")),
        "{events:?}"
    );
    // The device goes on: a large transfer through indirect pages works.
    let data = pattern(30 * 4096, 4);
    d.front.write(64, &data).unwrap();
    assert_eq!(d.front.read(64, data.len()).unwrap(), data);
}

fn persistent(order: u32, protocol: BlkifProtocol) -> FrontOptions {
    FrontOptions {
        persistent: true,
        ..opts(order, protocol)
    }
}

#[test]
fn persistent_grants_are_mapped_once_and_reused_in_both_layouts() {
    let w = world();
    for (protocol, indirect) in [(BlkifProtocol::X86_64, 0), (BlkifProtocol::X86_32, 64)] {
        let disk = MemDisk::new(SECTORS);
        let mut d = attach(
            &w,
            GUEST,
            persistent(1, protocol),
            Box::new(disk.clone()),
            indirect,
        );
        let data = pattern(40 * 4096, 3);
        d.front.write(8, &data).unwrap();
        assert_eq!(disk.read_at(8 * 512, data.len()), data, "{protocol:?}");
        assert_eq!(d.front.read(8, data.len()).unwrap(), data);
        let first = d.queue.stats().persistent_maps;
        assert!(first > 0, "{protocol:?}: nothing mapped persistently");
        // The same shape of work again: the frontend reuses its pool, the
        // backend its mappings.
        for round in 0..5u8 {
            let data = pattern(40 * 4096, round);
            d.front.write(100, &data).unwrap();
            assert_eq!(d.front.read(100, data.len()).unwrap(), data);
        }
        let s = d.queue.stats();
        assert_eq!(s.persistent_maps, first, "{protocol:?}: {s:?}");
        assert_eq!((s.errors, s.requests), (0, s.responses));
        // The pages stay granted while the backend maps them; once the
        // queue stops, every grant ends.
        d.queue.stop();
        d.front.close().unwrap();
    }
}

#[test]
fn a_bad_grant_on_persistent_grants_fails_its_request_alone() {
    let w = world();
    let disk = MemDisk::new(SECTORS);
    let mut d = attach(
        &w,
        GUEST,
        persistent(0, BlkifProtocol::X86_64),
        Box::new(disk),
        0,
    );
    d.front.write(0, &pattern(4096, 1)).unwrap();
    // A grant reference nobody granted, and one of the ring (granted,
    // but mapping it for data must not corrupt anything).
    for gref in [4000, d.front.ring_refs()[0] + 1000] {
        let seg = Segment {
            gref,
            first_sect: 0,
            last_sect: 7,
        };
        let id = d
            .front
            .submit(BlkOp::Raw(BLKIF_OP_WRITE, 8, vec![seg]))
            .unwrap();
        assert!(matches!(d.front.wait(id), Err(BlkFrontError::IoError(_))));
    }
    assert_eq!(d.front.read(0, 4096).unwrap(), pattern(4096, 1));
    assert_eq!(d.queue.stats().errors, 2);
    let events = d.events.lock().unwrap();
    assert!(
        events
            .iter()
            .all(|e| matches!(e, QueueEvent::Refused { reason, .. } if reason.contains("gref"))),
        "{events:?}"
    );
}

#[test]
fn the_persistent_grant_cache_is_bounded_and_purges_only_what_went_idle() {
    use super::transfer::GrantCache;
    let w = world();
    let gnttab = w.host.gnttab(GUEST).unwrap();
    let grefs: Vec<_> = (0..14)
        .map(|_| {
            let frame = gnttab.alloc_page().unwrap();
            gnttab
                .page(frame)
                .unwrap()
                .fill(0, 4096, frame as u8)
                .unwrap();
            (frame, gnttab.grant(BACK, frame, false).unwrap())
        })
        .collect();
    let mut cache = GrantCache::new(GUEST, 10);
    let gntdev = w.platform.gntdev();
    let look = |cache: &mut GrantCache, i: usize| {
        let page = cache.page(&**gntdev, grefs[i].1).unwrap();
        page.map(|p| {
            let mut b = [0u8; 1];
            p.read(100, &mut b).unwrap();
            assert_eq!(b[0], grefs[i].0 as u8);
        })
        .is_some()
    };
    assert!((0..10).all(|i| look(&mut cache, i)));
    assert_eq!((cache.len(), cache.maps()), (10, 10));
    // Full, and every page was used since the start: no room, no
    // mapping (the caller copies by grant instead), again and again.
    for _ in 0..3 {
        assert!(!look(&mut cache, 10));
        assert!(look(&mut cache, 0));
    }
    assert_eq!((cache.len(), cache.maps()), (10, 10));
    // A working set larger than the cache, cycled through (14 pages, room
    // for 10): what is mapped stays mapped, the rest is copied.
    for _ in 0..5 {
        for i in 0..14 {
            assert_eq!(look(&mut cache, i), i < 10, "page {i}");
        }
    }
    assert_eq!((cache.len(), cache.maps()), (10, 10));
    // Use pages 0..4 only for a while (longer than 4 cache sizes of
    // lookups): at the next purge the six idle ones go, and newcomers get
    // their room.
    for _ in 0..12 {
        (0..4).for_each(|i| assert!(look(&mut cache, i)));
    }
    assert!(look(&mut cache, 10));
    assert_eq!(cache.len(), 5, "pages 0..4 and 10");
    assert!((11..14).all(|i| look(&mut cache, i)));
    assert!((0..4).all(|i| look(&mut cache, i)));
    assert_eq!(cache.maps(), 14, "the pages in use were never mapped again");
    // Unmapped grants can end; those still cached cannot.
    assert!(gnttab.end_access(grefs[5].1).is_ok());
    assert!(gnttab.end_access(grefs[0].1).is_err());
    drop(cache);
    assert!(gnttab.end_access(grefs[0].1).is_ok());
}

#[test]
fn a_page_purged_from_the_cache_stays_mapped_while_a_request_holds_it() {
    use super::transfer::GrantCache;
    let w = world();
    let gnttab = w.host.gnttab(GUEST).unwrap();
    let grefs: Vec<_> = (0..4)
        .map(|i| {
            let frame = gnttab.alloc_page().unwrap();
            let page = gnttab.page(frame).unwrap();
            page.fill(0, 4096, 0x40 + i as u8).unwrap();
            gnttab.grant(BACK, frame, false).unwrap()
        })
        .collect();
    let gntdev = w.platform.gntdev();
    let mut cache = GrantCache::new(GUEST, 2);
    let held = cache.mapping(&**gntdev, grefs[0]).unwrap().expect("room");
    let segment = IoSegment::in_guest(held, 512, 1024).expect("a writable page");
    // Page 0 goes idle while 1 is used, then 2 and 3 need room: the purge
    // drops page 0 from the cache.
    for _ in 0..20 {
        assert!(cache.page(&**gntdev, grefs[1]).unwrap().is_some());
    }
    assert!(cache.page(&**gntdev, grefs[2]).unwrap().is_some());
    assert_eq!(cache.len(), 2, "pages 1 and 2");
    // The request's page is still mapped, its grant still in use.
    let mut seen = [0u8; 1024];
    segment.read_at(0, &mut seen);
    assert!(seen.iter().all(|&b| b == 0x40));
    assert!(gnttab.end_access(grefs[0]).is_err());
    // Once the request lets go, the page is unmapped.
    drop(segment);
    assert!(gnttab.end_access(grefs[0]).is_ok());
}

#[test]
fn the_counters_and_latency_histograms_match_what_the_frontend_asked_for() {
    use crate::ring::blkif::BLKIF_OP_WRITE_BARRIER;
    let w = world();
    let disk = MemDisk::new(SECTORS);
    let mut d = attach(&w, GUEST, opts(0, BlkifProtocol::X86_64), Box::new(disk), 0);
    // 5 writes of 1..5 pages, 3 reads of 2 pages, a discard (a memory
    // disk has no cache to flush).
    for i in 0..5u64 {
        d.front
            .write(i * 64, &pattern(4096 * (i as usize + 1), i as u8))
            .unwrap();
    }
    for i in 0..3u64 {
        d.front.read(i * 64, 8192).unwrap();
    }
    d.front.discard(512, 16, false).unwrap();
    // A barrier writing one granted sector: it waits for every earlier
    // request, and counts as a flush request.
    let gnttab = w.host.gnttab(GUEST).unwrap();
    let frame = gnttab.alloc_page().unwrap();
    let gref = gnttab.grant(BACK, frame, true).unwrap();
    let seg = Segment {
        gref,
        first_sect: 0,
        last_sect: 0,
    };
    let id = d
        .front
        .submit(BlkOp::Raw(BLKIF_OP_WRITE_BARRIER, 900, vec![seg]))
        .unwrap();
    d.front.wait(id).unwrap();

    let s = d.queue.stats();
    assert_eq!((s.reads, s.writes), (3, 6));
    assert_eq!(s.sectors_read, 3 * 16);
    assert_eq!(s.sectors_written, (1 + 2 + 3 + 4 + 5) * 8 + 1);
    assert_eq!((s.flush_requests, s.discards, s.fence_waits), (1, 1, 1));
    // The barrier's flushes before and after its data.
    assert_eq!(s.flushes, 2);
    assert_eq!(s.read_latency.count(), 3);
    assert_eq!(s.write_latency.count(), 5);
    assert_eq!(s.flush_latency.count(), 1);
    assert_eq!(s.discard_latency.count(), 1);
    assert_eq!(s.errors, 0);

    // Timing off: the counters go on, the histograms stay.
    d.queue.set_timing(false);
    d.front.read(0, 4096).unwrap();
    let t = d.queue.stats();
    assert_eq!((t.reads, t.sectors_read), (4, 3 * 16 + 8));
    assert_eq!(t.read_latency, s.read_latency);
}

#[test]
fn requests_after_a_barrier_are_served() {
    // The queue once went to sleep when a barrier's last step finished in
    // the pass's final reap, without looking at the ring again.
    use crate::ring::blkif::BLKIF_OP_WRITE_BARRIER;
    let w = world();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.img");
    std::fs::write(&path, vec![0u8; (SECTORS * 512) as usize]).unwrap();
    let storages: Vec<Box<dyn Storage>> = vec![
        Box::new(MemDisk::new(SECTORS)),
        Box::new(FileDisk::open(&path, FileOptions::default()).unwrap()),
    ];
    let gnttab = w.host.gnttab(GUEST).unwrap();
    for storage in storages {
        let mut d = attach(&w, GUEST, opts(0, BlkifProtocol::X86_64), storage, 0);
        for round in 0..3u8 {
            let frame = gnttab.alloc_page().unwrap();
            gnttab
                .page(frame)
                .unwrap()
                .fill(0, 512, 0x70 + round)
                .unwrap();
            let gref = gnttab.grant(BACK, frame, true).unwrap();
            let seg = Segment {
                gref,
                first_sect: 0,
                last_sect: 0,
            };
            let sector = 100 + u64::from(round);
            let id = d
                .front
                .submit(BlkOp::Raw(BLKIF_OP_WRITE_BARRIER, sector, vec![seg]))
                .unwrap();
            d.front.wait(id).unwrap();
            assert_eq!(d.front.read(sector, 512).unwrap(), vec![0x70 + round; 512]);
        }
    }
}

#[test]
fn a_verifying_workload_finds_its_writes_and_reports_what_flushes_made_durable() {
    use super::frontend::VerifyWorkload;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let w = world();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.img");
    std::fs::write(&path, vec![0u8; (SECTORS * 512) as usize]).unwrap();
    let file = FileDisk::open(&path, FileOptions::default()).unwrap();
    let mut d = attach(&w, GUEST, opts(1, BlkifProtocol::X86_64), Box::new(file), 0);
    let (stop, progress) = (AtomicBool::new(false), AtomicU64::new(0));
    let workload = VerifyWorkload {
        first_block: 8,
        blocks: 64,
        depth: 32,
        seed: 7,
        flush_every: 16,
    };
    let report = std::thread::scope(|s| {
        let run = s.spawn(|| d.front.verify(&workload, &stop, &progress));
        while progress.load(Ordering::Relaxed) < 2000 {
            std::thread::yield_now();
        }
        stop.store(true, Ordering::Relaxed);
        run.join().unwrap().unwrap()
    });
    assert_eq!((report.failed, report.failures.len()), (0, 0), "{report:?}");
    assert!(report.requests >= 2000 && report.verified > 500 && report.flushes > 20);
    // Every write is done: each block holds its last version, which is at
    // least what a flush made durable.
    let bytes = std::fs::read(&path).unwrap();
    assert!(!report.durable.is_empty() && !report.last.is_empty());
    for (block, version) in &report.last {
        let at = (*block as usize) * 4096;
        let same = bytes[at..at + 4096] == super::frontend::stamp(*block, *version)[..];
        assert!(same, "block {block}: not version {version}");
    }
    for (block, version) in &report.durable {
        let last = report
            .last
            .iter()
            .find(|(b, _)| b == block)
            .map(|(_, v)| *v);
        assert!(
            last >= Some(*version),
            "block {block}: durable {version}, last {last:?}"
        );
    }
}
