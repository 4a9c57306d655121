//! The Linux Xen device ABI (`include/uapi/xen/{evtchn,gntdev,gntalloc}.h`):
//! ioctl numbers and `#[repr(C)]` argument structs. Sizes are checked by
//! tests against the values measured from the real headers, never counted
//! by hand.

use std::marker::PhantomData;

use vmm_sys_util::fam::{FamStruct, FamStructWrapper};

/// `_IOC(dir, type, nr, size)` of asm-generic/ioctl.h.
pub const fn ioc(dir: u64, ty: u8, nr: u8, size: usize) -> u64 {
    (dir << 30) | ((size as u64) << 16) | ((ty as u64) << 8) | nr as u64
}

const NONE: u64 = 0;

/// `sizeof` of a C struct whose trailing array is declared with one entry
/// (`refs[1]`), as its ioctl number encodes it: the header `H` (whose
/// trailing [`FlexArray`] takes no space), one entry `E`, rounded up to the
/// header's alignment.
pub const fn size_with_one_entry<H, E>() -> usize {
    let raw = std::mem::size_of::<H>() + std::mem::size_of::<E>();
    raw.div_ceil(std::mem::align_of::<H>()) * std::mem::align_of::<H>()
}

/// A C flexible array member (`T name[]`, bindgen's
/// `__IncompleteArrayField`): no storage of its own; the entries follow
/// the header in the same allocation, which a [`FamStructWrapper`] makes.
#[repr(C)]
pub struct FlexArray<T>(PhantomData<T>, [T; 0]);

impl<T> Default for FlexArray<T> {
    fn default() -> Self {
        FlexArray(PhantomData, [])
    }
}

impl<T> FlexArray<T> {
    /// The `len` entries that follow.
    ///
    /// # Safety
    /// `len` initialized entries must follow this field in its allocation.
    unsafe fn slice(&self, len: usize) -> &[T] {
        // SAFETY: the caller guarantees `len` entries at this address.
        unsafe { std::slice::from_raw_parts(self.1.as_ptr(), len) }
    }

    /// The `len` entries that follow, writable.
    ///
    /// # Safety
    /// As for [`FlexArray::slice`].
    unsafe fn slice_mut(&mut self, len: usize) -> &mut [T] {
        // SAFETY: the caller guarantees `len` entries at this address.
        unsafe { std::slice::from_raw_parts_mut(self.1.as_mut_ptr(), len) }
    }
}

impl<T> std::fmt::Debug for FlexArray<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[..]")
    }
}

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

/// `struct ioctl_gntdev_map_grant_ref`: this header, then `count` grant
/// refs. Built as a [`GntdevMapGrantRefArg`], which keeps `count` and the
/// refs in step (hence the private fields).
#[repr(C)]
#[derive(Debug, Default)]
pub struct GntdevMapGrantRef {
    /// Number of refs.
    count: u32,
    /// Padding.
    pad: u32,
    /// Out: offset to mmap the grants at.
    index: u64,
    /// The refs (the C struct declares `refs[1]`).
    refs: FlexArray<GntdevGrantRef>,
}

impl GntdevMapGrantRef {
    /// Out: the offset to mmap the grants at.
    pub fn index(&self) -> u64 {
        self.index
    }
}

// SAFETY: the header is plain integers and its entries plain data; `count`
// is private, so only `set_len` (called by the wrapper for the entries it
// allocated right after the header) changes it, and a header made
// otherwise (`Default`) says 0 entries.
unsafe impl FamStruct for GntdevMapGrantRef {
    type Entry = GntdevGrantRef;

    fn len(&self) -> usize {
        self.count as usize
    }

    unsafe fn set_len(&mut self, len: usize) {
        self.count = len as u32;
    }

    fn max_len() -> usize {
        u32::MAX as usize
    }

    fn as_slice(&self) -> &[GntdevGrantRef] {
        // SAFETY: `count` entries follow (see the impl).
        unsafe { self.refs.slice(self.count as usize) }
    }

