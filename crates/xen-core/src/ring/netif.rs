//! Network device rings (`xen/include/public/io/netif.h`): the transmit ring
//! (guest → backend packets, [`NetifTx`]) and the receive ring (backend →
//! guest packets, [`NetifRx`]), their slot structures as plain Rust values,
//! and their decoding from and encoding into private slot copies.
//!
//! All fields are 16- or 32-bit, so the layout is the same on every ABI. A
//! packet spans several slots: `NETTXF_more_data` chains fragments, and
//! `NETTXF_extra_info` (then `XEN_NETIF_EXTRA_FLAG_MORE`) puts
//! [`ExtraInfo`] slots after the first fragment. A backend peeks at each
//! slot of a packet and consumes them together
//! ([`super::shared::BackRing::peek_request`]). On the receive ring an
//! extra-info slot overlays a response, and every response must sit in the
//! slot of the request it answers (Linux netfront ignores the response id).
//!
//! Decoding turns bytes into fields and nothing more; sizes, offsets and
//! chain lengths are the network backend's to judge.

use std::mem::size_of;

use super::shared::RingProtocol;
use super::slot_bytes::{put, u16_at, u32_at};

/// TX flag: the protocol checksum field is blank (checksum offload).
pub const NETTXF_CSUM_BLANK: u16 = 1 << 0;
/// TX flag: the data was validated against its protocol checksum.
pub const NETTXF_DATA_VALIDATED: u16 = 1 << 1;
/// TX flag: the packet continues in the next request.
pub const NETTXF_MORE_DATA: u16 = 1 << 2;
/// TX flag: an extra-info slot follows.
pub const NETTXF_EXTRA_INFO: u16 = 1 << 3;

/// RX flag: the data was validated against its protocol checksum.
pub const NETRXF_DATA_VALIDATED: u16 = 1 << 0;
/// RX flag: the protocol checksum field is blank.
pub const NETRXF_CSUM_BLANK: u16 = 1 << 1;
/// RX flag: the packet continues in the next response.
pub const NETRXF_MORE_DATA: u16 = 1 << 2;
/// RX flag: an extra-info slot follows.
pub const NETRXF_EXTRA_INFO: u16 = 1 << 3;
/// RX flag: a GSO prefix descriptor (legacy) precedes the packet.
pub const NETRXF_GSO_PREFIX: u16 = 1 << 4;

/// Extra-info type 0: never valid.
pub const XEN_NETIF_EXTRA_TYPE_NONE: u8 = 0;
/// Extra-info type: segmentation offload parameters.
pub const XEN_NETIF_EXTRA_TYPE_GSO: u8 = 1;
/// Extra-info type: add a multicast address.
pub const XEN_NETIF_EXTRA_TYPE_MCAST_ADD: u8 = 2;
/// Extra-info type: remove a multicast address.
pub const XEN_NETIF_EXTRA_TYPE_MCAST_DEL: u8 = 3;
/// Extra-info type: the packet's hash.
pub const XEN_NETIF_EXTRA_TYPE_HASH: u8 = 4;
/// One past the last extra-info type.
pub const XEN_NETIF_EXTRA_TYPE_MAX: u8 = 5;

/// Extra-info flag: another extra-info slot follows.
pub const XEN_NETIF_EXTRA_FLAG_MORE: u8 = 1 << 0;

/// GSO type: none.
pub const XEN_NETIF_GSO_TYPE_NONE: u8 = 0;
/// GSO type: TCP over IPv4.
pub const XEN_NETIF_GSO_TYPE_TCPV4: u8 = 1;
/// GSO type: TCP over IPv6.
pub const XEN_NETIF_GSO_TYPE_TCPV6: u8 = 2;

/// Response status: dropped.
pub const NETIF_RSP_DROPPED: i16 = -2;
/// Response status: failed.
pub const NETIF_RSP_ERROR: i16 = -1;
/// Response status: done.
pub const NETIF_RSP_OKAY: i16 = 0;
/// Response status of a slot that carried extra info, not data.
pub const NETIF_RSP_NULL: i16 = 1;

