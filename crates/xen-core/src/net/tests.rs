//! Vif queues against simulated netfronts on a simulated host: guests
//! exchanging packets through the in-process switch, offloads, receive
//! buffers running out, and what hostile frontends get. Nothing sleeps:
//! the frontends block on their ports, and reports arrive on channels.

use std::sync::mpsc::{channel, Receiver};
use std::sync::Arc;
use std::time::Duration;

use super::frontend::{NetFrontOptions, SimNetFront};
use super::switch::{PacketSink, Switch};
use super::*;
use crate::platform::sim::{SimHost, SimHypervisor};
use crate::platform::{DomId, Platform};
use crate::ring::netif::{Extra, ExtraInfo, NETIF_RSP_ERROR, NETTXF_EXTRA_INFO, NETTXF_MORE_DATA};

pub(super) const BACK: DomId = 0;
pub(super) const A: DomId = 5;
pub(super) const B: DomId = 6;
const C: DomId = 7;
/// A guard against a hang, far beyond what any step takes.
pub(super) const WAIT: Duration = Duration::from_secs(30);

pub(super) struct World {
    _hv: SimHypervisor,
    pub(super) host: SimHost,
    pub(super) platform: Arc<Platform>,
    pub(super) switch: Switch,
}

pub(super) fn world() -> World {
    let (hv, host) = crate::testutil::sim_host(&[BACK, A, B, C]);
    let platform = Arc::new(Platform::simulated(&host, BACK).unwrap());
    World {
        _hv: hv,
        host,
        platform,
        switch: Switch::new(),
    }
}

struct Guest {
    front: SimNetFront,
    vif: VifQueue,
    events: Receiver<VifEvent>,
}

pub(super) fn mac(domid: DomId) -> [u8; 6] {
    [0x00, 0x16, 0x3e, 0, 0, domid as u8]
}

/// A frame from `src` to `dst` of `len` bytes, its payload numbered by `seq`.
pub(super) fn frame(dst: [u8; 6], src: [u8; 6], seq: u32, len: usize) -> Packet {
    let mut d = Vec::with_capacity(len);
    d.extend_from_slice(&dst);
    d.extend_from_slice(&src);
    d.extend_from_slice(&[0x88, 0xb5]);
    d.extend_from_slice(&seq.to_be_bytes());
    d.extend((d.len()..len).map(|i| (i as u32 ^ seq) as u8));
    d.truncate(len);
    Packet::new(d)
}

fn guest_with(
    w: &World,
    domid: DomId,
    front: NetFrontOptions,
    features: VifFeatures,
    rx_queue: usize,
) -> Guest {
    let evtchn = Arc::new(w.host.evtchn(domid).unwrap());
    let f = SimNetFront::new(w.host.gnttab(domid).unwrap(), evtchn, BACK, front).unwrap();
    let port = w.switch.add_port();
    let handle = port.handle();
    let (tx, events) = channel();
    let config = VifConfig {
        frontend: domid,
        tx_ring_ref: f.tx_ring_ref(),
        rx_ring_ref: f.rx_ring_ref(),
        tx_port: f.tx_port(),
        rx_port: (f.rx_port() != f.tx_port()).then(|| f.rx_port()),
        features,
        rx_queue,
    };
    let vif = VifQueue::start(
        &w.platform,
        &config,
        Box::new(port),
        Box::new(move |e| {
            let _ = tx.send(e);
        }),
    )
    .unwrap();
    handle.connect(Arc::new(vif.receiver()));
    Guest {
        front: f,
        vif,
        events,
    }
}

fn guest(w: &World, domid: DomId) -> Guest {
    guest_with(
        w,
        domid,
        NetFrontOptions::default(),
        VifFeatures::default(),
        DEFAULT_RX_QUEUE,
    )
}

fn recv(g: &mut Guest) -> Packet {
    match g.front.recv(WAIT).unwrap() {
        Some(p) => p,
        None => panic!(
            "no packet within the guard: vif {:?}, front {:?}, events {:?}",
            g.vif.stats(),
            g.front.stats(),
            g.events.try_iter().collect::<Vec<_>>()
        ),
    }
}

