//! The guest's end of a block device on the simulated hypervisor, at the
//! ring level: what Linux's xen-blkfront does once connected, for tests,
//! demos and benchmarks of block backends. XenStore negotiation happens
//! elsewhere, with what the accessors give (`ring-ref*`, `ring-page-order`,
//! `event-channel`, `protocol`).
//!
//! As blkfront: the ring pages are granted once; each request grants one
//! page per segment (or, with persistent grants, reuses pages granted
//! once), 11 segments in the slot or more in indirect pages; requests are pushed with a notification only
//! when the ring asks for one, and the frontend sleeps only after the final
//! check. Each response is checked as hardened blkfront does (known id,
//! echoed operation, grants ended before the data is read); a backend that
//! breaks the protocol breaks the frontend for good.
//!
//! It also misbehaves on demand, to test backends against hostile guests:
//! raw slot bytes, a bogus `req_prod`, slots rewritten after the push, any
//! grant reference in a segment, a guest vanishing mid-request.

mod hostile;
mod pages;
mod responses;
mod ring;
#[cfg(test)]
mod test_backend;
#[cfg(test)]
mod tests;
mod types;
mod verify;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::platform::abi::PAGE_SIZE;
use crate::platform::event_loop::wait_readable;
use crate::platform::sim::SimGntTable;
use crate::platform::{
    DomId, EventChannels, EvtchnError, GrantError, GrantRef, GrantTable, Port, SharedMem,
};
use crate::ring::blkif::{
    BlkifProtocol, BlkifX86_32, BlkifX86_64, DirectRequest, DiscardRequest, IndirectRequest,
    Request, Response, Segment, BLKIF_DISCARD_SECURE, BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST,
    BLKIF_MAX_SEGMENTS_PER_REQUEST as MAX_DIRECT, BLKIF_OP_DISCARD, BLKIF_OP_FLUSH_DISKCACHE,
    BLKIF_OP_INDIRECT, BLKIF_OP_READ, BLKIF_OP_WRITE, BLKIF_RSP_EOPNOTSUPP, BLKIF_RSP_ERROR,
    BLKIF_RSP_OKAY, SEGMENTS_PER_INDIRECT_PAGE,
};
use crate::ring::shared::{
    FrontRing, FrontRingState, RingProtocol, SharedRingError, SlotBytes, HEADER_SIZE, REQ_PROD,
};

use self::ring::{alloc_contiguous, echoed, ring_view, Ring};
pub use self::types::*;
pub use self::verify::{stamp, VerifyReport, VerifyWorkload};

/// Bytes in a blkif sector, whatever the disk's own sector size.
pub const SECTOR_SIZE: usize = 512;
/// The largest `ring-page-order` (16 pages, as Linux blkback allows).
const MAX_RING_PAGE_ORDER: u32 = 4;
/// Segments one indirect request can carry (8 pages of 512).
pub const MAX_INDIRECT_SEGMENTS: usize =
    BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST * SEGMENTS_PER_INDIRECT_PAGE;
/// The first request id. Its high bits are set so that a backend that does
/// not echo all 64 bits of `id` is caught (blkfront's ids are small).
const FIRST_ID: u64 = 0xb1c0_0000_0000_0001;

/// A guest page granted to the backend.
#[derive(Clone, Copy, Debug)]
struct Page {
    frame: u32,
    gref: GrantRef,
}

/// A request awaiting its response (blkfront's shadow entry).
struct InFlight {
    /// Ring index of its slot.
    slot: u32,
    /// The operation its response must echo; `None` for raw bytes.
    expect: Option<u8>,
    /// For reads: where the data starts in the first page, and its length.
    read: Option<(usize, usize)>,
    /// Data pages in segment order, then indirect pages.
    pages: Vec<Page>,
}

/// A simulated blkfront: ring pages of guest memory granted to the backend,
/// an unbound port for it, and requests issued over them.
pub struct SimBlkFront {
    /// The ring, over memory that `gnttab` keeps mapped (see [`detached`]);
    /// `None` once closed or abandoned.
    ring: Option<Ring>,
    gnttab: Arc<SimGntTable>,
    evtchn: Arc<dyn EventChannels>,
    backend: DomId,
    options: FrontOptions,
    depth: usize,
    /// The first of the ring's contiguous frames.
    ring_frame: u32,
    ring_refs: Vec<GrantRef>,
    /// Granted pages not in flight: the ring's, and pages the backend
    /// still mapped when their grant was to end.
    held: Vec<Page>,
    /// With persistent grants: granted pages free for the next request.
    pool: Vec<Page>,
    port: Port,
    bound: bool,
    next_id: u64,
    in_flight: HashMap<u64, InFlight>,
    done: VecDeque<(RequestId, IoResult)>,
    fault: Option<BackendFault>,
    quiet: bool,
    stats: FrontStats,
}

