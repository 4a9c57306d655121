//! The simulated blkfront against a tiny backend (`test_backend.rs`): dom0
//! maps the ring through its platform's gntdev, takes requests with
//! `BackRing`, and moves data between a `Vec<u8>` disk and the guest's
//! pages with grant copies. No test sleeps: each side blocks on its events, and timeouts only
//! guard against hangs.

use super::test_backend::*;
use super::*;
use crate::platform::sim::SimHost;
use crate::platform::{GntSt, GrantMapper, GrantMapping};
use crate::ring::blkif::BlkifNative;
use crate::ring::shared::{BackRing, RSP_EVENT};

#[test]
fn data_written_reads_back_with_direct_requests() {
    let (_hv, host) = host();
    let (mut front, backend) = pair(&host, FrontOptions::default(), SERVE);
    let data = pattern(3 * PAGE_SIZE + 5 * SECTOR_SIZE, 1);
    front.write(8, &data).unwrap();
    assert_eq!(front.read(8, data.len()).unwrap(), data);
    let (seen, disk) = backend.stop(&mut front);
    // 29 sectors: 4 segments, the last one partial; one request each way.
    assert_eq!(ops_of(&seen), [BLKIF_OP_WRITE, BLKIF_OP_READ]);
    assert_eq!(first_last(&seen)[..4], [(0, 7), (0, 7), (0, 7), (0, 4)]);
    assert_eq!(disk[8 * SECTOR_SIZE..][..data.len()], data[..]);
    front.close().unwrap();
}

#[test]
fn large_transfers_go_indirect_when_advertised_and_split_when_not() {
    let (_hv, host) = host();
    let data = pattern(40 * PAGE_SIZE, 2);
    for (indirect, ops) in [
        (Some(32), vec![BLKIF_OP_INDIRECT, BLKIF_OP_WRITE]),
        (None, vec![BLKIF_OP_WRITE; 4]),
    ] {
        let (mut front, backend) = pair(&host, options(0, indirect, None), SERVE);
        front.write(16, &data).unwrap();
        assert_eq!(front.read(16, data.len()).unwrap(), data);
        let (seen, _) = backend.stop(&mut front);
        assert_eq!(ops_of(&seen)[..ops.len()], ops[..], "{indirect:?}");
        assert_eq!(seen.1.len(), 2 * ops.len());
        if let Request::Indirect(r) = seen.1[0] {
            assert_eq!((r.indirect_op, r.nr_segments), (BLKIF_OP_WRITE, 32));
        }
        front.close().unwrap();
    }
}

#[test]
fn segments_may_start_and_end_inside_a_page() {
    let (_hv, host) = host();
    let (mut front, backend) = pair(&host, options(0, Some(256), None), SERVE);
    let data = pattern(5 * SECTOR_SIZE, 3);
    let id = front.submit(BlkOp::Write(3, data.clone(), 1024)).unwrap();
    front.wait(id).unwrap();
    // Read it back across a page boundary: sector 7 of one page, then 0..3.
    let id = front.submit(BlkOp::Read(3, data.len(), 3584)).unwrap();
    assert_eq!(front.wait(id).unwrap(), data);
    // And a large transfer starting mid-page, in an indirect request.
    let big = pattern(30 * PAGE_SIZE, 4);
    let id = front.submit(BlkOp::Write(100, big.clone(), 1536)).unwrap();
    front.wait(id).unwrap();
    assert_eq!(front.read(100, big.len()).unwrap(), big);
    let (seen, _) = backend.stop(&mut front);
    let expect = [(2, 6), (7, 7), (0, 3), (3, 7), (0, 7)];
    assert_eq!(first_last(&seen)[..5], expect);
    assert_eq!(first_last(&seen)[33], (0, 2), "the big write's last page");
    assert_eq!(ops_of(&seen)[2..], [BLKIF_OP_INDIRECT; 2]);
    front.close().unwrap();
}