#[test]
fn two_guests_exchange_packets_through_the_switch() {
    let w = world();
    let mut a = guest(&w, A);
    let mut b = guest(&w, B);
    // A broadcasts (B's address is not learnt yet); B answers A alone.
    let hello = frame([0xff; 6], mac(A), 0, 60);
    a.front.send(&hello).unwrap();
    assert_eq!(recv(&mut b), hello);
    let reply = frame(mac(A), mac(B), 1, 98);
    b.front.send(&reply).unwrap();
    assert_eq!(recv(&mut a), reply);
    assert_eq!(
        (w.switch.port_of(mac(A)), w.switch.port_of(mac(B))),
        (Some(0), Some(1))
    );
    // A bulk transfer of every size from a runt's to a jumbo frame's,
    // scatter-gather across pages included, in order and intact.
    let sizes = [60usize, 61, 1514, 4095, 4096, 4097, 9000, 20_000, 65_535];
    let sent: Vec<Packet> = (0..300)
        .map(|i| frame(mac(B), mac(A), 10 + i, sizes[i as usize % sizes.len()]))
        .collect();
    for chunk in sent.chunks(37) {
        a.front.send_many(chunk).unwrap();
    }
    for p in &sent {
        assert_eq!(&recv(&mut b), p);
    }
    a.front.wait_tx_done().unwrap();
    let bytes: u64 = sent.iter().map(|p| p.data.len() as u64).sum::<u64>();
    let (sa, sb) = (a.vif.stats(), b.vif.stats());
    assert_eq!(
        (sa.tx_packets, sa.tx_bytes, sa.tx_errors),
        (302 - 1, bytes + 60, 0)
    );
    assert_eq!(
        (sb.rx_packets, sb.rx_bytes, sb.rx_dropped),
        (301, bytes + 60, 0)
    );
    assert_eq!(a.front.stats().tx_errors, 0);
    assert!(a.events.try_recv().is_err() && b.events.try_recv().is_err());
}