impl SimBlkFront {
    /// Sets up a block device of the guest that owns `gnttab` for the
    /// backend domain `backend`: 2^order ring pages granted writable, the
    /// shared ring initialised, an unbound port. `evtchn` is the guest's
    /// event-channel handle; it should serve only this device, since
    /// waiting takes every event it delivers.
    pub fn new(
        gnttab: Arc<SimGntTable>,
        evtchn: Arc<dyn EventChannels>,
        backend: DomId,
        options: FrontOptions,
    ) -> Result<SimBlkFront, BlkFrontError> {
        if options.ring_page_order > MAX_RING_PAGE_ORDER {
            return Err(BlkFrontError::BadArgument("ring page order above 4"));
        }
        let pages = 1u32 << options.ring_page_order;
        let first = alloc_contiguous(&gnttab, pages).ok_or(BlkFrontError::NoGuestMemory)?;
        let mut front = SimBlkFront {
            ring: None,
            gnttab,
            evtchn,
            backend,
            options,
            depth: 0,
            ring_frame: first,
            ring_refs: Vec::new(),
            held: Vec::new(),
            pool: Vec::new(),
            port: 0,
            bound: false,
            next_id: FIRST_ID,
            in_flight: HashMap::new(),
            done: VecDeque::new(),
            fault: None,
            quiet: false,
            stats: FrontStats::default(),
        };
        // From here on, dropping `front` releases what was set up.
        for frame in first..first + pages {
            match front.gnttab.grant(backend, frame, false) {
                Ok(gref) => front.held.push(Page { frame, gref }),
                Err(e) => {
                    (frame..first + pages).for_each(|f| front.gnttab.free_page(f));
                    return Err(BlkFrontError::Grant(e));
                }
            }
        }
        front.ring_refs = front.held.iter().map(|p| p.gref).collect();
        let view = ring_view(&front.gnttab, first, pages as usize);
        let ring = Ring::init(
            front.options.protocol,
            view.ok_or(BlkFrontError::NoGuestMemory)?,
        );
        let ring = ring.map_err(|e| BlkFrontError::Backend(BackendFault::Ring(e)))?;
        let size = ring.size() as usize;
        front.depth = (front.options.queue_depth).map_or(size, |d| (d as usize).clamp(1, size));
        front.ring = Some(ring);
        let port = front.evtchn.alloc_unbound(backend);
        front.port = port.map_err(BlkFrontError::EventChannel)?;
        front.bound = true;
        Ok(front)
    }

    /// The ring's grant references (`ring-ref`, or `ring-ref0..N`).
    pub fn ring_refs(&self) -> &[GrantRef] {
        &self.ring_refs
    }

    /// The port the backend binds to (`event-channel`).
    pub fn port(&self) -> Port {
        self.port
    }

    /// `ring-page-order`.
    pub fn ring_page_order(&self) -> u32 {
        self.options.ring_page_order
    }

    /// The slot layout; `protocol().layout().protocol` is its name.
    pub fn protocol(&self) -> BlkifProtocol {
        self.options.protocol
    }

    /// Requests in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// The counters.
    pub fn stats(&self) -> FrontStats {
        self.stats
    }

