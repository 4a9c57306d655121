//! The two rings and the guest pages behind them: each ring keeps its
//! private indexes between calls and is resumed over its page, borrowed
//! afresh from the guest's memory; data pages are taken, filled, granted
//! and given back here.

use super::*;

/// One ring of the device, over one granted page of guest memory.
pub(super) struct Ring<P: RingProtocol> {
    pub(super) page: Page,
    pub(super) size: u32,
    state: FrontRingState,
    _protocol: PhantomData<P>,
}

impl<P: RingProtocol> Ring<P> {
    /// Initialises the shared ring in `page` (`FRONT_RING_INIT`).
    pub(super) fn init(gt: &SimGntTable, page: Page) -> Result<Ring<P>, NetFrontError> {
        let mem = gt.page(page.frame).ok_or(NetFrontError::NoGuestMemory)?;
        // A page always holds a ring: this fails only on a page not there.
        let ring = FrontRing::<P>::init(mem).map_err(|_| NetFrontError::NoGuestMemory)?;
        Ok(Ring {
            page,
            size: ring.size(),
            state: ring.state(),
            _protocol: PhantomData,
        })
    }

    /// Runs `f` on the ring resumed over its page and keeps the ring's
    /// state afterwards (an error included: a broken ring stays broken).
    /// `None` if the page is not the guest's.
    pub(super) fn run<R>(
        &mut self,
        gt: &SimGntTable,
        f: impl FnOnce(&mut FrontRing<'_, P>) -> Result<R, SharedRingError>,
    ) -> Option<Result<R, SharedRingError>> {
        let mem = gt.page(self.page.frame)?;
        let mut ring = match FrontRing::<P>::resume(mem, self.state) {
            Ok(r) => r,
            Err(e) => return Some(Err(e)),
        };
        let out = f(&mut ring);
        self.state = ring.state();
        Some(out)
    }
}

impl SimNetFront {
    /// The transmit ring, for `f`; an error once the backend broke the
    /// protocol or the frontend closed. A ring error is the backend's fault
    /// (the frontend checks for room before writing).
    pub(super) fn on_tx<R>(
        &mut self,
        f: impl FnOnce(&mut FrontRing<'_, NetifTx>) -> Result<R, SharedRingError>,
    ) -> Result<R, NetFrontError> {
        self.usable()?;
        let ring = self.tx.as_mut().ok_or(NetFrontError::Closed)?;
        let out = ring.run(&self.gnttab, f).ok_or(NetFrontError::Closed)?;
        out.map_err(|e| self.fail(format!("tx ring: {e}")))
    }

    /// The receive ring, for `f`, as [`SimNetFront::on_tx`].
    pub(super) fn on_rx<R>(
        &mut self,
        f: impl FnOnce(&mut FrontRing<'_, NetifRx>) -> Result<R, SharedRingError>,
    ) -> Result<R, NetFrontError> {
        self.usable()?;
        let ring = self.rx.as_mut().ok_or(NetFrontError::Closed)?;
        let out = ring.run(&self.gnttab, f).ok_or(NetFrontError::Closed)?;
        out.map_err(|e| self.fail(format!("rx ring: {e}")))
    }

    /// An error once the backend broke the protocol or the frontend closed.
    pub(super) fn usable(&self) -> Result<(), NetFrontError> {
        if let Some(fault) = &self.fault {
            return Err(NetFrontError::Backend(fault.clone()));
        }
        if self.tx.is_none() || self.rx.is_none() {
            return Err(NetFrontError::Closed);
        }
        Ok(())
    }

    /// Records the backend's first protocol violation; the frontend refuses
    /// all work from then on.
    pub(super) fn fail(&mut self, fault: String) -> NetFrontError {
        NetFrontError::Backend(self.fault.get_or_insert(fault).clone())
    }

    /// Takes a page, writes `bytes` at its start and grants it to the
    /// backend.
    pub(super) fn grant_page(&self, bytes: &[u8], readonly: bool) -> Result<Page, NetFrontError> {
        let gt = &self.gnttab;
        let frame = gt.alloc_page().ok_or(NetFrontError::NoGuestMemory)?;
        if let Some(page) = gt.page(frame) {
            let _ = page.write(0, bytes);
        }
        match gt.grant(self.backend, frame, readonly) {
            Ok(gref) => Ok(Page { frame, gref }),
            Err(e) => {
                gt.free_page(frame);
                Err(NetFrontError::Grant(e))
            }
        }
    }

    /// Ends a page's grant and frees it; a page the backend still maps is
    /// kept (as on Xen, its grant cannot end yet) for close to retry.
    pub(super) fn release(&mut self, page: Page) {
        match self.gnttab.end_access(page.gref) {
            Err(GrantError::InUse(_)) => self.held.push(page),
            // Ended now, or no longer granted at all: the page is ours.
            _ => self.gnttab.free_page(page.frame),
        }
    }
}