/// Slots per packet every backend must accept (`XEN_NETIF_NR_SLOTS_MIN`).
pub const XEN_NETIF_NR_SLOTS_MIN: usize = 18;
/// Largest packet a frontend may send (`XEN_NETIF_MAX_TX_SIZE`).
pub const XEN_NETIF_MAX_TX_SIZE: u32 = 0xFFFF;

/// `#[repr(C)]` mirrors of the C structures, only measured (`size_of`,
/// `offset_of!`), never built or pointed at shared memory.
#[allow(dead_code)]
mod raw {
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct TxRequest {
        pub gref: u32,
        pub offset: u16,
        pub flags: u16,
        pub id: u16,
        pub size: u16,
    }

    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct TxResponse {
        pub id: u16,
        pub status: i16,
    }

    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct RxRequest {
        pub id: u16,
        pub pad: u16,
        pub gref: u32,
    }

    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct RxResponse {
        pub id: u16,
        pub offset: u16,
        pub flags: u16,
        pub status: i16,
    }

    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct Gso {
        pub size: u16,
        pub ty: u8,
        pub pad: u8,
        pub features: u16,
    }

    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct Hash {
        pub ty: u8,
        pub algorithm: u8,
        pub value: [u8; 4],
    }

    #[repr(C)]
    #[derive(Clone, Copy)]
    pub union ExtraUnion {
        pub gso: Gso,
        pub mcast: [u8; 6],
        pub hash: Hash,
        pub pad: [u16; 3],
    }

    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct ExtraInfo {
        pub ty: u8,
        pub flags: u8,
        pub u: ExtraUnion,
    }

    #[repr(C)]
    pub union TxSlot {
        pub req: TxRequest,
        pub rsp: TxResponse,
    }

    #[repr(C)]
    pub union RxSlot {
        pub req: RxRequest,
        pub rsp: RxResponse,
    }
}

/// `sizeof(struct netif_tx_request)`.
pub const TX_REQUEST_SIZE: usize = size_of::<raw::TxRequest>();
/// `sizeof(struct netif_tx_response)`.
pub const TX_RESPONSE_SIZE: usize = size_of::<raw::TxResponse>();
/// `sizeof(struct netif_rx_request)`.
pub const RX_REQUEST_SIZE: usize = size_of::<raw::RxRequest>();
/// `sizeof(struct netif_rx_response)`.
pub const RX_RESPONSE_SIZE: usize = size_of::<raw::RxResponse>();
/// `sizeof(struct netif_extra_info)`: fits a TX request and an RX response.
pub const EXTRA_INFO_SIZE: usize = size_of::<raw::ExtraInfo>();
/// `sizeof(union netif_tx_sring_entry)`.
pub const TX_SLOT_SIZE: usize = size_of::<raw::TxSlot>();
/// `sizeof(union netif_rx_sring_entry)`.
pub const RX_SLOT_SIZE: usize = size_of::<raw::RxSlot>();

/// Field offsets of every netif structure (the same on every ABI).
pub mod offsets {
    use super::raw;
    use std::mem::offset_of;

