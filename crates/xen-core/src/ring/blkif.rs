//! Block device rings (`xen/include/public/io/blkif.h`): the slot layouts of
//! the `x86_64-abi` (native here) and `x86_32-abi` protocols, the request
//! and response structures as plain Rust values, and their decoding from
//! and encoding into private slot copies.
//!
//! A frontend names its layout in XenStore (`protocol`, absent meaning the
//! backend's native one). The two differ only in alignment: a 32-bit guest
//! aligns `uint64_t` fields to 4 bytes, so `id` sits at offset 4 instead of
//! 8 and everything after it moves up (Linux blkback's `blkif_x86_32_*`
//! structures). Offsets here come from `#[repr(C)]` mirrors of the C
//! structures (`repr(C, packed(4))` for the 32-bit ABI), and tests check
//! them against the numbers in the headers.
//!
//! Decoding turns bytes into fields and nothing more: `nr_segments` may be
//! 200, `last_sect` may precede `first_sect`, the operation may be unknown.
//! Judging requests is the block backend's job, on these private values.

use std::mem::{offset_of, size_of};

use super::shared::{RingProtocol, SlotBytes};
use super::slot_bytes::{put, u16_at, u32_at, u64_at};

/// Read from the device.
pub const BLKIF_OP_READ: u8 = 0;
/// Write to the device.
pub const BLKIF_OP_WRITE: u8 = 1;
/// Write, ordered after all earlier writes (`feature-barrier`).
pub const BLKIF_OP_WRITE_BARRIER: u8 = 2;
/// Flush the device's write cache (`feature-flush-cache`).
pub const BLKIF_OP_FLUSH_DISKCACHE: u8 = 3;
/// Reserved (was a vendor-specific operation).
pub const BLKIF_OP_RESERVED_1: u8 = 4;
/// Discard a range of sectors (`feature-discard`).
pub const BLKIF_OP_DISCARD: u8 = 5;
/// A read or write whose segments are in granted pages
/// (`feature-max-indirect-segments`).
pub const BLKIF_OP_INDIRECT: u8 = 6;

/// Segments a direct request carries in its slot.
pub const BLKIF_MAX_SEGMENTS_PER_REQUEST: usize = 11;
/// Granted pages of segments an indirect request may name.
pub const BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST: usize = 8;
/// Size of one segment (`struct blkif_request_segment`), in a slot or in an
/// indirect page.
pub const SEGMENT_SIZE: usize = 8;
/// Segments in one indirect page (`PAGE_SIZE / sizeof(segment)`).
pub const SEGMENTS_PER_INDIRECT_PAGE: usize = 4096 / SEGMENT_SIZE;

/// Discard flag: the discarded data must become unrecoverable.
pub const BLKIF_DISCARD_SECURE: u8 = 1;

/// Response status: done.
pub const BLKIF_RSP_OKAY: i16 = 0;
/// Response status: failed.
pub const BLKIF_RSP_ERROR: i16 = -1;
/// Response status: operation not supported.
pub const BLKIF_RSP_EOPNOTSUPP: i16 = -2;

/// `info` bit: the device is a CD-ROM.
pub const VDISK_CDROM: u32 = 1;
/// `info` bit: the device is removable.
pub const VDISK_REMOVABLE: u32 = 2;
/// `info` bit: the device is read-only.
pub const VDISK_READONLY: u32 = 4;

/// `protocol` value of 32-bit x86 frontends (`XEN_IO_PROTO_ABI_X86_32`).
pub const PROTOCOL_X86_32: &str = "x86_32-abi";
/// `protocol` value of 64-bit x86 frontends (`XEN_IO_PROTO_ABI_X86_64`).
pub const PROTOCOL_X86_64: &str = "x86_64-abi";

/// `#[repr(C)]` mirrors of the C structures. They are only measured
/// (`size_of`, `offset_of!`), never built or pointed at shared memory.
#[allow(dead_code)]
mod raw {
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct Segment {
        pub gref: u32,
        pub first_sect: u8,
        pub last_sect: u8,
    }

