//! The guest's end of a network device (vif) on the simulated hypervisor,
//! at the ring level: what Linux's xen-netfront does once connected, for
//! tests, demos and benchmarks of network backends. XenStore negotiation
//! happens elsewhere, with what the accessors give (`tx-ring-ref`,
//! `rx-ring-ref`, `event-channel` or `event-channel-tx`/`-rx`, and the
//! features of [`NetFrontOptions`]).
//!
//! As netfront: one page per ring, granted once; each packet is copied
//! into fresh guest pages, one read-only grant per fragment of up to a
//! page, its first slot carrying the whole packet's size and a GSO packet
//! an extra-info slot after it; each slot has its own id, and a packet is
//! done when all its data slots are answered. Receive buffers are
//! writable granted pages posted on the receive ring and posted again once
//! their packet is taken; a response is found by the slot it sits in, as
//! netfront does, and its id checked against that slot's request.
//! Requests are pushed with a notification only when the ring asks for
//! one, and the frontend sleeps only after the final check. A backend that
//! breaks the protocol breaks the frontend for good.
//!
//! It also misbehaves on demand, to test backends against hostile guests:
//! raw transmit slots, a bogus `req_prod`, any page granted, a guest
//! vanishing mid-transfer.

mod driver;
#[cfg(test)]
mod hand_tests;
mod hostile;
mod ring;
mod rx;
#[cfg(test)]
mod test_backend;
#[cfg(test)]
mod tests;
mod tx;
mod types;

pub use self::driver::NetFrontDriver;

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::net::packet::{Gso, GsoKind, Offload, Packet, MAX_PACKET};
use crate::platform::abi::PAGE_SIZE;
use crate::platform::event_loop::wait_readable;
use crate::platform::sim::SimGntTable;
use crate::platform::{DomId, EventChannels, EvtchnError, GrantError, GrantRef, GrantTable, Port};
use crate::ring::netif::{
    Extra, ExtraInfo, NetifRx, NetifTx, RxRequest, RxResponse, TxRequest, TxResponse,
    NETIF_RSP_DROPPED, NETIF_RSP_ERROR, NETIF_RSP_NULL, NETIF_RSP_OKAY, NETRXF_CSUM_BLANK,
    NETRXF_DATA_VALIDATED, NETRXF_EXTRA_INFO, NETRXF_MORE_DATA, NETTXF_CSUM_BLANK,
    NETTXF_DATA_VALIDATED, NETTXF_EXTRA_INFO, NETTXF_MORE_DATA, RX_RESPONSE_SIZE, TX_REQUEST_SIZE,
    XEN_NETIF_GSO_TYPE_TCPV4, XEN_NETIF_GSO_TYPE_TCPV6, XEN_NETIF_NR_SLOTS_MIN,
};
use crate::ring::shared::{FrontRing, FrontRingState, RingProtocol, SharedRingError, REQ_PROD};

use self::ring::Ring;
pub use self::types::*;

/// A guest page granted to the backend.
#[derive(Clone, Copy, Debug)]
struct Page {
    frame: u32,
    gref: GrantRef,
}

/// A data slot of a packet awaiting its response.
struct TxSlot {
    /// The packet's sequence number, in [`SimNetFront::tx_in_flight`].
    packet: u64,
    /// The fragment's page, granted read-only.
    page: Page,
}

/// A packet sent and not answered yet.
struct TxPacket {
    /// Data slots still unanswered.
    remaining: usize,
    /// The worst status among its answered slots.
    status: i16,
}

/// A receive response taken off the ring while the rest of its packet is
/// still to come, with the buffer of its slot.
struct RxSlot {
    /// A private copy of the slot.
    raw: [u8; RX_RESPONSE_SIZE],
    /// The id of the request the slot held (its position in the ring).
    id: u16,
    page: Page,
}

