//! Behaviour of the generic ring: both ends, notification rules, wrapping
//! indexes, hostile indexes, double fetches, multi-slot units.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use super::*;
use crate::platform::Mmap;

/// A protocol for tests: 16-byte requests, 8-byte responses, each carrying
/// a counter in its first 8 bytes.
struct Test;

impl RingProtocol for Test {
    type Request = [u8; 16];
    type Response = [u8; 8];
}

fn req(n: u64) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&n.to_le_bytes());
    b[8..].copy_from_slice(&(!n).to_le_bytes());
    b
}

fn rsp(n: u64) -> [u8; 8] {
    n.to_le_bytes()
}

fn num(b: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[..8]);
    u64::from_le_bytes(w)
}

/// Bytes for a ring of 4 slots of [`Test`].
const SMALL: usize = HEADER_SIZE + 4 * 16;

fn small(m: &Mmap) -> SharedMem<'_> {
    m.mem().sub(0, SMALL).unwrap()
}

fn page() -> Mmap {
    Mmap::anonymous(4096).unwrap()
}

fn push(front: &mut FrontRing<'_, Test>, from: u64, n: u64) -> bool {
    for i in from..from + n {
        front.write_request(&req(i)).unwrap();
    }
    front.push_requests_and_check_notify().unwrap()
}

fn bogus_req(req_prod: u32, req_cons: u32, rsp_prod: u32, size: u32) -> SharedRingError {
    SharedRingError::BogusRequestProducer {
        req_prod,
        req_cons,
        rsp_prod,
        size,
    }
}

#[test]
fn ring_size_rounds_down_to_a_power_of_two_like_ring_h() {
    assert_eq!(HEADER_SIZE, 64);
    assert_eq!(
        (REQ_PROD, REQ_EVENT, RSP_PROD, RSP_EVENT, PVT, PAD),
        (0, 4, 8, 12, 16, 20)
    );
    // (4096 − 64) / 16 = 252 slots fit: 128.
    assert_eq!(ring_size(4096, 16), 128);
    assert_eq!(ring_size(SMALL, 16), 4);
    assert_eq!(ring_size(SMALL - 1, 16), 2);
    assert_eq!(ring_size(HEADER_SIZE + 15, 16), 0);
    assert_eq!(ring_size(10, 16), 0);
    assert_eq!(ring_size(4096, 0), 0);
    assert_eq!(ring_size(usize::MAX, 1), MAX_RING_SIZE);
    assert_eq!(<Test as RingProtocol>::SLOT_SIZE, 16);
}

#[test]
fn too_small_or_misaligned_memory_is_refused() {
    let m = page();
    let tiny = m.mem().sub(0, HEADER_SIZE + 15).unwrap();
    assert_eq!(
        BackRing::<Test>::attach(tiny).err(),
        Some(SharedRingError::TooSmall {
            need: HEADER_SIZE + 16,
            have: HEADER_SIZE + 15
        })
    );
    let odd = m.mem().sub(2, SMALL).unwrap();
    assert!(matches!(
        FrontRing::<Test>::init(odd).err(),
        Some(SharedRingError::Memory(_))
    ));
}

#[test]
fn front_init_writes_the_header_as_shared_ring_init_does() {
    let m = page();
    m.mem().fill(0, 4096, 0xaa).unwrap();
    let front = FrontRing::<Test>::init(m.mem()).unwrap();
    assert_eq!(front.size(), 128);
    let mem = m.mem();
    assert_eq!(mem.load_u32(REQ_PROD).unwrap(), 0);
    assert_eq!(mem.load_u32(RSP_PROD).unwrap(), 0);
    assert_eq!(mem.load_u32(REQ_EVENT).unwrap(), 1);
    assert_eq!(mem.load_u32(RSP_EVENT).unwrap(), 1);
    let mut header = [0xffu8; 48];
    mem.read(PVT, &mut header).unwrap();
    assert_eq!(header, [0; 48], "pvt and padding zeroed");
    let mut slot = [0u8; 16];
    mem.read(HEADER_SIZE, &mut slot).unwrap();
    assert_eq!(slot, [0xaa; 16], "slots untouched");
}