#[test]
fn both_protocols_work_on_rings_of_one_and_four_pages() {
    let (_hv, host) = host();
    for protocol in [BlkifProtocol::X86_64, BlkifProtocol::X86_32] {
        for order in [0, 2] {
            let mut o = options(order, Some(32), None);
            o.protocol = protocol;
            let (mut front, backend) = pair(&host, o, SERVE);
            assert_eq!(front.ring_refs().len(), 1 << order);
            assert_eq!(
                (front.ring_page_order(), front.protocol()),
                (order, protocol)
            );
            let data = pattern(20 * PAGE_SIZE + 7 * SECTOR_SIZE, order as u8);
            front.write(1, &data).unwrap();
            assert_eq!(front.read(1, data.len()).unwrap(), data);
            front.flush().unwrap();
            let (seen, _) = backend.stop(&mut front);
            assert_eq!(seen.0, 32 << order, "{protocol:?}");
            assert_eq!(ops_of(&seen)[0], BLKIF_OP_INDIRECT);
            front.close().unwrap();
        }
    }
}

#[test]
fn eight_requests_in_flight_complete_out_of_order() {
    let (_hv, host) = host();
    let policy = Policy {
        batch: 8,
        reverse: true,
        ..SERVE
    };
    let (mut front, backend) = pair(&host, options(0, None, Some(8)), policy);
    let write = |i: u64| BlkOp::Write(i * 16, pattern(2 * PAGE_SIZE, i as u8), 0);
    let ids = front.submit_many((0..8).map(write)).unwrap();
    assert_eq!(front.in_flight(), 8);
    let order: Vec<RequestId> = (0..8).map(|_| front.wait_any().unwrap().0).collect();
    assert_eq!(order, ids.into_iter().rev().collect::<Vec<_>>());
    // 32 reads at depth 8: four rounds, each answered in reverse.
    let read = |i: u64| BlkOp::Read((i % 8) * 16, 2 * PAGE_SIZE, 0);
    let ids = front.submit_many((0..32).map(read)).unwrap();
    for (i, id) in ids.into_iter().enumerate() {
        assert_eq!(front.wait(id).unwrap(), pattern(2 * PAGE_SIZE, i as u8 % 8));
    }
    assert!(matches!(front.wait_any(), Err(BlkFrontError::Idle)));
    let (seen, _) = backend.stop(&mut front);
    assert_eq!(seen.1.len(), 40);
    front.close().unwrap();
}

#[test]
fn flush_and_discard_are_answered() {
    let (_hv, host) = host();
    let (mut front, backend) = pair(&host, FrontOptions::default(), SERVE);
    let data = pattern(8 * SECTOR_SIZE, 5);
    front.write(0, &data).unwrap();
    front.flush().unwrap();
    front.discard(2, 4, true).unwrap();
    let back = front.read(0, 8 * SECTOR_SIZE).unwrap();
    assert!(back[2 * SECTOR_SIZE..6 * SECTOR_SIZE]
        .iter()
        .all(|b| *b == 0));
    assert_eq!(back[..2 * SECTOR_SIZE], data[..2 * SECTOR_SIZE]);
    let (seen, _) = backend.stop(&mut front);
    assert!(matches!(seen.1[1], Request::Direct(r) if r.nr_segments == 0));
    let Request::Discard(d) = seen.1[2] else {
        panic!("{:?}", seen.1[2]);
    };
    assert_eq!(
        (d.sector_number, d.nr_sectors, d.flag),
        (2, 4, BLKIF_DISCARD_SECURE)
    );
    front.close().unwrap();
}

#[test]
fn error_statuses_surface_as_typed_errors() {
    let (_hv, host) = host();
    let policy = Policy {
        status: |req| match req {
            Request::Direct(r) if r.sector_number == 666 => Some(BLKIF_RSP_ERROR),
            Request::Direct(r) if r.sector_number == 777 => Some(7),
            Request::Discard(_) => Some(BLKIF_RSP_EOPNOTSUPP),
            _ => None,
        },
        ..SERVE
    };
    let (mut front, backend) = pair(&host, FrontOptions::default(), policy);
    let sector = SECTOR_SIZE;
    let e = front.write(666, &[1; 512]);
    assert!(matches!(e, Err(BlkFrontError::IoError(_))), "{e:?}");
    let e = front.read(777, sector);
    assert!(matches!(e, Err(BlkFrontError::BadStatus(_, 7))), "{e:?}");
    let e = front.discard(0, 8, false);
    assert!(matches!(e, Err(BlkFrontError::NotSupported(_))), "{e:?}");
    let id = front.submit(BlkOp::Raw(0xee, 0, Vec::new())).unwrap();
    assert!(matches!(front.wait(id), Err(BlkFrontError::NotSupported(i)) if i == id));
    // Past the disk's end: the backend's own error.
    let e = front.read(DISK_SECTORS as u64, sector);
    assert!(matches!(e, Err(BlkFrontError::IoError(_))), "{e:?}");
    // None of this broke the device.
    front.write(1, &[2; 512]).unwrap();
    let (_, disk) = backend.stop(&mut front);
    assert_eq!(disk[sector], 2);
    front.close().unwrap();
}