/// A simulated netfront: a transmit and a receive ring of guest memory
/// granted to the backend, one or two unbound ports for it, receive
/// buffers posted, and packets sent and received over them.
pub struct SimNetFront {
    gnttab: Arc<SimGntTable>,
    evtchn: Arc<dyn EventChannels>,
    backend: DomId,
    options: NetFrontOptions,
    /// The rings; `None` once closed or abandoned.
    tx: Option<Ring<NetifTx>>,
    rx: Option<Ring<NetifRx>>,
    tx_ring_ref: GrantRef,
    rx_ring_ref: GrantRef,
    tx_port: Port,
    rx_port: Port,
    /// Ports not yet closed.
    bound: Vec<Port>,
    /// Granted pages in no list below: the rings', those of
    /// [`SimNetFront::grant_data`], and pages the backend still mapped when
    /// their grant was to end.
    held: Vec<Page>,
    /// Transmit ids not in flight (`0..ring size`, as netfront's).
    free_ids: Vec<u16>,
    /// Data slots in flight, by id.
    tx_slots: HashMap<u16, TxSlot>,
    /// Packets in flight, by sequence number.
    tx_in_flight: HashMap<u64, TxPacket>,
    next_packet: u64,
    /// Extra-info slots in flight, each due a `NETIF_RSP_NULL`.
    extras_pending: usize,
    /// Ids of the raw slots in flight, one response due each.
    raw_ids: Vec<u16>,
    /// Non-OKAY statuses of data slots, for [`SimNetFront::tx_statuses`].
    statuses: Vec<i16>,
    /// Receive buffers in all.
    rx_count: usize,
    /// Posted receive buffers, by ring position (= request id).
    rx_posted: Vec<Option<Page>>,
    /// Responses of a packet not complete yet.
    rx_partial: Vec<RxSlot>,
    /// Buffers to post again.
    rx_spare: Vec<Page>,
    rx_queue: VecDeque<Packet>,
    fault: Option<String>,
    stats: NetFrontStats,
}

impl SimNetFront {
    /// Sets up a network device of the guest that owns `gnttab` for the
    /// backend domain `backend`: a page per ring granted writable, the
    /// shared rings initialised, unbound port(s), and the receive buffers
    /// posted. `evtchn` is the guest's event-channel handle; it should
    /// serve only this device, since waiting takes every event it delivers.
    pub fn new(
        gnttab: Arc<SimGntTable>,
        evtchn: Arc<dyn EventChannels>,
        backend: DomId,
        options: NetFrontOptions,
    ) -> Result<SimNetFront, NetFrontError> {
        let mut front = SimNetFront {
            gnttab,
            evtchn,
            backend,
            options,
            tx: None,
            rx: None,
            tx_ring_ref: 0,
            rx_ring_ref: 0,
            tx_port: 0,
            rx_port: 0,
            bound: Vec::new(),
            held: Vec::new(),
            free_ids: Vec::new(),
            tx_slots: HashMap::new(),
            tx_in_flight: HashMap::new(),
            next_packet: 0,
            extras_pending: 0,
            raw_ids: Vec::new(),
            statuses: Vec::new(),
            rx_count: 0,
            rx_posted: Vec::new(),
            rx_partial: Vec::new(),
            rx_spare: Vec::new(),
            rx_queue: VecDeque::new(),
            fault: None,
            stats: NetFrontStats::default(),
        };
        // From here on, dropping `front` releases what was set up.
        let tx_page = front.grant_page(&[], false)?;
        front.held.push(tx_page);
        let rx_page = front.grant_page(&[], false)?;
        front.held.push(rx_page);
        (front.tx_ring_ref, front.rx_ring_ref) = (tx_page.gref, rx_page.gref);
        let tx = Ring::<NetifTx>::init(&front.gnttab, tx_page)?;
        let rx = Ring::<NetifRx>::init(&front.gnttab, rx_page)?;
        // One page: 256 slots each, so ids and positions fit a u16.
        front.free_ids = (0..tx.size).rev().map(|i| i as u16).collect();
        let size = rx.size as usize;
        front.rx_posted = (0..size).map(|_| None).collect();
        let wanted = front.options.rx_buffers;
        front.rx_count = wanted.map_or(size, |n| (n as usize).min(size));
        (front.tx, front.rx) = (Some(tx), Some(rx));
        front.tx_port = front.alloc_port()?;
        front.rx_port = match front.options.split_event_channels {
            true => front.alloc_port()?,
            false => front.tx_port,
        };
        for _ in 0..front.rx_count {
            let page = front.grant_page(&[], false)?;
            front.rx_spare.push(page);
        }
        front.post_rx()?;
        Ok(front)
    }

