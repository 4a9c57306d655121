//! Judging one transmitted packet: its slots, copied out of the ring once
//! each, checked as netback checks them, before a byte of data is copied.
//!
//! A packet is a first slot (whose `size` is the whole packet's), the
//! extra-info slots its `NETTXF_extra_info` announces, then the fragments
//! `NETTXF_more_data` chains. As netback, two kinds of bad packets are
//! told apart:
//! - a packet that is merely wrong (more fragments than we take, sizes
//!   that do not add up, a first fragment shorter than an Ethernet
//!   header) is answered with `NETIF_RSP_ERROR` and dropped; the vif
//!   goes on;
//! - a ring no correct frontend writes (a chain running past what was
//!   pushed, a fragment crossing its page, an extra-info slot of no known
//!   type, a zero GSO size, far too many slots) fails the vif, as
//!   netback's `fatal_tx_err` disables it: the guest can no longer be
//!   trusted to keep its ring in order.

use super::packet::{Gso, GsoKind, Offload, ETH_HLEN};
use crate::platform::abi::PAGE_SIZE;
use crate::ring::netif::{
    Extra, ExtraInfo, TxRequest, NETTXF_CSUM_BLANK, NETTXF_DATA_VALIDATED,
    XEN_NETIF_EXTRA_TYPE_MAX, XEN_NETIF_EXTRA_TYPE_NONE, XEN_NETIF_GSO_TYPE_TCPV4,
    XEN_NETIF_GSO_TYPE_TCPV6, XEN_NETIF_NR_SLOTS_MIN,
};

/// Data slots per packet we take (netback's `max_skb_slots` default,
/// `XEN_NETBK_LEGACY_SLOTS_MAX`): more is an error for that packet.
pub const MAX_SLOTS: usize = XEN_NETIF_NR_SLOTS_MIN;

/// Data slots beyond which a chain is no packet at all but a broken
/// frontend (netback's `fatal_skb_slots` default).
pub const FATAL_SLOTS: usize = 20;

/// One fragment to copy out of the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fragment {
    /// The page's grant reference.
    pub gref: u32,
    /// Where the data starts in it.
    pub offset: u16,
    /// How much.
    pub len: u16,
    /// The slot's id, echoed in its response.
    pub id: u16,
}

/// A judged packet: the slots it took and what to do with them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxPacket {
    /// Ring slots the packet takes, extra-info slots included.
    pub slots: u32,
    /// The data fragments, in order (the first slot's own data first).
    pub fragments: Vec<Fragment>,
    /// Ids of the extra-info slots (answered `NETIF_RSP_NULL`).
    pub extra_ids: Vec<u16>,
    /// The whole frame's length.
    pub len: usize,
    /// Checksum and segmentation state.
    pub offload: Offload,
    /// Multicast addresses the guest subscribed to or left (kept by
    /// whoever filters multicast; we forward every group frame).
    pub mcast: Vec<Extra>,
    /// Set when the packet is to be answered with an error and dropped.
    pub refused: Option<String>,
}

/// The verdict on the slots at the ring's head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Judged {
    /// A packet, to serve or (when [`TxPacket::refused`]) to answer with
    /// an error.
    Packet(TxPacket),
    /// The frontend broke the protocol: the vif is to fail.
    Fatal(String),
}