#[test]
fn a_backend_that_garbles_responses_breaks_the_frontend() {
    let (_hv, host) = host();
    let truncate_id: fn(&mut Response) = |r| r.id &= 0xffff_ffff;
    let wrong_op: fn(&mut Response) = |r| r.operation = BLKIF_OP_WRITE;
    for corrupt in [truncate_id, wrong_op] {
        let policy = Policy { corrupt, ..SERVE };
        let (mut front, backend) = pair(&host, FrontOptions::default(), policy);
        let Err(BlkFrontError::Backend(fault)) = front.read(0, SECTOR_SIZE) else {
            panic!("the read must fail on the garbled response");
        };
        let again = front.flush();
        assert!(
            matches!(again, Err(BlkFrontError::Backend(f)) if f == fault),
            "{again:?}"
        );
        backend.stop(&mut front);
        front.close().unwrap();
    }
}

/// Writes and pushes a response; whether to notify.
fn respond(ring: &mut BackRing<'_, BlkifNative>, r: Response) -> bool {
    ring.write_response(&r.encode::<BlkifNative>()).unwrap();
    ring.push_responses_and_check_notify().unwrap()
}

/// Answers every request on `ring` with OKAY; whether to notify.
fn answer_all(ring: &mut BackRing<'_, BlkifNative>) -> bool {
    ring.unconsumed_requests().unwrap();
    while let Some(raw) = ring.copy_request().unwrap() {
        let req = Request::decode::<BlkifNative>(&raw);
        let r = rsp(req.id(), req.operation(), BLKIF_RSP_OKAY);
        ring.write_response(&r.encode::<BlkifNative>()).unwrap();
    }
    ring.push_responses_and_check_notify().unwrap()
}

#[test]
fn notifications_follow_the_event_indexes() {
    let (_hv, host) = host();
    let mut front = front(&host, FrontOptions::default());
    let evtchn = host.evtchn(BACK).unwrap();
    evtchn.bind_interdomain(GUEST, front.port()).unwrap();
    let map = host.gntdev(BACK).map(GUEST, front.ring_refs(), true);
    let map = map.unwrap();
    let mut ring = BackRing::<BlkifNative>::attach(map.mem()).unwrap();
    let a = front.submit(BlkOp::Flush).unwrap();
    let b = front.submit(BlkOp::Flush).unwrap();
    assert_eq!(front.stats().notifications, 1, "req_event starts at 1");
    assert_eq!(drain(&evtchn), 1);
    assert!(answer_all(&mut ring), "rsp_event starts at 1");
    assert!(!ring.final_check_for_requests().unwrap());
    front.wait(b).unwrap();
    front.wait(a).unwrap();
    assert_eq!(front.stats().waits, 0, "the responses were there: no sleep");
    let c = front.submit(BlkOp::Flush).unwrap();
    assert_eq!(
        front.stats().notifications,
        2,
        "the backend's final check asked"
    );
    // Before sleeping, the frontend asks for an event on the next response.
    front.set_timeout(Duration::ZERO);
    assert!(matches!(front.wait(c), Err(BlkFrontError::Timeout)));
    assert_eq!(map.mem().load_u32(RSP_EVENT).unwrap(), 3);
    assert!(answer_all(&mut ring), "the frontend asked for this event");
    front.wait(c).unwrap();
    // The backend asks for the next request again; a quiet frontend leaves
    // that notification to its caller.
    assert!(!ring.final_check_for_requests().unwrap());
    front.set_quiet(true);
    front.submit(BlkOp::Flush).unwrap();
    assert_eq!(front.stats().notifications, 2);
    drop(map);
    front.close().unwrap();
}

