//! Grants on the simulated hypervisor: the backend's gntdev (map, copy) and
//! the frontend's grant table (grant, end access).

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use super::domain_mem::DomainMem;
use super::SimHost;
use crate::platform::abi::*;
use crate::platform::memory::{Mmap, SharedMem};
use crate::platform::{
    CopySegment, CopySide, DomId, GntSt, GrantError, GrantMapper, GrantMapping, GrantRef,
    GrantTable,
};

/// The backend side: maps and copies what other domains granted to `domid`.
pub struct SimGntdev {
    pub(super) host: SimHost,
    pub(super) domid: DomId,
}

impl SimGntdev {
    fn domain(&self, domid: DomId) -> Result<Arc<DomainMem>, GntSt> {
        self.host.domain_mem(domid).map_err(|_| GntSt::BadDomain)
    }
}

impl GrantMapper for SimGntdev {
    fn map(
        &self,
        domid: DomId,
        refs: &[GrantRef],
        writable: bool,
    ) -> Result<GrantMapping, GrantError> {
        if refs.is_empty() {
            // As Linux's gntdev answers a MAP_GRANT_REF of no grants.
            return Err(GrantError::Os(std::io::Error::from_raw_os_error(
                libc::EINVAL,
            )));
        }
        let dm = self.domain(domid).map_err(|s| GrantError::status(0, s))?;
        let mut region = Mmap::reserve(refs.len() * PAGE_SIZE)?;
        let mut pinned = Vec::with_capacity(refs.len());
        let unpin_all = move |dm: &DomainMem, pinned: &[GrantRef]| {
            for r in pinned {
                dm.unpin(*r, writable);
            }
        };
        for (i, gref) in refs.iter().enumerate() {
            let frame = match dm.pin(*gref, self.domid, writable) {
                Ok(f) => f,
                Err(status) => {
                    unpin_all(&dm, &pinned);
                    return Err(GrantError::status(i, status));
                }
            };
            pinned.push(*gref);
            if let Err(e) = region.place_fd(
                i * PAGE_SIZE,
                dm.memory_fd(),
                u64::from(frame) * PAGE_SIZE as u64,
                PAGE_SIZE,
                writable,
            ) {
                unpin_all(&dm, &pinned);
                return Err(e.into());
            }
        }
        // Every page is placed: the reservation is memory now.
        let map = match region.finish() {
            Ok(map) => map,
            Err(e) => {
                unpin_all(&dm, &pinned);
                return Err(e.into());
            }
        };
        let release_refs = refs.to_vec();
        Ok(GrantMapping::new(
            map,
            domid,
            refs.to_vec(),
            writable,
            Box::new(move || unpin_all(&dm, &release_refs)),
        ))
    }

    fn copy(&self, segments: &mut [CopySegment<'_>]) -> Result<(), GrantError> {
        for seg in segments.iter_mut() {
            seg.status = match self.copy_one(seg) {
                Ok(()) => GntSt::Okay,
                Err(s) => s,
            };
        }
        Ok(())
    }
}

/// A grant side of a copy, pinned for its duration.
struct Pinned {
    dm: Arc<DomainMem>,
    gref: GrantRef,
    writable: bool,
    base: usize,
}

impl Drop for Pinned {
    fn drop(&mut self) {
        self.dm.unpin(self.gref, self.writable);
    }
}

impl SimGntdev {
    fn pin_side(
        &self,
        side: &CopySide<'_>,
        len: u16,
        writable: bool,
    ) -> Result<Option<Pinned>, GntSt> {
        match side {
            CopySide::Grant {
                domid,
                gref,
                offset,
            } => {
                if usize::from(*offset) + usize::from(len) > PAGE_SIZE {
                    return Err(GntSt::BadCopyArg);
                }
                let dm = self.domain(*domid)?;
                let frame = dm.pin(*gref, self.domid, writable)?;
                Ok(Some(Pinned {
                    dm,
                    gref: *gref,
                    writable,
                    base: frame as usize * PAGE_SIZE + usize::from(*offset),
                }))
            }
            CopySide::From(b) if !writable && b.len() >= usize::from(len) => Ok(None),
            CopySide::Into(b) if writable && b.len() >= usize::from(len) => Ok(None),
            _ => Err(GntSt::BadCopyArg),
        }
    }