    /// `netif_tx_request.gref`.
    pub const TX_REQ_GREF: usize = offset_of!(raw::TxRequest, gref);
    /// `netif_tx_request.offset`.
    pub const TX_REQ_OFFSET: usize = offset_of!(raw::TxRequest, offset);
    /// `netif_tx_request.flags`.
    pub const TX_REQ_FLAGS: usize = offset_of!(raw::TxRequest, flags);
    /// `netif_tx_request.id`.
    pub const TX_REQ_ID: usize = offset_of!(raw::TxRequest, id);
    /// `netif_tx_request.size`.
    pub const TX_REQ_SIZE: usize = offset_of!(raw::TxRequest, size);
    /// `netif_tx_response.id`.
    pub const TX_RSP_ID: usize = offset_of!(raw::TxResponse, id);
    /// `netif_tx_response.status`.
    pub const TX_RSP_STATUS: usize = offset_of!(raw::TxResponse, status);
    /// `netif_rx_request.id`.
    pub const RX_REQ_ID: usize = offset_of!(raw::RxRequest, id);
    /// `netif_rx_request.gref`.
    pub const RX_REQ_GREF: usize = offset_of!(raw::RxRequest, gref);
    /// `netif_rx_response.id`.
    pub const RX_RSP_ID: usize = offset_of!(raw::RxResponse, id);
    /// `netif_rx_response.offset`.
    pub const RX_RSP_OFFSET: usize = offset_of!(raw::RxResponse, offset);
    /// `netif_rx_response.flags`.
    pub const RX_RSP_FLAGS: usize = offset_of!(raw::RxResponse, flags);
    /// `netif_rx_response.status`.
    pub const RX_RSP_STATUS: usize = offset_of!(raw::RxResponse, status);
    /// `netif_extra_info.type`.
    pub const EXTRA_TYPE: usize = offset_of!(raw::ExtraInfo, ty);
    /// `netif_extra_info.flags`.
    pub const EXTRA_FLAGS: usize = offset_of!(raw::ExtraInfo, flags);
    /// `netif_extra_info.u`.
    pub const EXTRA_U: usize = offset_of!(raw::ExtraInfo, u);
    /// `netif_extra_info.u.gso.size`.
    pub const EXTRA_GSO_SIZE: usize = EXTRA_U + offset_of!(raw::Gso, size);
    /// `netif_extra_info.u.gso.type`.
    pub const EXTRA_GSO_TYPE: usize = EXTRA_U + offset_of!(raw::Gso, ty);
    /// `netif_extra_info.u.gso.features`.
    pub const EXTRA_GSO_FEATURES: usize = EXTRA_U + offset_of!(raw::Gso, features);
    /// `netif_extra_info.u.mcast.addr`.
    pub const EXTRA_MCAST_ADDR: usize = EXTRA_U;
    /// `netif_extra_info.u.hash.type`.
    pub const EXTRA_HASH_TYPE: usize = EXTRA_U + offset_of!(raw::Hash, ty);
    /// `netif_extra_info.u.hash.algorithm`.
    pub const EXTRA_HASH_ALGORITHM: usize = EXTRA_U + offset_of!(raw::Hash, algorithm);
    /// `netif_extra_info.u.hash.value`.
    pub const EXTRA_HASH_VALUE: usize = EXTRA_U + offset_of!(raw::Hash, value);
}

use offsets::*;

/// The transmit ring: [`TxRequest`]s (and [`ExtraInfo`]) from the guest,
/// [`TxResponse`]s back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetifTx;

impl RingProtocol for NetifTx {
    type Request = [u8; TX_REQUEST_SIZE];
    type Response = [u8; TX_RESPONSE_SIZE];
    const SLOT_SIZE: usize = TX_SLOT_SIZE;
}

/// The receive ring: [`RxRequest`]s (empty buffers) from the guest,
/// [`RxResponse`]s (and [`ExtraInfo`]) back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetifRx;

impl RingProtocol for NetifRx {
    type Request = [u8; RX_REQUEST_SIZE];
    type Response = [u8; RX_RESPONSE_SIZE];
    const SLOT_SIZE: usize = RX_SLOT_SIZE;
}

// The codecs' fixed indexing stays inside each structure.
const _: () = {
    assert!(EXTRA_INFO_SIZE <= TX_REQUEST_SIZE && EXTRA_INFO_SIZE == RX_RESPONSE_SIZE);
    assert!(EXTRA_MCAST_ADDR + 6 <= EXTRA_INFO_SIZE && EXTRA_HASH_VALUE + 4 <= EXTRA_INFO_SIZE);
    assert!(TX_REQ_SIZE + 2 <= TX_REQUEST_SIZE && TX_RSP_STATUS + 2 <= TX_RESPONSE_SIZE);
    assert!(RX_REQ_GREF + 4 <= RX_REQUEST_SIZE && RX_RSP_STATUS + 2 <= RX_RESPONSE_SIZE);
};

/// A transmit request (`struct netif_tx_request`): one fragment of a
/// packet in a granted page.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxRequest {
    /// Grant reference of the page holding the data.
    pub gref: u32,
    /// Offset of the data in the page.
    pub offset: u16,
    /// `NETTXF_*`.
    pub flags: u16,
    /// The frontend's tag, echoed in the response.
    pub id: u16,
    /// First fragment: the whole packet's size; others: this fragment's.
    pub size: u16,
}