    /// Declares one ABI's structures; `$repr` is its packing.
    macro_rules! abi {
        ($(#[$repr:meta])* mod $name:ident { $($indirect_pad:tt)* }) => {
            pub mod $name {
                use super::Segment;

                $(#[$repr])*
                #[derive(Clone, Copy)]
                pub struct Request {
                    pub operation: u8,
                    pub nr_segments: u8,
                    pub handle: u16,
                    pub id: u64,
                    pub sector_number: u64,
                    pub seg: [Segment; super::super::BLKIF_MAX_SEGMENTS_PER_REQUEST],
                }

                $(#[$repr])*
                #[derive(Clone, Copy)]
                pub struct Discard {
                    pub operation: u8,
                    pub flag: u8,
                    pub handle: u16,
                    pub id: u64,
                    pub sector_number: u64,
                    pub nr_sectors: u64,
                }

                $(#[$repr])*
                #[derive(Clone, Copy)]
                pub struct Indirect {
                    pub operation: u8,
                    pub indirect_op: u8,
                    pub nr_segments: u16,
                    pub id: u64,
                    pub sector_number: u64,
                    pub handle: u16,
                    pub indirect_grefs: [u32; super::super::BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST],
                    $($indirect_pad)*
                }

                $(#[$repr])*
                #[derive(Clone, Copy)]
                pub struct Response {
                    pub id: u64,
                    pub operation: u8,
                    pub status: i16,
                }

                /// The ring slot: `union blkif_sring_entry`.
                $(#[$repr])*
                pub union Slot {
                    pub req: Request,
                    pub rsp: Response,
                }
            }
        };
    }

    abi!(
        #[repr(C)]
        mod x86_64 {}
    );
    // i386 packs 8-byte fields on 4-byte boundaries; blkif.h pads the
    // indirect request to 64 bytes there (`#ifdef __i386__ uint64_t pad`).
    abi!(#[repr(C, packed(4))] mod x86_32 { pub pad: u64, });
}

/// Where each field of each blkif structure sits, for one ABI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlkifLayout {
    /// The XenStore `protocol` name of the ABI.
    pub protocol: &'static str,
    /// `sizeof(struct blkif_request)`.
    pub request_size: usize,
    /// `operation` (u8), the same in every request structure.
    pub request_operation: usize,
    /// `nr_segments` (u8).
    pub request_nr_segments: usize,
    /// `handle` (u16).
    pub request_handle: usize,
    /// `id` (u64), the same in every request structure.
    pub request_id: usize,
    /// `sector_number` (u64).
    pub request_sector_number: usize,
    /// `seg[11]`.
    pub request_seg: usize,
    /// `sizeof(struct blkif_request_discard)`.
    pub discard_size: usize,
    /// `flag` (u8).
    pub discard_flag: usize,
    /// `handle` (u16).
    pub discard_handle: usize,
    /// `id` (u64).
    pub discard_id: usize,
    /// `sector_number` (u64).
    pub discard_sector_number: usize,
    /// `nr_sectors` (u64).
    pub discard_nr_sectors: usize,
    /// `sizeof(struct blkif_request_indirect)`.
    pub indirect_size: usize,
    /// `indirect_op` (u8).
    pub indirect_op: usize,
    /// `nr_segments` (u16).
    pub indirect_nr_segments: usize,
    /// `id` (u64).
    pub indirect_id: usize,
    /// `sector_number` (u64).
    pub indirect_sector_number: usize,
    /// `handle` (u16).
    pub indirect_handle: usize,
    /// `indirect_grefs[8]` (u32 each).
    pub indirect_grefs: usize,
    /// `sizeof(struct blkif_response)`.
    pub response_size: usize,
    /// `id` (u64).
    pub response_id: usize,
    /// `operation` (u8).
    pub response_operation: usize,
    /// `status` (i16).
    pub response_status: usize,
    /// `sizeof(union blkif_sring_entry)`.
    pub slot_size: usize,
}

macro_rules! layout {
    ($m:ident, $protocol:expr) => {
        BlkifLayout {
            protocol: $protocol,
            request_size: size_of::<raw::$m::Request>(),
            request_operation: offset_of!(raw::$m::Request, operation),
            request_nr_segments: offset_of!(raw::$m::Request, nr_segments),
            request_handle: offset_of!(raw::$m::Request, handle),
            request_id: offset_of!(raw::$m::Request, id),
            request_sector_number: offset_of!(raw::$m::Request, sector_number),
            request_seg: offset_of!(raw::$m::Request, seg),
            discard_size: size_of::<raw::$m::Discard>(),
            discard_flag: offset_of!(raw::$m::Discard, flag),
            discard_handle: offset_of!(raw::$m::Discard, handle),
            discard_id: offset_of!(raw::$m::Discard, id),
            discard_sector_number: offset_of!(raw::$m::Discard, sector_number),
            discard_nr_sectors: offset_of!(raw::$m::Discard, nr_sectors),
            indirect_size: size_of::<raw::$m::Indirect>(),
            indirect_op: offset_of!(raw::$m::Indirect, indirect_op),
            indirect_nr_segments: offset_of!(raw::$m::Indirect, nr_segments),
            indirect_id: offset_of!(raw::$m::Indirect, id),
            indirect_sector_number: offset_of!(raw::$m::Indirect, sector_number),
            indirect_handle: offset_of!(raw::$m::Indirect, handle),
            indirect_grefs: offset_of!(raw::$m::Indirect, indirect_grefs),
            response_size: size_of::<raw::$m::Response>(),
            response_id: offset_of!(raw::$m::Response, id),
            response_operation: offset_of!(raw::$m::Response, operation),
            response_status: offset_of!(raw::$m::Response, status),
            slot_size: size_of::<raw::$m::Slot>(),
        }
    };
}

/// The `x86_64-abi` layout (also Arm's, whose alignment is the same).
pub const LAYOUT_X86_64: BlkifLayout = layout!(x86_64, PROTOCOL_X86_64);
/// The `x86_32-abi` layout.
pub const LAYOUT_X86_32: BlkifLayout = layout!(x86_32, PROTOCOL_X86_32);

/// One blkif ABI: its ring slots and where the fields are.
pub trait BlkifAbi: RingProtocol {
    /// Field offsets and sizes.
    const LAYOUT: BlkifLayout;
}

/// The `x86_64-abi` protocol, the native one of a 64-bit x86 backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlkifX86_64;

impl RingProtocol for BlkifX86_64 {
    type Request = [u8; LAYOUT_X86_64.request_size];
    type Response = [u8; LAYOUT_X86_64.response_size];
    const SLOT_SIZE: usize = LAYOUT_X86_64.slot_size;
}

impl BlkifAbi for BlkifX86_64 {
    const LAYOUT: BlkifLayout = LAYOUT_X86_64;
}

/// The `x86_32-abi` protocol of 32-bit x86 frontends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlkifX86_32;

impl RingProtocol for BlkifX86_32 {
    type Request = [u8; LAYOUT_X86_32.request_size];
    type Response = [u8; LAYOUT_X86_32.response_size];
    const SLOT_SIZE: usize = LAYOUT_X86_32.slot_size;
}

impl BlkifAbi for BlkifX86_32 {
    const LAYOUT: BlkifLayout = LAYOUT_X86_32;
}

/// The backend's native protocol: what a frontend that names none uses.
#[cfg(target_arch = "x86")]
pub type BlkifNative = BlkifX86_32;
/// The backend's native protocol: what a frontend that names none uses.
#[cfg(not(target_arch = "x86"))]
pub type BlkifNative = BlkifX86_64;

// Every field the codecs touch lies inside its structure, and every
// structure fits its slot copy: checked when the crate is built, so the
// codecs' indexing cannot fail.
const _: () = {
    let layouts = [LAYOUT_X86_64, LAYOUT_X86_32];
    let mut i = 0;
    while i < layouts.len() {
        let l = layouts[i];
        assert!(l.request_seg + BLKIF_MAX_SEGMENTS_PER_REQUEST * SEGMENT_SIZE <= l.request_size);
        assert!(l.discard_size <= l.request_size && l.indirect_size <= l.request_size);
        assert!(l.discard_nr_sectors + 8 <= l.discard_size);
        assert!(l.indirect_grefs + BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST * 4 <= l.indirect_size);
        assert!(l.response_status + 2 <= l.response_size);
        assert!(l.slot_size >= l.request_size && l.slot_size >= l.response_size);
        assert!(size_of::<raw::Segment>() == SEGMENT_SIZE);
        i += 1;
    }
};

/// Which blkif ABI a frontend speaks, from its XenStore `protocol` node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlkifProtocol {
    /// `x86_32-abi`.
    X86_32,
    /// `x86_64-abi`.
    X86_64,
}

impl BlkifProtocol {
    /// The protocol a frontend asks for: `None` (no `protocol` node) is the
    /// native one; an unknown name is `None` (the device must fail, as
    /// Linux blkback refuses an unknown protocol).
    pub fn from_xenstore(protocol: Option<&str>) -> Option<BlkifProtocol> {
        match protocol {
            None => Some(BlkifProtocol::native()),
            Some(PROTOCOL_X86_32) => Some(BlkifProtocol::X86_32),
            Some(PROTOCOL_X86_64) => Some(BlkifProtocol::X86_64),
            Some(_) => None,
        }
    }

    /// The backend's native protocol.
    pub fn native() -> BlkifProtocol {
        if cfg!(target_arch = "x86") {
            BlkifProtocol::X86_32
        } else {
            BlkifProtocol::X86_64
        }
    }

    /// Its field layout.
    pub fn layout(self) -> BlkifLayout {
        match self {
            BlkifProtocol::X86_32 => LAYOUT_X86_32,
            BlkifProtocol::X86_64 => LAYOUT_X86_64,
        }
    }
}

/// One segment: a granted page and the sectors of it to transfer
/// (`struct blkif_request_segment`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    /// Grant reference of the data page.
    pub gref: u32,
    /// First sector of the page to transfer (inclusive).
    pub first_sect: u8,
    /// Last sector of the page to transfer (inclusive).
    pub last_sect: u8,
}

impl Segment {
    /// Decodes a segment from its 8 bytes (in a slot, or a private copy of
    /// an indirect page).
    pub fn decode(b: &[u8; SEGMENT_SIZE]) -> Segment {
        Segment {
            gref: u32_at(b, offset_of!(raw::Segment, gref)),
            first_sect: b[offset_of!(raw::Segment, first_sect)],
            last_sect: b[offset_of!(raw::Segment, last_sect)],
        }
    }

    /// Encodes the segment (padding zeroed).
    pub fn encode(&self) -> [u8; SEGMENT_SIZE] {
        let mut b = [0u8; SEGMENT_SIZE];
        put(
            &mut b,
            offset_of!(raw::Segment, gref),
            &self.gref.to_le_bytes(),
        );
        b[offset_of!(raw::Segment, first_sect)] = self.first_sect;
        b[offset_of!(raw::Segment, last_sect)] = self.last_sect;
        b
    }

    fn decode_at(b: &[u8], at: usize) -> Segment {
        let mut s = [0u8; SEGMENT_SIZE];
        s.copy_from_slice(&b[at..at + SEGMENT_SIZE]);
        Segment::decode(&s)
    }
}

/// A request whose segments are in its slot (`struct blkif_request`): the
/// layout of every operation other than discard and indirect, including
/// operations this code does not know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirectRequest {
    /// `BLKIF_OP_*`.
    pub operation: u8,
    /// Segments in use, as the frontend claims (not checked here).
    pub nr_segments: u8,
    /// Device handle.
    pub handle: u16,
    /// The frontend's tag, echoed in the response.
    pub id: u64,
    /// First sector on the device.
    pub sector_number: u64,
    /// All eleven segment fields of the slot, used or not.
    pub seg: [Segment; BLKIF_MAX_SEGMENTS_PER_REQUEST],
}

/// A discard (`struct blkif_request_discard`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiscardRequest {
    /// `BLKIF_DISCARD_SECURE` or 0 (other bits as sent).
    pub flag: u8,
    /// Device handle.
    pub handle: u16,
    /// The frontend's tag, echoed in the response.
    pub id: u64,
    /// First sector to discard.
    pub sector_number: u64,
    /// Sectors to discard.
    pub nr_sectors: u64,
}

/// An indirect request (`struct blkif_request_indirect`): its segments are
/// in the granted pages it names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndirectRequest {
    /// The operation to do (`BLKIF_OP_READ` or `BLKIF_OP_WRITE` when sane).
    pub indirect_op: u8,
    /// Segments in the indirect pages, as the frontend claims.
    pub nr_segments: u16,
    /// The frontend's tag, echoed in the response.
    pub id: u64,
    /// First sector on the device.
    pub sector_number: u64,
    /// Device handle.
    pub handle: u16,
    /// All eight page references of the slot, used or not.
    pub indirect_grefs: [u32; BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST],
}

/// A request as decoded from a private copy of its slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    /// Any operation but discard and indirect.
    Direct(DirectRequest),
    /// `BLKIF_OP_DISCARD`.
    Discard(DiscardRequest),
    /// `BLKIF_OP_INDIRECT`.
    Indirect(IndirectRequest),
}

