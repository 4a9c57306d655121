//! The judging of transmitted packets, slot by slot, against netback's rules.

use super::*;
use crate::ring::netif::{
    NETTXF_EXTRA_INFO, NETTXF_MORE_DATA, TX_REQUEST_SIZE, XEN_NETIF_EXTRA_FLAG_MORE,
};

/// A transmit slot as a frontend writes it (for the vif's tests too).
pub(crate) fn req(gref: u32, offset: u16, size: u16, flags: u16, id: u16) -> [u8; TX_REQUEST_SIZE] {
    TxRequest {
        gref,
        offset,
        flags,
        id,
        size,
    }
    .encode()
}

fn extra(extra: Extra, more: bool) -> [u8; TX_REQUEST_SIZE] {
    ExtraInfo {
        flags: if more { XEN_NETIF_EXTRA_FLAG_MORE } else { 0 },
        extra,
    }
    .to_tx_slot()
}

fn judge_slots(slots: &[[u8; TX_REQUEST_SIZE]], gso: bool) -> Judged {
    judge(|i| slots.get(i as usize).copied(), gso)
}

fn packet(j: Judged) -> TxPacket {
    match j {
        Judged::Packet(p) => p,
        Judged::Fatal(why) => panic!("fatal: {why}"),
    }
}

fn fatal(j: Judged) -> String {
    match j {
        Judged::Fatal(why) => why,
        Judged::Packet(p) => panic!("not fatal: {p:?}"),
    }
}

#[test]
fn a_one_slot_frame_is_one_fragment_of_its_size() {
    let p = packet(judge_slots(&[req(7, 100, 60, NETTXF_CSUM_BLANK, 3)], false));
    assert_eq!(p.slots, 1);
    assert_eq!(p.len, 60);
    assert_eq!(
        p.fragments,
        vec![Fragment {
            gref: 7,
            offset: 100,
            len: 60,
            id: 3
        }]
    );
    assert!(p.offload.csum_blank && p.offload.data_validated);
    assert_eq!(p.refused, None);
}

#[test]
fn a_chain_gives_the_first_slot_what_the_others_leave() {
    let slots = [
        req(1, 0, 9000, NETTXF_MORE_DATA | NETTXF_DATA_VALIDATED, 1),
        req(2, 0, 4096, NETTXF_MORE_DATA, 2),
        req(3, 0, 808, 0, 3),
        // The next packet's: not taken.
        req(9, 0, 60, 0, 9),
    ];
    let p = packet(judge_slots(&slots, false));
    assert_eq!(p.slots, 3);
    let lens: Vec<u16> = p.fragments.iter().map(|f| f.len).collect();
    assert_eq!(lens, [4096, 4096, 808]);
    assert_eq!(p.len, 9000);
    assert!(!p.offload.csum_blank && p.offload.data_validated);
}

#[test]
fn gso_and_multicast_extras_are_read_and_answered_as_extra_slots() {
    let slots = [
        req(1, 0, 4000, NETTXF_EXTRA_INFO, 10),
        extra(
            Extra::Gso {
                size: 1448,
                gso_type: XEN_NETIF_GSO_TYPE_TCPV6,
                features: 0,
            },
            true,
        ),
        extra(Extra::McastAdd([1, 0, 0x5e, 0, 0, 1]), false),
    ];
    let p = packet(judge_slots(&slots, true));
    assert_eq!(p.slots, 3);
    assert_eq!(
        p.offload.gso,
        Some(Gso {
            size: 1448,
            kind: GsoKind::TcpV6
        })
    );
    assert_eq!(p.extra_ids.len(), 2);
    assert_eq!(p.mcast, vec![Extra::McastAdd([1, 0, 0x5e, 0, 0, 1])]);
    assert_eq!(p.refused, None);
    // Not offered: answered with an error, the vif goes on.
    let p = packet(judge_slots(&slots, false));
    assert!(p.refused.unwrap().contains("GSO"));
}

#[test]
fn merely_wrong_packets_are_refused_and_their_slots_taken() {
    // Fragments adding up to more than the packet.
    let p = packet(judge_slots(
        &[req(1, 0, 100, NETTXF_MORE_DATA, 1), req(2, 0, 200, 0, 2)],
        false,
    ));
    assert_eq!(p.slots, 2);
    assert!(p.refused.unwrap().contains("larger than the packet"));
    // A first fragment shorter than an Ethernet header.
    let p = packet(judge_slots(&[req(1, 0, 13, 0, 1)], false));
    assert!(p.refused.unwrap().contains("Ethernet header"));
    // More data slots than we take, fewer than a broken frontend's.
    let mut slots = vec![req(1, 0, 19 * 100, NETTXF_MORE_DATA, 0)];
    slots.extend((1..19).map(|i| req(1, 0, 100, if i < 18 { NETTXF_MORE_DATA } else { 0 }, i)));
    let p = packet(judge_slots(&slots, false));
    assert_eq!(p.slots, 19);
    assert!(p.refused.unwrap().contains("19 data slots"));
}

#[test]
fn a_ring_no_correct_frontend_writes_fails_the_vif() {
    // The chain runs past what was pushed.
    assert!(
        fatal(judge_slots(&[req(1, 0, 100, NETTXF_MORE_DATA, 1)], false)).contains("past what")
    );
    // An announced extra-info slot is missing.
    assert!(fatal(judge_slots(&[req(1, 0, 100, NETTXF_EXTRA_INFO, 1)], false)).contains("missing"));
    // An extra-info slot of no known type (0, and 5 and up).
    for ty in [0u8, 5, 200] {
        let slots = [
            req(1, 0, 100, NETTXF_EXTRA_INFO, 1),
            extra(
                Extra::Other {
                    extra_type: ty,
                    data: [0; 6],
                },
                false,
            ),
        ];
        assert!(fatal(judge_slots(&slots, true)).contains("unknown type"));
    }
    // A zero GSO size, a GSO type we do not know.
    for (size, ty) in [(0u16, XEN_NETIF_GSO_TYPE_TCPV4), (1448, 7)] {
        let slots = [
            req(1, 0, 100, NETTXF_EXTRA_INFO, 1),
            extra(
                Extra::Gso {
                    size,
                    gso_type: ty,
                    features: 0,
                },
                false,
            ),
        ];
        assert!(fatal(judge_slots(&slots, true)).contains("GSO"));
    }
    // A fragment crossing its page; a first fragment crossing its page.
    let slots = [req(1, 0, 200, NETTXF_MORE_DATA, 1), req(2, 4000, 100, 0, 2)];
    assert!(fatal(judge_slots(&slots, false)).contains("crosses its page"));
    assert!(fatal(judge_slots(&[req(1, 4090, 60, 0, 1)], false)).contains("crosses its page"));
    // A chain longer than any packet: a broken frontend.
    let slots: Vec<_> = (0..40)
        .map(|i| req(1, 0, 100, NETTXF_MORE_DATA, i))
        .collect();
    assert!(fatal(judge_slots(&slots, false)).contains("more than 20 slots"));
}
