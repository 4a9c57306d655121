//! One vif queue as a source of the platform's event loop: both rings of
//! a network device, served in one pass, as netback's NAPI poll serves
//! the transmit ring and its kthread the receive ring.
//!
//! Each run: take the guest's packets off the transmit ring (each slot
//! copied out once and judged on that copy, [`super::tx::judge`]), copy
//! their data out of the guest's pages with one grant-copy call for the
//! whole batch, answer every slot, and hand the batch to the uplink; then
//! put the packets waiting for the guest into the buffers it posted on
//! its receive ring, again with one grant-copy call per batch. Responses
//! are pushed once per ring per run, with a notification only when the
//! ring asks for one, and the final check before going idle.
//!
//! A pass takes at most [`BUDGET`] packets each way and runs again on the
//! next turn if more wait, so one guest flooding its ring cannot starve
//! the other devices on the loop (NAPI's budget). A packet that is merely
//! wrong is answered with an error; a ring no correct frontend writes
//! fails the vif, which is then served no more.

use std::collections::VecDeque;
use std::sync::Arc;

use super::checksum;
use super::packet::{Gso, GsoKind, Packet};
use super::restart::Journals;
use super::stats::{add, Counters};
use super::tx::{judge, Judged, TxPacket};
use super::vif::{Inbox, Uplink, VifEvent, VifFeatures};
use crate::blk::reuse_vec;
use crate::platform::abi::PAGE_SIZE;
use crate::platform::event_loop::{Control, Source, Wake};
use crate::platform::{CopySegment, CopySide, DomId, GntSt, GrantMapper, GrantMapping, Port};
use crate::ring::netif::{
    Extra, ExtraInfo, NetifRx, NetifTx, RxRequest, RxResponse, TxResponse, NETIF_RSP_ERROR,
    NETIF_RSP_NULL, NETIF_RSP_OKAY, NETRXF_CSUM_BLANK, NETRXF_DATA_VALIDATED, NETRXF_EXTRA_INFO,
    NETRXF_MORE_DATA, XEN_NETIF_GSO_TYPE_TCPV4, XEN_NETIF_GSO_TYPE_TCPV6,
};
use crate::ring::shared::{BackRing, BackRingState, SharedRingError};

/// Packets taken each way per pass, at most (NAPI's default weight).
pub(super) const BUDGET: usize = 64;

/// Refusals reported to the sink, at most: a hostile guest could send
/// nothing else, and the counters still count them all.
const MAX_REPORTS: u32 = 16;

/// A packet for the guest, its buffers taken from the receive ring.
struct Delivery {
    packet: Packet,
    /// The requests it fills, data first; the extra-info slot's request
    /// (with GSO) is not among them.
    buffers: Vec<RxRequest>,
    /// An extra-info slot follows the first response.
    gso: Option<ExtraInfo>,
    flags: u16,
    ok: bool,
}

pub(super) struct VifSource {
    tx_map: GrantMapping,
    tx: BackRingState,
    rx_map: GrantMapping,
    rx: BackRingState,
    gntdev: Arc<dyn GrantMapper>,
    frontend: DomId,
    tx_port: Port,
    rx_port: Port,
    features: VifFeatures,
    uplink: Box<dyn Uplink>,
    inbox: Arc<Inbox>,
    counters: Arc<Counters>,
    sink: Box<dyn FnMut(VifEvent) + Send>,
    /// Packets taken off the inbox, waiting for buffers.
    waiting: VecDeque<Packet>,
    /// The transmit batch being built, and the buffers it copies into.
    judged: Vec<TxPacket>,
    out: Vec<Packet>,
    deliveries: Vec<Delivery>,
    copies: Vec<CopySegment<'static>>,
    reports: u32,
    failed: bool,
    /// Where each request taken is copied, if the queue keeps journals
    /// ([`super::restart`]).
    journals: Option<Journals>,
    /// Notify the frontend at the end of the first run (rings taken over).
    notify_once: bool,
    /// Where the tests make the queue die as a killed process would
    /// ([`crash`]).
    #[cfg(test)]
    pub(super) crash: Arc<crash::Point>,
}

