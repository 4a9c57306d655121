//! Misbehaving on purpose: what a hostile guest does to a vif's rings, to
//! test that backends survive it.

use super::*;

impl SimNetFront {
    /// A fresh guest page holding `data` (at most a page, from its start),
    /// granted read-only to the backend, for raw slots to name. Its grant
    /// ends at close.
    pub fn grant_data(&mut self, data: &[u8]) -> Result<GrantRef, NetFrontError> {
        if data.len() > PAGE_SIZE {
            return Err(NetFrontError::BadArgument("more than a page of data"));
        }
        let page = self.grant_page(data, true)?;
        self.held.push(page);
        Ok(page.gref)
    }

    /// Writes `slots` into the transmit ring as given (waiting for room
    /// first), pushes them and notifies the backend whatever the ring
    /// asked. Each is due one response, with any id and status (a
    /// non-OKAY one is kept for [`SimNetFront::tx_statuses`]); they count
    /// in no packet statistics.
    pub fn push_raw_tx(&mut self, slots: &[[u8; TX_REQUEST_SIZE]]) -> Result<(), NetFrontError> {
        self.usable()?;
        let size = self.tx.as_ref().map_or(0, |r| r.size) as usize;
        if slots.len() > size {
            return Err(NetFrontError::BadArgument("more slots than the ring has"));
        }
        self.make_room(slots.len(), 0)?;
        self.on_tx(|r| slots.iter().try_for_each(|s| r.write_request(s)))?;
        let ids = slots.iter().map(|s| TxRequest::decode(s).id);
        self.raw_ids.extend(ids);
        self.on_tx(|r| r.push_requests_and_check_notify())?;
        self.notify_port(self.tx_port)
    }

    /// Stores the transmit ring's shared `req_prod` as given and notifies
    /// the backend. The frontend's own index does not change: a later push
    /// stores it back.
    pub fn set_tx_req_prod(&mut self, value: u32) -> Result<(), NetFrontError> {
        let frame = self.tx.as_ref().ok_or(NetFrontError::Closed)?.page.frame;
        let mem = self.gnttab.page(frame).ok_or(NetFrontError::Closed)?;
        let word = mem.atomic_u32(REQ_PROD);
        let word = word.map_err(|_| NetFrontError::Closed)?;
        // Release, as a real push: slots written before are visible with it.
        word.store(value, Ordering::Release);
        self.notify_port(self.tx_port)
    }

    /// Posts receive requests as given (any id, any grant reference) and
    /// pushes them, notifying the backend. The frontend does not track
    /// them: a response to one breaks it (as a response for a buffer it
    /// never posted would), so use it on a frontend posting no buffers of
    /// its own (`rx_buffers: Some(0)`) and look at the backend only.
    pub fn push_raw_rx(&mut self, requests: &[RxRequest]) -> Result<(), NetFrontError> {
        self.usable()?;
        self.on_rx(|r| {
            requests
                .iter()
                .try_for_each(|q| r.write_request(&q.encode()))
        })?;
        self.on_rx(|r| r.push_requests_and_check_notify())?;
        self.notify_port(self.rx_port)
    }
}
