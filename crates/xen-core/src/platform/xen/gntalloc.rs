//! Granting pages to another domain from user space, through
//! `/dev/xen/gntalloc` (a frontend in dom0 or a driver domain).

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;

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
        // Header (16 bytes) then `count` u32 ids, in u64 storage for alignment.
        let mut buf = vec![0u64; (16 + count as usize * 4).div_ceil(8)];
        {
            // SAFETY: u64 storage viewed as u16/u32 fields at their C offsets.
            let words: &mut [u32] =
                unsafe { std::slice::from_raw_parts_mut(buf.as_mut_ptr().cast(), buf.len() * 2) };
            words[0] = u32::from(domid)
                | (u32::from(if writable { GNTALLOC_FLAG_WRITABLE } else { 0 }) << 16);
            words[1] = count;
        }
        // SAFETY: the buffer holds the header and `count` ids.
        unsafe {
            self.ops.ioctl(
                self.fd.as_fd(),
                IOCTL_GNTALLOC_ALLOC_GREF,
                buf.as_mut_ptr().cast(),
            )
        }?;
        let index = buf[1];
        // SAFETY: as above, read back the ids the kernel filled in.
        let words: &[u32] =
            unsafe { std::slice::from_raw_parts(buf.as_ptr().cast(), buf.len() * 2) };
        let refs = words[4..4 + count as usize].to_vec();
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
