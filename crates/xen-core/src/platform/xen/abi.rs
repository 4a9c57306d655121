//! The Linux Xen device ABI (`include/uapi/xen/{evtchn,gntdev,gntalloc}.h`):
//! ioctl numbers and `#[repr(C)]` argument structs. Sizes are checked by
//! tests against the values measured from the real headers, never counted
//! by hand.

/// `_IOC(dir, type, nr, size)` of asm-generic/ioctl.h.
pub const fn ioc(dir: u64, ty: u8, nr: u8, size: usize) -> u64 {
    (dir << 30) | ((size as u64) << 16) | ((ty as u64) << 8) | nr as u64
}

const NONE: u64 = 0;

/// `struct ioctl_evtchn_bind_interdomain`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct EvtchnBindInterdomain {
    /// Remote domain.
    pub remote_domain: u32,
    /// Remote port.
    pub remote_port: u32,
}

/// `struct ioctl_evtchn_bind_unbound_port`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct EvtchnBindUnboundPort {
    /// Domain that may bind to the port.
    pub remote_domain: u32,
}

/// `struct ioctl_evtchn_unbind` and `struct ioctl_evtchn_notify`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct EvtchnPort {
    /// The port.
    pub port: u32,
}

/// IOCTL_EVTCHN_BIND_INTERDOMAIN: returns the local port.
pub const IOCTL_EVTCHN_BIND_INTERDOMAIN: u64 =
    ioc(NONE, b'E', 1, std::mem::size_of::<EvtchnBindInterdomain>());
/// IOCTL_EVTCHN_BIND_UNBOUND_PORT: returns the local port.
pub const IOCTL_EVTCHN_BIND_UNBOUND_PORT: u64 =
    ioc(NONE, b'E', 2, std::mem::size_of::<EvtchnBindUnboundPort>());
/// IOCTL_EVTCHN_UNBIND.
pub const IOCTL_EVTCHN_UNBIND: u64 = ioc(NONE, b'E', 3, std::mem::size_of::<EvtchnPort>());
/// IOCTL_EVTCHN_NOTIFY.
pub const IOCTL_EVTCHN_NOTIFY: u64 = ioc(NONE, b'E', 4, std::mem::size_of::<EvtchnPort>());
/// IOCTL_EVTCHN_RESET.
pub const IOCTL_EVTCHN_RESET: u64 = ioc(NONE, b'E', 5, 0);

/// `struct ioctl_gntdev_grant_ref`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GntdevGrantRef {
    /// Granting domain.
    pub domid: u32,
    /// Grant reference.
    pub gref: u32,
}

/// Header of `struct ioctl_gntdev_map_grant_ref`; `count` grant refs follow.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GntdevMapGrantRef {
    /// Number of refs.
    pub count: u32,
    /// Padding.
    pub pad: u32,
    /// Out: offset to mmap the grants at.
    pub index: u64,
    /// The first ref (the C struct declares `refs[1]`).
    pub refs: [GntdevGrantRef; 1],
}

/// `struct ioctl_gntdev_unmap_grant_ref`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GntdevUnmapGrantRef {
    /// Offset the grants were mapped at.
    pub index: u64,
    /// Number of refs.
    pub count: u32,
    /// Padding.
    pub pad: u32,
}

/// A grant side of a copy segment.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GntdevForeign {
    /// Grant reference.
    pub gref: u32,
    /// Offset in the frame.
    pub offset: u16,
    /// Granting domain.
    pub domid: u16,
}

/// One side of a copy segment: a local address or a grant.
#[repr(C)]
#[derive(Clone, Copy)]
pub union GntdevCopyPtr {
    /// Local address.
    pub virt: *mut u8,
    /// Grant.
    pub foreign: GntdevForeign,
}

/// `struct gntdev_grant_copy_segment`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct GntdevGrantCopySegment {
    /// Source.
    pub source: GntdevCopyPtr,
    /// Destination.
    pub dest: GntdevCopyPtr,
    /// Bytes.
    pub len: u16,
    /// GNTCOPY_source_gref, GNTCOPY_dest_gref.
    pub flags: u16,
    /// Out: GNTST status.
    pub status: i16,
}

/// The source is a grant.
pub const GNTCOPY_SOURCE_GREF: u16 = 1;
/// The destination is a grant.
pub const GNTCOPY_DEST_GREF: u16 = 2;

/// `struct ioctl_gntdev_grant_copy`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct GntdevGrantCopy {
    /// Number of segments.
    pub count: u32,
    /// The segments.
    pub segments: *mut GntdevGrantCopySegment,
}

