//! The virtio-net header's conversions, on frames built by hand: no
//! kernel needed. What the kernel does with a partial checksum is
//! [`vnet::complete`], as its `skb_checksum_help`.

use super::frames::*;
use super::vnet::*;
use crate::net::checksum;
use crate::net::{Gso, GsoKind, Offload, Packet};

const V6_SRC: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
const V6_DST: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

fn udp4_frame(field: u16) -> Vec<u8> {
    let mut segment = udp(4000, 53, b"a datagram of odd length");
    segment[6..8].copy_from_slice(&field.to_be_bytes());
    ethernet(
        [2; 6],
        GUEST_MAC,
        0x0800,
        &ipv4(GUEST_IP, HOST_IP, PROTO_UDP, &segment),
    )
}

fn tcp4_frame(options: usize, len: usize) -> Vec<u8> {
    let segment = tcp(40000, 80, options, &vec![0x5a; len]);
    ethernet(
        [2; 6],
        GUEST_MAC,
        0x0800,
        &ipv4(GUEST_IP, HOST_IP, PROTO_TCP, &segment),
    )
}

fn tcp6_frame(len: usize) -> Vec<u8> {
    let segment = tcp(40000, 80, 0, &vec![0xa5; len]);
    ethernet(
        [2; 6],
        GUEST_MAC,
        0x86dd,
        &ipv6(V6_SRC, V6_DST, PROTO_TCP, &segment),
    )
}

fn blank(data: Vec<u8>) -> Packet {
    Packet {
        data,
        offload: Offload {
            csum_blank: true,
            ..Offload::default()
        },
    }
}

fn gso(data: Vec<u8>, kind: GsoKind, size: u16) -> Packet {
    let mut p = blank(data);
    p.offload.gso = Some(Gso { size, kind });
    p
}

#[test]
fn the_header_is_ten_bytes_in_the_hosts_order() {
    let h = VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: GSO_TCPV6,
        hdr_len: 0x0102,
        gso_size: 1440,
        csum_start: 54,
        csum_offset: 16,
    };
    let b = h.encode();
    assert_eq!(b.len(), VNET_HDR_LEN);
    assert_eq!(&b[2..4], &0x0102u16.to_ne_bytes());
    assert_eq!(VnetHdr::decode(&b), h);
}

#[test]
fn a_blank_checksum_goes_to_the_kernel_from_the_pseudo_headers_sum() {
    // Whatever the guest left in the field, the kernel's completion of
    // the partial checksum is right.
    let mut finished = Vec::new();
    for garbage in [0, 0xdead, 0xffff] {
        let mut p = blank(udp4_frame(garbage));
        let h = header_for_kernel(&mut p).unwrap();
        assert_eq!(
            (h.flags, h.csum_start, h.csum_offset),
            (F_NEEDS_CSUM, 34, 6)
        );
        assert_eq!((h.gso_type, h.gso_size), (GSO_NONE, 0));
        complete(&mut p.data, 34, 6).unwrap();
        assert!(checksum::verify(&p.data).unwrap());
        finished.push(p.data);
    }
    assert!(finished.windows(2).all(|w| w[0] == w[1]));
    // TCP over IPv6 too.
    let mut p = blank(tcp6_frame(1001));
    let h = header_for_kernel(&mut p).unwrap();
    assert_eq!(
        (h.flags, h.csum_start, h.csum_offset),
        (F_NEEDS_CSUM, 54, 16)
    );
    complete(&mut p.data, 54, 16).unwrap();
    assert!(checksum::verify(&p.data).unwrap());
}

#[test]
fn gso_packets_carry_their_segmentation_to_the_kernel() {
    let mut p = gso(tcp4_frame(12, 30_000), GsoKind::TcpV4, 1448);
    let h = header_for_kernel(&mut p).unwrap();
    assert_eq!(
        (h.gso_type, h.gso_size, h.hdr_len),
        (GSO_TCPV4, 1448, 14 + 20 + 32)
    );
    assert_eq!(
        (h.flags, h.csum_start, h.csum_offset),
        (F_NEEDS_CSUM, 34, 16)
    );
    // The field holds the pseudo-header's sum over the whole length,
    // which segmentation adjusts per segment: completed whole, it is the
    // whole packet's checksum.
    complete(&mut p.data, 34, 16).unwrap();
    assert!(checksum::verify(&p.data).unwrap());
    let mut p = gso(tcp6_frame(20_000), GsoKind::TcpV6, 1428);
    let h = header_for_kernel(&mut p).unwrap();
    assert_eq!(
        (h.gso_type, h.gso_size, h.hdr_len),
        (GSO_TCPV6, 1428, 54 + 20)
    );
    // A GSO packet that is not what it says it is, or is no TCP, or has
    // no size, is dropped; so is one no header can be found in.
    let wrong = [
        gso(tcp4_frame(0, 5000), GsoKind::TcpV6, 1448),
        gso(tcp6_frame(5000), GsoKind::TcpV4, 1448),
        gso(udp4_frame(0), GsoKind::TcpV4, 1448),
        gso(tcp4_frame(0, 5000), GsoKind::TcpV4, 0),
        gso(tcp4_frame(0, 5000)[..40].to_vec(), GsoKind::TcpV4, 1448),
    ];
    for (i, mut p) in wrong.into_iter().enumerate() {
        assert_eq!(header_for_kernel(&mut p), None, "case {i}");
    }
    // A guest's GSO packet without csum_blank is still partial for the
    // kernel, as netback fixes it up.
    let mut p = gso(tcp4_frame(0, 5000), GsoKind::TcpV4, 1448);
    p.offload.csum_blank = false;
    assert_eq!(header_for_kernel(&mut p).unwrap().flags, F_NEEDS_CSUM);
}