#[test]
fn many_round_trips_lose_no_wakeup() {
    let (_hv, host) = host();
    for (depth, batch) in [(1, 1), (4, 2)] {
        let policy = Policy { batch, ..SERVE };
        let (mut front, backend) = pair(&host, options(0, None, Some(depth)), policy);
        for i in 0..500u64 {
            let op = |k| BlkOp::Write((i * 2 + k) % 64, vec![i as u8; SECTOR_SIZE], 0);
            let ids = front.submit_many((0..batch as u64).map(op)).unwrap();
            ids.into_iter()
                .for_each(|id| front.wait(id).map(drop).unwrap());
        }
        let stats = front.stats();
        let n = 500 * batch as u64;
        assert_eq!((stats.requests, stats.responses), (n, n));
        backend.stop(&mut front);
        front.close().unwrap();
    }
}

#[test]
fn close_returns_every_page_and_grant() {
    let (_hv, host) = host();
    let gt = host.gnttab(GUEST).unwrap();
    let before = free_pages(&gt);
    let (mut front, backend) = pair(&host, options(2, Some(64), None), SERVE);
    let data = pattern(50 * PAGE_SIZE, 6);
    front.write(0, &data).unwrap();
    assert_eq!(front.read(0, data.len()).unwrap(), data);
    let (seen, _) = backend.stop(&mut front);
    assert_eq!(
        free_pages(&gt),
        before - 4,
        "only the ring is still granted"
    );
    let mut grefs: Vec<GrantRef> = seen.2.iter().map(|s| s.gref).collect();
    grefs.extend(front.ring_refs());
    for r in &seen.1 {
        if let Request::Indirect(r) = r {
            grefs.push(r.indirect_grefs[0]);
        }
    }
    front.close().unwrap();
    assert_eq!(free_pages(&gt), before);
    for g in grefs {
        assert_eq!(gt.entry_flags(g), Some(0), "grant {g} ended");
    }
    front.close().unwrap();
}

/// A frontend and dom0's mapping of its ring, served by hand in the test.
fn by_hand(host: &SimHost) -> (SimBlkFront, GrantMapping) {
    let front = front(host, FrontOptions::default());
    let map = host.gntdev(BACK).map(GUEST, front.ring_refs(), true);
    (front, map.unwrap())
}