#[test]
fn offloads_travel_to_a_guest_that_takes_them_and_are_done_for_one_that_does_not() {
    let w = world();
    let mut a = guest(&w, A);
    let mut b = guest(&w, B);
    let no_offload = VifFeatures {
        csum_offload: false,
        gso_tcpv4: false,
        gso_tcpv6: false,
        ..VifFeatures::default()
    };
    let mut c = guest_with(
        &w,
        C,
        NetFrontOptions::default(),
        no_offload,
        DEFAULT_RX_QUEUE,
    );
    // All three learnt, so that frames are switched, not flooded.
    a.front.send(&frame([0xff; 6], mac(A), 0, 60)).unwrap();
    recv(&mut b);
    recv(&mut c);
    b.front.send(&frame(mac(A), mac(B), 0, 60)).unwrap();
    c.front.send(&frame(mac(A), mac(C), 0, 60)).unwrap();
    recv(&mut a);
    recv(&mut a);
    // A UDP datagram with its checksum left blank.
    let mut blank = Packet::new(crate::net::checksum::udp4_frame(&[7u8; 300]));
    blank.offload.csum_blank = true;
    for dst in [B, C] {
        let mut p = blank.clone();
        p.data[..6].copy_from_slice(&mac(dst));
        p.data[6..12].copy_from_slice(&mac(A));
        a.front.send(&p).unwrap();
    }
    let at_b = recv(&mut b);
    assert!(
        at_b.offload.csum_blank && at_b.offload.data_validated,
        "B takes it blank: {:?} {:?}",
        at_b.offload,
        &at_b.data[..20]
    );
    assert!(!crate::net::checksum::verify(&at_b.data).unwrap());
    let at_c = recv(&mut c);
    assert!(!at_c.offload.csum_blank && at_c.offload.data_validated);
    assert!(
        crate::net::checksum::verify(&at_c.data).unwrap(),
        "filled for C"
    );
    assert_eq!(c.vif.stats().csum_filled, 1);
    // A TCP GSO packet keeps its segmentation for B; C takes none, so it
    // gets the segments, each complete and checked, as Linux would cut
    // them; a GSO packet that is no TCP cannot be cut and is dropped.
    let gso = Gso {
        size: 1448,
        kind: GsoKind::TcpV4,
    };
    let payload: Vec<u8> = (0..30_000u32).map(|i| (i % 253) as u8).collect();
    for dst in [B, C] {
        let mut p = Packet::new(crate::net::gso::tcp4_frame(&payload));
        p.data[..6].copy_from_slice(&mac(dst));
        p.data[6..12].copy_from_slice(&mac(A));
        p.offload = Offload {
            csum_blank: true,
            data_validated: true,
            gso: Some(gso),
        };
        a.front.send(&p).unwrap();
    }
    let big = recv(&mut b);
    assert_eq!((big.data.len(), big.offload.gso), (54 + 30_000, Some(gso)));
    let mut joined = Vec::new();
    while joined.len() < payload.len() {
        let s = recv(&mut c);
        assert!(s.offload.gso.is_none() && s.data.len() <= 54 + 1448);
        assert!(crate::net::checksum::verify(&s.data).unwrap());
        joined.extend_from_slice(&s.data[54..]);
    }
    assert_eq!(joined, payload);
    assert_eq!(c.vif.stats().gso_segmented, 1);
    let mut not_tcp = frame(mac(C), mac(A), 7, 30_000);
    not_tcp.offload.gso = Some(gso);
    a.front.send(&not_tcp).unwrap();
    a.front.wait_tx_done().unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    while c.vif.stats().rx_dropped < 1 && std::time::Instant::now() < deadline {
        std::thread::yield_now();
    }
    assert_eq!(c.vif.stats().rx_dropped, 1);
}

#[test]
fn split_event_channels_carry_each_ring_on_its_own_port() {
    let w = world();
    let split = NetFrontOptions {
        split_event_channels: true,
        ..NetFrontOptions::default()
    };
    let mut a = guest_with(
        &w,
        A,
        split.clone(),
        VifFeatures::default(),
        DEFAULT_RX_QUEUE,
    );
    let mut b = guest_with(&w, B, split, VifFeatures::default(), DEFAULT_RX_QUEUE);
    assert_ne!(a.front.tx_port(), a.front.rx_port());
    assert_eq!(a.vif.local_ports().len(), 2);
    for i in 0..50 {
        let p = frame(mac(B), mac(A), i, 1000);
        a.front.send(&p).unwrap();
        assert_eq!(recv(&mut b), p);
        let q = frame(mac(A), mac(B), i, 200);
        b.front.send(&q).unwrap();
        assert_eq!(recv(&mut a), q);
    }
}

#[test]
fn packets_wait_for_a_guests_buffers_and_a_full_queue_drops_and_counts() {
    let w = world();
    let few = NetFrontOptions {
        rx_buffers: Some(4),
        ..NetFrontOptions::default()
    };
    let mut a = guest(&w, A);
    let mut b = guest_with(&w, B, few.clone(), VifFeatures::default(), 100);
    // B's address learnt; then 12 frames at once, with 4 buffers posted:
    // 4 go in, 8 wait, and come as B reads (and posts its buffers again).
    b.front.send(&frame([0xff; 6], mac(B), 0, 60)).unwrap();
    recv(&mut a);
    let sent: Vec<Packet> = (1..=12).map(|i| frame(mac(B), mac(A), i, 500)).collect();
    a.front.send_many(&sent).unwrap();
    let got: Vec<Packet> = (0..12).map(|_| recv(&mut b)).collect();
    assert_eq!(got, sent);
    assert_eq!(b.vif.stats().rx_dropped, 0);
    // A queue of 3: of 12 arriving together, 3 are kept, 9 dropped and
    // counted; the sender is never held up.
    let mut c = guest_with(&w, C, few, VifFeatures::default(), 3);
    c.front.send(&frame([0xff; 6], mac(C), 0, 60)).unwrap();
    recv(&mut a);
    let sent: Vec<Packet> = (1..=12).map(|i| frame(mac(C), mac(A), i, 500)).collect();
    a.front.send_many(&sent).unwrap();
    a.front.wait_tx_done().unwrap();
    let got: Vec<Packet> = (0..3).map(|_| recv(&mut c)).collect();
    assert_eq!(got, sent[..3].to_vec());
    assert_eq!(c.vif.stats().rx_dropped, 9);
    // And it goes on.
    let late = frame(mac(C), mac(A), 99, 60);
    a.front.send(&late).unwrap();
    assert_eq!(recv(&mut c), late);
}