#[test]
fn requests_and_responses_round_trip_front_back_front() {
    let m = page();
    let mut front = FrontRing::<Test>::init(m.mem()).unwrap();
    let mut back = BackRing::<Test>::attach(m.mem()).unwrap();
    assert_eq!(back.size(), 128);
    assert_eq!(front.free_requests(), 128);

    // Fresh ring: req_event is 1, so the first push notifies.
    assert!(push(&mut front, 0, 3));
    assert_eq!(front.free_requests(), 125);
    assert_eq!(back.unconsumed_requests().unwrap(), 3);
    let mut got = Vec::new();
    while let Some(r) = back.copy_request().unwrap() {
        got.push(num(&r));
        back.write_response(&rsp(num(&r) * 10)).unwrap();
    }
    assert_eq!(got, [0, 1, 2]);
    assert!(back.push_responses_and_check_notify().unwrap());
    assert_eq!(m.mem().load_u32(RSP_PROD).unwrap(), 3);

    assert_eq!(front.unconsumed_responses().unwrap(), 3);
    let mut answers = Vec::new();
    while let Some(r) = front.copy_response().unwrap() {
        answers.push(num(&r));
    }
    assert_eq!(answers, [0, 10, 20]);
    assert_eq!(front.free_requests(), 128);
    assert!(!front.final_check_for_responses().unwrap());
    assert!(!back.final_check_for_requests().unwrap());
}

#[test]
fn backend_is_notified_only_when_req_prod_crosses_req_event() {
    let m = page();
    let mem = m.mem();
    let mut front = FrontRing::<Test>::init(mem).unwrap();
    let mut back = BackRing::<Test>::attach(mem).unwrap();

    assert!(push(&mut front, 0, 1), "req_event 1 is crossed by 0 → 1");
    // The backend has not re-armed: req_event is still 1, not in (1, 2].
    assert!(!push(&mut front, 1, 1));
    assert_eq!(back.unconsumed_requests().unwrap(), 2);
    back.consume_requests(2).unwrap();
    // Nothing left: the final check arms req_event at req_cons + 1 = 3.
    assert!(!back.final_check_for_requests().unwrap());
    assert_eq!(mem.load_u32(REQ_EVENT).unwrap(), 3);
    assert!(push(&mut front, 2, 1), "2 → 3 crosses req_event 3");

    // A backend that batches: it wants a notification only once req_prod
    // reaches 8.
    mem.store_u32(REQ_EVENT, 8).unwrap();
    assert!(!push(&mut front, 3, 2), "3 → 5");
    assert!(!push(&mut front, 5, 2), "5 → 7");
    assert!(push(&mut front, 7, 3), "7 → 10 crosses 8");
    assert!(!push(&mut front, 10, 1), "10 → 11, event already passed");
    // An empty push never notifies.
    assert!(!front.push_requests_and_check_notify().unwrap());
}

#[test]
fn frontend_is_notified_only_when_rsp_prod_crosses_rsp_event() {
    let m = page();
    let mem = m.mem();
    let mut front = FrontRing::<Test>::init(mem).unwrap();
    let mut back = BackRing::<Test>::attach(mem).unwrap();
    push(&mut front, 0, 6);
    back.unconsumed_requests().unwrap();
    back.consume_requests(6).unwrap();

    let mut respond = |n: u64| {
        for i in 0..n {
            back.write_response(&rsp(i)).unwrap();
        }
        back.push_responses_and_check_notify().unwrap()
    };
    assert!(respond(1), "rsp_event 1 is crossed by 0 → 1");
    assert!(!respond(1), "the frontend has not re-armed");
    assert_eq!(front.unconsumed_responses().unwrap(), 2);
    front.consume_responses(2).unwrap();
    assert!(!front.final_check_for_responses().unwrap());
    assert_eq!(mem.load_u32(RSP_EVENT).unwrap(), 3);
    // A frontend that wants to hear only when all six are answered.
    mem.store_u32(RSP_EVENT, 6).unwrap();
    assert!(!respond(2), "2 → 4");
    assert!(respond(2), "4 → 6 reaches 6");
}

