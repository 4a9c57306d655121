//! Moving a request's data between the guest's granted pages and the
//! queue's own buffers, in one of two ways:
//!
//! - grant copy (the default): one `GNTTABOP_copy` batch per request, the
//!   guest's pages never mapped;
//! - persistent grants (`feature-persistent`, when both ends offer it): the
//!   frontend reuses a fixed set of granted pages, which the queue maps
//!   once and keeps mapped in a bounded cache, so a request costs no
//!   hypercall, as blkback's persistent grants. Storage that accepts guest
//!   pages does its I/O in the mapped pages themselves (no copy in the
//!   backend, as blkback hands the granted pages to the block layer);
//!   other storage gets plain memory copies.
//!
//! A copy is taken once, never read again: what the guest changes in its
//! pages after it has no effect on the request. In place, a guest that
//! changes a page while its own write is in flight changes only what that
//! write stores, as with blkback: the request itself (sectors, grants) was
//! judged on the backend's private copy of the slot.

use std::collections::HashMap;
use std::sync::Arc;

use super::reuse_vec;
use super::storage::IoSegment;
use crate::platform::{
    CopySegment, CopySide, DomId, GntSt, GrantError, GrantMapper, GrantMapping, GrantRef, SharedMem,
};

/// Persistent grants a queue keeps mapped at most: blkback's default
/// (`xen_blkif_max_pgrants`), about a ring's worth of direct requests.
pub const MAX_PERSISTENT_GRANTS: usize = 1056;

/// A cached page unused for this many times the cache's size in lookups
/// is idle, and may be purged to make room. Long enough to outlast a
/// cycle through any working set a ring can have in flight (a 16-page
/// ring of 1 MiB requests is under 4 times the default cache).
const IDLE_LOOKUPS: u64 = 4;

/// Which way data goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Direction {
    /// A write's data, out of the guest's pages.
    FromGuest,
    /// A read's data, into the guest's pages.
    IntoGuest,
}

/// A guest segment of a request: (grant, first byte in the page, bytes).
pub(super) type GuestSegment = (GrantRef, u16, u16);

/// Bytes of a request's buffers.
pub(super) fn bytes_of(data: &[IoSegment]) -> u64 {
    data.iter().map(|s| u64::from(s.len())).sum()
}

/// Copies a request's data between the guest's pages and ours, one grant
/// copy call for the whole request, with the descriptors in `scratch`'s
/// buffer; the first failed segment names the error.
pub(super) fn grant_copy(
    gntdev: &dyn GrantMapper,
    frontend: DomId,
    scratch: &mut Vec<CopySegment<'static>>,
    data: &mut [IoSegment],
    guest: &[GuestSegment],
    dir: Direction,
) -> Result<(), String> {
    let mut copies = reuse_vec(std::mem::take(scratch));
    copies.extend(
        data.iter_mut()
            .zip(guest)
            .map(|(local, &(gref, offset, len))| {
                let grant = CopySide::Grant {
                    domid: frontend,
                    gref,
                    offset,
                };
                match dir {
                    Direction::FromGuest => {
                        CopySegment::new(grant, CopySide::Into(local.bytes_mut()), len)
                    }
                    Direction::IntoGuest => {
                        CopySegment::new(CopySide::From(local.bytes()), grant, len)
                    }
                }
            }),
    );
    let copied = gntdev
        .copy(&mut copies)
        .map_err(|e| format!("grant copy: {e}"))
        .and_then(|()| match first_failure(&copies) {
            Some((i, status)) => Err(format!("segment {i} (gref {}): {status}", guest[i].0)),
            None => Ok(()),
        });
    *scratch = reuse_vec(copies);
    copied
}