impl VifSource {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        tx_map: GrantMapping,
        tx: BackRingState,
        rx_map: GrantMapping,
        rx: BackRingState,
        gntdev: Arc<dyn GrantMapper>,
        frontend: DomId,
        (tx_port, rx_port): (Port, Port),
        features: VifFeatures,
        uplink: Box<dyn Uplink>,
        inbox: Arc<Inbox>,
        counters: Arc<Counters>,
        sink: Box<dyn FnMut(VifEvent) + Send>,
    ) -> VifSource {
        VifSource {
            tx_map,
            tx,
            rx_map,
            rx,
            gntdev,
            frontend,
            tx_port,
            rx_port,
            features,
            uplink,
            inbox,
            counters,
            sink,
            waiting: VecDeque::new(),
            judged: Vec::new(),
            out: Vec::new(),
            deliveries: Vec::new(),
            copies: Vec::new(),
            reports: 0,
            failed: false,
            journals: None,
            notify_once: false,
            #[cfg(test)]
            crash: Arc::default(),
        }
    }

    /// Keeps journals of the requests taken; with `taking_over`, the
    /// frontend is notified on the first run whatever its event indexes
    /// say (a backend that died may have published responses and died
    /// before notifying).
    pub(super) fn with_journals(mut self, journals: Option<Journals>, taking_over: bool) -> Self {
        self.journals = journals;
        self.notify_once = taking_over;
        self
    }

    fn fail(&mut self, reason: String) {
        if !self.failed {
            self.failed = true;
            // What waits for the guest goes, and what comes is dropped.
            let mut state = self.inbox.packets.lock().unwrap_or_else(|p| p.into_inner());
            state.closed = true;
            add(
                &self.counters.rx_dropped,
                (state.queue.len() + self.waiting.len()) as u64,
            );
            state.queue.clear();
            self.waiting.clear();
            drop(state);
            (self.sink)(VifEvent::Failed(reason));
        }
    }

    fn refused(&mut self, reason: String) {
        add(&self.counters.tx_errors, 1);
        if self.reports < MAX_REPORTS {
            self.reports += 1;
            (self.sink)(VifEvent::Refused(reason));
        }
    }

    /// Takes up to [`BUDGET`] packets off the transmit ring, copies them
    /// out, answers them and hands them to the uplink. Returns whether
    /// the frontend is to be notified, and whether packets were left.
    fn transmit(&mut self) -> Result<(bool, bool), SharedRingError> {
        let mut left = false;
        let gso = self.features.gso_offered;
        let mut judged = std::mem::take(&mut self.judged);
        let mut refused = Vec::new();
        let mut fatal = None;
        {
            let mut ring = BackRing::<NetifTx>::resume(self.tx_map.mem(), self.tx)?;
            loop {
                if ring.unconsumed_requests()? == 0 {
                    // Asks for an event on the next request before going
                    // idle, at the budget too: a stale event index would
                    // let the frontend push without a word.
                    if ring.final_check_for_requests()? {
                        continue;
                    }
                    break;
                }
                if judged.len() >= BUDGET {
                    left = true;
                    break;
                }
                // Each slot is copied out of the page once, by
                // peek_request, and judged on the copy (which the journal
                // keeps too).
                let journal = self.journals.as_ref().map(|j| &j.tx);
                let head = ring.req_cons();
                let peek = |i: u32| {
                    let slot = ring.peek_request(i).ok().flatten();
                    if let (Some(s), Some(j)) = (&slot, journal) {
                        j.record(head.wrapping_add(i), s);
                    }
                    slot
                };
                match judge(peek, gso) {
                    Judged::Fatal(reason) => {
                        fatal = Some(reason);
                        break;
                    }
                    Judged::Packet(p) => {
                        ring.consume_requests(p.slots)?;
                        if let Some(j) = journal {
                            j.set_taken(ring.req_cons());
                        }
                        if let Some(reason) = &p.refused {
                            write_tx_responses(&mut ring, &p, NETIF_RSP_ERROR)?;
                            refused.push(reason.clone());
                        } else {
                            judged.push(p);
                        }
                    }
                }
            }
            self.tx = ring.state();
        }
        for reason in refused {
            self.refused(reason);
        }
        if let Some(reason) = fatal {
            judged.clear();
            self.judged = judged;
            self.fail(reason);
            return Ok((false, false));
        }
        #[cfg(test)]
        if !judged.is_empty() && self.crash.due(crash::TX_TAKEN) {
            return Ok((false, false));
        }
        // The batch's data, in one grant copy.
        let statuses = self.copy_out(&judged);
        let mut ring = BackRing::<NetifTx>::resume(self.tx_map.mem(), self.tx)?;
        for (p, ok) in judged.iter().zip(statuses) {
            let status = if ok { NETIF_RSP_OKAY } else { NETIF_RSP_ERROR };
            write_tx_responses(&mut ring, p, status)?;
        }
        #[cfg(test)]
        if !judged.is_empty() && self.crash.due(crash::TX_WRITTEN) {
            return Ok((false, false));
        }
        let notify = ring.push_responses_and_check_notify()?;
        self.tx = ring.state();
        judged.clear();
        self.judged = judged;
        Ok((notify, left))
    }

    /// Copies the judged packets' data out of the guest into `self.out`;
    /// which packets were copied whole (the others are dropped).
    fn copy_out(&mut self, judged: &[TxPacket]) -> Vec<bool> {
        let mut buffers: Vec<Vec<u8>> = Vec::with_capacity(judged.len());
        super::pool::take(judged.iter().map(|p| p.len), &mut buffers);
        let frontend = self.frontend;
        let mut copies = reuse_vec(std::mem::take(&mut self.copies));
        // Which copies belong to which packet.
        let mut ends = Vec::with_capacity(judged.len());
        for (p, buf) in judged.iter().zip(buffers.iter_mut()) {
            let mut rest: &mut [u8] = buf;
            for f in p.fragments.iter().filter(|f| f.len > 0) {
                let (here, after) = rest.split_at_mut(usize::from(f.len));
                rest = after;
                copies.push(CopySegment::new(
                    CopySide::Grant {
                        domid: frontend,
                        gref: f.gref,
                        offset: f.offset,
                    },
                    CopySide::Into(here),
                    f.len,
                ));
            }
            ends.push(copies.len());
        }
        let copied = copies.is_empty() || self.gntdev.copy(&mut copies).is_ok();
        let mut statuses = Vec::with_capacity(judged.len());
        let mut start = 0;
        for end in &ends {
            statuses.push(copied && copies[start..*end].iter().all(|c| c.status == GntSt::Okay));
            start = *end;
        }
        let failures: Vec<String> = copies
            .iter()
            .filter(|c| c.status != GntSt::Okay)
            .take(1)
            .map(|c| match c.source {
                CopySide::Grant { gref, .. } => format!("gref {gref}: {}", c.status),
                _ => String::new(),
            })
            .collect();
        self.copies = reuse_vec(copies);
        for ((p, buf), ok) in judged.iter().zip(buffers).zip(&statuses) {
            if *ok {
                add(&self.counters.tx_packets, 1);
                add(&self.counters.tx_bytes, p.len as u64);
                self.out.push(Packet {
                    data: buf,
                    offload: p.offload,
                });
            } else {
                super::pool::give(std::iter::once(buf));
                let why = if copied {
                    failures.first().cloned().unwrap_or_default()
                } else {
                    "the grant copy failed".into()
                };
                self.refused(format!("a packet's data could not be copied ({why})"));
            }
        }
        statuses
    }

    /// Puts up to [`BUDGET`] waiting packets into the guest's buffers.
    /// Returns whether the frontend is to be notified, and whether
    /// packets were left that have buffers.
    fn receive(&mut self) -> Result<(bool, bool), SharedRingError> {
        if self.waiting.is_empty() && !refill(&self.inbox, &mut self.waiting) {
            return Ok((false, false));
        }
        let mut deliveries = std::mem::take(&mut self.deliveries);
        let mut left = false;
        {
            let mut ring = BackRing::<NetifRx>::resume(self.rx_map.mem(), self.rx)?;
            loop {
                if self.waiting.is_empty() && !refill(&self.inbox, &mut self.waiting) {
                    break;
                }
                if deliveries.len() >= BUDGET {
                    left = true;
                    break;
                }
                let mut packet = self.waiting.pop_front().expect("refilled");
                let (flags, gso) = match prepare(self.features, &self.counters, &mut packet) {
                    Prepared::Ready(flags, gso) => (flags, gso),
                    Prepared::Segment(g) => {
                        match super::gso::segment(&packet, g) {
                            // The segments go first, in order.
                            Ok(segments) => {
                                add(&self.counters.gso_segmented, 1);
                                for s in segments.into_iter().rev() {
                                    self.waiting.push_front(s);
                                }
                            }
                            Err(_) => add(&self.counters.rx_dropped, 1),
                        }
                        super::pool::give(std::iter::once(packet.data));
                        continue;
                    }
                    Prepared::Drop => {
                        add(&self.counters.rx_dropped, 1);
                        continue;
                    }
                };
                let chunks = packet.data.len().div_ceil(PAGE_SIZE).max(1);
                let need = chunks + usize::from(gso.is_some());
                if need > ring.size() as usize {
                    add(&self.counters.rx_dropped, 1);
                    continue;
                }
                if (ring.unconsumed_requests()? as usize) < need {
                    self.waiting.push_front(packet);
                    if !deliveries.is_empty() {
                        // The buffers may be there, their slots not yet
                        // answered: the next pass, once these are.
                        left = true;
                    } else if ring.wait_for_requests(need as u32)? {
                        continue;
                    }
                    break;
                }
                let mut buffers = Vec::with_capacity(chunks);
                let journal = self.journals.as_ref().map(|j| &j.rx);
                for k in 0..need {
                    let seq = ring.req_cons();
                    let raw = ring.copy_request()?.expect("counted as available");
                    if let Some(j) = journal {
                        j.record(seq, &raw);
                        j.set_taken(ring.req_cons());
                    }
                    // The extra-info slot's request only lends its slot.
                    if gso.is_none() || k != 1 {
                        buffers.push(RxRequest::decode(&raw));
                    }
                }
                deliveries.push(Delivery {
                    packet,
                    buffers,
                    gso,
                    flags,
                    ok: true,
                });
            }
            self.rx = ring.state();
        }
        #[cfg(test)]
        if !deliveries.is_empty() && self.crash.due(crash::RX_TAKEN) {
            return Ok((false, false));
        }
        self.copy_in(&mut deliveries);
        let mut ring = BackRing::<NetifRx>::resume(self.rx_map.mem(), self.rx)?;
        for d in &deliveries {
            write_rx_responses(&mut ring, d)?;
            if d.ok {
                add(&self.counters.rx_packets, 1);
                add(&self.counters.rx_bytes, d.packet.data.len() as u64);
            } else {
                add(&self.counters.rx_dropped, 1);
            }
        }
        #[cfg(test)]
        if !deliveries.is_empty() && self.crash.due(crash::RX_WRITTEN) {
            return Ok((false, false));
        }
        // The packets' bytes are in the guest now: their buffers go back.
        super::pool::give(deliveries.drain(..).map(|d| d.packet.data));
        self.deliveries = deliveries;
        let notify = ring.push_responses_and_check_notify()?;
        self.rx = ring.state();
        Ok((notify, left))
    }

    /// Copies the deliveries' data into the guest's buffers, in one grant
    /// copy; a delivery any of whose pieces failed is marked not ok.
    fn copy_in(&mut self, deliveries: &mut [Delivery]) {
        let frontend = self.frontend;
        let mut copies = reuse_vec(std::mem::take(&mut self.copies));
        let mut ends = Vec::with_capacity(deliveries.len());
        for d in deliveries.iter() {
            for (chunk, buf) in d.packet.data.chunks(PAGE_SIZE).zip(&d.buffers) {
                copies.push(CopySegment::new(
                    CopySide::From(chunk),
                    CopySide::Grant {
                        domid: frontend,
                        gref: buf.gref,
                        offset: 0,
                    },
                    chunk.len() as u16,
                ));
            }
            ends.push(copies.len());
        }
        let copied = copies.is_empty() || self.gntdev.copy(&mut copies).is_ok();
        let mut start = 0;
        let mut oks = Vec::with_capacity(deliveries.len());
        for end in &ends {
            oks.push(copied && copies[start..*end].iter().all(|c| c.status == GntSt::Okay));
            start = *end;
        }
        self.copies = reuse_vec(copies);
        for (d, ok) in deliveries.iter_mut().zip(oks) {
            d.ok = ok;
        }
    }
}