#[test]
fn final_check_finds_requests_pushed_before_it_armed_the_event() {
    let m = page();
    let mem = m.mem();
    let mut front = FrontRing::<Test>::init(mem).unwrap();
    let mut back = BackRing::<Test>::attach(mem).unwrap();
    assert!(!back.final_check_for_requests().unwrap());
    assert_eq!(mem.load_u32(REQ_EVENT).unwrap(), 1);
    // A request arrives after a pass found nothing: the final check sees it
    // and leaves req_event alone.
    push(&mut front, 0, 1);
    mem.store_u32(REQ_EVENT, 1).unwrap();
    assert!(back.final_check_for_requests().unwrap());
    assert_eq!(mem.load_u32(REQ_EVENT).unwrap(), 1);
    back.copy_request().unwrap().unwrap();
    assert!(!back.final_check_for_requests().unwrap());
    assert_eq!(mem.load_u32(REQ_EVENT).unwrap(), 2);
}

#[test]
fn waiting_for_several_requests_asks_for_an_event_past_those_already_there() {
    let m = page();
    let mem = m.mem();
    let mut front = FrontRing::<Test>::init(mem).unwrap();
    let mut back = BackRing::<Test>::attach(mem).unwrap();
    // One request there, three needed (a packet's buffers): the final
    // check would see one and ask nothing; this asks for the next push.
    push(&mut front, 0, 1);
    assert!(back.final_check_for_requests().unwrap());
    assert!(!back.wait_for_requests(3).unwrap());
    assert_eq!(mem.load_u32(REQ_EVENT).unwrap(), 2);
    assert!(push(&mut front, 1, 2), "the next push notifies");
    assert!(back.wait_for_requests(3).unwrap());
    assert_eq!(back.unconsumed_requests().unwrap(), 3);
    assert!(back.wait_for_requests(0).unwrap());
}

#[test]
fn indexes_wrap_around_u32_max() {
    let m = page();
    let mem = small(&m);
    let start = u32::MAX - 5;
    let mut front = FrontRing::<Test>::init_at(mem, start).unwrap();
    let mut back = BackRing::<Test>::attach(mem).unwrap();
    assert_eq!((back.req_cons(), back.rsp_prod_pvt()), (start, start));
    let mut next = 0u64;
    let mut answered = 0u64;
    // Enough rounds to cross 2^32 and wrap the 4-slot ring many times,
    // with notifications still decided correctly across the wrap.
    for round in 0..12 {
        let n = 1 + round % 4;
        let notified = push(&mut front, next, n);
        assert!(notified, "round {round}: the backend re-armed every time");
        next += n;
        assert_eq!(back.unconsumed_requests().unwrap(), n as u32);
        while let Some(r) = back.copy_request().unwrap() {
            back.write_response(&rsp(num(&r))).unwrap();
        }
        assert!(!back.final_check_for_requests().unwrap());
        assert!(back.push_responses_and_check_notify().unwrap());
        assert_eq!(front.unconsumed_responses().unwrap(), n as u32);
        while let Some(r) = front.copy_response().unwrap() {
            assert_eq!(num(&r), answered);
            answered += 1;
        }
        assert!(!front.final_check_for_responses().unwrap());
    }
    assert_eq!(answered, next);
    assert_eq!(back.req_cons(), start.wrapping_add(next as u32));
    assert!(back.req_cons() < start, "the indexes wrapped");
    assert_eq!(mem.load_u32(REQ_PROD).unwrap(), back.req_cons());
}

#[test]
fn a_full_ring_is_fine_and_one_more_is_refused() {
    let m = page();
    let mem = small(&m);
    let mut front = FrontRing::<Test>::init_at(mem, u32::MAX - 1).unwrap();
    let mut back = BackRing::<Test>::attach(mem).unwrap();
    push(&mut front, 0, 4);
    assert!(front.is_full());
    assert_eq!(
        front.write_request(&req(9)),
        Err(SharedRingError::Full { size: 4 })
    );
    // Exactly a ring ahead of the last response is legal.
    assert_eq!(back.unconsumed_requests().unwrap(), 4);
}