/// IOCTL_GNTDEV_MAP_GRANT_REF.
pub const IOCTL_GNTDEV_MAP_GRANT_REF: u64 =
    ioc(NONE, b'G', 0, std::mem::size_of::<GntdevMapGrantRef>());
/// IOCTL_GNTDEV_UNMAP_GRANT_REF.
pub const IOCTL_GNTDEV_UNMAP_GRANT_REF: u64 =
    ioc(NONE, b'G', 1, std::mem::size_of::<GntdevUnmapGrantRef>());
/// IOCTL_GNTDEV_GRANT_COPY.
pub const IOCTL_GNTDEV_GRANT_COPY: u64 = ioc(NONE, b'G', 8, std::mem::size_of::<GntdevGrantCopy>());

/// Header of `struct ioctl_gntalloc_alloc_gref`; `count` gref ids follow.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GntallocAllocGref {
    /// Domain to grant to.
    pub domid: u16,
    /// GNTALLOC_FLAG_WRITABLE.
    pub flags: u16,
    /// Number of pages.
    pub count: u32,
    /// Out: offset to mmap the pages at.
    pub index: u64,
    /// Out: the first grant ref (the C struct declares `gref_ids[1]`).
    pub gref_ids: [u32; 1],
}

/// `struct ioctl_gntalloc_dealloc_gref`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GntallocDeallocGref {
    /// Offset the pages were mapped at.
    pub index: u64,
    /// Number of pages.
    pub count: u32,
}

/// The grantee may write.
pub const GNTALLOC_FLAG_WRITABLE: u16 = 1;

/// IOCTL_GNTALLOC_ALLOC_GREF.
pub const IOCTL_GNTALLOC_ALLOC_GREF: u64 =
    ioc(NONE, b'G', 5, std::mem::size_of::<GntallocAllocGref>());
/// IOCTL_GNTALLOC_DEALLOC_GREF.
pub const IOCTL_GNTALLOC_DEALLOC_GREF: u64 =
    ioc(NONE, b'G', 6, std::mem::size_of::<GntallocDeallocGref>());

#[cfg(test)]
mod tests {
    use std::mem::{offset_of, size_of};

    use super::*;

    #[test]
    fn ioctl_numbers_match_the_compiled_headers() {
        assert_eq!(IOCTL_EVTCHN_BIND_INTERDOMAIN, 0x0008_4501);
        assert_eq!(IOCTL_EVTCHN_BIND_UNBOUND_PORT, 0x0004_4502);
        assert_eq!(IOCTL_EVTCHN_UNBIND, 0x0004_4503);
        assert_eq!(IOCTL_EVTCHN_NOTIFY, 0x0004_4504);
        assert_eq!(IOCTL_EVTCHN_RESET, 0x0000_4505);
        assert_eq!(IOCTL_GNTDEV_MAP_GRANT_REF, 0x0018_4700);
        assert_eq!(IOCTL_GNTDEV_UNMAP_GRANT_REF, 0x0010_4701);
        assert_eq!(IOCTL_GNTDEV_GRANT_COPY, 0x0010_4708);
        assert_eq!(IOCTL_GNTALLOC_ALLOC_GREF, 0x0018_4705);
        assert_eq!(IOCTL_GNTALLOC_DEALLOC_GREF, 0x0010_4706);
    }

    #[test]
    fn struct_layouts_match_the_compiled_headers() {
        assert_eq!(size_of::<EvtchnBindInterdomain>(), 8);
        assert_eq!(size_of::<GntdevMapGrantRef>(), 24);
        assert_eq!(offset_of!(GntdevMapGrantRef, index), 8);
        assert_eq!(offset_of!(GntdevMapGrantRef, refs), 16);
        assert_eq!(size_of::<GntdevUnmapGrantRef>(), 16);
        assert_eq!(size_of::<GntdevGrantCopySegment>(), 24);
        assert_eq!(offset_of!(GntdevGrantCopySegment, len), 16);
        assert_eq!(offset_of!(GntdevGrantCopySegment, flags), 18);
        assert_eq!(offset_of!(GntdevGrantCopySegment, status), 20);
        assert_eq!(size_of::<GntdevForeign>(), 8);
        assert_eq!(size_of::<GntdevGrantCopy>(), 16);
        assert_eq!(size_of::<GntallocAllocGref>(), 24);
        assert_eq!(offset_of!(GntallocAllocGref, gref_ids), 16);
        assert_eq!(size_of::<GntallocDeallocGref>(), 16);
    }
}