impl TxRequest {
    /// Decodes a private copy of a TX slot.
    pub fn decode(b: &[u8; TX_REQUEST_SIZE]) -> TxRequest {
        TxRequest {
            gref: u32_at(b, TX_REQ_GREF),
            offset: u16_at(b, TX_REQ_OFFSET),
            flags: u16_at(b, TX_REQ_FLAGS),
            id: u16_at(b, TX_REQ_ID),
            size: u16_at(b, TX_REQ_SIZE),
        }
    }

    /// Encodes the request, as a frontend does.
    pub fn encode(&self) -> [u8; TX_REQUEST_SIZE] {
        let mut b = [0u8; TX_REQUEST_SIZE];
        put(&mut b, TX_REQ_GREF, &self.gref.to_le_bytes());
        put(&mut b, TX_REQ_OFFSET, &self.offset.to_le_bytes());
        put(&mut b, TX_REQ_FLAGS, &self.flags.to_le_bytes());
        put(&mut b, TX_REQ_ID, &self.id.to_le_bytes());
        put(&mut b, TX_REQ_SIZE, &self.size.to_le_bytes());
        b
    }

    /// Whether the packet continues in the next slot.
    pub fn more_data(&self) -> bool {
        self.flags & NETTXF_MORE_DATA != 0
    }

    /// Whether an extra-info slot follows.
    pub fn extra_info(&self) -> bool {
        self.flags & NETTXF_EXTRA_INFO != 0
    }
}

/// A transmit response (`struct netif_tx_response`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxResponse {
    /// The request's `id`.
    pub id: u16,
    /// `NETIF_RSP_*`.
    pub status: i16,
}

impl TxResponse {
    /// Encodes the response (all 4 bytes written).
    pub fn encode(&self) -> [u8; TX_RESPONSE_SIZE] {
        let mut b = [0u8; TX_RESPONSE_SIZE];
        put(&mut b, TX_RSP_ID, &self.id.to_le_bytes());
        put(&mut b, TX_RSP_STATUS, &self.status.to_le_bytes());
        b
    }

    /// Decodes a private copy of a response, as a frontend does.
    pub fn decode(b: &[u8; TX_RESPONSE_SIZE]) -> TxResponse {
        TxResponse {
            id: u16_at(b, TX_RSP_ID),
            status: u16_at(b, TX_RSP_STATUS) as i16,
        }
    }
}

/// A receive request (`struct netif_rx_request`): an empty page for the
/// backend to fill.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RxRequest {
    /// The frontend's tag, echoed in the response.
    pub id: u16,
    /// Grant reference of the page to fill.
    pub gref: u32,
}

impl RxRequest {
    /// Decodes a private copy of an RX request slot.
    pub fn decode(b: &[u8; RX_REQUEST_SIZE]) -> RxRequest {
        RxRequest {
            id: u16_at(b, RX_REQ_ID),
            gref: u32_at(b, RX_REQ_GREF),
        }
    }

    /// Encodes the request (padding zeroed), as a frontend does.
    pub fn encode(&self) -> [u8; RX_REQUEST_SIZE] {
        let mut b = [0u8; RX_REQUEST_SIZE];
        put(&mut b, RX_REQ_ID, &self.id.to_le_bytes());
        put(&mut b, RX_REQ_GREF, &self.gref.to_le_bytes());
        b
    }
}

/// A receive response (`struct netif_rx_response`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RxResponse {
    /// The request's `id`.
    pub id: u16,
    /// Offset of the data in the page.
    pub offset: u16,
    /// `NETRXF_*`.
    pub flags: u16,
    /// Bytes received (> 0), or `NETIF_RSP_*` (≤ 0).
    pub status: i16,
}

impl RxResponse {
    /// Encodes the response (all 8 bytes written).
    pub fn encode(&self) -> [u8; RX_RESPONSE_SIZE] {
        let mut b = [0u8; RX_RESPONSE_SIZE];
        put(&mut b, RX_RSP_ID, &self.id.to_le_bytes());
        put(&mut b, RX_RSP_OFFSET, &self.offset.to_le_bytes());
        put(&mut b, RX_RSP_FLAGS, &self.flags.to_le_bytes());
        put(&mut b, RX_RSP_STATUS, &self.status.to_le_bytes());
        b
    }