    fn alloc_port(&mut self) -> Result<Port, NetFrontError> {
        let port = self.evtchn.alloc_unbound(self.backend);
        let port = port.map_err(NetFrontError::EventChannel)?;
        self.bound.push(port);
        Ok(port)
    }

    /// The transmit ring's grant reference (`tx-ring-ref`).
    pub fn tx_ring_ref(&self) -> GrantRef {
        self.tx_ring_ref
    }

    /// The receive ring's grant reference (`rx-ring-ref`).
    pub fn rx_ring_ref(&self) -> GrantRef {
        self.rx_ring_ref
    }

    /// The port for transmit events (`event-channel-tx`, or the only one).
    pub fn tx_port(&self) -> Port {
        self.tx_port
    }

    /// The port for receive events (`event-channel-rx`); the transmit port
    /// when the channels are not split.
    pub fn rx_port(&self) -> Port {
        self.rx_port
    }

    /// How the frontend was set up.
    pub fn options(&self) -> &NetFrontOptions {
        &self.options
    }

    /// Packets sent and not answered yet.
    pub fn tx_in_flight(&self) -> usize {
        self.tx_in_flight.len()
    }

    /// The counters.
    pub fn stats(&self) -> NetFrontStats {
        self.stats
    }

    /// Takes the statuses other than `NETIF_RSP_OKAY` that data slots were
    /// answered with (raw slots' included), oldest first.
    pub fn tx_statuses(&mut self) -> Vec<i16> {
        std::mem::take(&mut self.statuses)
    }

    /// Signals the backend on every port (also on its own, to play a
    /// hostile or impatient guest).
    pub fn notify(&mut self) -> Result<(), NetFrontError> {
        self.notify_port(self.tx_port)?;
        if self.rx_port != self.tx_port {
            self.notify_port(self.rx_port)?;
        }
        Ok(())
    }

    fn notify_port(&self, port: Port) -> Result<(), NetFrontError> {
        let sent = self.evtchn.notify(port);
        sent.map_err(NetFrontError::EventChannel)
    }

    /// Takes every published response of both rings, without waiting:
    /// transmit responses end their grants and free their pages; received
    /// packets wait in a queue for [`SimNetFront::try_recv`], and their
    /// buffers are posted again.
    pub fn poll(&mut self) -> Result<(), NetFrontError> {
        self.poll_tx()?;
        self.poll_rx()
    }

    /// The next packet received, if one is already here (after a
    /// [`SimNetFront::poll`] if none was queued). A backend fault found on
    /// the way is returned by the next call that can fail.
    pub fn try_recv(&mut self) -> Option<Packet> {
        if self.rx_queue.is_empty() {
            let _ = self.poll();
        }
        self.rx_queue.pop_front()
    }

    /// The next packet received, sleeping on the event channel until one
    /// arrives; `None` once `timeout` passed without one.
    pub fn recv(&mut self, timeout: Duration) -> Result<Option<Packet>, NetFrontError> {
        if let Some(packet) = self.rx_queue.pop_front() {
            return Ok(Some(packet));
        }
        let deadline = Instant::now() + timeout;
        self.wait_until(deadline, |s| Ok(!s.rx_queue.is_empty()))?;
        Ok(self.rx_queue.pop_front())
    }

    /// Waits until every packet sent, and every raw slot pushed, has been
    /// answered; [`NetFrontError::Timeout`] after `options.timeout`.
    pub fn wait_tx_done(&mut self) -> Result<(), NetFrontError> {
        let deadline = Instant::now() + self.options.timeout;
        let done = |s: &mut SimNetFront| Ok(s.tx_in_flight.is_empty() && s.raw_ids.is_empty());
        match self.wait_until(deadline, done)? {
            true => Ok(()),
            false => Err(NetFrontError::Timeout),
        }
    }