impl Request {
    /// The operation byte as sent.
    pub fn operation(&self) -> u8 {
        match self {
            Request::Direct(r) => r.operation,
            Request::Discard(_) => BLKIF_OP_DISCARD,
            Request::Indirect(_) => BLKIF_OP_INDIRECT,
        }
    }

    /// The frontend's tag, to echo in the response.
    pub fn id(&self) -> u64 {
        match self {
            Request::Direct(r) => r.id,
            Request::Discard(r) => r.id,
            Request::Indirect(r) => r.id,
        }
    }

    /// Decodes a private copy of a request slot of ABI `A`. The operation
    /// byte picks the structure; no field is judged.
    pub fn decode<A: BlkifAbi>(slot: &A::Request) -> Request {
        Request::decode_with(&A::LAYOUT, slot.as_ref())
    }

    fn decode_with(l: &BlkifLayout, b: &[u8]) -> Request {
        match b[l.request_operation] {
            BLKIF_OP_DISCARD => Request::Discard(DiscardRequest {
                flag: b[l.discard_flag],
                handle: u16_at(b, l.discard_handle),
                id: u64_at(b, l.discard_id),
                sector_number: u64_at(b, l.discard_sector_number),
                nr_sectors: u64_at(b, l.discard_nr_sectors),
            }),
            BLKIF_OP_INDIRECT => {
                let mut indirect_grefs = [0u32; BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST];
                for (i, g) in indirect_grefs.iter_mut().enumerate() {
                    *g = u32_at(b, l.indirect_grefs + 4 * i);
                }
                Request::Indirect(IndirectRequest {
                    indirect_op: b[l.indirect_op],
                    nr_segments: u16_at(b, l.indirect_nr_segments),
                    id: u64_at(b, l.indirect_id),
                    sector_number: u64_at(b, l.indirect_sector_number),
                    handle: u16_at(b, l.indirect_handle),
                    indirect_grefs,
                })
            }
            operation => {
                let mut seg = [Segment::default(); BLKIF_MAX_SEGMENTS_PER_REQUEST];
                for (i, s) in seg.iter_mut().enumerate() {
                    *s = Segment::decode_at(b, l.request_seg + SEGMENT_SIZE * i);
                }
                Request::Direct(DirectRequest {
                    operation,
                    nr_segments: b[l.request_nr_segments],
                    handle: u16_at(b, l.request_handle),
                    id: u64_at(b, l.request_id),
                    sector_number: u64_at(b, l.request_sector_number),
                    seg,
                })
            }
        }
    }