/// What becomes of a packet for this guest.
enum Prepared {
    /// Put it in the guest's buffers with these flags (and this
    /// extra-info slot).
    Ready(u16, Option<ExtraInfo>),
    /// A GSO packet the guest cannot take whole: its segments instead.
    Segment(Gso),
    /// The guest cannot take it at all.
    Drop,
}

/// Readies a packet for this guest: its checksum filled if the guest
/// cannot take it blank; a GSO packet it cannot take (no GSO of that
/// kind, or over a page without scatter-gather) to be cut into segments,
/// as Linux cuts them before a device without TSO.
fn prepare(f: VifFeatures, counters: &Counters, packet: &mut Packet) -> Prepared {
    let gso = match packet.offload.gso {
        None => None,
        Some(g) => {
            let (ok, gso_type) = match g.kind {
                GsoKind::TcpV4 => (f.gso_tcpv4, XEN_NETIF_GSO_TYPE_TCPV4),
                GsoKind::TcpV6 => (f.gso_tcpv6, XEN_NETIF_GSO_TYPE_TCPV6),
            };
            if !ok || (!f.sg && packet.data.len() > PAGE_SIZE) {
                return Prepared::Segment(g);
            }
            Some(ExtraInfo {
                flags: 0,
                extra: Extra::Gso {
                    size: g.size,
                    gso_type,
                    features: 0,
                },
            })
        }
    };
    if packet.data.len() > PAGE_SIZE && !f.sg {
        return Prepared::Drop;
    }
    let mut flags = 0;
    if packet.offload.csum_blank {
        if f.csum_offload {
            flags |= NETRXF_CSUM_BLANK | NETRXF_DATA_VALIDATED;
        } else {
            if checksum::fill(&mut packet.data).is_err() {
                return Prepared::Drop;
            }
            packet.offload.csum_blank = false;
            add(&counters.csum_filled, 1);
            flags |= NETRXF_DATA_VALIDATED;
        }
    } else if packet.offload.data_validated {
        flags |= NETRXF_DATA_VALIDATED;
    }
    Prepared::Ready(flags, gso)
}

