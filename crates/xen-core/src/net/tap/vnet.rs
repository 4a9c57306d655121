//! The virtio-net header in front of every frame on a TAP device
//! (`struct virtio_net_hdr`, in the host's byte order as legacy virtio
//! has it), and what it means for a [`Packet`]'s offloads.
//!
//! From the kernel: a frame whose checksum is left to do
//! (`NEEDS_CSUM`) at the TCP or UDP checksum field becomes
//! `csum_blank`, as netback turns a partial checksum into
//! `NETRXF_csum_blank`; one left to do anywhere else (a VLAN tag, IPv6
//! extension headers), which a netif flag cannot describe, is completed
//! here. TCP segmentation becomes [`Gso`]; UDP's has no netif GSO type,
//! and such a frame is dropped (the kernel is not asked for it anyway).
//!
//! To the kernel: a blank checksum becomes `NEEDS_CSUM` with where the
//! transport header and its checksum field are. The field is given the
//! pseudo-header's sum first, which is what the kernel (or the NIC a
//! bridged frame leaves by) starts from: Linux guests leave that sum
//! there, other guests nothing, and their frames would leave with a
//! wrong checksum.

use crate::net::checksum::{self, add, fold};
use crate::net::packet::{Gso, GsoKind, Offload, Packet};

/// `sizeof(struct virtio_net_hdr)`: no `num_buffers`, as asked with
/// `TUNSETVNETHDRSZ`.
pub(super) const VNET_HDR_LEN: usize = 10;

/// The checksum from `csum_start` to the end is left to do, its result
/// going at `csum_start + csum_offset`.
pub(super) const F_NEEDS_CSUM: u8 = 1;
/// The checksum was checked already.
pub(super) const F_DATA_VALID: u8 = 2;
pub(super) const GSO_NONE: u8 = 0;
pub(super) const GSO_TCPV4: u8 = 1;
pub(super) const GSO_UDP: u8 = 3;
pub(super) const GSO_TCPV6: u8 = 4;
/// With a TCP type: the segments carry the CWR flag as the first did.
pub(super) const GSO_ECN: u8 = 0x80;

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;

/// `struct virtio_net_hdr`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct VnetHdr {
    pub(super) flags: u8,
    pub(super) gso_type: u8,
    /// The headers' length (a hint for the kernel's linear part).
    pub(super) hdr_len: u16,
    pub(super) gso_size: u16,
    pub(super) csum_start: u16,
    pub(super) csum_offset: u16,
}

