//! Grants for JavaScript: a backend's gntdev (map, copy) and a guest's
//! grant table and memory, on the simulated hypervisor.

use std::sync::{Arc, Mutex};

use napi::bindgen_prelude::Buffer;
use napi_derive::napi;

use super::{coded_error, domid, grant_error, Result};
use crate::platform::sim::SimGntTable;
use crate::platform::{CopySegment, CopySide, GrantMapper, GrantMapping, GrantTable};

/// A grant to copy to or from.
#[napi(object)]
pub struct GrantSpan {
    /// Granting domain.
    pub domid: u32,
    /// Grant reference.
    pub gref: u32,
    /// Offset in the frame.
    pub offset: u32,
    /// Bytes (for copies out of the grant).
    pub length: Option<u32>,
    /// Bytes (for copies into the grant).
    pub data: Option<Buffer>,
}

/// The result of one copy segment.
#[napi(object)]
pub struct CopyResult {
    /// GNTST code (0: okay).
    pub status: i32,
    /// The bytes copied out, for a successful copy out.
    pub data: Option<Buffer>,
}

fn u16_of(v: u32, what: &str) -> Result<u16> {
    u16::try_from(v).map_err(|_| coded_error("EINVAL", format!("{what} {v} out of range")))
}

/// The grant mapper of a backend domain (simulated or real).
#[napi]
pub struct NativeGrantDevice {
    pub(crate) dev: Arc<dyn GrantMapper>,
}

#[napi]
impl NativeGrantDevice {
    /// Maps a batch of grants of `domid` into one contiguous mapping.
    #[napi]
    pub fn map(&self, domid: u32, refs: Vec<u32>, writable: bool) -> Result<NativeGrantMapping> {
        let m = self
            .dev
            .map(self::domid(domid)?, &refs, writable)
            .map_err(grant_error)?;
        Ok(NativeGrantMapping {
            map: Mutex::new(Some(m)),
        })
    }

    /// Copies buffers into grants; one GNTST status per segment.
    #[napi]
    pub fn copy_in(&self, spans: Vec<GrantSpan>) -> Result<Vec<i32>> {
        let datas: Vec<Vec<u8>> = spans
            .iter()
            .map(|s| s.data.as_deref().unwrap_or(&[]).to_vec())
            .collect();
        let mut segs = Vec::with_capacity(spans.len());
        for (s, data) in spans.iter().zip(&datas) {
            segs.push(CopySegment::new(
                CopySide::From(data),
                CopySide::Grant {
                    domid: domid(s.domid)?,
                    gref: s.gref,
                    offset: u16_of(s.offset, "offset")?,
                },
                u16_of(data.len() as u32, "length")?,
            ));
        }
        self.dev.copy(&mut segs).map_err(grant_error)?;
        Ok(segs.iter().map(|s| s.status as i32).collect())
    }

    /// Copies out of grants.
    #[napi]
    pub fn copy_out(&self, spans: Vec<GrantSpan>) -> Result<Vec<CopyResult>> {
        let mut bufs: Vec<Vec<u8>> = spans
            .iter()
            .map(|s| vec![0u8; s.length.unwrap_or(0) as usize])
            .collect();
        let mut segs = Vec::with_capacity(spans.len());
        for (s, buf) in spans.iter().zip(bufs.iter_mut()) {
            let len = u16_of(buf.len() as u32, "length")?;
            segs.push(CopySegment::new(
                CopySide::Grant {
                    domid: domid(s.domid)?,
                    gref: s.gref,
                    offset: u16_of(s.offset, "offset")?,
                },
                CopySide::Into(buf),
                len,
            ));
        }
        self.dev.copy(&mut segs).map_err(grant_error)?;
        let statuses: Vec<i32> = segs.iter().map(|s| s.status as i32).collect();
        drop(segs);
        Ok(statuses
            .into_iter()
            .zip(bufs)
            .map(|(status, data)| CopyResult {
                status,
                data: (status == 0).then(|| data.into()),
            })
            .collect())
    }
}

/// Frames of another domain mapped here.
#[napi]
pub struct NativeGrantMapping {
    map: Mutex<Option<GrantMapping>>,
}