/// Moves a pass's worth of packets from the inbox to `waiting` (the rest
/// stays in the inbox, whose bound is what may wait for the guest);
/// whether any came.
fn refill(inbox: &Inbox, waiting: &mut VecDeque<Packet>) -> bool {
    let mut state = inbox.packets.lock().unwrap_or_else(|p| p.into_inner());
    let n = BUDGET.min(state.queue.len());
    waiting.extend(state.queue.drain(..n));
    n > 0
}

/// Answers every slot of a transmitted packet: its data slots with
/// `status`, its extra-info slots with `NETIF_RSP_NULL`, in the order
/// the frontend wrote them.
pub(super) fn write_tx_responses(
    ring: &mut BackRing<'_, NetifTx>,
    p: &TxPacket,
    status: i16,
) -> Result<(), SharedRingError> {
    let rsp = |id, status| TxResponse { id, status }.encode();
    ring.write_response(&rsp(p.fragments[0].id, status))?;
    for id in &p.extra_ids {
        ring.write_response(&rsp(*id, NETIF_RSP_NULL))?;
    }
    for f in &p.fragments[1..] {
        ring.write_response(&rsp(f.id, status))?;
    }
    Ok(())
}

/// Answers the buffers a packet filled: the first, then its extra-info
/// slot, then the rest; each response in the slot of the request it
/// answers (the responses go in the order the requests were taken).
fn write_rx_responses(
    ring: &mut BackRing<'_, NetifRx>,
    d: &Delivery,
) -> Result<(), SharedRingError> {
    let len = d.packet.data.len();
    let n = d.buffers.len();
    for (k, buf) in d.buffers.iter().enumerate() {
        let size = (len - k * PAGE_SIZE).min(PAGE_SIZE);
        let mut flags = if k + 1 < n { NETRXF_MORE_DATA } else { 0 };
        if k == 0 {
            flags |= d.flags;
            if d.gso.is_some() {
                flags |= NETRXF_EXTRA_INFO;
            }
        }
        let status = if d.ok { size as i16 } else { NETIF_RSP_ERROR };
        let rsp = RxResponse {
            id: buf.id,
            offset: 0,
            flags,
            status,
        };
        ring.write_response(&rsp.encode())?;
        if k == 0 {
            if let Some(extra) = &d.gso {
                ring.write_response(&extra.encode())?;
            }
        }
    }
    Ok(())
}

