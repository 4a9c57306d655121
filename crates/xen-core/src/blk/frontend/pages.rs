//! Building requests: the guest pages of a transfer granted (or, with
//! persistent grants, taken from the pool) and filled, the segments or
//! indirect pages encoded, and pages given back afterwards.

use super::*;

impl SimBlkFront {
    /// Encodes a request, granting its pages into `pages`; returns it with
    /// what to read back.
    #[allow(clippy::type_complexity)]
    pub(super) fn build(
        &mut self,
        op: BlkOp,
        id: u64,
        pages: &mut Vec<Page>,
    ) -> Result<(Request, Option<(usize, usize)>), BlkFrontError> {
        let handle = self.options.handle;
        let (operation, sector, segs, read) = match op {
            BlkOp::Read(sector, len, offset) => {
                let segs = self.data_pages(offset, len, None, pages)?;
                (BLKIF_OP_READ, sector, segs, Some((offset, len)))
            }
            BlkOp::Write(sector, data, offset) => {
                let segs = self.data_pages(offset, data.len(), Some(&data), pages)?;
                (BLKIF_OP_WRITE, sector, segs, None)
            }
            BlkOp::Flush => (BLKIF_OP_FLUSH_DISKCACHE, 0, Vec::new(), None),
            BlkOp::Discard(sector_number, nr_sectors, secure) => {
                let flag = if secure { BLKIF_DISCARD_SECURE } else { 0 };
                let d = DiscardRequest {
                    flag,
                    handle,
                    id,
                    sector_number,
                    nr_sectors,
                };
                return Ok((Request::Discard(d), None));
            }
            BlkOp::Raw(BLKIF_OP_DISCARD | BLKIF_OP_INDIRECT, ..) => {
                return Err(BlkFrontError::BadArgument("raw discard or indirect"))
            }
            BlkOp::Raw(operation, sector, segments) => (operation, sector, segments, None),
        };
        if segs.len() <= MAX_DIRECT {
            let mut seg = [Segment::default(); MAX_DIRECT];
            seg[..segs.len()].copy_from_slice(&segs);
            let (nr_segments, sector_number) = (segs.len() as u8, sector);
            let r = DirectRequest {
                operation,
                nr_segments,
                handle,
                id,
                sector_number,
                seg,
            };
            return Ok((Request::Direct(r), read));
        }
        if segs.len() > MAX_INDIRECT_SEGMENTS {
            return Err(BlkFrontError::TooManySegments(
                segs.len(),
                MAX_INDIRECT_SEGMENTS,
            ));
        }
        let mut indirect_grefs = [0; BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST];
        for (i, chunk) in segs.chunks(SEGMENTS_PER_INDIRECT_PAGE).enumerate() {
            let bytes: Vec<u8> = chunk.iter().flat_map(Segment::encode).collect();
            // Read-only: the backend only reads the segment list.
            let page = self.grant_page(true, Some((0, &bytes)))?;
            indirect_grefs[i] = page.gref;
            pages.push(page);
        }
        let (indirect_op, nr_segments, sector_number) = (operation, segs.len() as u16, sector);
        let r = IndirectRequest {
            indirect_op,
            nr_segments,
            id,
            sector_number,
            handle,
            indirect_grefs,
        };
        Ok((Request::Indirect(r), read))
    }

    pub(super) fn check_shape(offset: usize, len: usize) -> Result<(), BlkFrontError> {
        if len == 0 || !len.is_multiple_of(SECTOR_SIZE) {
            return Err(BlkFrontError::BadArgument("length not whole sectors"));
        }
        if !offset.is_multiple_of(SECTOR_SIZE) || offset >= PAGE_SIZE {
            return Err(BlkFrontError::BadArgument("offset not a sector of a page"));
        }
        Ok(())
    }

    /// Grants the data pages of a transfer of `len` bytes starting `offset`
    /// bytes into its first page, into `pages`, and returns their segments.
    /// A write's pages are filled from `data` and granted read-only.
    pub(super) fn data_pages(
        &mut self,
        offset: usize,
        len: usize,
        data: Option<&[u8]>,
        pages: &mut Vec<Page>,
    ) -> Result<Vec<Segment>, BlkFrontError> {
        SimBlkFront::check_shape(offset, len)?;
        let (end, max) = (offset + len, self.max_segments());
        if end.div_ceil(PAGE_SIZE) > max {
            return Err(BlkFrontError::TooManySegments(end.div_ceil(PAGE_SIZE), max));
        }
        let mut segs = Vec::new();
        for start in (0..end).step_by(PAGE_SIZE) {
            let (lo, hi) = (
                offset.max(start) - start,
                end.min(start + PAGE_SIZE) - start,
            );
            let bytes = data.map(|d| (lo, &d[start + lo - offset..start + hi - offset]));
            let page = self.grant_page(data.is_some(), bytes)?;
            let (first_sect, last_sect) = ((lo / SECTOR_SIZE) as u8, (hi / SECTOR_SIZE - 1) as u8);
            segs.push(Segment {
                gref: page.gref,
                first_sect,
                last_sect,
            });
            pages.push(page);
        }
        Ok(segs)
    }

    /// Takes a page, writes `contents` (offset, bytes) into it and grants it
    /// (with persistent grants: a pooled page, or a new one granted
    /// writable for good).
    pub(super) fn grant_page(
        &mut self,
        readonly: bool,
        contents: Option<(usize, &[u8])>,
    ) -> Result<Page, BlkFrontError> {
        let gt = &self.gnttab;
        if self.options.persistent {
            if let Some(page) = self.pool.pop() {
                if let (Some((at, bytes)), Some(mem)) = (contents, gt.page(page.frame)) {
                    let _ = mem.write(at, bytes);
                }
                return Ok(page);
            }
        }
        let readonly = readonly && !self.options.persistent;
        let frame = gt.alloc_page().ok_or(BlkFrontError::NoGuestMemory)?;
        if let (Some((at, bytes)), Some(page)) = (contents, gt.page(frame)) {
            let _ = page.write(at, bytes);
        }
        match gt.grant(self.backend, frame, readonly) {
            Ok(gref) => Ok(Page { frame, gref }),
            Err(e) => {
                gt.free_page(frame);
                Err(BlkFrontError::Grant(e))
            }
        }
    }

    /// A page of a finished request: back to the pool with persistent
    /// grants, else its grant ended.
    pub(super) fn give_back(&mut self, page: Page) {
        if self.options.persistent {
            self.pool.push(page);
        } else {
            self.release(page);
        }
    }

    /// Ends a page's grant and frees it; a page the backend still maps is
    /// kept (as on Xen, its grant cannot end yet) for a later attempt.
    pub(super) fn release(&mut self, page: Page) {
        match self.gnttab.end_access(page.gref) {
            Err(GrantError::InUse(_)) => self.held.push(page),
            // Ended now, or no longer granted at all: the page is ours.
            _ => self.gnttab.free_page(page.frame),
        }
    }
}