    /// Encodes the request for ABI `A` (every other byte zero), as a
    /// frontend does. A `Direct` request with operation `BLKIF_OP_DISCARD`
    /// or `BLKIF_OP_INDIRECT` would decode as the other structure: use
    /// those variants for them.
    pub fn encode<A: BlkifAbi>(&self) -> A::Request {
        let mut slot = A::Request::zeroed();
        self.encode_with(&A::LAYOUT, slot.as_mut());
        slot
    }

    fn encode_with(&self, l: &BlkifLayout, b: &mut [u8]) {
        b[l.request_operation] = self.operation();
        match self {
            Request::Direct(r) => {
                b[l.request_nr_segments] = r.nr_segments;
                put(b, l.request_handle, &r.handle.to_le_bytes());
                put(b, l.request_id, &r.id.to_le_bytes());
                put(b, l.request_sector_number, &r.sector_number.to_le_bytes());
                for (i, s) in r.seg.iter().enumerate() {
                    put(b, l.request_seg + SEGMENT_SIZE * i, &s.encode());
                }
            }
            Request::Discard(r) => {
                b[l.discard_flag] = r.flag;
                put(b, l.discard_handle, &r.handle.to_le_bytes());
                put(b, l.discard_id, &r.id.to_le_bytes());
                put(b, l.discard_sector_number, &r.sector_number.to_le_bytes());
                put(b, l.discard_nr_sectors, &r.nr_sectors.to_le_bytes());
            }
            Request::Indirect(r) => {
                b[l.indirect_op] = r.indirect_op;
                put(b, l.indirect_nr_segments, &r.nr_segments.to_le_bytes());
                put(b, l.indirect_id, &r.id.to_le_bytes());
                put(b, l.indirect_sector_number, &r.sector_number.to_le_bytes());
                put(b, l.indirect_handle, &r.handle.to_le_bytes());
                for (i, g) in r.indirect_grefs.iter().enumerate() {
                    put(b, l.indirect_grefs + 4 * i, &g.to_le_bytes());
                }
            }
        }
    }
}