    fn copy_one(&self, seg: &mut CopySegment<'_>) -> Result<(), GntSt> {
        let len = usize::from(seg.len);
        if len > PAGE_SIZE {
            return Err(GntSt::BadCopyArg);
        }
        let src = self.pin_side(&seg.source, seg.len, false)?;
        let dst = self.pin_side(&seg.dest, seg.len, true)?;
        let fault = |_| GntSt::GeneralError;
        match (&src, &dst, &seg.source, &mut seg.dest) {
            (Some(s), None, _, CopySide::Into(b)) => {
                s.dm.memory().read(s.base, &mut b[..len]).map_err(fault)?
            }
            (None, Some(d), CopySide::From(b), _) => {
                d.dm.memory().write(d.base, &b[..len]).map_err(fault)?
            }
            (Some(s), Some(d), _, _) => {
                let mut bounce = [0u8; PAGE_SIZE];
                s.dm.memory()
                    .read(s.base, &mut bounce[..len])
                    .map_err(fault)?;
                d.dm.memory().write(d.base, &bounce[..len]).map_err(fault)?;
            }
            // Local to local is no grant copy.
            _ => return Err(GntSt::BadCopyArg),
        }
        Ok(())
    }
}

/// The frontend side: a guest's own grant table and memory.
pub struct SimGntTable {
    dm: Arc<DomainMem>,
    free: Mutex<Vec<GrantRef>>,
    granted: Mutex<HashSet<GrantRef>>,
    free_pages: Mutex<Vec<u32>>,
}

impl SimGntTable {
    pub(super) fn new(dm: Arc<DomainMem>) -> SimGntTable {
        let c = dm.config;
        // Lowest references first; the first ones stay reserved for the toolstack.
        let free = (GNTTAB_NR_RESERVED_ENTRIES..c.grant_entries())
            .rev()
            .collect();
        let free_pages = (c.grant_frames..c.pages).rev().collect();
        SimGntTable {
            dm,
            free: Mutex::new(free),
            granted: Mutex::new(HashSet::new()),
            free_pages: Mutex::new(free_pages),
        }
    }

    /// The guest's id.
    pub fn domid(&self) -> DomId {
        self.dm.domid()
    }

    /// Whether the guest still exists.
    pub fn alive(&self) -> bool {
        self.dm.alive()
    }

    /// The guest's whole memory.
    pub fn memory(&self) -> SharedMem<'_> {
        self.dm.memory()
    }

