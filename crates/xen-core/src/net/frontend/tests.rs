//! The simulated netfront against a tiny loopback vif
//! (`test_backend.rs`): dom0 maps both rings through its platform's
//! gntdev, copies each packet out of the guest with grant copies and back
//! into its receive buffers. No test sleeps: each side blocks on its
//! events, and timeouts only guard against hangs. Tests that drive the
//! rings by hand are in `hand_tests.rs`.

use super::test_backend::*;
use super::*;

fn slot(raw: &[u8; TX_REQUEST_SIZE]) -> TxRequest {
    TxRequest::decode(raw)
}

fn recv_all(front: &mut SimNetFront, n: usize) -> Vec<Packet> {
    let next = |_| {
        front
            .recv(WAIT)
            .unwrap()
            .expect("a packet within the guard")
    };
    (0..n).map(next).collect()
}

fn gso_packet(len: usize, seed: u8, kind: GsoKind) -> Packet {
    let gso = Some(Gso { size: 1448, kind });
    let offload = Offload {
        csum_blank: true,
        data_validated: true,
        gso,
    };
    let data = frame(len, seed);
    Packet { data, offload }
}

#[test]
fn small_packets_round_trip_one_slot_each() {
    let (_hv, host) = host();
    let (mut front, backend) = pair(&host, NetFrontOptions::default(), SERVE);
    let sizes = [60, 1514, PAGE_SIZE];
    let packets: Vec<Packet> = (0..3)
        .map(|i| Packet::new(frame(sizes[i], i as u8)))
        .collect();
    front.send(&packets[0]).unwrap();
    front.send_many(&packets[1..]).unwrap();
    assert_eq!(recv_all(&mut front, 3), packets);
    front.wait_tx_done().unwrap();
    assert_eq!(front.tx_in_flight(), 0);
    let bytes = sizes.iter().sum::<usize>() as u64;
    let stats = front.stats();
    assert_eq!(
        (stats.tx_packets, stats.tx_bytes, stats.tx_errors),
        (3, bytes, 0)
    );
    assert_eq!(
        (stats.rx_packets, stats.rx_bytes, stats.rx_errors),
        (3, bytes, 0)
    );
    let seen = backend.stop(&mut front);
    let slots: Vec<TxRequest> = seen.slots.iter().map(slot).collect();
    assert_eq!(slots.len(), 3);
    for (s, len) in slots.iter().zip(sizes) {
        assert_eq!((s.offset, s.flags, usize::from(s.size)), (0, 0, len));
    }
    assert!(slots[0].id != slots[1].id && slots[1].id != slots[2].id);
    assert!(front.tx_statuses().is_empty());
    front.close().unwrap();
}

#[test]
fn a_9000_byte_packet_spans_three_slots_and_comes_back_whole() {
    let (_hv, host) = host();
    let (mut front, backend) = pair(&host, NetFrontOptions::default(), SERVE);
    let jumbo = Packet::new(frame(9000, 7));
    front.send(&jumbo).unwrap();
    assert_eq!(front.recv(WAIT).unwrap().as_ref(), Some(&jumbo));
    front.wait_tx_done().unwrap();
    let seen = backend.stop(&mut front);
    let slots: Vec<TxRequest> = seen.slots.iter().map(slot).collect();
    let shape: Vec<(u16, u16)> = slots.iter().map(|s| (s.size, s.flags)).collect();
    // The first slot carries the whole packet's size, later ones their own.
    let more = NETTXF_MORE_DATA;
    assert_eq!(shape, [(9000, more), (4096, more), (808, 0)]);
    let mut ids: Vec<u16> = slots.iter().map(|s| s.id).collect();
    ids.dedup();
    assert_eq!(ids.len(), 3, "one id per slot");
    assert_eq!(front.stats().rx_bytes, 9000);
    front.close().unwrap();
}

#[test]
fn a_gso_packet_sends_its_extra_slot_and_takes_its_null_answer() {
    let (_hv, host) = host();
    let (mut front, backend) = pair(&host, NetFrontOptions::default(), SERVE);
    let v4 = gso_packet(3000, 1, GsoKind::TcpV4);
    let v6 = gso_packet(6000, 2, GsoKind::TcpV6);
    front.send_many(&[v4.clone(), v6.clone()]).unwrap();
    front.wait_tx_done().unwrap();
    assert!(
        front.tx_statuses().is_empty(),
        "the NULL answers are no error"
    );
    assert_eq!(front.stats().tx_errors, 0);
    // Back with their GSO extra on the receive ring, and their checksum
    // state.
    assert_eq!(recv_all(&mut front, 2), [v4, v6.clone()]);
    let seen = backend.stop(&mut front);
    assert_eq!(seen.slots.len(), 2 + 3);
    let first = slot(&seen.slots[2]);
    let flags = NETTXF_CSUM_BLANK | NETTXF_DATA_VALIDATED | NETTXF_MORE_DATA | NETTXF_EXTRA_INFO;
    assert_eq!((first.size, first.flags), (6000, flags));
    let extra = ExtraInfo::from_tx_slot(&seen.slots[3]);
    let gso = Extra::Gso {
        size: 1448,
        gso_type: XEN_NETIF_GSO_TYPE_TCPV6,
        features: 0,
    };
    assert_eq!((extra.flags, extra.extra), (0, gso));
    let last = slot(&seen.slots[4]);
    assert_eq!((last.size, last.flags), (6000 - 4096, 0));
    assert_eq!(seen.packets[1], v6);
    front.close().unwrap();
}

