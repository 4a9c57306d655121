//! Grant mapping and copying through `/dev/xen/gntdev`.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;

use super::abi::*;
use super::ops::DeviceOps;
use crate::platform::abi::PAGE_SIZE;
use crate::platform::{
    CopySegment, CopySide, DomId, GntSt, GrantError, GrantMapper, GrantMapping, GrantRef,
};

/// The gntdev device.
pub const GNTDEV_DEVICE: &str = "/dev/xen/gntdev";

/// Segments per GRANT_COPY ioctl.
pub const COPY_BATCH: usize = 256;

/// An open `/dev/xen/gntdev` handle.
pub struct XenGntdev<O: DeviceOps> {
    ops: Arc<O>,
    fd: Arc<OwnedFd>,
}

impl<O: DeviceOps> XenGntdev<O> {
    /// Opens the device.
    pub fn open(ops: Arc<O>, path: &Path) -> Result<XenGntdev<O>, GrantError> {
        let fd = ops
            .open(path, false)
            .map_err(|e| GrantError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
        Ok(XenGntdev {
            ops,
            fd: Arc::new(fd),
        })
    }
}

/// Builds the MAP_GRANT_REF argument: the header then one (domid, ref) per
/// grant, typed, in one allocation.
fn map_argument(domid: DomId, refs: &[GrantRef]) -> Result<GntdevMapGrantRefArg, GrantError> {
    let refs: Vec<GntdevGrantRef> = refs
        .iter()
        .map(|&gref| GntdevGrantRef {
            domid: u32::from(domid),
            gref,
        })
        .collect();
    GntdevMapGrantRefArg::from_entries(&refs)
        .map_err(|_| GrantError::Os(std::io::Error::from_raw_os_error(libc::EINVAL)))
}

fn unmap_grants<O: DeviceOps>(ops: &O, fd: &OwnedFd, index: u64, count: u32) {
    let mut arg = GntdevUnmapGrantRef {
        index,
        count,
        pad: 0,
    };
    // SAFETY: UNMAP_GRANT_REF takes this struct.
    let _ = unsafe {
        ops.ioctl(
            fd.as_fd(),
            IOCTL_GNTDEV_UNMAP_GRANT_REF,
            (&mut arg as *mut GntdevUnmapGrantRef).cast(),
        )
    };
}

impl<O: DeviceOps> GrantMapper for XenGntdev<O> {
    fn map(
        &self,
        domid: DomId,
        refs: &[GrantRef],
        writable: bool,
    ) -> Result<GrantMapping, GrantError> {
        if refs.is_empty() {
            // The kernel's answer to a MAP_GRANT_REF of no grants: refused
            // here, before any call.
            return Err(GrantError::Os(std::io::Error::from_raw_os_error(
                libc::EINVAL,
            )));
        }
        let mut arg = map_argument(domid, refs)?;
        // SAFETY: MAP_GRANT_REF takes this struct: the wrapper holds the
        // header and its `count` refs contiguously (at least the C struct's
        // size, refs[1] included), alive and unmoved for the call.
        unsafe {
            self.ops.ioctl(
                self.fd.as_fd(),
                IOCTL_GNTDEV_MAP_GRANT_REF,
                arg.as_mut_fam_struct_ptr().cast(),
            )
        }?;
        let index = arg.as_fam_struct_ref().index();
        let count = refs.len() as u32;
        // The hypervisor maps the grants here; one refused grant fails the
        // whole mmap, and the kernel undoes the rest.
        let map = match self
            .ops
            .mmap(self.fd.as_fd(), refs.len() * PAGE_SIZE, writable, index)
        {
            Ok(m) => m,
            Err(e) => {
                unmap_grants(self.ops.as_ref(), &self.fd, index, count);
                return Err(GrantError::Os(e));
            }
        };
        let (ops, fd) = (self.ops.clone(), self.fd.clone());
        Ok(GrantMapping::new(
            map,
            domid,
            refs.to_vec(),
            writable,
            Box::new(move || unmap_grants(ops.as_ref(), &fd, index, count)),
        ))
    }

    fn copy(&self, segments: &mut [CopySegment<'_>]) -> Result<(), GrantError> {
        for chunk in segments.chunks_mut(COPY_BATCH) {
            // Malformed segments are answered here and not sent.
            let mut sent = Vec::with_capacity(chunk.len());
            let mut raw = Vec::with_capacity(chunk.len());
            for (i, seg) in chunk.iter_mut().enumerate() {
                match encode_segment(seg) {
                    Some(r) => {
                        sent.push(i);
                        raw.push(r);
                    }
                    None => seg.status = GntSt::BadCopyArg,
                }
            }
            if raw.is_empty() {
                continue;
            }
            let mut arg = GntdevGrantCopy {
                count: raw.len() as u32,
                segments: raw.as_mut_ptr(),
            };
            // SAFETY: GRANT_COPY takes this struct; `segments` points to
            // `count` segments alive for the call, whose local pointers come
            // from buffers borrowed by `chunk`.
            unsafe {
                self.ops.ioctl(
                    self.fd.as_fd(),
                    IOCTL_GNTDEV_GRANT_COPY,
                    (&mut arg as *mut GntdevGrantCopy).cast(),
                )
            }?;
            for (i, r) in sent.into_iter().zip(&raw) {
                chunk[i].status = GntSt::from_code(r.status);
            }
        }
        Ok(())
    }
}

/// Packs one segment, or `None` if it is malformed: a local buffer shorter
/// than the length, a grant offset past the frame, the wrong kind of local
/// side, or no grant at all (Xen would answer GNTST_bad_copy_arg).
fn encode_segment(seg: &mut CopySegment<'_>) -> Option<GntdevGrantCopySegment> {
    let len = usize::from(seg.len);
    if len > PAGE_SIZE {
        return None;
    }
    let mut flags = 0;
    let mut side = |s: &mut CopySide<'_>, is_source: bool| -> Option<GntdevCopyPtr> {
        match s {
            CopySide::Grant {
                domid,
                gref,
                offset,
            } if usize::from(*offset) + len <= PAGE_SIZE => {
                flags |= if is_source {
                    GNTCOPY_SOURCE_GREF
                } else {
                    GNTCOPY_DEST_GREF
                };
                Some(GntdevCopyPtr {
                    foreign: GntdevForeign {
                        gref: *gref,
                        offset: *offset,
                        domid: *domid,
                    },
                })
            }
            CopySide::From(b) if is_source && b.len() >= len => Some(GntdevCopyPtr {
                virt: b.as_ptr() as *mut u8,
            }),
            CopySide::Into(b) if !is_source && b.len() >= len => Some(GntdevCopyPtr {
                virt: b.as_mut_ptr(),
            }),
            _ => None,
        }
    };
    let source = side(&mut seg.source, true)?;
    let dest = side(&mut seg.dest, false)?;
    if flags == 0 {
        return None;
    }
    Some(GntdevGrantCopySegment {
        source,
        dest,
        len: seg.len,
        flags,
        status: 0,
    })
}