    /// Changes how long blocking calls wait.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.options.timeout = timeout;
    }

    /// While set, pushes notify nobody: the caller does, with
    /// [`SimBlkFront::notify`].
    pub fn set_quiet(&mut self, quiet: bool) {
        self.quiet = quiet;
    }

    /// The ring, and its pages to resume it over; an error once the
    /// backend broke the protocol or the frontend closed.
    fn usable(&mut self) -> Result<(&mut Ring, SharedMem<'_>), BlkFrontError> {
        if let Some(f) = self.fault {
            return Err(BlkFrontError::Backend(f));
        }
        let ring = self.ring.as_mut().ok_or(BlkFrontError::Closed)?;
        let pages = self.ring_refs.len();
        let mem = ring_view(&self.gnttab, self.ring_frame, pages).ok_or(BlkFrontError::Closed)?;
        Ok((ring, mem))
    }

    /// Records the backend's first protocol violation.
    fn fail(&mut self, fault: BackendFault) -> BlkFrontError {
        BlkFrontError::Backend(*self.fault.get_or_insert(fault))
    }

    fn ring_fault(&mut self, e: SharedRingError) -> BlkFrontError {
        self.fail(BackendFault::Ring(e))
    }

    fn max_segments(&self) -> usize {
        match self.options.max_indirect_segments {
            Some(m) if m as usize > MAX_DIRECT => (m as usize).min(MAX_INDIRECT_SEGMENTS),
            _ => MAX_DIRECT,
        }
    }

    /// Submits one request and pushes it, first waiting for responses
    /// while the queue depth is reached.
    pub fn submit(&mut self, op: BlkOp) -> Result<RequestId, BlkFrontError> {
        let id = self.queue(op)?;
        self.push()?;
        Ok(id)
    }

    /// Submits requests with one push, or one per queue-depth's worth.
    /// If one fails, those before it stay in flight (see
    /// [`SimBlkFront::wait_any`]).
    pub fn submit_many(
        &mut self,
        ops: impl IntoIterator<Item = BlkOp>,
    ) -> Result<Vec<RequestId>, BlkFrontError> {
        let ids: Result<Vec<_>, _> = ops.into_iter().map(|op| self.queue(op)).collect();
        // Push what was written even if a later request failed.
        self.push()?;
        ids
    }

    /// Writes one request into the ring without pushing it.
    fn queue(&mut self, op: BlkOp) -> Result<RequestId, BlkFrontError> {
        self.make_room()?;
        let (id, mut pages) = (self.next_id, Vec::new());
        let written = self.build(op, id, &mut pages).and_then(|(req, read)| {
            let (ring, mem) = self.usable()?;
            let bytes = ring.encode(&req);
            let w = ring.write(mem, &bytes);
            Ok((w.map_err(|e| self.ring_fault(e))?.0, echoed(&req), read))
        });
        match written {
            Ok((slot, op, read)) => {
                self.next_id = id.wrapping_add(1);
                self.track(id, slot, Some(op), read, pages);
                Ok(RequestId(id))
            }
            Err(e) => {
                pages.into_iter().for_each(|p| self.give_back(p));
                Err(e)
            }
        }
    }

    fn track(
        &mut self,
        id: u64,
        slot: u32,
        expect: Option<u8>,
        read: Option<(usize, usize)>,
        pages: Vec<Page>,
    ) {
        let entry = InFlight {
            slot,
            expect,
            read,
            pages,
        };
        // Raw bytes may reuse the id of a request in flight: that request's
        // pages are then released on close.
        if let Some(old) = self.in_flight.insert(id, entry) {
            self.held.extend(old.pages);
        }
        self.stats.requests += 1;
    }

    /// Publishes the requests written and notifies the backend if it asked
    /// (`RING_PUSH_REQUESTS_AND_CHECK_NOTIFY`).
    fn push(&mut self) -> Result<(), BlkFrontError> {
        let (ring, mem) = self.usable()?;
        let pushed = ring.push(mem);
        if pushed.map_err(|e| self.ring_fault(e))? && !self.quiet {
            self.notify()?;
        }
        Ok(())
    }

    /// Signals the backend (also on its own, to play a hostile guest).
    pub fn notify(&mut self) -> Result<(), BlkFrontError> {
        let sent = self.evtchn.notify(self.port);
        sent.map_err(BlkFrontError::EventChannel)?;
        self.stats.notifications += 1;
        Ok(())
    }

    fn make_room(&mut self) -> Result<(), BlkFrontError> {
        self.usable()?;
        if self.in_flight.len() >= self.depth {
            // Requests written but not pushed would never be answered.
            self.push()?;
            self.wait_until(|s| s.in_flight.len() < s.depth)?;
        }
        Ok(())
    }

    /// Takes every published response, without waiting; returns how many.
    /// Their outcomes wait for [`SimBlkFront::wait`] or
    /// [`SimBlkFront::wait_any`].
    pub fn poll(&mut self) -> Result<usize, BlkFrontError> {
        let mut rsps = Vec::new();
        let (ring, mem) = self.usable()?;
        let got = ring.responses(mem, &mut rsps);
        let n = rsps.len();
        rsps.into_iter().try_for_each(|rsp| self.complete(rsp))?;
        got.map_err(|e| self.ring_fault(e))?;
        Ok(n)
    }

    /// Takes responses until `ready`, sleeping on the port in between as
    /// blkfront does: only after the final check.
    fn wait_until(&mut self, ready: impl Fn(&SimBlkFront) -> bool) -> Result<(), BlkFrontError> {
        let deadline = Instant::now() + self.options.timeout;
        let evtchn = |e| BlkFrontError::EventChannel(e);
        loop {
            self.poll()?;
            if ready(self) {
                return Ok(());
            }
            // Ask for an event on the next response (rsp_event = rsp_cons
            // + 1), then look again: a response published before the
            // backend could see that is found now; any later one comes
            // with an event.
            let (ring, mem) = self.usable()?;
            let more = ring.final_check(mem);
            if more.map_err(|e| self.ring_fault(e))? {
                continue;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(BlkFrontError::Timeout);
            }
            self.stats.waits += 1;
            wait_readable(self.evtchn.fd(), Some(left)).map_err(|e| evtchn(e.into()))?;
            let mut ports = Vec::new();
            self.evtchn.pending(&mut ports).map_err(evtchn)?;
            for p in ports {
                self.evtchn.unmask(p).map_err(evtchn)?;
            }
        }
    }

    /// Waits for the request `id` and returns its outcome.
    pub fn wait(&mut self, id: RequestId) -> IoResult {
        let at = |s: &SimBlkFront| s.done.iter().position(|(d, _)| *d == id);
        if at(self).is_none() {
            if !self.in_flight.contains_key(&id.0) {
                return Err(BlkFrontError::UnknownRequest(id));
            }
            self.wait_until(|s| at(s).is_some())?;
        }
        let done = at(self).and_then(|i| self.done.remove(i));
        done.map_or(Err(BlkFrontError::UnknownRequest(id)), |(_, r)| r)
    }

    /// Waits for the next outcome of any request, in the order the backend
    /// answered.
    pub fn wait_any(&mut self) -> Result<(RequestId, IoResult), BlkFrontError> {
        if self.done.is_empty() {
            if self.in_flight.is_empty() {
                return Err(BlkFrontError::Idle);
            }
            self.wait_until(|s| !s.done.is_empty())?;
        }
        self.done.pop_front().ok_or(BlkFrontError::Idle)
    }

    /// Reads or writes in as many requests as the segment limit needs, all
    /// in flight together up to the queue depth; returns the bytes read.
    fn transfer(
        &mut self,
        sector: u64,
        len: usize,
        offset: usize,
        data: Option<&[u8]>,
    ) -> Result<Vec<u8>, BlkFrontError> {
        SimBlkFront::check_shape(offset, len)?;
        let cap = self.max_segments() * PAGE_SIZE;
        let (mut ops, mut at, mut offset, mut sector) = (Vec::new(), 0, offset, sector);
        while at < len {
            let n = (len - at).min(cap - offset);
            ops.push(match data {
                Some(d) => BlkOp::Write(sector, d[at..at + n].to_vec(), offset),
                None => BlkOp::Read(sector, n, offset),
            });
            (sector, at, offset) = (sector + (n / SECTOR_SIZE) as u64, at + n, 0);
        }
        let ids = self.submit_many(ops)?;
        let outcomes: Vec<IoResult> = ids.into_iter().map(|id| self.wait(id)).collect();
        Ok(outcomes
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?
            .concat())
    }

    /// Reads `len` bytes (whole sectors) from `sector`.
    pub fn read(&mut self, sector: u64, len: usize) -> Result<Vec<u8>, BlkFrontError> {
        self.transfer(sector, len, 0, None)
    }

    /// Writes `data` (whole sectors) at `sector`.
    pub fn write(&mut self, sector: u64, data: &[u8]) -> Result<(), BlkFrontError> {
        self.transfer(sector, data.len(), 0, Some(data)).map(drop)
    }

    /// Flushes the backend's write cache.
    pub fn flush(&mut self) -> Result<(), BlkFrontError> {
        let id = self.submit(BlkOp::Flush)?;
        self.wait(id).map(drop)
    }

    /// Discards `nr_sectors` from `sector`.
    pub fn discard(
        &mut self,
        sector: u64,
        nr_sectors: u64,
        secure: bool,
    ) -> Result<(), BlkFrontError> {
        let id = self.submit(BlkOp::Discard(sector, nr_sectors, secure))?;
        self.wait(id).map(drop)
    }
}