#[test]
fn checksum_offload_flags_go_out_and_come_back() {
    let (_hv, host) = host();
    let (mut front, backend) = pair(&host, NetFrontOptions::default(), SERVE);
    let with = |csum_blank, data_validated| Packet {
        data: frame(100, 3),
        offload: Offload {
            csum_blank,
            data_validated,
            gso: None,
        },
    };
    let sent = [with(true, false), with(false, true), with(false, false)];
    front.send_many(&sent).unwrap();
    let got: Vec<Offload> = recv_all(&mut front, 3).iter().map(|p| p.offload).collect();
    // A blank checksum is also validated, as netfront and netback say.
    let back = [with(true, true), with(false, true), with(false, false)];
    assert_eq!(got, back.map(|p| p.offload));
    let seen = backend.stop(&mut front);
    let flags: Vec<u16> = seen.slots.iter().map(|s| slot(s).flags).collect();
    let blank = NETTXF_CSUM_BLANK | NETTXF_DATA_VALIDATED;
    assert_eq!(flags, [blank, NETTXF_DATA_VALIDATED, 0]);
    front.close().unwrap();
}

#[test]
fn more_packets_than_slots_wait_for_room_on_a_full_ring() {
    let (_hv, host) = host();
    let (mut front, backend) = pair(&host, NetFrontOptions::default(), SERVE);
    let packets: Vec<Packet> = (0..600)
        .map(|i| Packet::new(frame(60 + i % 40, i as u8)))
        .collect();
    front.send_many(&packets).unwrap();
    front.wait_tx_done().unwrap();
    assert_eq!(recv_all(&mut front, 600), packets);
    let stats = front.stats();
    assert_eq!((stats.tx_packets, stats.rx_packets), (600, 600));
    let seen = backend.stop(&mut front);
    assert_eq!(seen.most, 256, "the first push filled the ring");
    assert_eq!(seen.packets, packets);
    front.close().unwrap();
}

#[test]
fn few_buffers_on_split_channels_still_carry_every_packet() {
    let (_hv, host) = host();
    let options = NetFrontOptions {
        split_event_channels: true,
        rx_buffers: Some(4),
        ..NetFrontOptions::default()
    };
    let (mut front, backend) = pair(&host, options, SERVE);
    assert_ne!(front.tx_port(), front.rx_port());
    // Three buffers per packet, four posted: each packet waits for the
    // buffers of the one before to be posted again.
    let packets: Vec<Packet> = (0..20).map(|i| Packet::new(frame(9000, i))).collect();
    front.send_many(&packets).unwrap();
    assert_eq!(recv_all(&mut front, 20), packets);
    let seen = backend.stop(&mut front);
    assert_ne!(seen.ports.0, seen.ports.1);
    front.close().unwrap();
}

#[test]
fn packets_the_features_do_not_allow_are_refused_before_anything_is_granted() {
    fn shareable<T: Send + Sync>() {}
    shareable::<SimNetFront>();
    let (_hv, host) = host();
    let gt = host.gnttab(GUEST).unwrap();
    let options = NetFrontOptions {
        sg: false,
        gso: false,
        ..NetFrontOptions::default()
    };
    let mut front = front(&host, options);
    let before = free_pages(&gt);
    let refused = [
        Packet::new(frame(PAGE_SIZE + 1, 1)),
        gso_packet(1000, 2, GsoKind::TcpV4),
        Packet::new(Vec::new()),
    ];
    for p in &refused {
        let e = front.send(p);
        assert!(matches!(e, Err(NetFrontError::BadArgument(_))), "{e:?}");
    }
    // A batch with one bad packet writes none of them.
    let batch = [Packet::new(frame(60, 3)), refused[0].clone()];
    assert!(front.send_many(&batch).is_err());
    assert_eq!((front.tx_in_flight(), free_pages(&gt)), (0, before));
    let mut front = self::front(&host, NetFrontOptions::default());
    let e = front.send(&Packet::new(vec![0; MAX_PACKET + 1]));
    assert!(matches!(e, Err(NetFrontError::BadArgument(_))), "{e:?}");
    let zero = Some(Gso {
        size: 0,
        kind: GsoKind::TcpV4,
    });
    let mut p = Packet::new(frame(100, 4));
    p.offload.gso = zero;
    assert!(matches!(front.send(&p), Err(NetFrontError::BadArgument(_))));
}