    /// One frame of the guest's memory.
    pub fn page(&self, frame: u32) -> Option<SharedMem<'_>> {
        (frame < self.dm.config.pages)
            .then(|| {
                self.dm
                    .memory()
                    .sub(frame as usize * PAGE_SIZE, PAGE_SIZE)
                    .ok()
            })
            .flatten()
    }

    /// Takes a free frame of guest memory (zeroed).
    pub fn alloc_page(&self) -> Option<u32> {
        let frame = self.free_pages.lock().ok()?.pop()?;
        if let Some(p) = self.page(frame) {
            let _ = p.fill(0, PAGE_SIZE, 0);
        }
        Some(frame)
    }

    /// Returns a frame to the free pool.
    pub fn free_page(&self, frame: u32) {
        if frame >= self.dm.config.grant_frames && frame < self.dm.config.pages {
            if let Ok(mut f) = self.free_pages.lock() {
                f.push(frame);
            }
        }
    }

    /// Writes a grant entry directly, as a guest may (tests of hostile
    /// guests); `flags` is stored last, like a guest kernel does.
    pub fn write_entry(&self, gref: GrantRef, flags: u16, domid: DomId, frame: u32) -> bool {
        let base = gref as usize * GRANT_ENTRY_V1_SIZE;
        let mem = self.dm.memory();
        let ok = gref < self.dm.config.grant_entries()
            && mem.atomic_u16(base + GRANT_ENTRY_DOMID).is_ok_and(|a| {
                a.store(domid, Ordering::Relaxed);
                true
            })
            && mem.store_u32(base + GRANT_ENTRY_FRAME, frame).is_ok();
        ok && self.dm.entry_flags(gref).is_some_and(|f| {
            f.store(flags, Ordering::Release);
            true
        })
    }

    /// The current flags of an entry (to observe GTF_reading/GTF_writing).
    pub fn entry_flags(&self, gref: GrantRef) -> Option<u16> {
        self.dm.entry_flags(gref).map(|f| f.load(Ordering::Acquire))
    }

    /// Fills one of the reserved entries (below
    /// [`GNTTAB_NR_RESERVED_ENTRIES`]), as Xen's domain builder seeds them
    /// for the toolstack: entry 0 grants the primary console's page to the
    /// console backend, entry 1 the XenStore page. [`GrantTable::grant`]
    /// never hands these out. The entry can be ended with
    /// [`GrantTable::end_access`] like any other, and then stays reserved.
    /// Fails with GNTST_bad_gntref for an entry that is not reserved,
    /// GNTST_bad_page for a frame outside the guest's pages, and
    /// [`GrantError::InUse`] while the entry is already granted.
    pub fn grant_reserved(
        &self,
        gref: GrantRef,
        to: DomId,
        frame: u32,
        readonly: bool,
    ) -> Result<(), GrantError> {
        if gref >= GNTTAB_NR_RESERVED_ENTRIES || gref >= self.dm.config.grant_entries() {
            return Err(GrantError::status(0, GntSt::BadGntref));
        }
        if frame < self.dm.config.grant_frames || frame >= self.dm.config.pages {
            return Err(GrantError::status(0, GntSt::BadPage));
        }
        let mut granted = self.granted.lock().map_err(|_| GrantError::InUse(gref))?;
        if !granted.insert(gref) {
            return Err(GrantError::InUse(gref));
        }
        let flags = GTF_PERMIT_ACCESS | if readonly { GTF_READONLY } else { 0 };
        if !self.write_entry(gref, flags, to, frame) {
            granted.remove(&gref);
            return Err(GrantError::status(0, GntSt::BadGntref));
        }
        Ok(())
    }
}

impl GrantTable for SimGntTable {
    fn grant(&self, to: DomId, frame: u32, readonly: bool) -> Result<GrantRef, GrantError> {
        if frame < self.dm.config.grant_frames || frame >= self.dm.config.pages {
            return Err(GrantError::status(0, GntSt::BadPage));
        }
        let gref = self
            .free
            .lock()
            .map_err(|_| GrantError::TableFull)?
            .pop()
            .ok_or(GrantError::TableFull)?;
        let flags = GTF_PERMIT_ACCESS | if readonly { GTF_READONLY } else { 0 };
        self.write_entry(gref, flags, to, frame);
        if let Ok(mut g) = self.granted.lock() {
            g.insert(gref);
        }
        Ok(gref)
    }

    fn end_access(&self, gref: GrantRef) -> Result<(), GrantError> {
        let mut granted = self
            .granted
            .lock()
            .map_err(|_| GrantError::NotGranted(gref))?;
        if !granted.contains(&gref) {
            return Err(GrantError::NotGranted(gref));
        }
        let flags = self
            .dm
            .entry_flags(gref)
            .ok_or(GrantError::NotGranted(gref))?;
        // As a guest kernel does: clear the entry only if the grantee is not
        // using it, atomically with that check.
        let mut f = flags.load(Ordering::Acquire);
        loop {
            if f & (GTF_READING | GTF_WRITING) != 0 {
                return Err(GrantError::InUse(gref));
            }
            match flags.compare_exchange(f, GTF_INVALID, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break,
                Err(now) => f = now,
            }
        }
        granted.remove(&gref);
        // A reserved entry goes back to the toolstack, not to the pool
        // `grant` takes from.
        if gref >= GNTTAB_NR_RESERVED_ENTRIES {
            if let Ok(mut free) = self.free.lock() {
                free.push(gref);
            }
        }
        Ok(())
    }
}