#[test]
fn packets_with_nothing_to_do_or_nowhere_to_do_it() {
    let frame = udp4_frame(0x1234);
    let mut plain = Packet::new(frame.clone());
    assert_eq!(header_for_kernel(&mut plain), Some(VnetHdr::default()));
    assert_eq!(plain.data, frame, "untouched");
    // Blank, but no TCP or UDP header to be found: dropped.
    let arp_frame = ethernet(
        [0xff; 6],
        GUEST_MAC,
        0x0806,
        &arp(1, GUEST_MAC, GUEST_IP, [0; 6], HOST_IP),
    );
    let icmp_frame = ethernet(
        [2; 6],
        GUEST_MAC,
        0x0800,
        &ipv4(GUEST_IP, HOST_IP, PROTO_ICMP, &icmp_echo(8, 1, 1, b"x")),
    );
    for f in [arp_frame, icmp_frame] {
        assert_eq!(header_for_kernel(&mut blank(f)), None);
    }
}

fn needs_csum(start: u16, offset: u16) -> VnetHdr {
    VnetHdr {
        flags: F_NEEDS_CSUM,
        csum_start: start,
        csum_offset: offset,
        ..VnetHdr::default()
    }
}

#[test]
fn frames_from_the_kernel_keep_what_a_guest_can_take() {
    // A partial checksum where a guest finds it: blank.
    let mut f = udp4_frame(0);
    let o = offload_from_kernel(&needs_csum(34, 6), &mut f).unwrap();
    assert_eq!(
        o,
        Offload {
            csum_blank: true,
            data_validated: false,
            gso: None
        }
    );
    let valid = VnetHdr {
        flags: F_DATA_VALID,
        ..VnetHdr::default()
    };
    assert!(offload_from_kernel(&valid, &mut f).unwrap().data_validated);
    // TCP segmentation, the ECN bit or not.
    let mut f = tcp4_frame(0, 9000);
    for gso_type in [GSO_TCPV4, GSO_TCPV4 | GSO_ECN] {
        let h = VnetHdr {
            gso_type,
            gso_size: 1448,
            ..needs_csum(34, 16)
        };
        let o = offload_from_kernel(&h, &mut f).unwrap();
        let want = Gso {
            size: 1448,
            kind: GsoKind::TcpV4,
        };
        assert_eq!((o.gso, o.csum_blank), (Some(want), true));
    }
    let mut f6 = tcp6_frame(9000);
    let h = VnetHdr {
        gso_type: GSO_TCPV6,
        gso_size: 1428,
        ..needs_csum(54, 16)
    };
    let kind = offload_from_kernel(&h, &mut f6)
        .unwrap()
        .gso
        .map(|g| g.kind);
    assert_eq!(kind, Some(GsoKind::TcpV6));
    // What no guest can take: UDP segmentation, a size of zero, an
    // unknown type, a field past the frame's end.
    for h in [
        VnetHdr {
            gso_type: GSO_UDP,
            gso_size: 1400,
            ..needs_csum(34, 6)
        },
        VnetHdr {
            gso_type: GSO_TCPV4,
            gso_size: 0,
            ..needs_csum(34, 16)
        },
        VnetHdr {
            gso_type: 5,
            gso_size: 1400,
            ..VnetHdr::default()
        },
        needs_csum(34, 60_000),
    ] {
        assert_eq!(offload_from_kernel(&h, &mut f), None, "{h:?}");
    }
}

#[test]
fn a_partial_checksum_a_guest_cannot_find_is_completed_here() {
    // A VLAN-tagged UDP frame: the field is 4 bytes further than a guest
    // looks. The kernel left the pseudo-header's sum in it.
    let mut untagged = blank(udp4_frame(0));
    header_for_kernel(&mut untagged).unwrap();
    let mut tagged = untagged.data[..12].to_vec();
    tagged.extend_from_slice(&[0x81, 0x00, 0x00, 0x05]);
    tagged.extend_from_slice(&untagged.data[12..]);
    let o = offload_from_kernel(&needs_csum(38, 6), &mut tagged).unwrap();
    assert_eq!((o.csum_blank, o.data_validated), (false, true));
    let mut stripped = tagged[..12].to_vec();
    stripped.extend_from_slice(&tagged[16..]);
    assert!(checksum::verify(&stripped).unwrap());
    // A GSO frame's checksum cannot be completed whole: dropped.
    let h = VnetHdr {
        gso_type: GSO_TCPV4,
        gso_size: 1448,
        ..needs_csum(38, 16)
    };
    assert_eq!(offload_from_kernel(&h, &mut tagged), None);
}