impl Source for VifSource {
    fn wake(&mut self, _why: Wake, cx: &mut Control<'_>) {
        if self.failed {
            return;
        }
        // A queue a test killed does nothing more, as a dead process.
        #[cfg(test)]
        if self.crash.died() {
            return;
        }
        let (notify_tx, tx_left) = match self.transmit() {
            Ok(r) => r,
            Err(e) => {
                self.fail(format!("transmit ring: {e}"));
                return;
            }
        };
        if !self.out.is_empty() {
            self.uplink.transmit(&mut self.out);
            self.out.clear();
        }
        let (notify_rx, rx_left) = if self.failed {
            (false, false)
        } else {
            match self.receive() {
                Ok(r) => r,
                Err(e) => {
                    self.fail(format!("receive ring: {e}"));
                    return;
                }
            }
        };
        let once = std::mem::take(&mut self.notify_once);
        if notify_tx || once {
            cx.notify(self.tx_port);
            add(&self.counters.notifications, 1);
        }
        if (notify_rx || once) && (self.rx_port != self.tx_port || !(notify_tx || once)) {
            cx.notify(self.rx_port);
            add(&self.counters.notifications, 1);
        }
        if tx_left || rx_left {
            // The rest on the next turn, after the other devices.
            add(&self.counters.budget_yields, 1);
            cx.set_timer(Some(cx.now()));
        }
    }
}

/// Where a test makes a queue die (tests only).
#[cfg(test)]
pub(super) mod crash {
    use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

    /// After taking packets off the transmit ring, before answering them.
    pub(in crate::net) const TX_TAKEN: u8 = 1;
    /// With their responses written, not yet published.
    pub(in crate::net) const TX_WRITTEN: u8 = 2;
    /// After taking receive buffers, before filling them.
    pub(in crate::net) const RX_TAKEN: u8 = 3;
    /// With their responses written, not yet published.
    pub(in crate::net) const RX_WRITTEN: u8 = 4;

    /// The point a queue is to die at, and whether it did.
    #[derive(Default)]
    pub(in crate::net) struct Point {
        at: AtomicU8,
        died: AtomicBool,
    }

    impl Point {
        pub(in crate::net) fn set(&self, at: u8) {
            self.at.store(at, Ordering::SeqCst);
        }

        pub(in crate::net) fn died(&self) -> bool {
            self.died.load(Ordering::SeqCst)
        }

        pub(super) fn due(&self, at: u8) -> bool {
            if self.at.load(Ordering::SeqCst) == at {
                self.died.store(true, Ordering::SeqCst);
                return true;
            }
            false
        }
    }
}