impl VnetHdr {
    pub(super) fn decode(b: &[u8; VNET_HDR_LEN]) -> VnetHdr {
        let h = |at: usize| u16::from_ne_bytes([b[at], b[at + 1]]);
        VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: h(2),
            gso_size: h(4),
            csum_start: h(6),
            csum_offset: h(8),
        }
    }

    pub(super) fn encode(&self) -> [u8; VNET_HDR_LEN] {
        let mut b = [0u8; VNET_HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        let words = [
            self.hdr_len,
            self.gso_size,
            self.csum_start,
            self.csum_offset,
        ];
        for (i, w) in words.iter().enumerate() {
            b[2 + 2 * i..4 + 2 * i].copy_from_slice(&w.to_ne_bytes());
        }
        b
    }
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// Where a TCP or UDP checksum field is, from the transport header.
fn field_offset(proto: u8) -> Option<u16> {
    match proto {
        PROTO_TCP => Some(16),
        PROTO_UDP => Some(6),
        _ => None,
    }
}

/// The offloads of a frame read from the device; `None` if it cannot go
/// to a guest (it is dropped). A checksum left to do where `csum_blank`
/// cannot say is completed in `frame`.
pub(super) fn offload_from_kernel(hdr: &VnetHdr, frame: &mut [u8]) -> Option<Offload> {
    let kind = match hdr.gso_type & !GSO_ECN {
        GSO_NONE => None,
        GSO_TCPV4 => Some(GsoKind::TcpV4),
        GSO_TCPV6 => Some(GsoKind::TcpV6),
        // UDP fragmentation (and whatever comes later): no netif GSO type
        // carries it.
        GSO_UDP => return None,
        _ => return None,
    };
    let gso = match kind {
        Some(_) if hdr.gso_size == 0 => return None,
        Some(kind) => Some(Gso {
            size: hdr.gso_size,
            kind,
        }),
        None => None,
    };
    let mut offload = Offload {
        csum_blank: false,
        data_validated: hdr.flags & F_DATA_VALID != 0,
        gso,
    };
    if hdr.flags & F_NEEDS_CSUM != 0 {
        let at = (usize::from(hdr.csum_start), hdr.csum_offset);
        let blank_field = checksum::l4_offsets(frame)
            .ok()
            .and_then(|(start, proto)| Some((start, field_offset(proto)?)));
        if blank_field == Some(at) {
            offload.csum_blank = true;
        } else if gso.is_some() {
            // Segments' checksums are computed as they are cut: a GSO
            // frame's must stay to do, where a guest can find it.
            return None;
        } else {
            complete(frame, at.0, usize::from(at.1))?;
            offload.data_validated = true;
        }
    }
    Some(offload)
}

/// Does what `NEEDS_CSUM` leaves to do, as the kernel's
/// `skb_checksum_help`: the sum from `start` to the end (the field holds
/// the pseudo-header's sum already) goes, complemented, into the field at
/// `start + offset`. False if the field is not in the frame.
pub(super) fn complete(frame: &mut [u8], start: usize, offset: usize) -> Option<()> {
    let field = start.checked_add(offset)?;
    if field.checked_add(2)? > frame.len() {
        return None;
    }
    // A computed zero is sent as all ones: the same in ones' complement,
    // and what UDP needs (zero there means "no checksum").
    let c = match !fold(add(0, &frame[start..])) {
        0 => 0xffff,
        c => c,
    };
    frame[field..field + 2].copy_from_slice(&c.to_be_bytes());
    Some(())
}

/// The header to write a guest's packet with; `None` if it cannot be
/// written (it is dropped, as netback drops one whose checksum it cannot
/// set up). May put the pseudo-header's sum in the checksum field, or
/// fill the checksum.
pub(super) fn header_for_kernel(packet: &mut Packet) -> Option<VnetHdr> {
    let Offload {
        csum_blank, gso, ..
    } = packet.offload;
    if !csum_blank && gso.is_none() {
        return Some(VnetHdr::default());
    }
    let frame = &mut packet.data;
    let found = checksum::l4_offsets(frame)
        .ok()
        .and_then(|(start, proto)| Some((start, proto, field_offset(proto)?)));
    let Some((start, proto, offset)) = found else {
        // No TCP or UDP header where `fill` can find one either, today;
        // filled if it ever can, else dropped. A GSO packet cannot be
        // sent without one.
        if gso.is_some() {
            return None;
        }
        checksum::fill(frame).ok()?;
        return Some(VnetHdr::default());
    };
    let field = start + usize::from(offset);
    if field + 2 > frame.len() {
        return None;
    }
    // Both fit a u16: `l4_offsets` found them in a frame of at most 64 KiB.
    let mut hdr = VnetHdr {
        flags: F_NEEDS_CSUM,
        csum_start: start as u16,
        csum_offset: offset,
        ..VnetHdr::default()
    };
    if let Some(g) = gso {
        // The segmentation the frame asks for must be the one it is: the
        // kernel would otherwise drop it further on, uncounted here.
        let (gso_type, ethertype) = match g.kind {
            GsoKind::TcpV4 => (GSO_TCPV4, ETHERTYPE_IPV4),
            GsoKind::TcpV6 => (GSO_TCPV6, ETHERTYPE_IPV6),
        };
        if proto != PROTO_TCP || be16(frame, 12) != Some(ethertype) || g.size == 0 {
            return None;
        }
        let tcp_len = usize::from(frame.get(start + 12)? >> 4) * 4;
        if tcp_len < 20 || start + tcp_len > frame.len() {
            return None;
        }
        hdr.gso_type = gso_type;
        hdr.gso_size = g.size;
        hdr.hdr_len = (start + tcp_len) as u16;
    }
    let seed = pseudo_header_sum(frame, start, proto)?;
    frame[field..field + 2].copy_from_slice(&seed.to_be_bytes());
    Some(hdr)
}

/// The pseudo-header's sum (folded, not complemented) of the segment at
/// `start`: addresses, protocol and the segment's length, as the kernel
/// leaves it in the field of a partial checksum (for a GSO packet, the
/// whole packet's length, which segmentation adjusts for each segment).
fn pseudo_header_sum(frame: &[u8], start: usize, proto: u8) -> Option<u16> {
    let (addresses, end) = match be16(frame, 12)? {
        ETHERTYPE_IPV4 => (frame.get(26..34)?, 14 + usize::from(be16(frame, 16)?)),
        ETHERTYPE_IPV6 => (frame.get(22..54)?, 54 + usize::from(be16(frame, 18)?)),
        _ => return None,
    };
    let len = end.checked_sub(start)?;
    Some(fold(add(u64::from(proto) + len as u64, addresses)))
}
