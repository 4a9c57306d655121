//! Xen's public ABI for grant tables (`xen/include/public/grant_table.h`):
//! the v1 entry layout, its flags and the GNTST status codes. With the `xen`
//! feature a test checks every value against the bindings to the installed
//! Xen headers.

/// Size of a page, and of every granted frame.
pub const PAGE_SIZE: usize = 4096;

/// Size of a v1 grant entry: `{u16 flags; u16 domid; u32 frame}`.
pub const GRANT_ENTRY_V1_SIZE: usize = 8;
/// Offset of `flags` in a v1 entry.
pub const GRANT_ENTRY_FLAGS: usize = 0;
/// Offset of `domid` in a v1 entry.
pub const GRANT_ENTRY_DOMID: usize = 2;
/// Offset of `frame` in a v1 entry.
pub const GRANT_ENTRY_FRAME: usize = 4;
/// v1 entries per grant-table frame.
pub const GRANT_ENTRIES_PER_PAGE: usize = PAGE_SIZE / GRANT_ENTRY_V1_SIZE;

/// The entry grants nothing.
pub const GTF_INVALID: u16 = 0;
/// The entry grants access to `frame` to `domid`.
pub const GTF_PERMIT_ACCESS: u16 = 1;
/// Mask of the entry's type.
pub const GTF_TYPE_MASK: u16 = 3;
/// The grantee may only read.
pub const GTF_READONLY: u16 = 1 << 2;
/// Set by the hypervisor while the frame is mapped or copied for reading.
pub const GTF_READING: u16 = 1 << 3;
/// Set by the hypervisor while the frame is mapped or copied for writing.
pub const GTF_WRITING: u16 = 1 << 4;

/// Grant references a guest keeps for the toolstack (console, XenStore).
pub const GNTTAB_NR_RESERVED_ENTRIES: u32 = 8;
