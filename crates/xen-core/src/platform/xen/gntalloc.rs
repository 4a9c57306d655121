//! Granting pages to another domain from user space, through
//! `/dev/xen/gntalloc` (a frontend in dom0 or a driver domain).

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;

use vmm_sys_util::fam::FamStruct;

use super::abi::*;
use super::ops::DeviceOps;
use crate::platform::abi::PAGE_SIZE;
use crate::platform::memory::{Mmap, SharedMem};
use crate::platform::{DomId, GrantError, GrantRef};

/// The gntalloc device.
pub const GNTALLOC_DEVICE: &str = "/dev/xen/gntalloc";

/// An open `/dev/xen/gntalloc` handle.
pub struct XenGntalloc<O: DeviceOps> {
    ops: Arc<O>,
    fd: Arc<OwnedFd>,
}

/// Pages allocated and granted; dropping them ends the grants. The kernel
/// keeps a page whose grant is still mapped by the grantee until it is
/// unmapped, as Xen requires.
pub struct GrantedPages<O: DeviceOps> {
    map: Option<Mmap>,
    refs: Vec<GrantRef>,
    index: u64,
    ops: Arc<O>,
    fd: Arc<OwnedFd>,
}

impl<O: DeviceOps> GrantedPages<O> {
    /// The grant references, one per page.
    pub fn refs(&self) -> &[GrantRef] {
        &self.refs
    }

    /// The pages.
    pub fn mem(&self) -> SharedMem<'_> {
        self.map.as_ref().expect("mapped until dropped").mem()
    }
}

impl<O: DeviceOps> Drop for GrantedPages<O> {
    fn drop(&mut self) {
        drop(self.map.take());
        let mut arg = GntallocDeallocGref {
            index: self.index,
            count: self.refs.len() as u32,
        };
        // SAFETY: DEALLOC_GREF takes this struct.
        let _ = unsafe {
            self.ops.ioctl(
                self.fd.as_fd(),
                IOCTL_GNTALLOC_DEALLOC_GREF,
                (&mut arg as *mut GntallocDeallocGref).cast(),
            )
        };
    }
}

impl<O: DeviceOps> XenGntalloc<O> {
    /// Opens the device.
    pub fn open(ops: Arc<O>, path: &Path) -> Result<XenGntalloc<O>, GrantError> {
        let fd = ops
            .open(path, false)
            .map_err(|e| GrantError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
        Ok(XenGntalloc {
            ops,
            fd: Arc::new(fd),
        })
    }

    /// Allocates `count` zeroed pages and grants them to `domid`.
    pub fn grant_pages(
        &self,
        domid: DomId,
        count: u32,
        writable: bool,
    ) -> Result<GrantedPages<O>, GrantError> {
        if count == 0 {
            return Err(GrantError::TableFull);
        }
        let invalid = |_| GrantError::Os(std::io::Error::from_raw_os_error(libc::EINVAL));
        let mut arg = GntallocAllocGrefArg::from_header(GntallocAllocGref::new(domid, writable))
            .map_err(invalid)?;
        for _ in 0..count {
            arg.push(0).map_err(invalid)?;
        }
        // SAFETY: ALLOC_GREF takes this struct: the wrapper holds the header
        // and room for its `count` ids contiguously (at least the C
        // struct's size, gref_ids[1] included), alive and unmoved for the
        // call.
        unsafe {
            self.ops.ioctl(
                self.fd.as_fd(),
                IOCTL_GNTALLOC_ALLOC_GREF,
                arg.as_mut_fam_struct_ptr().cast(),
            )
        }?;
        let answer = arg.as_fam_struct_ref();
        if answer.len() != count as usize {
            // The kernel writes the header back as it read it; a count it
            // changed would make the ids unreadable.
            return Err(GrantError::Os(std::io::Error::from_raw_os_error(libc::EIO)));
        }
        let index = answer.index();
        let refs = arg.as_slice().to_vec();
        let map = self
            .ops
            .mmap(self.fd.as_fd(), count as usize * PAGE_SIZE, true, index);
        let mut pages = GrantedPages {
            map: None,
            refs,
            index,
            ops: self.ops.clone(),
            fd: self.fd.clone(),
        };
        // On failure, dropping `pages` ends the grants again.
        pages.map = Some(map?);
        Ok(pages)
    }
}