    fn as_mut_slice(&mut self) -> &mut [GntdevGrantRef] {
        // SAFETY: `count` entries follow (see the impl).
        unsafe { self.refs.slice_mut(self.count as usize) }
    }
}

/// The MAP_GRANT_REF argument: header and refs in one allocation.
pub type GntdevMapGrantRefArg = FamStructWrapper<GntdevMapGrantRef>;

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
pub const IOCTL_GNTDEV_MAP_GRANT_REF: u64 = ioc(
    NONE,
    b'G',
    0,
    size_with_one_entry::<GntdevMapGrantRef, GntdevGrantRef>(),
);
/// IOCTL_GNTDEV_UNMAP_GRANT_REF.
pub const IOCTL_GNTDEV_UNMAP_GRANT_REF: u64 =
    ioc(NONE, b'G', 1, std::mem::size_of::<GntdevUnmapGrantRef>());
/// IOCTL_GNTDEV_GRANT_COPY.
pub const IOCTL_GNTDEV_GRANT_COPY: u64 = ioc(NONE, b'G', 8, std::mem::size_of::<GntdevGrantCopy>());

/// `struct ioctl_gntalloc_alloc_gref`: this header, then `count` grant ids
/// the kernel fills in. Built as a [`GntallocAllocGrefArg`], which keeps
/// `count` and the ids in step (hence the private fields).
#[repr(C)]
#[derive(Debug, Default)]
pub struct GntallocAllocGref {
    /// Domain to grant to.
    domid: u16,
    /// GNTALLOC_FLAG_WRITABLE.
    flags: u16,
    /// Number of pages.
    count: u32,
    /// Out: offset to mmap the pages at.
    index: u64,
    /// Out: the grant refs (the C struct declares `gref_ids[1]`).
    gref_ids: FlexArray<u32>,
}

impl GntallocAllocGref {
    /// A header granting to `domid` (with no ids yet).
    pub fn new(domid: u16, writable: bool) -> GntallocAllocGref {
        GntallocAllocGref {
            domid,
            flags: if writable { GNTALLOC_FLAG_WRITABLE } else { 0 },
            ..GntallocAllocGref::default()
        }
    }

    /// Out: the offset to mmap the pages at.
    pub fn index(&self) -> u64 {
        self.index
    }
}

// SAFETY: as for GntdevMapGrantRef: plain data, and the private `count`
// changes only through `set_len`.
unsafe impl FamStruct for GntallocAllocGref {
    type Entry = u32;

    fn len(&self) -> usize {
        self.count as usize
    }

    unsafe fn set_len(&mut self, len: usize) {
        self.count = len as u32;
    }

    fn max_len() -> usize {
        u32::MAX as usize
    }

    fn as_slice(&self) -> &[u32] {
        // SAFETY: `count` entries follow (see the impl).
        unsafe { self.gref_ids.slice(self.count as usize) }
    }

    fn as_mut_slice(&mut self) -> &mut [u32] {
        // SAFETY: `count` entries follow (see the impl).
        unsafe { self.gref_ids.slice_mut(self.count as usize) }
    }
}