/// A response (`struct blkif_response`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Response {
    /// The request's `id`, echoed exactly.
    pub id: u64,
    /// The request's operation byte.
    pub operation: u8,
    /// `BLKIF_RSP_*`.
    pub status: i16,
}

impl Response {
    /// Encodes the response for ABI `A`. Every byte of the structure is
    /// written, padding as zeros, so nothing of the backend's memory or of
    /// an earlier request leaks into the guest's page (XSA-216).
    pub fn encode<A: BlkifAbi>(&self) -> A::Response {
        let l = &A::LAYOUT;
        let mut slot = A::Response::zeroed();
        let b = slot.as_mut();
        put(b, l.response_id, &self.id.to_le_bytes());
        b[l.response_operation] = self.operation;
        put(b, l.response_status, &self.status.to_le_bytes());
        slot
    }

    /// Decodes a private copy of a response slot of ABI `A`, as a frontend
    /// does.
    pub fn decode<A: BlkifAbi>(slot: &A::Response) -> Response {
        let l = &A::LAYOUT;
        let b = slot.as_ref();
        Response {
            id: u64_at(b, l.response_id),
            operation: b[l.response_operation],
            status: u16_at(b, l.response_status) as i16,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::Mmap;
    use crate::ring::shared::{ring_size, BackRing, FrontRing};

    #[test]
    fn x86_64_layout_matches_blkif_h() {
        let l = LAYOUT_X86_64;
        assert_eq!(
            (
                l.request_size,
                l.discard_size,
                l.indirect_size,
                l.response_size
            ),
            (112, 32, 64, 16)
        );
        assert_eq!(
            (
                l.request_operation,
                l.request_nr_segments,
                l.request_handle,
                l.request_id,
                l.request_sector_number,
                l.request_seg
            ),
            (0, 1, 2, 8, 16, 24)
        );
        assert_eq!(
            (
                l.discard_flag,
                l.discard_handle,
                l.discard_id,
                l.discard_sector_number,
                l.discard_nr_sectors
            ),
            (1, 2, 8, 16, 24)
        );
        assert_eq!(
            (
                l.indirect_op,
                l.indirect_nr_segments,
                l.indirect_id,
                l.indirect_sector_number,
                l.indirect_handle,
                l.indirect_grefs
            ),
            (1, 2, 8, 16, 24, 28)
        );
        assert_eq!(
            (l.response_id, l.response_operation, l.response_status),
            (0, 8, 10)
        );
        assert_eq!(l.slot_size, 112);
        assert_eq!(BlkifX86_64::SLOT_SIZE, 112);
    }

    #[test]
    fn x86_32_layout_packs_u64_on_4_bytes() {
        let l = LAYOUT_X86_32;
        assert_eq!(
            (
                l.request_size,
                l.discard_size,
                l.indirect_size,
                l.response_size
            ),
            (108, 28, 64, 12)
        );
        assert_eq!(
            (
                l.request_operation,
                l.request_nr_segments,
                l.request_handle,
                l.request_id,
                l.request_sector_number,
                l.request_seg
            ),
            (0, 1, 2, 4, 12, 20)
        );
        assert_eq!(
            (
                l.discard_flag,
                l.discard_handle,
                l.discard_id,
                l.discard_sector_number,
                l.discard_nr_sectors
            ),
            (1, 2, 4, 12, 20)
        );
        assert_eq!(
            (
                l.indirect_op,
                l.indirect_nr_segments,
                l.indirect_id,
                l.indirect_sector_number,
                l.indirect_handle,
                l.indirect_grefs
            ),
            (1, 2, 4, 12, 20, 24)
        );
        assert_eq!(
            (l.response_id, l.response_operation, l.response_status),
            (0, 8, 10)
        );
        assert_eq!(l.slot_size, 108);
        assert_eq!(BlkifX86_32::SLOT_SIZE, 108);
        assert_eq!((SEGMENT_SIZE, SEGMENTS_PER_INDIRECT_PAGE), (8, 512));
    }

    #[test]
    fn ring_sizes_for_1_to_16_pages() {
        for (pages, entries) in [(1, 32), (2, 64), (4, 128), (8, 256), (16, 512)] {
            assert_eq!(ring_size(pages * 4096, BlkifX86_64::SLOT_SIZE), entries);
            // 4032 / 108 = 37 entries fit in one page; still 32 after
            // rounding, and so on for every size here.
            assert_eq!(ring_size(pages * 4096, BlkifX86_32::SLOT_SIZE), entries);
        }
    }

    #[test]
    fn protocol_names() {
        assert_eq!(
            BlkifProtocol::from_xenstore(None),
            Some(BlkifProtocol::X86_64)
        );
        assert_eq!(
            BlkifProtocol::from_xenstore(Some("x86_32-abi")),
            Some(BlkifProtocol::X86_32)
        );
        assert_eq!(
            BlkifProtocol::from_xenstore(Some("x86_64-abi")).map(BlkifProtocol::layout),
            Some(LAYOUT_X86_64)
        );
        assert_eq!(BlkifProtocol::from_xenstore(Some("arm-abi")), None);
        assert_eq!(BlkifProtocol::from_xenstore(Some("")), None);
    }

    fn direct(op: u8) -> Request {
        let mut seg = [Segment::default(); BLKIF_MAX_SEGMENTS_PER_REQUEST];
        for (i, s) in seg.iter_mut().enumerate() {
            *s = Segment {
                gref: 0x1000 + i as u32,
                first_sect: i as u8,
                last_sect: 7,
            };
        }
        Request::Direct(DirectRequest {
            operation: op,
            nr_segments: 3,
            handle: 0x0301,
            id: 0x1122_3344_5566_7788,
            sector_number: 0x0102_0304_0506_0708,
            seg,
        })
    }

    fn samples() -> Vec<Request> {
        vec![
            direct(BLKIF_OP_READ),
            direct(BLKIF_OP_WRITE),
            direct(0xee),
            Request::Discard(DiscardRequest {
                flag: BLKIF_DISCARD_SECURE,
                handle: 7,
                id: u64::MAX,
                sector_number: 9,
                nr_sectors: 1 << 40,
            }),
            Request::Indirect(IndirectRequest {
                indirect_op: BLKIF_OP_WRITE,
                nr_segments: 300,
                id: 42,
                sector_number: 1 << 33,
                handle: 0xabcd,
                indirect_grefs: [1, 2, 3, 4, 5, 6, 7, 0xffff_ffff],
            }),
        ]
    }

    #[test]
    fn requests_round_trip_on_both_abis() {
        for r in samples() {
            assert_eq!(
                Request::decode::<BlkifX86_64>(&r.encode::<BlkifX86_64>()),
                r
            );
            assert_eq!(
                Request::decode::<BlkifX86_32>(&r.encode::<BlkifX86_32>()),
                r
            );
        }
    }

    #[test]
    fn x86_32_bytes_sit_where_a_32_bit_guest_puts_them() {
        let b = direct(BLKIF_OP_WRITE).encode::<BlkifX86_32>();
        assert_eq!(b[0], BLKIF_OP_WRITE);
        assert_eq!(b[1], 3);
        assert_eq!(&b[2..4], &0x0301u16.to_le_bytes());
        assert_eq!(&b[4..12], &0x1122_3344_5566_7788u64.to_le_bytes());
        assert_eq!(&b[12..20], &0x0102_0304_0506_0708u64.to_le_bytes());
        assert_eq!(&b[20..24], &0x1000u32.to_le_bytes());
        assert_eq!((b[24], b[25], b[26], b[27]), (0, 7, 0, 0));
        assert_eq!(&b[100..104], &0x100au32.to_le_bytes());
        let b64 = direct(BLKIF_OP_WRITE).encode::<BlkifX86_64>();
        assert_eq!(&b64[4..8], &[0; 4], "x86_64 padding before id");
        assert_eq!(&b64[8..16], &0x1122_3344_5566_7788u64.to_le_bytes());
    }

    #[test]
    fn decoding_judges_nothing() {
        let mut b = [0xffu8; 112];
        b[0] = BLKIF_OP_READ;
        let Request::Direct(r) = Request::decode::<BlkifX86_64>(&b) else {
            panic!("direct layout expected");
        };
        assert_eq!(r.nr_segments, 255);
        assert_eq!(r.seg[10].first_sect, 255);
        b[0] = 200;
        assert_eq!(Request::decode::<BlkifX86_64>(&b).operation(), 200);
        assert_eq!(Request::decode::<BlkifX86_64>(&b).id(), u64::MAX);
    }

    #[test]
    fn responses_are_fully_written_and_round_trip() {
        let r = Response {
            id: 0xdead_beef_0000_0001,
            operation: BLKIF_OP_FLUSH_DISKCACHE,
            status: BLKIF_RSP_EOPNOTSUPP,
        };
        let b = r.encode::<BlkifX86_64>();
        assert_eq!(b.len(), 16);
        assert_eq!(b[9], 0, "padding after operation is zero");
        assert_eq!(&b[12..], &[0; 4], "tail padding is zero");
        assert_eq!(&b[10..12], &(-2i16).to_le_bytes());
        assert_eq!(Response::decode::<BlkifX86_64>(&b), r);
        let b = r.encode::<BlkifX86_32>();
        assert_eq!(b.len(), 12);
        assert_eq!(b[9], 0);
        assert_eq!(Response::decode::<BlkifX86_32>(&b), r);
    }

    #[test]
    fn segments_decode_from_indirect_page_bytes() {
        let s = Segment {
            gref: 77,
            first_sect: 1,
            last_sect: 6,
        };
        let b = s.encode();
        assert_eq!(b, [77, 0, 0, 0, 1, 6, 0, 0]);
        assert_eq!(Segment::decode(&b), s);
    }

    #[test]
    fn a_32_bit_frontend_and_our_backend_exchange_a_request() {
        let m = Mmap::anonymous(4096).unwrap();
        let mut front = FrontRing::<BlkifX86_32>::init(m.mem()).unwrap();
        let mut back = BackRing::<BlkifX86_32>::attach(m.mem()).unwrap();
        assert_eq!(back.size(), 32);
        let req = direct(BLKIF_OP_READ);
        front.write_request(&req.encode::<BlkifX86_32>()).unwrap();
        front.push_requests_and_check_notify().unwrap();
        assert_eq!(back.unconsumed_requests().unwrap(), 1);
        let got = Request::decode::<BlkifX86_32>(&back.copy_request().unwrap().unwrap());
        assert_eq!(got, req);
        let rsp = Response {
            id: got.id(),
            operation: got.operation(),
            status: BLKIF_RSP_OKAY,
        };
        back.write_response(&rsp.encode::<BlkifX86_32>()).unwrap();
        back.push_responses_and_check_notify().unwrap();
        front.unconsumed_responses().unwrap();
        let back_rsp = front.copy_response().unwrap().unwrap();
        assert_eq!(Response::decode::<BlkifX86_32>(&back_rsp), rsp);
    }
}