/// The first segment of a grant copy that failed, and its status.
pub(super) fn first_failure(copies: &[CopySegment<'_>]) -> Option<(usize, GntSt)> {
    copies
        .iter()
        .position(|c| c.status != GntSt::Okay)
        .map(|i| (i, copies[i].status))
}

/// A frontend's persistently granted pages, mapped writable (a page serves
/// reads and writes in turn, as blkfront grants them) and kept mapped
/// until the queue stops.
///
/// The cache is bounded, and full it does not thrash: as blkback, a page
/// that finds no room is copied by grant copy instead, and room is made
/// only by purging pages that went unused for [`IDLE_LOOKUPS`] times the
/// cache's size in lookups. A frontend whose working set is larger than
/// the cache (a deep queue of large requests cycles through all its
/// pages) thus keeps a stable part of it mapped; a recency policy would
/// unmap and map pages on every request of such a cycle.
pub(super) struct GrantCache {
    frontend: DomId,
    entries: HashMap<GrantRef, Cached>,
    /// Counts lookups; stamps each use.
    clock: u64,
    /// The clock at the last purge.
    purged_at: u64,
    max: usize,
    /// Mappings made since the queue started (a steady workload stops
    /// adding to it).
    maps: u64,
}

struct Cached {
    /// Shared with the requests whose segments are this page (zero copy):
    /// a page purged while a request uses it stays mapped until that
    /// request lets go.
    map: Arc<GrantMapping>,
    used: u64,
}

/// A segment whose page has no room in the cache, copied by grant copy.
fn grant_side<'a>(frontend: DomId, gref: GrantRef, offset: u16) -> CopySide<'a> {
    CopySide::Grant {
        domid: frontend,
        gref,
        offset,
    }
}

impl GrantCache {
    /// An empty cache for `frontend`'s grants, of at most `max` pages.
    pub(super) fn new(frontend: DomId, max: usize) -> GrantCache {
        GrantCache {
            frontend,
            entries: HashMap::new(),
            clock: 0,
            purged_at: 0,
            max: max.max(1),
            maps: 0,
        }
    }

    /// Pages mapped now.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Mappings made so far.
    pub(super) fn maps(&self) -> u64 {
        self.maps
    }

    /// The page granted as `gref`: cached, or mapped now if there is room
    /// (after purging, at most once per `max` lookups, the idle pages);
    /// `None` if the cache is full.
    pub(super) fn page(
        &mut self,
        gntdev: &dyn GrantMapper,
        gref: GrantRef,
    ) -> Result<Option<SharedMem<'_>>, GrantError> {
        Ok(self.lookup(gntdev, gref)?.map(|map| map.mem()))
    }

    /// As [`GrantCache::page`], the mapping itself, for a request to do its
    /// I/O in the guest's page (held until the request is done).
    pub(super) fn mapping(
        &mut self,
        gntdev: &dyn GrantMapper,
        gref: GrantRef,
    ) -> Result<Option<Arc<GrantMapping>>, GrantError> {
        Ok(self.lookup(gntdev, gref)?.map(Arc::clone))
    }

    fn lookup(
        &mut self,
        gntdev: &dyn GrantMapper,
        gref: GrantRef,
    ) -> Result<Option<&Arc<GrantMapping>>, GrantError> {
        self.clock += 1;
        let clock = self.clock;
        if !self.entries.contains_key(&gref) {
            if self.entries.len() >= self.max {
                if clock - self.purged_at < self.max as u64 {
                    return Ok(None);
                }
                let since = clock.saturating_sub(IDLE_LOOKUPS * self.max as u64);
                self.entries.retain(|_, e| e.used > since);
                self.purged_at = clock;
                if self.entries.len() >= self.max {
                    return Ok(None);
                }
            }
            let map = gntdev.map(self.frontend, &[gref], true)?;
            self.maps += 1;
            self.entries.insert(
                gref,
                Cached {
                    map: Arc::new(map),
                    used: clock,
                },
            );
        }
        let entry = self.entries.get_mut(&gref).expect("present or just added");
        entry.used = clock;
        Ok(Some(&entry.map))
    }

    /// Copies a request's data between the guest's pages (mapped through
    /// the cache) and ours; the pages without room go in one grant-copy
    /// batch, in `scratch`'s buffer. A grant that cannot be mapped or
    /// copied fails the request, naming it.
    pub(super) fn copy(
        &mut self,
        gntdev: &dyn GrantMapper,
        scratch: &mut Vec<CopySegment<'static>>,
        data: &mut [IoSegment],
        guest: &[GuestSegment],
        dir: Direction,
    ) -> Result<(), String> {
        let frontend = self.frontend;
        let mut misses = reuse_vec(std::mem::take(scratch));
        let mut result = Ok(());
        for (i, (local, &(gref, offset, len))) in data.iter_mut().zip(guest).enumerate() {
            if local.in_guest_page() {
                // The I/O was done in the guest's page itself.
                continue;
            }
            let page = match self.page(gntdev, gref) {
                Ok(page) => page,
                Err(e) => {
                    result = Err(format!("segment {i} (gref {gref}): {e}"));
                    break;
                }
            };
            let Some(page) = page else {
                let grant = grant_side(frontend, gref, offset);
                misses.push(match dir {
                    Direction::FromGuest => {
                        CopySegment::new(grant, CopySide::Into(local.bytes_mut()), len)
                    }
                    Direction::IntoGuest => {
                        CopySegment::new(CopySide::From(local.bytes()), grant, len)
                    }
                });
                continue;
            };
            // In range: the request check bounds offset + len by the page.
            let at = usize::from(offset);
            let copied = match dir {
                Direction::FromGuest => page.read(at, local.bytes_mut()),
                Direction::IntoGuest => page.write(at, local.bytes()),
            };
            if copied.is_err() {
                result = Err(format!("segment {i} (gref {gref}): outside its page"));
                break;
            }
        }
        if result.is_ok() && !misses.is_empty() {
            result = copy_batch(gntdev, &mut misses);
        }
        *scratch = reuse_vec(misses);
        result
    }

    /// Reads whole pages (an indirect request's segment lists) into `out`,
    /// one page per grant, those without room by grant copy.
    pub(super) fn read_pages(
        &mut self,
        gntdev: &dyn GrantMapper,
        scratch: &mut Vec<CopySegment<'static>>,
        grefs: &[u32],
        out: &mut [u8],
    ) -> Result<(), String> {
        let frontend = self.frontend;
        let mut misses = reuse_vec(std::mem::take(scratch));
        let mut result = Ok(());
        for (i, (chunk, &gref)) in out.chunks_mut(4096).zip(grefs).enumerate() {
            match self.page(gntdev, gref) {
                Ok(Some(page)) => {
                    if page.read(0, chunk).is_err() {
                        result = Err(format!("indirect page {i} (gref {gref}): short page"));
                        break;
                    }
                }
                Ok(None) => {
                    let len = chunk.len() as u16;
                    let grant = grant_side(frontend, gref, 0);
                    misses.push(CopySegment::new(grant, CopySide::Into(chunk), len));
                }
                Err(e) => {
                    result = Err(format!("indirect page {i} (gref {gref}): {e}"));
                    break;
                }
            }
        }
        if result.is_ok() && !misses.is_empty() {
            result = copy_batch(gntdev, &mut misses);
        }
        *scratch = reuse_vec(misses);
        result
    }
}

/// One grant-copy call for `copies`; the first failure names its grant.
fn copy_batch(gntdev: &dyn GrantMapper, copies: &mut [CopySegment<'_>]) -> Result<(), String> {
    gntdev
        .copy(copies)
        .map_err(|e| format!("grant copy: {e}"))?;
    match first_failure(copies) {
        None => Ok(()),
        Some((i, status)) => {
            let c = &copies[i];
            let gref = match (&c.source, &c.dest) {
                (CopySide::Grant { gref, .. }, _) | (_, CopySide::Grant { gref, .. }) => *gref,
                _ => 0,
            };
            Err(format!("gref {gref}: {status}"))
        }
    }
}