impl SimBlkFront {
    /// Vanishes mid-request: ends every grant it can (ring and requests
    /// in flight) without waiting for any response, and stops working.
    /// Grants the backend still maps cannot end (as on Xen); close retries
    /// them. The port stays bound until close.
    pub fn abandon(&mut self) {
        self.ring = None;
        self.done.clear();
        let mut pages: Vec<Page> = self.held.drain(..).collect();
        pages.append(&mut self.pool);
        pages.extend(self.in_flight.drain().flat_map(|(_, e)| e.pages));
        pages.into_iter().for_each(|p| self.release(p));
    }

    /// Ends every grant, frees the pages and closes the port; requests in
    /// flight are dropped. Fails with [`GrantError::InUse`] while the
    /// backend still maps a page, which then stays granted: close again
    /// once it unmapped. The frontend is unusable from the first call.
    pub fn close(&mut self) -> Result<(), BlkFrontError> {
        self.abandon();
        if self.bound {
            let unbound = self.evtchn.unbind(self.port);
            unbound.map_err(BlkFrontError::EventChannel)?;
            self.bound = false;
        }
        match self.held.first() {
            Some(p) => Err(BlkFrontError::Grant(GrantError::InUse(p.gref))),
            None => Ok(()),
        }
    }
}

impl Drop for SimBlkFront {
    fn drop(&mut self) {
        // Pages the backend still maps stay out of the guest's pool for
        // good: the backend may still write them.
        let _ = self.close();
    }
}