/// A hostile guest's vif fails or refuses, as netback's does; a second
/// guest's traffic flows through it all.
struct Bystanders {
    c: Guest,
    b: Guest,
    seq: u32,
}

impl Bystanders {
    /// C's frame reaches B (past whatever else B was sent).
    fn still_served(&mut self) {
        self.seq += 1;
        let p = frame(mac(B), mac(C), self.seq, 1500);
        self.c.front.send(&p).unwrap();
        loop {
            let got = recv(&mut self.b);
            if got.source() == Some(mac(C)) {
                assert_eq!(got, p);
                return;
            }
        }
    }
}

fn bystanders(w: &World) -> Bystanders {
    let mut b = guest(w, B);
    let mut c = guest(w, C);
    b.front.send(&frame([0xff; 6], mac(B), 0, 60)).unwrap();
    recv(&mut c);
    Bystanders { c, b, seq: 0 }
}

use super::tx::tests::req as slot;

fn failed(g: &Guest) -> String {
    match g.events.recv_timeout(WAIT).expect("a report") {
        VifEvent::Failed(why) => why,
        other => panic!("not a failure: {other:?}"),
    }
}

fn refused(g: &Guest) -> String {
    match g
        .events
        .recv_timeout(WAIT)
        .unwrap_or_else(|_| panic!("no report: {:?}", g.vif.stats()))
    {
        VifEvent::Refused(why) => why,
        other => panic!("not a refusal: {other:?}"),
    }
}

#[test]
fn merely_wrong_packets_are_answered_with_errors_and_the_vif_goes_on() {
    let w = world();
    let mut by = bystanders(&w);
    let mut a = guest(&w, A);
    let page = a.front.grant_data(&[0xab; 4096]).unwrap();
    // Sizes that do not add up; a first fragment shorter than a header.
    a.front
        .push_raw_tx(&[
            slot(page, 0, 100, NETTXF_MORE_DATA, 1),
            slot(page, 0, 200, 0, 2),
        ])
        .unwrap();
    assert!(refused(&a).contains("larger than the packet"));
    a.front.push_raw_tx(&[slot(page, 0, 10, 0, 3)]).unwrap();
    assert!(refused(&a).contains("Ethernet header"));
    // A grant reference the guest never made, and one it made for another guest.
    a.front.push_raw_tx(&[slot(9999, 0, 60, 0, 4)]).unwrap();
    assert!(refused(&a).contains("could not be copied"));
    let gnttab = w.host.gnttab(A).unwrap();
    let page_frame = gnttab.alloc_page().unwrap();
    let foreign = crate::platform::GrantTable::grant(&*gnttab, C, page_frame, true).unwrap();
    a.front.push_raw_tx(&[slot(foreign, 0, 60, 0, 5)]).unwrap();
    assert!(refused(&a).contains("could not be copied"));
    a.front.wait_tx_done().unwrap();
    let statuses = a.front.tx_statuses();
    assert_eq!(
        statuses.iter().filter(|s| **s == NETIF_RSP_ERROR).count(),
        5,
        "{statuses:?}"
    );
    assert_eq!(a.vif.stats().tx_errors, 4);
    by.still_served();
    // The vif still serves A.
    let ok = frame(mac(B), mac(A), 1, 100);
    a.front.send(&ok).unwrap();
    assert_eq!(recv(&mut by.b), ok);
}