#[test]
fn producer_more_than_a_ring_ahead_breaks_the_ring_for_good() {
    let m = page();
    let mem = small(&m);
    let start = u32::MAX - 2;
    let mut front = FrontRing::<Test>::init_at(mem, start).unwrap();
    let mut back = BackRing::<Test>::attach(mem).unwrap();
    push(&mut front, 0, 2);
    assert_eq!(back.unconsumed_requests().unwrap(), 2);
    back.copy_request().unwrap().unwrap();

    // The frontend claims 5 requests past our last response in a 4-slot
    // ring (across the u32 wrap, to show distances are what count).
    let bogus = start.wrapping_add(5);
    mem.store_u32(REQ_PROD, bogus).unwrap();
    let e = bogus_req(bogus, start.wrapping_add(1), start, 4);
    assert_eq!(back.unconsumed_requests(), Err(e));
    assert!(e
        .to_string()
        .contains("5 requests past our last published response"));

    // No clamping, no recovery: every call fails the same way, even after
    // the frontend puts a sane value back.
    mem.store_u32(REQ_PROD, start.wrapping_add(2)).unwrap();
    assert_eq!(back.broken(), Some(e));
    assert_eq!(back.unconsumed_requests(), Err(e));
    assert_eq!(back.peek_request(0), Err(e));
    assert_eq!(back.copy_request(), Err(e));
    assert_eq!(back.consume_requests(0), Err(e));
    assert_eq!(back.write_response(&rsp(0)), Err(e));
    assert_eq!(back.push_responses_and_check_notify(), Err(e));
    assert_eq!(back.final_check_for_requests(), Err(e));
    assert_eq!(back.req_cons(), start.wrapping_add(1), "nothing consumed");
    assert_eq!(mem.load_u32(RSP_PROD).unwrap(), start, "nothing published");
}

#[test]
fn producer_behind_consumed_requests_breaks_the_ring() {
    let m = page();
    let mem = small(&m);
    let mut front = FrontRing::<Test>::init(mem).unwrap();
    let mut back = BackRing::<Test>::attach(mem).unwrap();
    push(&mut front, 0, 3);
    back.unconsumed_requests().unwrap();
    back.consume_requests(3).unwrap();
    back.write_response(&rsp(0)).unwrap();
    back.push_responses_and_check_notify().unwrap();
    // req_prod 2 is within a ring of rsp_prod 1, but behind req_cons 3:
    // ring.h's macros would take it as 2^32 − 1 requests and consume stale
    // slots.
    mem.store_u32(REQ_PROD, 2).unwrap();
    assert_eq!(back.unconsumed_requests(), Err(bogus_req(2, 3, 1, 4)));
    assert!(back.broken().is_some());
}

#[test]
fn reusing_slots_of_unpublished_responses_breaks_the_ring() {
    // Found by the ring_consumer fuzz target. The backend answered all four
    // requests but has not published the answers yet; a frontend that
    // pushes four more is reusing slots whose responses it cannot have
    // seen. Measured from written responses (as ring.h does) this looks
    // fine, and the backend would overwrite the unpublished responses.
    let m = page();
    let mem = small(&m);
    let mut front = FrontRing::<Test>::init(mem).unwrap();
    let mut back = BackRing::<Test>::attach(mem).unwrap();
    push(&mut front, 0, 4);
    back.unconsumed_requests().unwrap();
    back.consume_requests(4).unwrap();
    for n in 0..4 {
        back.write_response(&rsp(n)).unwrap();
    }
    mem.store_u32(REQ_PROD, 8).unwrap();
    assert_eq!(back.unconsumed_requests(), Err(bogus_req(8, 4, 0, 4)));
    // Once the responses are out, the same index is what a correct
    // frontend writes.
    let m = page();
    let mem = small(&m);
    let mut front = FrontRing::<Test>::init(mem).unwrap();
    let mut back = BackRing::<Test>::attach(mem).unwrap();
    push(&mut front, 0, 4);
    back.unconsumed_requests().unwrap();
    back.consume_requests(4).unwrap();
    for n in 0..4 {
        back.write_response(&rsp(n)).unwrap();
    }
    back.push_responses_and_check_notify().unwrap();
    front.unconsumed_responses().unwrap();
    front.consume_responses(4).unwrap();
    push(&mut front, 4, 4);
    assert_eq!(mem.load_u32(REQ_PROD).unwrap(), 8);
    assert_eq!(back.unconsumed_requests().unwrap(), 4);
}

