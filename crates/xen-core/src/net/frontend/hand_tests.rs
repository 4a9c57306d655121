//! The simulated netfront against dom0 driving its rings by hand, step by
//! step: which port each ring signals, raw slots and their answers, a
//! bogus index, a guest that vanishes.

use super::test_backend::*;
use super::*;
use crate::platform::sim::SimHost;
use crate::platform::{CopySegment, CopySide, GntSt, GrantMapper, GrantMapping};
use crate::ring::shared::BackRing;

/// A frontend and dom0's mappings of its rings, served by hand in the test.
fn by_hand(host: &SimHost) -> (SimNetFront, GrantMapping, GrantMapping) {
    let front = front(host, NetFrontOptions::default());
    let gntdev = host.gntdev(BACK);
    let tx = gntdev.map(GUEST, &[front.tx_ring_ref()], true).unwrap();
    let rx = gntdev.map(GUEST, &[front.rx_ring_ref()], true).unwrap();
    (front, tx, rx)
}

/// Writes and pushes transmit responses.
fn answer(ring: &mut BackRing<'_, NetifTx>, rsps: &[(u16, i16)]) {
    for &(id, status) in rsps {
        ring.write_response(&TxResponse { id, status }.encode())
            .unwrap();
    }
    ring.push_responses_and_check_notify().unwrap();
}

#[test]
fn split_channels_signal_each_ring_on_its_own_port() {
    let (_hv, host) = host();
    let options = NetFrontOptions {
        split_event_channels: true,
        ..NetFrontOptions::default()
    };
    let mut front = front(&host, options);
    let gntdev = host.gntdev(BACK);
    let tx_map = gntdev.map(GUEST, &[front.tx_ring_ref()], true).unwrap();
    let rx_map = gntdev.map(GUEST, &[front.rx_ring_ref()], true).unwrap();
    let evtchn = host.evtchn(BACK).unwrap();
    let ltx = evtchn.bind_interdomain(GUEST, front.tx_port()).unwrap();
    let lrx = evtchn.bind_interdomain(GUEST, front.rx_port()).unwrap();
    let mut tx = BackRing::<NetifTx>::attach(tx_map.mem()).unwrap();
    let mut rx = BackRing::<NetifRx>::attach(rx_map.mem()).unwrap();
    // A packet out: an event on the transmit port only.
    let packet = Packet::new(frame(100, 1));
    front.send(&packet).unwrap();
    assert!(wait_readable(evtchn.fd(), Some(WAIT)).unwrap());
    assert_eq!(drain(&evtchn), [ltx]);
    tx.unconsumed_requests().unwrap();
    let id = TxRequest::decode(&tx.copy_request().unwrap().unwrap()).id;
    answer(&mut tx, &[(id, NETIF_RSP_OKAY)]);
    front.wait_tx_done().unwrap();
    // Take every buffer and fill one: the frontend posts it again, which
    // signals the receive port only.
    assert_eq!(rx.unconsumed_requests().unwrap(), 256);
    let raw = rx.copy_request().unwrap().unwrap();
    while rx.copy_request().unwrap().is_some() {}
    assert!(!rx.final_check_for_requests().unwrap(), "asks for the next");
    let req = RxRequest::decode(&raw);
    let from = CopySide::From(&packet.data);
    let mut c = [CopySegment::new(from, grant(req.gref, 0), 100)];
    gntdev.copy(&mut c).unwrap();
    let (id, offset, flags, status) = (req.id, 0, 0, 100);
    let rsp = RxResponse {
        id,
        offset,
        flags,
        status,
    };
    rx.write_response(&rsp.encode()).unwrap();
    assert!(rx.push_responses_and_check_notify().unwrap());
    evtchn.notify(lrx).unwrap();
    assert_eq!(front.recv(WAIT).unwrap(), Some(packet));
    assert!(wait_readable(evtchn.fd(), Some(WAIT)).unwrap());
    assert_eq!(drain(&evtchn), [lrx]);
    drop((tx_map, rx_map));
    front.close().unwrap();
}