#[test]
fn a_ring_no_correct_frontend_writes_fails_that_vif_only() {
    let w = world();
    let mut by = bystanders(&w);
    // A chain longer than any packet.
    let mut a = guest(&w, A);
    let page = a.front.grant_data(&[0; 4096]).unwrap();
    let chain: Vec<_> = (0..30)
        .map(|i| slot(page, 0, 100, NETTXF_MORE_DATA, i))
        .collect();
    a.front.push_raw_tx(&chain).unwrap();
    assert!(failed(&a).contains("more than 20 slots"));
    by.still_served();
    // Failed, it takes nothing more and drops what comes for it.
    assert!(a.vif.receiver().is_closed());
    drop(a);
    // An extra-info slot of an unknown type.
    let mut a = guest(&w, A);
    let page = a.front.grant_data(&[0; 4096]).unwrap();
    let bad = ExtraInfo {
        flags: 0,
        extra: Extra::Other {
            extra_type: 9,
            data: [0; 6],
        },
    };
    a.front
        .push_raw_tx(&[slot(page, 0, 60, NETTXF_EXTRA_INFO, 1), bad.to_tx_slot()])
        .unwrap();
    assert!(failed(&a).contains("unknown type"));
    drop(a);
    // req_prod more than a ring ahead of what was consumed.
    let mut a = guest(&w, A);
    a.front.set_tx_req_prod(100_000).unwrap();
    assert!(failed(&a).contains("transmit ring"));
    drop(a);
    by.still_served();
}

#[test]
fn a_frontend_that_vanishes_mid_transfer_leaves_the_others_served() {
    let w = world();
    let mut by = bystanders(&w);
    let mut a = guest(&w, A);
    let sent: Vec<Packet> = (0..100).map(|i| frame(mac(B), mac(A), i, 3000)).collect();
    a.front.send_many(&sent).unwrap();
    a.front.abandon();
    by.still_served();
    a.vif.stop();
    // Stopped twice is stopped.
    a.vif.stop();
    by.still_served();
}

#[test]
fn a_flooding_guest_does_not_starve_another() {
    let w = world();
    let mut by = bystanders(&w);
    let mut a = guest(&w, A);
    // Nobody has A's target address: every frame is flooded to B and C,
    // whose queues fill and drop.
    let flood: Vec<Packet> = (0..2000)
        .map(|i| frame([0x02, 0, 0, 0, 0, 9], mac(A), i, 1500))
        .collect();
    for chunk in flood.chunks(200) {
        if let Err(e) = a.front.send_many(chunk) {
            panic!(
                "{e}: vif {:?} front {:?} in flight {} events {:?}",
                a.vif.stats(),
                a.front.stats(),
                a.front.tx_in_flight(),
                a.events.try_iter().collect::<Vec<_>>()
            );
        }
        by.still_served();
    }
    a.front.wait_tx_done().unwrap();
    assert_eq!(a.vif.stats().tx_packets, 2000);
    assert!(a.vif.stats().budget_yields > 0);
}

/// A sink that takes whatever the switch gives, for the pure switch path.
#[derive(Default)]
struct Count(std::sync::atomic::AtomicUsize);

impl PacketSink for Count {
    fn deliver(&self, packets: Vec<Packet>) {
        self.0
            .fetch_add(packets.len(), std::sync::atomic::Ordering::Relaxed);
    }
}

#[test]
fn a_stopped_vif_drops_what_comes_for_it() {
    let w = world();
    let mut a = guest(&w, A);
    let b = guest(&w, B);
    let extra = w.switch.add_port();
    let seen = Arc::new(Count::default());
    extra.connect(seen.clone());
    b.vif.stop();
    assert!(b.vif.receiver().is_closed());
    assert_eq!(b.vif.receiver().deliver([frame(mac(B), mac(A), 0, 60)]), 0);
    a.front.send(&frame([0xff; 6], mac(A), 1, 60)).unwrap();
    a.front.wait_tx_done().unwrap();
    assert_eq!(seen.0.load(std::sync::atomic::Ordering::Relaxed), 1);
}