#[test]
fn attach_refuses_a_ring_that_is_already_bogus() {
    let m = page();
    let mem = small(&m);
    FrontRing::<Test>::init(mem).unwrap();
    mem.store_u32(RSP_PROD, 100).unwrap();
    mem.store_u32(REQ_PROD, 105).unwrap();
    assert_eq!(
        BackRing::<Test>::attach(mem).err(),
        Some(bogus_req(105, 100, 100, 4))
    );
    // A ring already in use attaches at its response producer.
    mem.store_u32(REQ_PROD, 103).unwrap();
    let mut back = BackRing::<Test>::attach(mem).unwrap();
    assert_eq!((back.req_cons(), back.rsp_prod_pvt()), (100, 100));
    assert_eq!(back.unconsumed_requests().unwrap(), 3);
}

#[test]
fn consumer_stops_when_every_slot_awaits_a_response() {
    let m = page();
    let mem = small(&m);
    let mut front = FrontRing::<Test>::init(mem).unwrap();
    let mut back = BackRing::<Test>::attach(mem).unwrap();
    push(&mut front, 0, 4);
    assert_eq!(back.unconsumed_requests().unwrap(), 4);
    back.consume_requests(4).unwrap();
    // RING_REQUEST_CONS_OVERFLOW: all four slots are consumed and
    // unanswered, so nothing more may be taken until a response is written.
    assert!(back.request_cons_overflow());
    assert_eq!(back.unanswered(), 4);
    assert_eq!(back.unconsumed_requests().unwrap(), 0);
    assert_eq!(back.peek_request(0).unwrap(), None);
    assert_eq!(
        back.consume_requests(1),
        Err(SharedRingError::ConsumeBeyondAvailable {
            asked: 1,
            available: 0
        })
    );
    assert!(front.is_full());

    back.write_response(&rsp(0)).unwrap();
    assert!(!back.request_cons_overflow());
    back.push_responses_and_check_notify().unwrap();
    front.unconsumed_responses().unwrap();
    front.copy_response().unwrap().unwrap();
    push(&mut front, 4, 1);
    assert_eq!(back.unconsumed_requests().unwrap(), 1);
    assert_eq!(num(&back.copy_request().unwrap().unwrap()), 4);
    assert!(back.request_cons_overflow());
}

#[test]
fn responses_never_outnumber_consumed_requests() {
    let m = page();
    let mut front = FrontRing::<Test>::init(small(&m)).unwrap();
    let mut back = BackRing::<Test>::attach(small(&m)).unwrap();
    // Published but not consumed: its slot is not ours to answer in.
    push(&mut front, 0, 1);
    back.unconsumed_requests().unwrap();
    assert_eq!(
        back.write_response(&rsp(0)),
        Err(SharedRingError::NoRequestToAnswer {
            rsp_prod_pvt: 0,
            req_cons: 0
        })
    );
    back.copy_request().unwrap().unwrap();
    back.write_response(&rsp(0)).unwrap();
    assert!(back.write_response(&rsp(1)).is_err());
    assert_eq!(back.broken(), None, "a refusal, not a broken ring");
}