    /// Decodes a private copy of a response, as a frontend does.
    pub fn decode(b: &[u8; RX_RESPONSE_SIZE]) -> RxResponse {
        RxResponse {
            id: u16_at(b, RX_RSP_ID),
            offset: u16_at(b, RX_RSP_OFFSET),
            flags: u16_at(b, RX_RSP_FLAGS),
            status: u16_at(b, RX_RSP_STATUS) as i16,
        }
    }
}

/// What an extra-info slot carries, by its type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Extra {
    /// `XEN_NETIF_EXTRA_TYPE_GSO`.
    Gso {
        /// Largest segment payload (the MSS for TCP).
        size: u16,
        /// `XEN_NETIF_GSO_TYPE_*`.
        gso_type: u8,
        /// GSO feature bits.
        features: u16,
    },
    /// `XEN_NETIF_EXTRA_TYPE_MCAST_ADD`.
    McastAdd([u8; 6]),
    /// `XEN_NETIF_EXTRA_TYPE_MCAST_DEL`.
    McastDel([u8; 6]),
    /// `XEN_NETIF_EXTRA_TYPE_HASH`.
    Hash {
        /// Hash type (a `_XEN_NETIF_CTRL_HASH_TYPE_*` bit number).
        hash_type: u8,
        /// `XEN_NETIF_CTRL_HASH_ALGORITHM_*`.
        algorithm: u8,
        /// The hash value, least significant byte first.
        value: u32,
    },
    /// Any other type (0 and ≥ 5 are invalid; the backend decides), with
    /// its six bytes as sent.
    Other {
        /// The type byte.
        extra_type: u8,
        /// The type-specific bytes.
        data: [u8; 6],
    },
}

/// An extra-info slot (`struct netif_extra_info`), 8 bytes: the start of a
/// TX request slot, or a whole RX response slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExtraInfo {
    /// `XEN_NETIF_EXTRA_FLAG_*`.
    pub flags: u8,
    /// The type and its data.
    pub extra: Extra,
}

impl ExtraInfo {
    /// Decodes the 8 bytes of an extra-info slot.
    pub fn decode(b: &[u8; EXTRA_INFO_SIZE]) -> ExtraInfo {
        let mut data = [0u8; 6];
        data.copy_from_slice(&b[EXTRA_U..EXTRA_U + 6]);
        let extra = match b[EXTRA_TYPE] {
            XEN_NETIF_EXTRA_TYPE_GSO => Extra::Gso {
                size: u16_at(b, EXTRA_GSO_SIZE),
                gso_type: b[EXTRA_GSO_TYPE],
                features: u16_at(b, EXTRA_GSO_FEATURES),
            },
            XEN_NETIF_EXTRA_TYPE_MCAST_ADD => Extra::McastAdd(data),
            XEN_NETIF_EXTRA_TYPE_MCAST_DEL => Extra::McastDel(data),
            XEN_NETIF_EXTRA_TYPE_HASH => Extra::Hash {
                hash_type: b[EXTRA_HASH_TYPE],
                algorithm: b[EXTRA_HASH_ALGORITHM],
                value: u32_at(b, EXTRA_HASH_VALUE),
            },
            extra_type => Extra::Other { extra_type, data },
        };
        ExtraInfo {
            flags: b[EXTRA_FLAGS],
            extra,
        }
    }

    /// Decodes the extra info at the start of a private copy of a TX slot.
    pub fn from_tx_slot(b: &[u8; TX_REQUEST_SIZE]) -> ExtraInfo {
        let mut e = [0u8; EXTRA_INFO_SIZE];
        e.copy_from_slice(&b[..EXTRA_INFO_SIZE]);
        ExtraInfo::decode(&e)
    }

    /// The type byte.
    pub fn extra_type(&self) -> u8 {
        match self.extra {
            Extra::Gso { .. } => XEN_NETIF_EXTRA_TYPE_GSO,
            Extra::McastAdd(_) => XEN_NETIF_EXTRA_TYPE_MCAST_ADD,
            Extra::McastDel(_) => XEN_NETIF_EXTRA_TYPE_MCAST_DEL,
            Extra::Hash { .. } => XEN_NETIF_EXTRA_TYPE_HASH,
            Extra::Other { extra_type, .. } => extra_type,
        }
    }