#[test]
fn guests_driven_on_their_own_threads_send_while_they_receive() {
    use super::frontend::NetFrontDriver;
    let w = world();
    let a = guest(&w, A);
    let b = guest(&w, B);
    let (to_a, at_a) = channel::<Vec<Packet>>();
    let (to_b, at_b) = channel::<Vec<Packet>>();
    let da = NetFrontDriver::spawn(a.front, Box::new(move |p| drop(to_a.send(p)))).unwrap();
    let db = NetFrontDriver::spawn(b.front, Box::new(move |p| drop(to_b.send(p)))).unwrap();
    let take = |rx: &Receiver<Vec<Packet>>, n: usize| -> Vec<Packet> {
        let mut got = Vec::new();
        while got.len() < n {
            got.extend(rx.recv_timeout(WAIT).expect("packets within the guard"));
        }
        got
    };
    // Both ways at once, more than a ring's worth each: neither side's
    // sending waits for its receiving.
    let ab: Vec<Packet> = (0..600)
        .map(|i| frame(mac(B), mac(A), i, 60 + (i as usize * 37) % 9000))
        .collect();
    let ba: Vec<Packet> = (0..600)
        .map(|i| frame(mac(A), mac(B), i, 60 + (i as usize * 53) % 9000))
        .collect();
    da.send(vec![frame([0xff; 6], mac(A), 0, 60)]).unwrap();
    db.send(vec![frame([0xff; 6], mac(B), 0, 60)]).unwrap();
    take(&at_a, 1);
    take(&at_b, 1);
    da.send(ab.clone()).unwrap();
    db.send(ba.clone()).unwrap();
    assert_eq!(take(&at_b, 600), ab);
    assert_eq!(take(&at_a, 600), ba);
    // A packet the features refuse is refused at once.
    assert!(matches!(
        da.send(vec![Packet::new(Vec::new())]),
        Err(super::frontend::NetFrontError::BadArgument(_))
    ));
    assert_eq!(da.fault(), None);
    // The backend lets the rings go first; then every grant ends.
    a.vif.stop();
    b.vif.stop();
    da.close().unwrap();
    db.close().unwrap();
    assert!(matches!(
        da.send(vec![frame(mac(B), mac(A), 1, 60)]),
        Err(super::frontend::NetFrontError::Closed)
    ));
}

#[test]
fn receive_buffers_with_bogus_references_lose_their_packets_not_the_vif() {
    let w = world();
    let mut by = bystanders(&w);
    let none = NetFrontOptions {
        rx_buffers: Some(0),
        ..NetFrontOptions::default()
    };
    let mut a = guest_with(&w, A, none, VifFeatures::default(), DEFAULT_RX_QUEUE);
    // Buffers the guest never granted, with ids no request had.
    let bogus: Vec<crate::ring::netif::RxRequest> = (0..3)
        .map(|i| crate::ring::netif::RxRequest {
            id: 60_000 + i,
            gref: 70_000 + u32::from(i),
        })
        .collect();
    a.front.push_raw_rx(&bogus).unwrap();
    let taken = a
        .vif
        .receiver()
        .deliver((0..3).map(|i| frame(mac(A), mac(B), i, 1500)));
    assert_eq!(taken, 3);
    // Each packet is answered with an error in its buffer's slot and counted.
    let deadline = std::time::Instant::now() + WAIT;
    while a.vif.stats().rx_dropped < 3 && std::time::Instant::now() < deadline {
        std::thread::yield_now();
    }
    assert_eq!((a.vif.stats().rx_dropped, a.vif.stats().rx_packets), (3, 0));
    assert!(a.events.try_recv().is_err(), "the vif did not fail");
    by.still_served();
}