    /// Asks for an event on the next response of each ring, as a guest
    /// does before it sleeps; true if responses came meanwhile (take them
    /// with [`SimNetFront::poll`] instead of sleeping).
    pub fn arm(&mut self) -> Result<bool, NetFrontError> {
        let tx = self.on_tx(|r| r.final_check_for_responses())?;
        let rx = self.on_rx(|r| r.final_check_for_responses())?;
        Ok(tx || rx)
    }

    /// The event channel handle's descriptor, readable when an event is
    /// pending (for a driver that sleeps on more than the frontend).
    pub fn event_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.evtchn.fd()
    }

    /// Takes the pending events and unmasks their ports.
    pub fn take_events(&mut self) -> Result<(), NetFrontError> {
        let evtchn = NetFrontError::EventChannel;
        let mut ports = Vec::new();
        self.evtchn.pending(&mut ports).map_err(evtchn)?;
        for p in ports {
            self.evtchn.unmask(p).map_err(evtchn)?;
        }
        Ok(())
    }

    /// Takes responses until `ready`, sleeping on the event channel in
    /// between as netfront does: only after the final check. False if
    /// `deadline` passed first.
    fn wait_until(
        &mut self,
        deadline: Instant,
        mut ready: impl FnMut(&mut SimNetFront) -> Result<bool, NetFrontError>,
    ) -> Result<bool, NetFrontError> {
        let evtchn = NetFrontError::EventChannel;
        loop {
            self.poll()?;
            if ready(self)? {
                return Ok(true);
            }
            // Ask for an event on the next response of each ring (rsp_event
            // = rsp_cons + 1), then look again: a response published before
            // the backend could see that is found now; any later one comes
            // with an event.
            if self.arm()? {
                continue;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            wait_readable(self.evtchn.fd(), Some(left)).map_err(|e| evtchn(e.into()))?;
            self.take_events()?;
        }
    }
}

impl SimNetFront {
    /// Vanishes mid-transfer: stops using the rings at once, without
    /// waiting for any response, and without ending a grant or closing a
    /// port (as a guest that hangs or crashes leaves them). The
    /// backend may go on with the pages it was given (the rings, packets in
    /// flight, receive buffers); close ends their grants.
    pub fn abandon(&mut self) {
        (self.tx, self.rx) = (None, None);
        let in_flight = self.tx_slots.drain().map(|(_, s)| s.page);
        self.held.extend(in_flight);
        self.held
            .extend(self.rx_posted.iter_mut().filter_map(Option::take));
        self.held.extend(self.rx_partial.drain(..).map(|s| s.page));
        self.held.append(&mut self.rx_spare);
        self.tx_in_flight.clear();
        self.raw_ids.clear();
        self.extras_pending = 0;
    }

    /// Closes the ports, ends every grant and frees the pages; packets in
    /// flight are dropped. Fails with [`GrantError::InUse`] while the
    /// backend still maps a page, which then stays granted: close again
    /// once it unmapped. The frontend is unusable from the first call.
    pub fn close(&mut self) -> Result<(), NetFrontError> {
        self.abandon();
        while let Some(&port) = self.bound.last() {
            let unbound = self.evtchn.unbind(port);
            unbound.map_err(NetFrontError::EventChannel)?;
            self.bound.pop();
        }
        let pages: Vec<Page> = self.held.drain(..).collect();
        pages.into_iter().for_each(|p| self.release(p));
        match self.held.first() {
            Some(p) => Err(NetFrontError::Grant(GrantError::InUse(p.gref))),
            None => Ok(()),
        }
    }
}

impl Drop for SimNetFront {
    fn drop(&mut self) {
        // Pages the backend still maps stay out of the guest's pool for
        // good: the backend may still write them.
        let _ = self.close();
    }
}