/// The next request on the ring, which must be there, decoded.
fn fetch(ring: &mut BackRing<'_, BlkifNative>) -> ([u8; 112], DirectRequest) {
    ring.unconsumed_requests().unwrap();
    let raw = ring.copy_request().unwrap().expect("a request");
    match Request::decode::<BlkifNative>(&raw) {
        Request::Direct(r) => (raw, r),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_page_still_mapped_at_the_response_is_reported_and_kept() {
    let (_hv, host) = host();
    let gt = host.gnttab(GUEST).unwrap();
    let before = free_pages(&gt);
    let (mut front, ring_map) = by_hand(&host);
    let mut ring = BackRing::<BlkifNative>::attach(ring_map.mem()).unwrap();
    let id = front.submit(BlkOp::Read(0, 512, 0)).unwrap();
    let gref = fetch(&mut ring).1.seg[0].gref;
    let data_map = host.gntdev(BACK).map(GUEST, &[gref], true).unwrap();
    respond(&mut ring, rsp(id.0, BLKIF_OP_READ, BLKIF_RSP_OKAY));
    let e = front.wait(id);
    assert!(matches!(e, Err(BlkFrontError::GrantStillMapped(i, g)) if i == id && g == gref));
    drop(ring_map);
    let e = front.close();
    assert!(matches!(e, Err(BlkFrontError::Grant(GrantError::InUse(g))) if g == gref));
    drop(data_map);
    front.close().unwrap();
    assert_eq!(free_pages(&gt), before);
}

#[test]
fn raw_bytes_reach_the_backend_verbatim_and_get_their_answer() {
    let (_hv, host) = host();
    let (mut front, map) = by_hand(&host);
    let mut ring = BackRing::<BlkifNative>::attach(map.mem()).unwrap();
    let mut raw = [0x5a_u8; 112];
    raw[0] = 0xee;
    let id = front.push_raw_request(&raw).unwrap();
    let (got, req) = fetch(&mut ring);
    assert_eq!((got, RequestId(req.id)), (raw, id));
    // Any operation is accepted in the answer to raw bytes.
    respond(&mut ring, rsp(id.0, 0x77, BLKIF_RSP_EOPNOTSUPP));
    assert!(matches!(
        front.wait(id),
        Err(BlkFrontError::NotSupported(_))
    ));
    drop(map);
}

#[test]
fn hostile_indexes_and_rewritten_slots_are_what_the_backend_reads() {
    let (_hv, host) = host();
    let (mut front, map) = by_hand(&host);
    let mut ring = BackRing::<BlkifNative>::attach(map.mem()).unwrap();
    let id = front.submit(BlkOp::Flush).unwrap();
    ring.unconsumed_requests().unwrap();
    let first = ring.peek_request(0).unwrap().unwrap();
    let mut evil = first;
    evil[1] = 200;
    front.rewrite_request(id, &evil).unwrap();
    assert_eq!(first[1], 0, "a private copy keeps what was fetched");
    assert_eq!(ring.peek_request(0).unwrap().unwrap(), evil, "a refetch");
    front.set_req_prod(1000).unwrap();
    let e = ring.unconsumed_requests().unwrap_err();
    assert!(matches!(
        e,
        SharedRingError::BogusRequestProducer { req_prod: 1000, .. }
    ));
    drop(map);
}

#[test]
fn foreign_and_bogus_grants_fail_the_backend_copy() {
    let (_hv, host) = host();
    let gt = host.gnttab(GUEST).unwrap();
    let (mut front, map) = by_hand(&host);
    let mut ring = BackRing::<BlkifNative>::attach(map.mem()).unwrap();
    let frame = gt.alloc_page().unwrap();
    let foreign = gt.grant(OTHER, frame, false).unwrap();
    let seg = |gref| Segment {
        gref,
        first_sect: 0,
        last_sect: 7,
    };
    let raw = BlkOp::Raw(BLKIF_OP_WRITE, 0, vec![seg(foreign), seg(2000)]);
    front.submit(raw).unwrap();
    let req = fetch(&mut ring).1;
    let gntdev = host.gntdev(BACK);
    for s in &req.seg[..2] {
        let status = copy_page(&gntdev, s.gref, &mut [0; PAGE_SIZE]);
        assert_ne!(status, GntSt::Okay, "grant {}", s.gref);
    }
    drop(map);
    gt.end_access(foreign).unwrap();
    gt.free_page(frame);
}

#[test]
fn an_abandoning_guest_revokes_grants_of_requests_in_flight() {
    let (_hv, host) = host();
    let gt = host.gnttab(GUEST).unwrap();
    let before = free_pages(&gt);
    let (mut front, map) = by_hand(&host);
    let mut ring = BackRing::<BlkifNative>::attach(map.mem()).unwrap();
    front
        .submit(BlkOp::Write(0, vec![1; 4 * PAGE_SIZE], 0))
        .unwrap();
    let gref = fetch(&mut ring).1.seg[0].gref;
    let gntdev = host.gntdev(BACK);
    assert_eq!(copy_page(&gntdev, gref, &mut [0; PAGE_SIZE]), GntSt::Okay);
    front.abandon();
    assert_ne!(copy_page(&gntdev, gref, &mut [0; PAGE_SIZE]), GntSt::Okay);
    assert!(matches!(front.flush(), Err(BlkFrontError::Closed)));
    // The ring is still mapped: its grant lasts until the backend lets go.
    let e = front.close();
    assert!(matches!(e, Err(BlkFrontError::Grant(GrantError::InUse(_)))));
    drop(map);
    front.close().unwrap();
    assert_eq!(free_pages(&gt), before);
}

#[test]
fn bad_arguments_are_refused_before_anything_is_granted() {
    fn shareable<T: Send + Sync>() {}
    shareable::<SimBlkFront>();
    let (_hv, host) = host();
    let gt = host.gnttab(GUEST).unwrap();
    let evtchn = Arc::new(host.evtchn(GUEST).unwrap());
    let e = SimBlkFront::new(gt.clone(), evtchn, BACK, options(5, None, None));
    assert!(matches!(e, Err(BlkFrontError::BadArgument(_))));
    let mut front = front(&host, FrontOptions::default());
    let before = free_pages(&gt);
    assert!(matches!(
        front.read(0, 100),
        Err(BlkFrontError::BadArgument(_))
    ));
    let e = front.submit(BlkOp::Read(0, 512, 4096));
    assert!(matches!(e, Err(BlkFrontError::BadArgument(_))));
    let e = front.submit(BlkOp::Read(0, 12 * PAGE_SIZE, 0));
    assert!(matches!(e, Err(BlkFrontError::TooManySegments(12, 11))));
    let e = front.wait(RequestId(1));
    assert!(matches!(e, Err(BlkFrontError::UnknownRequest(_))));
    assert_eq!(free_pages(&gt), before);
}