#[test]
fn responses_need_not_map_one_to_one_to_requests() {
    let m = page();
    let mem = small(&m);
    let mut front = FrontRing::<Test>::init(mem).unwrap();
    let mut back = BackRing::<Test>::attach(mem).unwrap();
    push(&mut front, 0, 3);
    back.unconsumed_requests().unwrap();
    back.consume_requests(3).unwrap();
    // One response now (say the second request finished first), the other
    // two later, after more requests came in.
    back.write_response(&rsp(101)).unwrap();
    assert!(back.push_responses_and_check_notify().unwrap());
    assert_eq!(front.unconsumed_responses().unwrap(), 1);
    assert_eq!(num(&front.copy_response().unwrap().unwrap()), 101);
    assert_eq!(front.free_requests(), 2);
    push(&mut front, 3, 2);
    assert_eq!(back.unconsumed_requests().unwrap(), 2);
    assert_eq!(num(&back.copy_request().unwrap().unwrap()), 3);
    // Three responses in one push for the four requests outstanding.
    for n in [100, 102, 103] {
        back.write_response(&rsp(n)).unwrap();
    }
    assert_eq!(back.unanswered(), 0);
    front.final_check_for_responses().unwrap();
    assert!(back.push_responses_and_check_notify().unwrap());
    assert_eq!(front.unconsumed_responses().unwrap(), 3);
    let got: Vec<u64> = (0..3)
        .map(|_| num(&front.copy_response().unwrap().unwrap()))
        .collect();
    assert_eq!(got, [100, 102, 103]);
    assert_eq!(front.free_requests(), 3, "one request not yet consumed");
    assert_eq!(back.unconsumed_requests().unwrap(), 1);
}

#[test]
fn multi_slot_units_are_peeked_then_consumed_together() {
    let m = page();
    let mem = small(&m);
    let mut front = FrontRing::<Test>::init_at(mem, u32::MAX).unwrap();
    let mut back = BackRing::<Test>::attach(mem).unwrap();
    push(&mut front, 0, 3);
    assert_eq!(back.unconsumed_requests().unwrap(), 3);
    // Peeking consumes nothing and can be repeated.
    for offset in 0..3 {
        assert_eq!(
            num(&back.peek_request(offset).unwrap().unwrap()),
            u64::from(offset)
        );
    }
    assert_eq!(num(&back.peek_request(1).unwrap().unwrap()), 1);
    assert_eq!(back.peek_request(3).unwrap(), None, "not published");
    assert_eq!(back.peek_request(u32::MAX).unwrap(), None);
    assert_eq!(back.req_cons(), u32::MAX);
    assert_eq!(
        back.consume_requests(4),
        Err(SharedRingError::ConsumeBeyondAvailable {
            asked: 4,
            available: 3
        })
    );
    back.consume_requests(2).unwrap();
    assert_eq!(back.req_cons(), 1);
    assert_eq!(num(&back.peek_request(0).unwrap().unwrap()), 2);
    // A unit's later slots appear only once pushed; peeking stays within
    // what the last index read found.
    front.write_request(&req(3)).unwrap();
    assert_eq!(back.peek_request(1).unwrap(), None, "written, not pushed");
    front.push_requests_and_check_notify().unwrap();
    assert_eq!(back.peek_request(1).unwrap(), None, "pushed, not yet read");
    assert_eq!(back.unconsumed_requests().unwrap(), 2);
    assert_eq!(num(&back.peek_request(1).unwrap().unwrap()), 3);
    back.consume_requests(2).unwrap();
    assert_eq!(back.unconsumed_requests().unwrap(), 0);
}

#[test]
fn bogus_response_producer_breaks_the_front_ring() {
    let m = page();
    let mem = small(&m);
    let mut front = FrontRing::<Test>::init(mem).unwrap();
    push(&mut front, 0, 2);
    // Three responses for two requests.
    mem.store_u32(RSP_PROD, 3).unwrap();
    let e = SharedRingError::BogusResponseProducer {
        rsp_prod: 3,
        rsp_cons: 0,
        req_prod: 2,
        size: 4,
    };
    assert_eq!(front.unconsumed_responses(), Err(e));
    mem.store_u32(RSP_PROD, 1).unwrap();
    assert_eq!(front.unconsumed_responses(), Err(e));
    assert_eq!(front.copy_response(), Err(e));
    assert_eq!(front.write_request(&req(0)), Err(e));
    assert_eq!(front.push_requests_and_check_notify(), Err(e));
    assert_eq!(front.final_check_for_responses(), Err(e));
    assert!(e.to_string().contains("3 responses past our consumer 0"));
}

