//! Taking responses: each checked as hardened blkfront checks it (known
//! id, echoed operation), the request's grants ended before its data is
//! read (or, with persistent grants, the data copied out of the pooled
//! pages), and the outcome kept for whoever waits.

use super::*;

impl SimBlkFront {
    pub(super) fn complete(&mut self, rsp: Response) -> Result<(), BlkFrontError> {
        self.stats.responses += 1;
        let Some(entry) = self.in_flight.remove(&rsp.id) else {
            return Err(self.fail(BackendFault::UnknownId(rsp.id)));
        };
        let id = RequestId(rsp.id);
        if let Some(sent) = entry.expect.filter(|op| *op != rsp.operation) {
            entry.pages.into_iter().for_each(|p| self.give_back(p));
            return Err(self.fail(BackendFault::WrongOperation(id.0, sent, rsp.operation)));
        }
        if self.options.persistent {
            return self.complete_persistent(id, entry, rsp.status);
        }
        // End the backend's access before looking at the data, so that it
        // can no longer change what we read.
        let (mut ended, mut still_mapped) = (Vec::new(), None);
        for p in entry.pages {
            match self.gnttab.end_access(p.gref) {
                Err(GrantError::InUse(g)) => {
                    still_mapped.get_or_insert(g);
                    self.held.push(p);
                }
                _ => ended.push(p),
            }
        }
        let data = match (entry.read, still_mapped) {
            (Some(read), None) => self.read_back(&ended, read),
            _ => Vec::new(),
        };
        ended.iter().for_each(|p| self.gnttab.free_page(p.frame));
        let result = match still_mapped {
            Some(g) => Err(BlkFrontError::GrantStillMapped(id, g)),
            None => outcome(id, rsp.status, data),
        };
        self.done.push_back((id, result));
        Ok(())
    }

    /// A response to a request on persistent grants: the backend keeps the
    /// pages mapped, so the data is copied out of them (the copy is what
    /// the caller gets), and the pages go back to the pool.
    fn complete_persistent(
        &mut self,
        id: RequestId,
        entry: InFlight,
        status: i16,
    ) -> Result<(), BlkFrontError> {
        let data = entry
            .read
            .map_or_else(Vec::new, |read| self.read_back(&entry.pages, read));
        self.pool.extend(entry.pages);
        self.done.push_back((id, outcome(id, status, data)));
        Ok(())
    }

    /// A read's `len` bytes, `offset` bytes into the first of `pages`.
    fn read_back(&self, pages: &[Page], (offset, len): (usize, usize)) -> Vec<u8> {
        let mut data = vec![0; len];
        for (i, p) in pages.iter().enumerate() {
            let start = i * PAGE_SIZE;
            let (lo, hi) = (offset.max(start), (offset + len).min(start + PAGE_SIZE));
            if let (true, Some(page)) = (lo < hi, self.gnttab.page(p.frame)) {
                let _ = page.read(lo - start, &mut data[lo - offset..hi - offset]);
            }
        }
        data
    }
}

/// A response's status as the caller's outcome.
fn outcome(id: RequestId, status: i16, data: Vec<u8>) -> IoResult {
    match status {
        BLKIF_RSP_OKAY => Ok(data),
        BLKIF_RSP_ERROR => Err(BlkFrontError::IoError(id)),
        BLKIF_RSP_EOPNOTSUPP => Err(BlkFrontError::NotSupported(id)),
        status => Err(BlkFrontError::BadStatus(id, status)),
    }
}
