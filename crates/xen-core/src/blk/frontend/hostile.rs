//! Misbehaving on purpose: what a hostile guest does to a ring, to test
//! that backends survive it.

use super::*;

impl SimBlkFront {
    /// The ring's pages, to play a hostile guest; `None` once closed.
    pub fn ring_mem(&self) -> Option<SharedMem<'_>> {
        self.ring.as_ref()?;
        ring_view(&self.gnttab, self.ring_frame, self.ring_refs.len())
    }

    /// Writes `bytes` into the next request slot (zero-padded or cut to the
    /// request size), pushes and notifies as for any request. Its id is
    /// what the bytes say; a response with that id is its answer, whatever
    /// the operation.
    pub fn push_raw_request(&mut self, bytes: &[u8]) -> Result<RequestId, BlkFrontError> {
        self.make_room()?;
        let (ring, mem) = self.usable()?;
        let written = ring.write(mem, bytes);
        let (slot, req) = written.map_err(|e| self.ring_fault(e))?;
        self.track(req.id(), slot, None, None, Vec::new());
        self.push()?;
        Ok(RequestId(req.id()))
    }

    /// Stores `req_prod` as given, without notifying.
    pub fn set_req_prod(&mut self, value: u32) -> Result<(), BlkFrontError> {
        let mem = self.ring_mem().ok_or(BlkFrontError::Closed)?;
        let word = mem
            .atomic_u32(REQ_PROD)
            .map_err(|_| BlkFrontError::Closed)?;
        // Release, as a real push: slots written before are visible with it.
        word.store(value, Ordering::Release);
        Ok(())
    }

    /// Overwrites bytes of a page of a request already pushed: its data
    /// pages in segment order, then its indirect pages (the segment lists),
    /// to test that a backend copies a segment list once.
    pub fn rewrite_page(
        &mut self,
        id: RequestId,
        index: usize,
        at: usize,
        bytes: &[u8],
    ) -> Result<(), BlkFrontError> {
        let entry = self.in_flight.get(&id.0);
        let pages = &entry.ok_or(BlkFrontError::UnknownRequest(id))?.pages;
        let page = pages
            .get(index)
            .ok_or(BlkFrontError::BadArgument("no such page in the request"))?;
        let mem = self.gnttab.page(page.frame).ok_or(BlkFrontError::Closed)?;
        let written = mem.write(at, bytes);
        written.map_err(|_| BlkFrontError::BadArgument("bytes outside the page"))
    }

    /// Overwrites the slot of a request already pushed (`bytes` cut to the
    /// request size), to test that a backend copies each request once.
    pub fn rewrite_request(&mut self, id: RequestId, bytes: &[u8]) -> Result<(), BlkFrontError> {
        let entry = self.in_flight.get(&id.0);
        let index = entry.ok_or(BlkFrontError::UnknownRequest(id))?.slot;
        let (at, len) = self.ring.as_ref().ok_or(BlkFrontError::Closed)?.slot(index);
        let mem = self.ring_mem().ok_or(BlkFrontError::Closed)?;
        let written = mem.write(at, &bytes[..bytes.len().min(len)]);
        written.map_err(|_| BlkFrontError::BadArgument("slot outside the ring"))
    }
}