#[test]
fn response_producer_behind_consumed_responses_breaks_the_front_ring() {
    let m = page();
    let mem = small(&m);
    let mut front = FrontRing::<Test>::init(mem).unwrap();
    let mut back = BackRing::<Test>::attach(mem).unwrap();
    push(&mut front, 0, 2);
    back.unconsumed_requests().unwrap();
    back.consume_requests(2).unwrap();
    back.write_response(&rsp(0)).unwrap();
    back.write_response(&rsp(1)).unwrap();
    back.push_responses_and_check_notify().unwrap();
    front.unconsumed_responses().unwrap();
    front.consume_responses(2).unwrap();
    mem.store_u32(RSP_PROD, 1).unwrap();
    assert!(matches!(
        front.unconsumed_responses(),
        Err(SharedRingError::BogusResponseProducer { rsp_prod: 1, .. })
    ));
}

#[test]
fn backend_copy_does_not_change_while_the_frontend_rewrites_the_slot() {
    let m = page();
    let mem = m.mem();
    let mut front = FrontRing::<Test>::init(mem).unwrap();
    let mut back = BackRing::<Test>::attach(mem).unwrap();
    push(&mut front, 7, 1);
    back.unconsumed_requests().unwrap();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        // A hostile frontend flips the published slot between two values
        // as fast as it can, the classic double-fetch attack.
        let flipper = s.spawn(|| {
            let mut flips = 0u64;
            while !stop.load(Ordering::Relaxed) {
                mem.write(HEADER_SIZE, &req(1 << 40)).unwrap();
                mem.write(HEADER_SIZE, &req(7)).unwrap();
                flips += 1;
            }
            flips
        });
        // Until the backend has watched the slot change under it often
        // enough (bounded in time, for a loaded machine).
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut changes = 0;
        while changes < 100 && std::time::Instant::now() < deadline {
            let copy = back.peek_request(0).unwrap().unwrap();
            // Validate the copy, as a backend does...
            let checked = num(&copy);
            for _ in 0..50 {
                // ...then use it: whatever the frontend writes meanwhile,
                // the value used is the value validated.
                std::hint::black_box(&copy);
                assert_eq!(num(&copy), checked);
            }
            let mut now = [0u8; 16];
            mem.read(HEADER_SIZE, &mut now).unwrap();
            if num(&now) != checked {
                changes += 1;
            }
        }
        stop.store(true, Ordering::Relaxed);
        assert!(flipper.join().unwrap() > 0);
        assert!(changes > 0, "the slot never changed under the backend");
    });
}

#[test]
fn two_threads_never_lose_a_wakeup() {
    // A frontend and a backend in two threads, each sleeping only when its
    // final check says so and woken only when the other's push asks for a
    // notification. A lost wake-up shows as both waiting: a timeout here.
    const N: u64 = 20_000;
    let m = page();
    let mem = small(&m);
    let mut front = FrontRing::<Test>::init(mem).unwrap();
    let mut back = BackRing::<Test>::attach(mem).unwrap();
    let (to_back, back_events) = mpsc::channel::<()>();
    let (to_front, front_events) = mpsc::channel::<()>();
    let wait = Duration::from_secs(10);
    std::thread::scope(|s| {
        s.spawn(move || {
            let mut answered = 0u64;
            while answered < N {
                while back.unconsumed_requests().unwrap() > 0 {
                    let r = back.copy_request().unwrap().unwrap();
                    back.write_response(&rsp(num(&r))).unwrap();
                    answered += 1;
                }
                if back.push_responses_and_check_notify().unwrap() {
                    to_front.send(()).unwrap();
                }
                if answered < N && !back.final_check_for_requests().unwrap() {
                    back_events
                        .recv_timeout(wait)
                        .expect("backend lost a wake-up");
                }
            }
        });
        let mut sent = 0u64;
        let mut received = 0u64;
        while received < N {
            while sent < N && !front.is_full() {
                front.write_request(&req(sent)).unwrap();
                sent += 1;
            }
            if front.push_requests_and_check_notify().unwrap() {
                to_back.send(()).unwrap();
            }
            let ready = front.unconsumed_responses().unwrap();
            for _ in 0..ready {
                let r = front.copy_response().unwrap().unwrap();
                assert_eq!(num(&r), received);
                received += 1;
            }
            // Sleep only with nothing to send (all sent, or no free slot)
            // and nothing to take.
            if ready == 0 && received < N && !front.final_check_for_responses().unwrap() {
                front_events
                    .recv_timeout(wait)
                    .expect("frontend lost a wake-up");
            }
        }
    });
}