    /// Whether another extra-info slot follows.
    pub fn more(&self) -> bool {
        self.flags & XEN_NETIF_EXTRA_FLAG_MORE != 0
    }

    /// Encodes the 8 bytes (padding zeroed); this is also an RX response
    /// slot.
    pub fn encode(&self) -> [u8; EXTRA_INFO_SIZE] {
        let mut b = [0u8; EXTRA_INFO_SIZE];
        b[EXTRA_TYPE] = self.extra_type();
        b[EXTRA_FLAGS] = self.flags;
        match self.extra {
            Extra::Gso {
                size,
                gso_type,
                features,
            } => {
                put(&mut b, EXTRA_GSO_SIZE, &size.to_le_bytes());
                b[EXTRA_GSO_TYPE] = gso_type;
                put(&mut b, EXTRA_GSO_FEATURES, &features.to_le_bytes());
            }
            Extra::McastAdd(addr) | Extra::McastDel(addr) => put(&mut b, EXTRA_MCAST_ADDR, &addr),
            Extra::Hash {
                hash_type,
                algorithm,
                value,
            } => {
                b[EXTRA_HASH_TYPE] = hash_type;
                b[EXTRA_HASH_ALGORITHM] = algorithm;
                put(&mut b, EXTRA_HASH_VALUE, &value.to_le_bytes());
            }
            Extra::Other { data, .. } => put(&mut b, EXTRA_U, &data),
        }
        b
    }

