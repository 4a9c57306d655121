//! The hypervisor platform: event channels and grant tables behind traits,
//! implemented by a simulated hypervisor ([`sim`]) and by the real one
//! through Linux's Xen devices (`xen`, cargo feature `xen`). Everything
//! above this layer is written once, against the traits.

pub mod abi;
pub mod bench;
mod error;
pub mod event_loop;
mod handle;
pub mod memory;
pub mod port_batch;
mod shared_copy;
pub mod sim;
#[cfg(feature = "xen-devices")]
pub mod xen;

use std::fmt;
use std::mem::ManuallyDrop;
use std::os::fd::BorrowedFd;

pub use error::{errno_name, io_error_name, EvtchnError, GntSt, GrantError};
pub use handle::{Platform, PlatformKind};
pub use memory::{Mmap, OutOfRange, SharedMem};

/// A domain id (`domid_t`).
pub type DomId = u16;
/// An event-channel port (`evtchn_port_t`).
pub type Port = u32;
/// A grant reference (`grant_ref_t`).
pub type GrantRef = u32;

/// Event channels of one domain, as Linux's `/dev/xen/evtchn` offers them:
/// ports bound through this handle are delivered through it, each masked
/// after delivery until unmasked.
pub trait EventChannels: Send + Sync {
    /// Backend side: binds a new local port to `remote_port` of `remote`,
    /// which must have allocated it for this domain (EINVAL otherwise; ESRCH
    /// if the domain does not exist).
    fn bind_interdomain(&self, remote: DomId, remote_port: Port) -> Result<Port, EvtchnError>;
    /// Frontend side: allocates a port that `remote` may bind to.
    fn alloc_unbound(&self, remote: DomId) -> Result<Port, EvtchnError>;
    /// Closes a port of this handle (ENOTCONN if it is not one).
    fn unbind(&self, port: Port) -> Result<(), EvtchnError>;
    /// Signals the other end of a port of this handle (ENOTCONN if it is not
    /// one). A port whose other end is closed drops the signal, as Xen does.
    fn notify(&self, port: Port) -> Result<(), EvtchnError>;
    /// Appends the ports with a pending event, without blocking. Each stays
    /// masked (no further delivery) until [`EventChannels::unmask`].
    fn pending(&self, out: &mut Vec<Port>) -> Result<(), EvtchnError>;
    /// Re-enables delivery for a port; an event that arrived meanwhile is
    /// delivered at once.
    fn unmask(&self, port: Port) -> Result<(), EvtchnError>;
    /// A descriptor that polls readable while events are pending.
    fn fd(&self) -> BorrowedFd<'_>;
    /// The same descriptor, when it is a device that behaves as Linux's
    /// `/dev/xen/evtchn`: a read returns pending ports (native-endian
    /// `u32`s, without blocking) and a write of such ports unmasks them.
    /// The event loop then reads and unmasks through io_uring, in the same
    /// system call as its wait.
    fn device(&self) -> Option<BorrowedFd<'_>> {
        None
    }
}

/// Backend side of grant tables, as Linux's `/dev/xen/gntdev` offers it.
pub trait GrantMapper: Send + Sync {
    /// Maps the frames `refs` of `domid` granted to this domain into one
    /// contiguous mapping, read-only or writable. All or nothing: on a
    /// failure, what was mapped of the batch is unmapped again. An empty
    /// batch is EINVAL, as on Linux's gntdev.
    fn map(
        &self,
        domid: DomId,
        refs: &[GrantRef],
        writable: bool,
    ) -> Result<GrantMapping, GrantError>;
    /// Copies between granted frames and local buffers (GNTTABOP_copy). Each
    /// segment gets its own status; the call fails only if the batch could
    /// not be submitted at all.
    fn copy(&self, segments: &mut [CopySegment<'_>]) -> Result<(), GrantError>;
}

/// Frontend side of grant tables: the guest's own grant table.
pub trait GrantTable: Send + Sync {
    /// Grants `to` access to the guest frame `frame`.
    fn grant(&self, to: DomId, frame: u32, readonly: bool) -> Result<GrantRef, GrantError>;
    /// Ends a grant. Fails with [`GrantError::InUse`] while the grantee still
    /// has the frame mapped (or is copying it), as on Xen.
    fn end_access(&self, gref: GrantRef) -> Result<(), GrantError>;
}

/// Frames of another domain mapped into this process. Dropping it unmaps
/// them.
pub struct GrantMapping {
    map: ManuallyDrop<Mmap>,
    domid: DomId,
    refs: Vec<GrantRef>,
    writable: bool,
    release: Option<Box<dyn FnOnce() + Send + Sync>>,
}

impl GrantMapping {
    /// A mapping whose `release` runs after the memory is unmapped.
    pub fn new(
        map: Mmap,
        domid: DomId,
        refs: Vec<GrantRef>,
        writable: bool,
        release: Box<dyn FnOnce() + Send + Sync>,
    ) -> GrantMapping {
        GrantMapping {
            map: ManuallyDrop::new(map),
            domid,
            refs,
            writable,
            release: Some(release),
        }
    }

    /// The mapped frames, in the order of the references.
    pub fn mem(&self) -> SharedMem<'_> {
        self.map.mem()
    }

    /// The granting domain.
    pub fn domid(&self) -> DomId {
        self.domid
    }

    /// The references mapped.
    pub fn refs(&self) -> &[GrantRef] {
        &self.refs
    }

    /// Whether the mapping is writable.
    pub fn writable(&self) -> bool {
        self.writable
    }

    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether nothing is mapped.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

impl fmt::Debug for GrantMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "GrantMapping(d{} {:?} {})",
            self.domid,
            self.refs,
            if self.writable { "rw" } else { "ro" }
        )
    }
}

impl Drop for GrantMapping {
    fn drop(&mut self) {
        // Unmap first, then let the platform release the grants.
        // SAFETY: the mapping is dropped exactly once, here, and nothing can
        // use it afterwards: views of it borrow self.
        unsafe { ManuallyDrop::drop(&mut self.map) };
        if let Some(release) = self.release.take() {
            release();
        }
    }
}

/// One side of a grant copy.
pub enum CopySide<'a> {
    /// `offset` bytes into the frame granted by `domid` as `gref`.
    Grant {
        /// Granting domain.
        domid: DomId,
        /// Grant reference.
        gref: GrantRef,
        /// Offset in the frame.
        offset: u16,
    },
    /// A local buffer to copy from.
    From(&'a [u8]),
    /// A local buffer to copy into.
    Into(&'a mut [u8]),
}

/// One segment of a grant copy and, afterwards, its status.
pub struct CopySegment<'a> {
    /// Where the bytes come from: a grant or [`CopySide::From`].
    pub source: CopySide<'a>,
    /// Where they go: a grant or [`CopySide::Into`].
    pub dest: CopySide<'a>,
    /// Bytes to copy (at most a page, within the frame).
    pub len: u16,
    /// Set by [`GrantMapper::copy`].
    pub status: GntSt,
}

impl<'a> CopySegment<'a> {
    /// A segment not yet copied.
    pub fn new(source: CopySide<'a>, dest: CopySide<'a>, len: u16) -> CopySegment<'a> {
        CopySegment {
            source,
            dest,
            len,
            status: GntSt::GeneralError,
        }
    }
}