#[test]
fn raw_slots_reach_the_backend_verbatim_and_any_answer_is_taken() {
    let (_hv, host) = host();
    let (mut front, map, _rx) = by_hand(&host);
    let mut ring = BackRing::<NetifTx>::attach(map.mem()).unwrap();
    let gref = front.grant_data(&frame(100, 5)).unwrap();
    let bogus = TxRequest {
        gref,
        offset: 4090,
        flags: NETTXF_MORE_DATA,
        id: 77,
        size: 100,
    };
    let raw = [bogus.encode(), [0xa5; TX_REQUEST_SIZE]];
    front.push_raw_tx(&raw).unwrap();
    assert_eq!(ring.unconsumed_requests().unwrap(), 2);
    let got = [ring.copy_request().unwrap(), ring.copy_request().unwrap()];
    assert_eq!(got, raw.map(Some));
    let mut page = [0u8; PAGE_SIZE];
    let mut c = [CopySegment::new(
        grant(gref, 0),
        CopySide::Into(&mut page),
        100,
    )];
    host.gntdev(BACK).copy(&mut c).unwrap();
    assert_eq!(
        (c[0].status, &page[..100]),
        (GntSt::Okay, &frame(100, 5)[..])
    );
    // One answer names the slot, the other any id.
    answer(
        &mut ring,
        &[(77, NETIF_RSP_ERROR), (4242, NETIF_RSP_DROPPED)],
    );
    front.wait_tx_done().unwrap();
    assert_eq!(front.tx_statuses(), [NETIF_RSP_ERROR, NETIF_RSP_DROPPED]);
    assert_eq!(front.stats(), NetFrontStats::default(), "counted nowhere");
    // A packet still goes out, and an answer nobody awaits is a fault.
    front.send(&Packet::new(frame(60, 6))).unwrap();
    ring.unconsumed_requests().unwrap();
    let id = TxRequest::decode(&ring.copy_request().unwrap().unwrap()).id;
    answer(&mut ring, &[(id, NETIF_RSP_OKAY)]);
    front.wait_tx_done().unwrap();
    ring.unconsumed_requests().unwrap();
    front.send(&Packet::new(frame(60, 7))).unwrap();
    ring.unconsumed_requests().unwrap();
    ring.copy_request().unwrap().unwrap();
    answer(&mut ring, &[(id ^ 0x100, NETIF_RSP_OKAY)]);
    let e = front.wait_tx_done();
    assert!(matches!(e, Err(NetFrontError::Backend(_))), "{e:?}");
    drop((map, _rx));
    front.close().unwrap();
}

#[test]
fn a_bogus_req_prod_is_what_the_backend_reads() {
    let (_hv, host) = host();
    let (mut front, map, _rx) = by_hand(&host);
    let evtchn = host.evtchn(BACK).unwrap();
    evtchn.bind_interdomain(GUEST, front.tx_port()).unwrap();
    let mut ring = BackRing::<NetifTx>::attach(map.mem()).unwrap();
    front.set_tx_req_prod(1000).unwrap();
    assert!(wait_readable(evtchn.fd(), Some(WAIT)).unwrap(), "notified");
    assert_eq!(drain(&evtchn).len(), 1);
    let e = ring.unconsumed_requests().unwrap_err();
    assert!(matches!(
        e,
        SharedRingError::BogusRequestProducer { req_prod: 1000, .. }
    ));
    drop((map, _rx));
}

#[test]
fn an_abandoning_guest_leaves_its_grants_until_close() {
    let (_hv, host) = host();
    let gt = host.gnttab(GUEST).unwrap();
    let before = free_pages(&gt);
    let (mut front, map, rx) = by_hand(&host);
    let mut ring = BackRing::<NetifTx>::attach(map.mem()).unwrap();
    front.send(&Packet::new(frame(1000, 8))).unwrap();
    ring.unconsumed_requests().unwrap();
    let gref = TxRequest::decode(&ring.copy_request().unwrap().unwrap()).gref;
    front.abandon();
    assert!(matches!(
        front.send(&Packet::new(frame(60, 9))),
        Err(NetFrontError::Closed)
    ));
    assert!(matches!(front.recv(WAIT), Err(NetFrontError::Closed)));
    // The backend can still finish its copy.
    let mut page = [0u8; PAGE_SIZE];
    let mut c = [CopySegment::new(
        grant(gref, 0),
        CopySide::Into(&mut page),
        1000,
    )];
    host.gntdev(BACK).copy(&mut c).unwrap();
    assert_eq!(c[0].status, GntSt::Okay);
    // The rings are still mapped: their grants last until the backend
    // lets go.
    let e = front.close();
    assert!(matches!(e, Err(NetFrontError::Grant(GrantError::InUse(_)))));
    drop((map, rx));
    front.close().unwrap();
    assert_eq!(free_pages(&gt), before);
    assert_eq!(gt.entry_flags(gref), Some(0));
}