    /// Encodes into a TX slot (the last 4 bytes zero), as a frontend does.
    pub fn to_tx_slot(&self) -> [u8; TX_REQUEST_SIZE] {
        let mut b = [0u8; TX_REQUEST_SIZE];
        b[..EXTRA_INFO_SIZE].copy_from_slice(&self.encode());
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::Mmap;
    use crate::ring::shared::{ring_size, BackRing, FrontRing};

    #[test]
    fn layout_matches_netif_h() {
        assert_eq!(
            (TX_REQUEST_SIZE, TX_RESPONSE_SIZE, TX_SLOT_SIZE),
            (12, 4, 12)
        );
        assert_eq!((RX_REQUEST_SIZE, RX_RESPONSE_SIZE, RX_SLOT_SIZE), (8, 8, 8));
        assert_eq!(EXTRA_INFO_SIZE, 8);
        assert_eq!(
            (
                TX_REQ_GREF,
                TX_REQ_OFFSET,
                TX_REQ_FLAGS,
                TX_REQ_ID,
                TX_REQ_SIZE
            ),
            (0, 4, 6, 8, 10)
        );
        assert_eq!((TX_RSP_ID, TX_RSP_STATUS), (0, 2));
        assert_eq!((RX_REQ_ID, RX_REQ_GREF), (0, 4));
        assert_eq!(
            (RX_RSP_ID, RX_RSP_OFFSET, RX_RSP_FLAGS, RX_RSP_STATUS),
            (0, 2, 4, 6)
        );
        assert_eq!((EXTRA_TYPE, EXTRA_FLAGS, EXTRA_U), (0, 1, 2));
        assert_eq!(
            (EXTRA_GSO_SIZE, EXTRA_GSO_TYPE, EXTRA_GSO_FEATURES),
            (2, 4, 6)
        );
        assert_eq!(
            (EXTRA_HASH_TYPE, EXTRA_HASH_ALGORITHM, EXTRA_HASH_VALUE),
            (2, 3, 4)
        );
        assert_eq!((NetifTx::SLOT_SIZE, NetifRx::SLOT_SIZE), (12, 8));
    }

    #[test]
    fn ring_sizes_for_1_to_16_pages() {
        // 4032 / 12 = 336 TX slots fit in a page, 4032 / 8 = 504 RX slots:
        // both round down to 256.
        for (pages, entries) in [(1, 256), (2, 512), (4, 1024), (8, 2048), (16, 4096)] {
            assert_eq!(ring_size(pages * 4096, NetifTx::SLOT_SIZE), entries);
            assert_eq!(ring_size(pages * 4096, NetifRx::SLOT_SIZE), entries);
        }
    }

    #[test]
    fn flag_values() {
        assert_eq!(
            [
                NETTXF_CSUM_BLANK,
                NETTXF_DATA_VALIDATED,
                NETTXF_MORE_DATA,
                NETTXF_EXTRA_INFO
            ],
            [1, 2, 4, 8]
        );
        assert_eq!(
            [
                NETRXF_DATA_VALIDATED,
                NETRXF_CSUM_BLANK,
                NETRXF_MORE_DATA,
                NETRXF_EXTRA_INFO,
                NETRXF_GSO_PREFIX
            ],
            [1, 2, 4, 8, 16]
        );
        assert_eq!(
            [
                NETIF_RSP_DROPPED,
                NETIF_RSP_ERROR,
                NETIF_RSP_OKAY,
                NETIF_RSP_NULL
            ],
            [-2, -1, 0, 1]
        );
    }

    #[test]
    fn tx_request_bytes_and_round_trip() {
        let r = TxRequest {
            gref: 0x0102_0304,
            offset: 0x0506,
            flags: NETTXF_MORE_DATA | NETTXF_EXTRA_INFO,
            id: 0x0708,
            size: 0x090a,
        };
        let b = r.encode();
        assert_eq!(b, [4, 3, 2, 1, 6, 5, 0x0c, 0, 8, 7, 0x0a, 9]);
        assert_eq!(TxRequest::decode(&b), r);
        assert!(r.more_data() && r.extra_info());
    }

    #[test]
    fn responses_and_rx_requests_round_trip() {
        let t = TxResponse {
            id: 9,
            status: NETIF_RSP_DROPPED,
        };
        assert_eq!(t.encode(), [9, 0, 0xfe, 0xff]);
        assert_eq!(TxResponse::decode(&t.encode()), t);
        let q = RxRequest {
            id: 3,
            gref: 0xfeed,
        };
        assert_eq!(q.encode(), [3, 0, 0, 0, 0xed, 0xfe, 0, 0]);
        assert_eq!(RxRequest::decode(&q.encode()), q);
        let r = RxResponse {
            id: 3,
            offset: 14,
            flags: NETRXF_DATA_VALIDATED | NETRXF_MORE_DATA,
            status: 1500,
        };
        assert_eq!(RxResponse::decode(&r.encode()), r);
        assert_eq!(&r.encode()[6..], &1500i16.to_le_bytes());
    }

    #[test]
    fn extra_info_kinds_round_trip() {
        let all = [
            ExtraInfo {
                flags: XEN_NETIF_EXTRA_FLAG_MORE,
                extra: Extra::Gso {
                    size: 1448,
                    gso_type: XEN_NETIF_GSO_TYPE_TCPV4,
                    features: 0,
                },
            },
            ExtraInfo {
                flags: 0,
                extra: Extra::McastAdd([1, 0, 0x5e, 0, 0, 1]),
            },
            ExtraInfo {
                flags: 0,
                extra: Extra::McastDel([0x33, 0x33, 0, 0, 0, 1]),
            },
            ExtraInfo {
                flags: 0,
                extra: Extra::Hash {
                    hash_type: 1,
                    algorithm: 1,
                    value: 0xdead_beef,
                },
            },
            ExtraInfo {
                flags: 0xfe,
                extra: Extra::Other {
                    extra_type: 0,
                    data: [1, 2, 3, 4, 5, 6],
                },
            },
        ];
        for e in all {
            assert_eq!(ExtraInfo::decode(&e.encode()), e);
            assert_eq!(ExtraInfo::from_tx_slot(&e.to_tx_slot()), e);
            assert_eq!(&e.to_tx_slot()[8..], &[0; 4]);
        }
        let gso = all[0].encode();
        assert_eq!(gso, [1, 1, 0xa8, 0x05, 1, 0, 0, 0]);
        assert!(all[0].more());
    }

    #[test]
    fn a_packet_with_extra_info_and_three_fragments_is_one_unit() {
        let m = Mmap::anonymous(4096).unwrap();
        let mut front = FrontRing::<NetifTx>::init(m.mem()).unwrap();
        let mut back = BackRing::<NetifTx>::attach(m.mem()).unwrap();
        let first = TxRequest {
            gref: 10,
            offset: 0,
            flags: NETTXF_MORE_DATA | NETTXF_EXTRA_INFO,
            id: 1,
            size: 3000,
        };
        let gso = ExtraInfo {
            flags: 0,
            extra: Extra::Gso {
                size: 1448,
                gso_type: XEN_NETIF_GSO_TYPE_TCPV4,
                features: 0,
            },
        };
        let mid = TxRequest {
            gref: 11,
            flags: NETTXF_MORE_DATA,
            id: 2,
            size: 1000,
            ..TxRequest::default()
        };
        let last = TxRequest {
            gref: 12,
            id: 3,
            size: 500,
            ..TxRequest::default()
        };
        for slot in [
            first.encode(),
            gso.to_tx_slot(),
            mid.encode(),
            last.encode(),
        ] {
            front.write_request(&slot).unwrap();
        }
        front.push_requests_and_check_notify().unwrap();

        // The backend walks the chain by peeking, then consumes it whole.
        assert_eq!(back.unconsumed_requests().unwrap(), 4);
        let head = TxRequest::decode(&back.peek_request(0).unwrap().unwrap());
        assert_eq!(head, first);
        assert_eq!(
            ExtraInfo::from_tx_slot(&back.peek_request(1).unwrap().unwrap()),
            gso
        );
        let mut frags = Vec::new();
        let mut at = 2;
        loop {
            let f = TxRequest::decode(&back.peek_request(at).unwrap().unwrap());
            frags.push(f);
            at += 1;
            if !f.more_data() {
                break;
            }
        }
        assert_eq!(frags, [mid, last]);
        assert_eq!(
            back.peek_request(at).unwrap(),
            None,
            "nothing past the chain"
        );
        back.consume_requests(at).unwrap();
        assert_eq!(back.req_cons(), 4);

        // One response per slot; the extra-info slot gets NETIF_RSP_NULL.
        for (id, status) in [(1, NETIF_RSP_OKAY), (0, NETIF_RSP_NULL), (2, 0), (3, 0)] {
            back.write_response(&TxResponse { id, status }.encode())
                .unwrap();
        }
        assert!(back.push_responses_and_check_notify().unwrap());
        assert_eq!(front.unconsumed_responses().unwrap(), 4);
        let statuses: Vec<i16> = (0..4)
            .map(|_| TxResponse::decode(&front.copy_response().unwrap().unwrap()).status)
            .collect();
        assert_eq!(statuses, [0, 1, 0, 0]);
    }

    #[test]
    fn rx_responses_and_extra_info_sit_in_their_requests_slots() {
        let m = Mmap::anonymous(4096).unwrap();
        let mut front = FrontRing::<NetifRx>::init(m.mem()).unwrap();
        let mut back = BackRing::<NetifRx>::attach(m.mem()).unwrap();
        for id in 0..2u16 {
            front
                .write_request(
                    &RxRequest {
                        id,
                        gref: 100 + u32::from(id),
                    }
                    .encode(),
                )
                .unwrap();
        }
        front.push_requests_and_check_notify().unwrap();
        assert_eq!(back.unconsumed_requests().unwrap(), 2);
        let a = RxRequest::decode(&back.copy_request().unwrap().unwrap());
        let _b = RxRequest::decode(&back.copy_request().unwrap().unwrap());
        let data = RxResponse {
            id: a.id,
            offset: 0,
            flags: NETRXF_EXTRA_INFO,
            status: 60,
        };
        let extra = ExtraInfo {
            flags: 0,
            extra: Extra::Hash {
                hash_type: 0,
                algorithm: 1,
                value: 7,
            },
        };
        back.write_response(&data.encode()).unwrap();
        back.write_response(&extra.encode()).unwrap();
        back.push_responses_and_check_notify().unwrap();
        // The responses overwrote the request slots 0 and 1 in place.
        let mut raw = [0u8; 16];
        m.mem().read(64, &mut raw).unwrap();
        assert_eq!(&raw[..8], &data.encode());
        assert_eq!(&raw[8..], &extra.encode());
        front.unconsumed_responses().unwrap();
        assert_eq!(
            RxResponse::decode(&front.copy_response().unwrap().unwrap()),
            data
        );
        assert_eq!(
            ExtraInfo::decode(&front.copy_response().unwrap().unwrap()),
            extra
        );
    }
}