/// The ALLOC_GREF argument: header and ids in one allocation.
pub type GntallocAllocGrefArg = FamStructWrapper<GntallocAllocGref>;

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
pub const IOCTL_GNTALLOC_ALLOC_GREF: u64 = ioc(
    NONE,
    b'G',
    5,
    size_with_one_entry::<GntallocAllocGref, u32>(),
);
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
        // The C struct, with its `refs[1]`, is 24 bytes; our header ends
        // where the refs begin.
        assert_eq!(
            size_with_one_entry::<GntdevMapGrantRef, GntdevGrantRef>(),
            24
        );
        assert_eq!(size_of::<GntdevMapGrantRef>(), 16);
        assert_eq!(offset_of!(GntdevMapGrantRef, count), 0);
        assert_eq!(offset_of!(GntdevMapGrantRef, index), 8);
        assert_eq!(offset_of!(GntdevMapGrantRef, refs), 16);
        assert_eq!(size_of::<GntdevGrantRef>(), 8);
        assert_eq!(size_of::<GntdevUnmapGrantRef>(), 16);
        assert_eq!(size_of::<GntdevGrantCopySegment>(), 24);
        assert_eq!(offset_of!(GntdevGrantCopySegment, len), 16);
        assert_eq!(offset_of!(GntdevGrantCopySegment, flags), 18);
        assert_eq!(offset_of!(GntdevGrantCopySegment, status), 20);
        assert_eq!(size_of::<GntdevForeign>(), 8);
        assert_eq!(size_of::<GntdevGrantCopy>(), 16);
        assert_eq!(size_with_one_entry::<GntallocAllocGref, u32>(), 24);
        assert_eq!(size_of::<GntallocAllocGref>(), 16);
        assert_eq!(offset_of!(GntallocAllocGref, flags), 2);
        assert_eq!(offset_of!(GntallocAllocGref, count), 4);
        assert_eq!(offset_of!(GntallocAllocGref, index), 8);
        assert_eq!(offset_of!(GntallocAllocGref, gref_ids), 16);
        assert_eq!(size_of::<GntallocDeallocGref>(), 16);
    }

    /// The bytes of a built argument: what the kernel reads.
    fn bytes<T: Default + FamStruct>(arg: &FamStructWrapper<T>, len: usize) -> Vec<u8> {
        let raw = arg.as_fam_struct_ptr().cast::<u8>();
        // SAFETY: the wrapper's allocation holds the header and its entries,
        // `len` bytes or more (checked by the callers against the sizes).
        unsafe { std::slice::from_raw_parts(raw, len) }.to_vec()
    }

    fn u32s(bytes: &[u8]) -> Vec<u32> {
        bytes
            .chunks_exact(4)
            .map(|c| u32::from_ne_bytes(c.try_into().unwrap()))
            .collect()
    }

    #[test]
    fn a_built_map_argument_has_the_c_layout() {
        let refs = [
            GntdevGrantRef { domid: 7, gref: 10 },
            GntdevGrantRef { domid: 7, gref: 11 },
            GntdevGrantRef { domid: 7, gref: 12 },
        ];
        let arg = GntdevMapGrantRefArg::from_entries(&refs).unwrap();
        assert_eq!(arg.as_fam_struct_ref().len(), 3);
        assert_eq!(arg.as_slice().len(), 3);
        let w = u32s(&bytes(&arg, 16 + 3 * 8));
        assert_eq!(w[..4], [3, 0, 0, 0], "count, pad, index");
        assert_eq!(w[4..], [7, 10, 7, 11, 7, 12], "(domid, ref) pairs");
        // One ref: still as large as the C struct the kernel copies in and
        // out whole.
        let one = GntdevMapGrantRefArg::from_entries(&refs[..1]).unwrap();
        assert!(one.into_raw().len() * size_of::<GntdevMapGrantRef>() >= 24);
    }

    #[test]
    fn a_built_alloc_argument_has_the_c_layout() {
        let mut arg =
            GntallocAllocGrefArg::from_header(GntallocAllocGref::new(0x1234, true)).unwrap();
        for _ in 0..3 {
            arg.push(0).unwrap();
        }
        assert_eq!(arg.as_fam_struct_ref().len(), 3);
        let b = bytes(&arg, 16 + 3 * 4);
        assert_eq!(b[..2], 0x1234u16.to_ne_bytes(), "domid");
        assert_eq!(b[2..4], GNTALLOC_FLAG_WRITABLE.to_ne_bytes(), "flags");
        assert_eq!(u32s(&b[4..8]), [3], "count");
        assert_eq!(u32s(&b[8..]), [0, 0, 0, 0, 0], "index, then the ids");
        let mut one = GntallocAllocGrefArg::from_header(GntallocAllocGref::new(0, false)).unwrap();
        one.push(0).unwrap();
        assert!(one.into_raw().len() * size_of::<GntallocAllocGref>() >= 24);
    }

    #[test]
    fn a_header_made_alone_has_no_entries() {
        assert!(GntdevMapGrantRef::default().as_slice().is_empty());
        assert!(GntallocAllocGref::new(3, true).as_slice().is_empty());
    }
}