#[test]
fn a_back_ring_resumed_from_its_state_goes_on_where_it_stopped() {
    let m = page();
    let mut front = FrontRing::<Test>::init(small(&m)).unwrap();
    push(&mut front, 0, 3);
    let state = {
        let mut back = BackRing::<Test>::attach(small(&m)).unwrap();
        assert_eq!(back.unconsumed_requests().unwrap(), 3);
        let r = back.copy_request().unwrap().unwrap();
        back.write_response(&rsp(num(&r))).unwrap();
        back.push_responses_and_check_notify().unwrap();
        back.copy_request().unwrap().unwrap();
        back.state()
    };
    // A pass later, over a fresh borrow: one request answered, one taken.
    let mut back = BackRing::<Test>::resume(small(&m), state).unwrap();
    assert_eq!(
        (back.req_cons(), back.rsp_prod_pvt(), back.unanswered()),
        (2, 1, 1)
    );
    back.write_response(&rsp(1)).unwrap();
    assert_eq!(num(&back.copy_request().unwrap().unwrap()), 2);
    back.write_response(&rsp(2)).unwrap();
    back.push_responses_and_check_notify().unwrap();
    assert_eq!(front.unconsumed_responses().unwrap(), 3);
    for want in 0..3 {
        assert_eq!(num(&front.copy_response().unwrap().unwrap()), want);
    }
    // A broken ring stays broken across passes.
    small(&m).store_u32(REQ_PROD, 1000).unwrap();
    let mut back = BackRing::<Test>::resume(small(&m), back.state()).unwrap();
    assert!(back.unconsumed_requests().is_err());
    let back = BackRing::<Test>::resume(small(&m), back.state()).unwrap();
    assert!(back.broken().is_some());
}

#[test]
fn a_front_ring_resumed_from_its_state_goes_on_where_it_stopped() {
    let m = page();
    let state = {
        let mut front = FrontRing::<Test>::init(small(&m)).unwrap();
        push(&mut front, 0, 2);
        front.state()
    };
    let mut back = BackRing::<Test>::attach(small(&m)).unwrap();
    assert_eq!(back.unconsumed_requests().unwrap(), 2);
    let r = back.copy_request().unwrap().unwrap();
    back.write_response(&rsp(num(&r))).unwrap();
    back.push_responses_and_check_notify().unwrap();
    // A call later, over a fresh borrow: the next request goes after the
    // first two, and the response is there to take.
    let mut front = FrontRing::<Test>::resume(small(&m), state).unwrap();
    assert_eq!((front.req_prod_pvt(), front.rsp_cons()), (2, 0));
    push(&mut front, 2, 1);
    assert_eq!(back.unconsumed_requests().unwrap(), 2);
    assert_eq!(front.unconsumed_responses().unwrap(), 1);
    assert_eq!(num(&front.copy_response().unwrap().unwrap()), 0);
    // A broken ring stays broken across calls.
    small(&m).store_u32(RSP_PROD, 1000).unwrap();
    let mut front = FrontRing::<Test>::resume(small(&m), front.state()).unwrap();
    assert!(front.unconsumed_responses().is_err());
    let mut front = FrontRing::<Test>::resume(small(&m), front.state()).unwrap();
    assert!(front.copy_response().is_err());
}
