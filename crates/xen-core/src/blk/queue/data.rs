//! A request's data: the guest's segments judged and given pages (our
//! own, or the guest's own mapped through the persistent-grant cache), a
//! write's data copied in, an indirect request's segment pages read, and
//! the pages recycled.

use super::*;

impl<P: BlkifAbi> QueueSource<P> {
    pub(super) fn page(&mut self) -> Box<Page> {
        self.pages.pop().unwrap_or_else(Page::new_boxed)
    }

    /// A segment in the guest's page `gref`, kept mapped by the persistent
    /// cache; `None` if the cache has no room for it.
    pub(super) fn guest_page(
        &mut self,
        gref: GrantRef,
        start: u16,
        len: u16,
    ) -> Result<Option<IoSegment>, GrantError> {
        let Some(cache) = &mut self.persistent else {
            return Ok(None);
        };
        let before = cache.maps();
        let map = cache.mapping(&*self.gntdev, gref);
        Counters::add(&self.counters.persistent_maps, cache.maps() - before);
        // A mapping too short or read-only for it (not one the cache
        // makes) is left to the copying path, which names the fault.
        Ok(map?.and_then(|map| IoSegment::in_guest(map, start, len)))
    }

    /// Builds a transfer's buffers: the guest's segments, judged, with a
    /// page each; a write's data copied in.
    #[allow(clippy::type_complexity)]
    pub(super) fn prepare(
        &mut self,
        write: bool,
        sector: u64,
        segments: Segments,
    ) -> Result<(Vec<IoSegment>, Vec<GuestSegment>), String> {
        self.segments.clear();
        match segments {
            Segments::Direct { seg, n } => self.segments.extend_from_slice(&seg[..n]),
            Segments::Indirect { grefs, pages, n } => {
                self.read_indirect(&grefs[..pages], n)?;
                request::check_indirect_segments(&self.segments, write, sector, &self.offer)
                    .map_err(|r| r.reason)?;
            }
        }
        let mut data = self.lists.pop().unwrap_or_default();
        let mut guest = self.guest_lists.pop().unwrap_or_default();
        let in_place = self.in_place;
        for i in 0..self.segments.len() {
            let s = self.segments[i];
            let start = u16::from(s.first_sect) * 512;
            let len = (u16::from(s.last_sect - s.first_sect) + 1) * 512;
            guest.push((s.gref, start, len));
            if in_place {
                match self.guest_page(s.gref, start, len) {
                    Ok(Some(segment)) => {
                        data.push(segment);
                        continue;
                    }
                    // No room in the cache: our own page, copied.
                    Ok(None) => {}
                    Err(e) => {
                        self.recycle(data);
                        self.recycle_guest(guest);
                        return Err(format!("segment {i} (gref {}): {e}", s.gref));
                    }
                }
            }
            let page = self.page();
            data.push(IoSegment::new(page, start, len));
        }
        if write {
            let copied = self.copy(&mut data, &guest, Direction::FromGuest);
            if let Err(reason) = copied {
                self.recycle(data);
                self.recycle_guest(guest);
                return Err(reason);
            }
            Counters::add(&self.counters.bytes_written, bytes_of(&data));
        }
        Ok((data, guest))
    }

    /// Copies an indirect request's segment pages out of the guest (once)
    /// and decodes the first `n` segments.
    pub(super) fn read_indirect(&mut self, grefs: &[u32], n: usize) -> Result<(), String> {
        let bytes = n * SEGMENT_SIZE;
        self.indirect.clear();
        self.indirect.resize(grefs.len() * 4096, 0);
        if let Some(cache) = &mut self.persistent {
            let before = cache.maps();
            let read = cache.read_pages(&*self.gntdev, &mut self.copies, grefs, &mut self.indirect);
            Counters::add(&self.counters.persistent_maps, cache.maps() - before);
            read?;
            return self.decode_indirect(bytes);
        }
        let frontend = self.frontend;
        let mut copies = reuse_vec(std::mem::take(&mut self.copies));
        copies.extend(self.indirect.chunks_mut(4096).zip(grefs).map(|(chunk, g)| {
            CopySegment::new(
                CopySide::Grant {
                    domid: frontend,
                    gref: *g,
                    offset: 0,
                },
                CopySide::Into(chunk),
                4096,
            )
        }));
        let copied = self
            .gntdev
            .copy(&mut copies)
            .map_err(|e| format!("indirect pages: {e}"))
            .and_then(|()| match first_failure(&copies) {
                Some((i, status)) => {
                    Err(format!("indirect page {i} (gref {}): {status}", grefs[i]))
                }
                None => Ok(()),
            });
        self.copies = reuse_vec(copies);
        copied?;
        self.decode_indirect(bytes)
    }

    pub(super) fn decode_indirect(&mut self, bytes: usize) -> Result<(), String> {
        for chunk in self.indirect[..bytes].chunks_exact(SEGMENT_SIZE) {
            let raw: &[u8; SEGMENT_SIZE] = chunk.try_into().expect("segment size");
            self.segments.push(Segment::decode(raw));
        }
        Ok(())
    }

    /// Moves a request's data between the guest and our buffers, through
    /// the persistent mappings if negotiated, else by grant copy.
    pub(super) fn copy(
        &mut self,
        data: &mut [IoSegment],
        guest: &[GuestSegment],
        dir: Direction,
    ) -> Result<(), String> {
        match &mut self.persistent {
            Some(cache) => {
                let before = cache.maps();
                let copied = cache.copy(&*self.gntdev, &mut self.copies, data, guest, dir);
                Counters::add(&self.counters.persistent_maps, cache.maps() - before);
                copied
            }
            None => grant_copy(
                &*self.gntdev,
                self.frontend,
                &mut self.copies,
                data,
                guest,
                dir,
            ),
        }
    }

    pub(super) fn recycle(&mut self, mut segments: Vec<IoSegment>) {
        self.pages
            .extend(segments.drain(..).filter_map(IoSegment::into_page));
        self.lists.push(segments);
    }

    pub(super) fn recycle_guest(&mut self, mut guest: Vec<GuestSegment>) {
        guest.clear();
        self.guest_lists.push(guest);
    }
}