impl NativeGrantMapping {
    fn with<R>(&self, f: impl FnOnce(&GrantMapping) -> Result<R>) -> Result<R> {
        let guard = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let m = guard
            .as_ref()
            .ok_or_else(|| coded_error("EBADF", "the mapping was unmapped"))?;
        f(m)
    }
}

#[napi]
impl NativeGrantMapping {
    /// Size in bytes.
    #[napi(getter)]
    pub fn length(&self) -> Result<u32> {
        self.with(|m| Ok(m.len() as u32))
    }

    /// Whether it is writable.
    #[napi(getter)]
    pub fn writable(&self) -> Result<bool> {
        self.with(|m| Ok(m.writable()))
    }

    /// Copies bytes out.
    #[napi]
    pub fn read(&self, offset: u32, length: u32) -> Result<Buffer> {
        self.with(|m| {
            let mut buf = vec![0u8; length as usize];
            m.mem()
                .read(offset as usize, &mut buf)
                .map_err(|e| coded_error("ERANGE", e))?;
            Ok(buf.into())
        })
    }

    /// Copies bytes in (a read-only mapping refuses).
    #[napi]
    pub fn write(&self, offset: u32, data: Buffer) -> Result<()> {
        self.with(|m| {
            if !m.writable() {
                return Err(coded_error("EACCES", "the mapping is read-only"));
            }
            m.mem()
                .write(offset as usize, &data)
                .map_err(|e| coded_error("ERANGE", e))
        })
    }

    /// Unmaps (also done when garbage-collected).
    #[napi]
    pub fn unmap(&self) {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}

/// A guest's grant table and memory.
#[napi]
pub struct NativeGuestGrantTable {
    pub(crate) gt: Arc<SimGntTable>,
}

#[napi]
impl NativeGuestGrantTable {
    /// A free frame of guest memory, zeroed.
    #[napi]
    pub fn alloc_page(&self) -> Result<u32> {
        self.gt
            .alloc_page()
            .ok_or_else(|| coded_error("ENOMEM", "guest memory is full"))
    }

    /// Returns a frame.
    #[napi]
    pub fn free_page(&self, frame: u32) {
        self.gt.free_page(frame);
    }

    /// Reads guest memory.
    #[napi]
    pub fn read_page(&self, frame: u32, offset: u32, length: u32) -> Result<Buffer> {
        let page = self
            .gt
            .page(frame)
            .ok_or_else(|| coded_error("ERANGE", format!("no frame {frame}")))?;
        let mut buf = vec![0u8; length as usize];
        page.read(offset as usize, &mut buf)
            .map_err(|e| coded_error("ERANGE", e))?;
        Ok(buf.into())
    }

    /// Writes guest memory.
    #[napi]
    pub fn write_page(&self, frame: u32, offset: u32, data: Buffer) -> Result<()> {
        let page = self
            .gt
            .page(frame)
            .ok_or_else(|| coded_error("ERANGE", format!("no frame {frame}")))?;
        page.write(offset as usize, &data)
            .map_err(|e| coded_error("ERANGE", e))
    }

    /// Grants a frame to `to`.
    #[napi]
    pub fn grant(&self, to: u32, frame: u32, readonly: bool) -> Result<u32> {
        self.gt
            .grant(domid(to)?, frame, readonly)
            .map_err(grant_error)
    }

    /// Ends a grant (EBUSY while the grantee maps it).
    #[napi]
    pub fn end_access(&self, gref: u32) -> Result<()> {
        self.gt.end_access(gref).map_err(grant_error)
    }

    /// The flags word of an entry (GTF_reading 8, GTF_writing 16 while used).
    #[napi]
    pub fn entry_flags(&self, gref: u32) -> Option<u32> {
        self.gt.entry_flags(gref).map(u32::from)
    }

    /// Writes an entry directly, as a hostile guest may.
    #[napi]
    pub fn write_entry(&self, gref: u32, flags: u32, to: u32, frame: u32) -> Result<bool> {
        Ok(self
            .gt
            .write_entry(gref, u16_of(flags, "flags")?, domid(to)?, frame))
    }
}