#[test]
fn close_returns_every_page_and_grant() {
    let (_hv, host) = host();
    let gt = host.gnttab(GUEST).unwrap();
    let before = free_pages(&gt);
    let (mut front, backend) = pair(&host, NetFrontOptions::default(), SERVE);
    assert_eq!(free_pages(&gt), before - 2 - 256, "two rings, 256 buffers");
    let packets = [
        Packet::new(frame(9000, 1)),
        gso_packet(5000, 2, GsoKind::TcpV4),
    ];
    front.send_many(&packets).unwrap();
    front.wait_tx_done().unwrap();
    assert_eq!(recv_all(&mut front, 2), packets);
    assert_eq!(free_pages(&gt), before - 2 - 256, "no data page left");
    let seen = backend.stop(&mut front);
    // Slot 4 is the GSO packet's extra-info slot.
    let data = seen.slots.iter().enumerate().filter(|(i, _)| *i != 4);
    let mut grefs: Vec<GrantRef> = data.map(|(_, s)| slot(s).gref).collect();
    grefs.extend([front.tx_ring_ref(), front.rx_ring_ref()]);
    front.close().unwrap();
    assert_eq!(free_pages(&gt), before);
    for g in grefs {
        assert_eq!(gt.entry_flags(g), Some(0), "grant {g} ended");
    }
    front.close().unwrap();
    assert!(matches!(
        front.send(&packets[0]),
        Err(NetFrontError::Closed)
    ));
}

#[test]
fn error_statuses_count_and_drop_packets() {
    let (_hv, host) = host();
    let policy = Policy {
        tx_status: |p| (p.data[14] == 0xee).then_some(NETIF_RSP_ERROR),
        rx_status: |p| (p.data[14] == 0xdd).then_some(NETIF_RSP_ERROR),
        ..SERVE
    };
    let (mut front, backend) = pair(&host, NetFrontOptions::default(), policy);
    let marked = |len, mark| {
        let mut data = frame(len, 9);
        data[14] = mark;
        Packet::new(data)
    };
    let good = marked(200, 0);
    front
        .send_many(&[marked(9000, 0xee), marked(100, 0xdd), good.clone()])
        .unwrap();
    front.wait_tx_done().unwrap();
    assert_eq!(
        front.tx_statuses(),
        [NETIF_RSP_ERROR; 3],
        "one per data slot"
    );
    assert_eq!(front.tx_statuses(), [], "drained");
    // The first packet was not looped back, the second dropped on receipt.
    assert_eq!(front.recv(WAIT).unwrap(), Some(good));
    let stats = front.stats();
    assert_eq!((stats.tx_packets, stats.tx_errors), (3, 1));
    assert_eq!((stats.rx_packets, stats.rx_errors), (1, 1));
    backend.stop(&mut front);
    front.close().unwrap();
}

#[test]
fn a_backend_that_garbles_receive_responses_breaks_the_frontend() {
    let (_hv, host) = host();
    let wrong_id: fn(&mut RxResponse) = |r| r.id ^= 1;
    let past_page: fn(&mut RxResponse) = |r| r.offset = 4000;
    for corrupt_rx in [wrong_id, past_page] {
        let policy = Policy {
            corrupt_rx,
            ..SERVE
        };
        let (mut front, backend) = pair(&host, NetFrontOptions::default(), policy);
        front.send(&Packet::new(frame(500, 1))).unwrap();
        let Err(NetFrontError::Backend(fault)) = front.recv(WAIT) else {
            panic!("the garbled response must break the frontend");
        };
        let again = front.send(&Packet::new(frame(60, 2)));
        assert!(
            matches!(&again, Err(NetFrontError::Backend(f)) if *f == fault),
            "{again:?}"
        );
        assert_eq!(front.try_recv(), None);
        backend.stop(&mut front);
        front.close().unwrap();
    }
}

#[test]
fn waits_end_at_their_timeout_without_a_backend() {
    let (_hv, host) = host();
    let options = NetFrontOptions {
        timeout: Duration::ZERO,
        ..NetFrontOptions::default()
    };
    let mut front = front(&host, options);
    assert_eq!(front.recv(Duration::ZERO).unwrap(), None);
    assert_eq!(front.try_recv(), None);
    front.wait_tx_done().unwrap();
    front.send(&Packet::new(frame(60, 1))).unwrap();
    assert_eq!(front.tx_in_flight(), 1);
    assert!(matches!(front.wait_tx_done(), Err(NetFrontError::Timeout)));
    front.close().unwrap();
}