/// Judges the packet whose first slot is at the ring's head. `slot(i)`
/// gives a private copy of the `i`-th slot from the head, `None` past
/// what the frontend pushed; `gso_offered` says whether we offered GSO.
pub fn judge(
    mut slot: impl FnMut(u32) -> Option<[u8; crate::ring::netif::TX_REQUEST_SIZE]>,
    gso_offered: bool,
) -> Judged {
    let Some(raw) = slot(0) else {
        return Judged::Fatal("no slot to judge".into());
    };
    let first = TxRequest::decode(&raw);
    let mut at = 1u32;
    let mut offload = Offload {
        csum_blank: first.flags & NETTXF_CSUM_BLANK != 0,
        data_validated: first.flags & (NETTXF_DATA_VALIDATED | NETTXF_CSUM_BLANK) != 0,
        gso: None,
    };
    let mut extra_ids = Vec::new();
    let mut mcast = Vec::new();
    let mut refused: Option<String> = None;
    // The extra-info slots: each of a known type, the chain ended by a
    // slot without XEN_NETIF_EXTRA_FLAG_MORE.
    // A type given twice is taken as its last, as netback takes it.
    let mut more_extras = first.extra_info();
    while more_extras {
        let Some(raw) = slot(at) else {
            return Judged::Fatal("an extra-info slot is missing".into());
        };
        let extra = ExtraInfo::from_tx_slot(&raw);
        extra_ids.push(TxRequest::decode(&raw).id);
        at += 1;
        let ty = extra.extra_type();
        if ty == XEN_NETIF_EXTRA_TYPE_NONE || ty >= XEN_NETIF_EXTRA_TYPE_MAX {
            return Judged::Fatal(format!("extra-info slot of unknown type {ty}"));
        }
        match extra.extra {
            Extra::Gso { size, gso_type, .. } => {
                if size == 0 {
                    return Judged::Fatal("GSO size must not be zero".into());
                }
                let kind = match gso_type {
                    XEN_NETIF_GSO_TYPE_TCPV4 => GsoKind::TcpV4,
                    XEN_NETIF_GSO_TYPE_TCPV6 => GsoKind::TcpV6,
                    other => return Judged::Fatal(format!("bad GSO type {other}")),
                };
                if !gso_offered && refused.is_none() {
                    refused = Some("a GSO packet, and GSO was not offered".into());
                }
                offload.gso = Some(Gso { size, kind });
            }
            Extra::McastAdd(_) | Extra::McastDel(_) => mcast.push(extra.extra),
            // A hash the frontend computed: ours to ignore.
            Extra::Hash { .. } | Extra::Other { .. } => {}
        }
        more_extras = extra.more();
    }
    // The data slots. The first slot's own data is what its size leaves
    // once the others' are taken off.
    let mut fragments = vec![Fragment {
        gref: first.gref,
        offset: first.offset,
        len: 0,
        id: first.id,
    }];
    let total = usize::from(first.size);
    let mut rest = total;
    let mut more = first.more_data();
    while more {
        if fragments.len() >= FATAL_SLOTS {
            return Judged::Fatal(format!(
                "a packet of more than {FATAL_SLOTS} slots: the frontend is broken"
            ));
        }
        let Some(raw) = slot(at) else {
            return Judged::Fatal(format!(
                "a packet's slot {} is past what the frontend pushed",
                fragments.len()
            ));
        };
        at += 1;
        let req = TxRequest::decode(&raw);
        if usize::from(req.offset) + usize::from(req.size) > PAGE_SIZE {
            return Judged::Fatal(format!(
                "a fragment crosses its page (offset {}, size {})",
                req.offset, req.size
            ));
        }
        if usize::from(req.size) > rest {
            if refused.is_none() {
                refused = Some(format!("fragments larger than the packet's size {total}"));
            }
            rest = 0;
        } else {
            rest -= usize::from(req.size);
        }
        fragments.push(Fragment {
            gref: req.gref,
            offset: req.offset,
            len: req.size,
            id: req.id,
        });
        more = req.more_data();
    }
    if fragments.len() > MAX_SLOTS && refused.is_none() {
        refused = Some(format!(
            "{} data slots (at most {MAX_SLOTS})",
            fragments.len()
        ));
    }
    // What is left is the first slot's own data.
    if usize::from(first.offset) + rest > PAGE_SIZE {
        return Judged::Fatal(format!(
            "the first fragment crosses its page (offset {}, size {rest})",
            first.offset
        ));
    }
    if rest < ETH_HLEN && refused.is_none() {
        refused = Some(format!(
            "a first fragment of {rest} bytes, shorter than an Ethernet header"
        ));
    }
    fragments[0].len = rest as u16;
    let len = fragments.iter().map(|f| usize::from(f.len)).sum();
    Judged::Packet(TxPacket {
        slots: at,
        fragments,
        extra_ids,
        len,
        offload,
        mcast,
        refused,
    })
}

#[cfg(test)]
pub(crate) mod tests;
