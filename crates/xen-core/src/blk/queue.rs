//! One blkif ring served as a source of the platform's event loop: the
//! data path of a block device queue.
//!
//! Each run, in blkback's order: collect finished storage requests and
//! answer them; then take requests off the ring, each copied out of its
//! slot once and judged on that copy ([`super::request::check`]); copy a
//! write's data out of the guest's pages (one grant-copy call per request)
//! into the queue's own page buffers, or, with persistent grants and
//! storage that accepts guest pages, give storage the mapped guest pages
//! themselves; hand the pass's requests to storage together (at each reap,
//! and at the end of the pass); after a read into our own pages, copy the
//! data into the guest's pages. Responses are written whole
//! (no stale bytes) and pushed at the end of a run, and in a long run every
//! few requests or pages of data (see [`PUBLISH_PAGES`]), with a
//! notification only when the ring asks for one, and the final check
//! before going idle.
//!
//! A bad request gets its error response and one log line; a ring whose
//! indexes no correct frontend can write fails the device (it is served no
//! more, as blkback stops such a ring). Nothing a guest sends can stop the
//! event loop or touch another device.
//!
//! Ordering: a barrier or a flush carrying data waits until every earlier
//! request is done, then flushes, then writes (and a barrier flushes again),
//! while later requests wait on the ring.
//!
//! Answers go out in the order the requests were taken (one that finishes
//! early waits for those before it, as storage mostly finishes in order
//! anyway): then the ring's `rsp_prod` alone says which requests were
//! answered, and a backend started after this one died can take the ring
//! over, serving again exactly those after it, from the journal the queue
//! may keep ([`super::journal`]).

mod answer;
mod data;

use std::collections::VecDeque;
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use super::journal::QueueJournal;
use super::request::{self, check, Checked, Offer, Plan, Segments};
use super::reuse_vec;
use super::stats::{Counters, Kind};
use super::storage::{IoCompletion, IoOp, IoRequest, IoSegment, Page, Storage, SECTOR_SIZE};
use super::transfer::{
    bytes_of, first_failure, grant_copy, Direction, GrantCache, GuestSegment, MAX_PERSISTENT_GRANTS,
};
use crate::platform::event_loop::{Control, Source, Wake};
use crate::platform::{
    CopySegment, CopySide, DomId, EventChannels, GrantError, GrantMapper, GrantMapping, GrantRef,
    Port,
};
use crate::ring::blkif::{
    BlkifAbi, Response, Segment, BLKIF_RSP_ERROR, BLKIF_RSP_OKAY, SEGMENT_SIZE,
};
use crate::ring::shared::{BackRing, BackRingState};

/// Something the queue reports (on the loop's thread).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QueueEvent {
    /// A request was answered with an error; why.
    Refused {
        /// The request's id.
        id: u64,
        /// Why (one log line).
        reason: String,
    },
    /// The frontend broke the ring protocol: the queue serves it no more.
    Failed(String),
}

/// Requests taken in a row before what is done is answered and the
/// frontend notified, without waiting for the end of the pass.
const PUBLISH_EVERY: usize = 8;

/// Pages of data taken in a row before the same: large requests are
/// answered one by one, so that the guest copies or completes one while
/// the next is served (a 1 MiB read is 8 indirect requests of 128 KiB;
/// blkback answers each as the block layer completes it).
const PUBLISH_PAGES: usize = 16;

/// A request being served.
struct InFlight {
    id: u64,
    operation: u8,
    /// Where a read's data goes: (gref, offset, len) per segment; empty
    /// for anything but a read.
    guest: Vec<GuestSegment>,
    /// What follows storage completion.
    step: Step,
    ticket: Ticket,
}

/// A request's place in the order of answers (its ring index when taken),
/// what its latency is counted as, and since when (`None` with timing off).
#[derive(Clone, Copy, Debug)]
struct Ticket {
    seq: u32,
    kind: Kind,
    since: Option<Instant>,
}

impl Ticket {
    fn of(seq: u32, plan: &Plan, since: Option<Instant>) -> Ticket {
        let kind = match plan {
            Plan::Flush => Kind::Flush,
            Plan::Discard { .. } => Kind::Discard,
            Plan::Transfer {
                flush_before: true, ..
            } => Kind::Flush,
            Plan::Transfer { write: true, .. } => Kind::Write,
            Plan::Transfer { write: false, .. } => Kind::Read,
        };
        Ticket { seq, kind, since }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// Answer when storage is done.
    Answer,
    /// A flush ahead of a write: then submit the write (held in `fenced`).
    FlushThenWrite,
    /// The write of a barrier: flush again, then answer.
    WriteThenFlush,
}

/// The queue as an event-loop source, for ring layout `P`.
pub(super) struct QueueSource<P: BlkifAbi> {
    pub(super) ring_map: GrantMapping,
    pub(super) ring: BackRingState,
    pub(super) gntdev: Arc<dyn GrantMapper>,
    pub(super) frontend: DomId,
    pub(super) port: Port,
    /// To notify the frontend in the middle of a long pass.
    pub(super) evtchn: Arc<dyn EventChannels>,
    pub(super) offer: Offer,
    pub(super) storage: Box<dyn Storage>,
    pub(super) counters: Arc<Counters>,
    pub(super) sink: Box<dyn FnMut(QueueEvent) + Send>,
    /// Free page buffers and segment lists, reused.
    pages: Vec<Box<Page>>,
    lists: Vec<Vec<IoSegment>>,
    guest_lists: Vec<Vec<GuestSegment>>,
    /// Requests handed to storage, by tag (slot index).
    inflight: Vec<Option<InFlight>>,
    free_tags: Vec<usize>,
    busy: usize,
    /// A request waiting for every earlier one to finish (barrier, flush
    /// with data): its plan, and the write once its flush is done.
    fenced: Option<(Checked, Option<IoRequest>)>,
    /// The request being started: where [`Self::submit`] answers it, and
    /// what it times it as.
    ticket: Ticket,
    /// The fenced request's ticket, kept while it waits.
    fenced_ticket: Ticket,
    /// The time of the batch being taken or answered (read once per
    /// batch; `None` until read, or with timing off).
    stamp: Option<Instant>,
    completions: Vec<IoCompletion>,
    /// Requests taken in this pass, handed to storage together at the next
    /// reap or at the pass's end (one system call for a pass's requests).
    outbox: Vec<IoRequest>,
    /// Answers in the order the requests were taken: `answers[i]` is the
    /// answer (once there is one) of the request taken as number
    /// `answered + i`. Responses go out in that order only, so the ring's
    /// `rsp_prod` alone says which requests were answered: what a
    /// restarted backend relies on (see [`super::journal`]).
    answers: VecDeque<Option<Response>>,
    /// The number of the first request in `answers`.
    answered: u32,
    /// The number the next request taken gets (its ring index).
    next_seq: u32,
    /// Requests taken by an earlier process and not answered, from its
    /// journal: served before the ring.
    replay: VecDeque<P::Request>,
    /// Where each request taken is copied, if the queue keeps a journal.
    journal: Option<QueueJournal>,
    /// Notify the frontend at the end of the next run (see
    /// [`Self::taking_over`]).
    notify_once: bool,
    /// The ring is polled (see [`super::BlkQueue::set_poll`]): when empty
    /// it is left without asking the frontend for an event.
    unarmed: bool,
    /// The loop polls the queue until a run with [`Wake::poll_over`].
    polling: bool,
    segments: Vec<Segment>,
    indirect: Vec<u8>,
    /// The grant-copy descriptors' buffer, reused by every request.
    copies: Vec<CopySegment<'static>>,
    /// With persistent grants: the frontend's pages, kept mapped.
    persistent: Option<GrantCache>,
    /// Persistent grants and storage that accepts guest pages: the I/O is
    /// done in the guest's mapped pages, with no copy in the backend.
    in_place: bool,
    /// The disk's size as last set by [`super::BlkQueue::resize`].
    capacity: Arc<AtomicU64>,
    failed: bool,
    _layout: std::marker::PhantomData<P>,
}

impl<P: BlkifAbi> QueueSource<P> {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        ring_map: GrantMapping,
        ring: BackRingState,
        gntdev: Arc<dyn GrantMapper>,
        frontend: DomId,
        port: Port,
        evtchn: Arc<dyn EventChannels>,
        offer: Offer,
        persistent: bool,
        mut storage: Box<dyn Storage>,
        counters: Arc<Counters>,
        capacity: Arc<AtomicU64>,
        sink: Box<dyn FnMut(QueueEvent) + Send>,
    ) -> QueueSource<P> {
        // A handle opened before a resize learns the size the frontend has.
        if storage.geometry().sectors != offer.geometry.sectors {
            storage.resize(offer.geometry.sectors);
        }
        let in_place = persistent && storage.accepts_guest_pages();
        QueueSource {
            ring_map,
            ring,
            gntdev,
            frontend,
            port,
            evtchn,
            offer,
            storage,
            counters,
            sink,
            pages: Vec::new(),
            lists: Vec::new(),
            guest_lists: Vec::new(),
            inflight: Vec::new(),
            free_tags: Vec::new(),
            busy: 0,
            fenced: None,
            ticket: Ticket {
                seq: ring.rsp_prod_pvt(),
                kind: Kind::Read,
                since: None,
            },
            fenced_ticket: Ticket {
                seq: ring.rsp_prod_pvt(),
                kind: Kind::Read,
                since: None,
            },
            completions: Vec::new(),
            outbox: Vec::new(),
            stamp: None,
            answers: VecDeque::new(),
            answered: ring.rsp_prod_pvt(),
            next_seq: ring.rsp_prod_pvt(),
            replay: VecDeque::new(),
            journal: None,
            notify_once: false,
            unarmed: false,
            polling: false,
            segments: Vec::new(),
            indirect: Vec::new(),
            copies: Vec::new(),
            persistent: persistent.then(|| GrantCache::new(frontend, MAX_PERSISTENT_GRANTS)),
            in_place,
            capacity,
            failed: false,
            _layout: std::marker::PhantomData,
        }
    }

    /// Keeps the journal, and requests an earlier process took and did
    /// not answer (`replay`, from rsp_prod on), to serve first.
    pub(super) fn with_journal(mut self, journal: QueueJournal, replay: Vec<P::Request>) -> Self {
        self.journal = Some(journal);
        self.replay = replay.into();
        self
    }

    /// The ring is taken over from a backend that died: the frontend is
    /// notified once on the first run, whatever the ring's event index
    /// says. The dead backend may have published responses and died
    /// before notifying; the frontend then sleeps with an event index
    /// below what this queue publishes, and would wait for ever.
    pub(super) fn taking_over(mut self) -> Self {
        self.notify_once = true;
        self
    }

    /// The current batch's time, read on first use (timing on only).
    fn stamp(&mut self) -> Option<Instant> {
        if self.stamp.is_none() {
            self.stamp = self.counters.clock();
        }
        self.stamp
    }

    fn fail(&mut self, reason: String) {
        if !self.failed {
            self.failed = true;
            (self.sink)(QueueEvent::Failed(reason));
        }
    }

    /// Takes requests off the ring until it is empty, the queue is fenced,
    /// or the ring is broken; how many. An empty ring is armed (its event
    /// index asks the frontend to notify the next request, and is checked
    /// once more) unless the queue polls it. Every [`PUBLISH_EVERY`] requests or
    /// [`PUBLISH_PAGES`] pages of data, whichever comes first, what is done
    /// is answered and the frontend notified at once, so that it works on
    /// those while the rest are served (as blkback answers each batch as it
    /// completes), rather than both sides taking turns.
    fn consume(&mut self) -> usize {
        // A new batch: the clock is read again for it.
        self.stamp = None;
        // Taken since the last publication: requests, and pages of data.
        let (mut taken, mut pages) = (0usize, 0usize);
        let mut total = 0;
        while !self.failed && self.fenced.is_none() {
            if taken >= PUBLISH_EVERY || pages >= PUBLISH_PAGES {
                self.publish_now();
                (taken, pages) = (0, 0);
            }
            let slot = if let Some(slot) = self.replay.pop_front() {
                Some(slot)
            } else {
                let Ok(mut ring) = BackRing::<P>::resume(self.ring_map.mem(), self.ring) else {
                    self.fail("ring memory unusable".into());
                    return total;
                };
                let slot = match ring.copy_request() {
                    Ok(Some(slot)) => Some(slot),
                    // Polled: a look at the producer index, the event index
                    // left as it is.
                    Ok(None) if self.unarmed => match ring.unconsumed_requests() {
                        Ok(0) => None,
                        Ok(_) => {
                            self.ring = ring.state();
                            continue;
                        }
                        Err(e) => {
                            self.ring = ring.state();
                            self.fail(e.to_string());
                            return total;
                        }
                    },
                    Ok(None) => match ring.final_check_for_requests() {
                        Ok(true) => {
                            self.ring = ring.state();
                            continue;
                        }
                        Ok(false) => None,
                        Err(e) => {
                            self.ring = ring.state();
                            self.fail(e.to_string());
                            return total;
                        }
                    },
                    Err(e) => {
                        self.ring = ring.state();
                        self.fail(e.to_string());
                        return total;
                    }
                };
                self.ring = ring.state();
                if let (Some(slot), Some(journal)) = (&slot, &self.journal) {
                    journal.record(self.next_seq, slot.as_ref());
                    journal.set_taken(self.next_seq.wrapping_add(1));
                }
                slot
            };
            let Some(slot) = slot else { return total };
            taken += 1;
            total += 1;
            let seq = self.next_seq;
            self.next_seq = seq.wrapping_add(1);
            self.answers.push_back(None);
            // Judged on the private copy only: the guest may rewrite the
            // slot from now on without effect.
            let req = crate::ring::blkif::Request::decode::<P>(&slot);
            Counters::add(&self.counters.requests, 1);
            match check(&req, &self.offer) {
                Ok(checked) => {
                    if let Plan::Transfer { segments, .. } = &checked.plan {
                        pages += segments.count();
                    }
                    let since = self.stamp();
                    self.ticket = Ticket::of(seq, &checked.plan, since);
                    self.start(checked);
                }
                Err(refusal) => self.refuse(
                    seq,
                    req.id(),
                    request::echoed_operation(&req),
                    refusal.status,
                    refusal.reason,
                ),
            }
        }
        total
    }

    /// Starts an accepted request.
    fn start(&mut self, checked: Checked) {
        match checked.plan {
            Plan::Flush => {
                Counters::add(&self.counters.flushes, 1);
                Counters::add(&self.counters.flush_requests, 1);
                self.submit(checked, IoOp::Flush, 0, Vec::new(), None, Step::Answer);
            }
            Plan::Discard {
                sector,
                nr_sectors,
                secure,
            } => {
                Counters::add(&self.counters.discards, 1);
                let op = IoOp::Discard {
                    len: nr_sectors * SECTOR_SIZE,
                    secure,
                };
                self.submit(
                    checked,
                    op,
                    sector * SECTOR_SIZE,
                    Vec::new(),
                    None,
                    Step::Answer,
                );
            }
            Plan::Transfer {
                write,
                sector,
                segments,
                flush_before,
            } => {
                let (data, guest) = match self.prepare(write, sector, segments) {
                    Ok(v) => v,
                    Err(reason) => {
                        self.refuse(
                            self.ticket.seq,
                            checked.id,
                            checked.operation,
                            BLKIF_RSP_ERROR,
                            reason,
                        );
                        return;
                    }
                };
                let sectors = bytes_of(&data) / SECTOR_SIZE;
                let offset = request::byte_offset(sector);
                if write {
                    Counters::add(&self.counters.sectors_written, sectors);
                } else {
                    Counters::add(&self.counters.sectors_read, sectors);
                }
                if flush_before {
                    Counters::add(&self.counters.flush_requests, 1);
                    Counters::add(&self.counters.fence_waits, 1);
                    self.fenced_ticket = self.ticket;
                    let write_req = IoRequest {
                        tag: 0,
                        op: IoOp::Write,
                        offset,
                        segments: data,
                    };
                    self.recycle_guest(guest);
                    self.fenced = Some((checked, Some(write_req)));
                    self.try_fence();
                    return;
                }
                if write {
                    self.recycle_guest(guest);
                    self.submit(checked, IoOp::Write, offset, data, None, Step::Answer);
                } else {
                    self.submit(checked, IoOp::Read, offset, data, Some(guest), Step::Answer);
                }
            }
        }
    }

    fn submit(
        &mut self,
        checked: Checked,
        op: IoOp,
        offset: u64,
        segments: Vec<IoSegment>,
        guest: Option<Vec<GuestSegment>>,
        step: Step,
    ) {
        let tag = match self.free_tags.pop() {
            Some(t) => t,
            None => {
                self.inflight.push(None);
                self.inflight.len() - 1
            }
        };
        self.inflight[tag] = Some(InFlight {
            id: checked.id,
            operation: checked.operation,
            guest: guest.unwrap_or_else(|| self.guest_lists.pop().unwrap_or_default()),
            step,
            ticket: self.ticket,
        });
        self.busy += 1;
        match op {
            IoOp::Read => Counters::add(&self.counters.reads, 1),
            IoOp::Write => Counters::add(&self.counters.writes, 1),
            _ => {}
        }
        self.outbox.push(IoRequest {
            tag: tag as u64,
            op,
            offset,
            segments,
        });
    }

    /// Hands the requests taken since the last call to storage, as one
    /// batch.
    pub(super) fn start_taken(&mut self) {
        if !self.outbox.is_empty() {
            self.storage.submit_many(&mut self.outbox);
        }
    }
}

impl<P: BlkifAbi + Send + 'static> Source for QueueSource<P> {
    fn wake(&mut self, why: Wake, cx: &mut Control<'_>) {
        // A resize takes effect for the requests taken from now on.
        let sectors = self.capacity.load(Ordering::Relaxed);
        if sectors != self.offer.geometry.sectors {
            self.offer.geometry.sectors = sectors;
            self.storage.resize(sectors);
        }
        // Storage that finishes inside `submit` is served to the end here
        // (a fenced request's steps included); other storage wakes us
        // through its descriptor.
        let synchronous = self.storage.wake_fd().is_none();
        if why.fd {
            self.storage.woken();
        }
        // Polling (see `set_poll`): the ring stays unarmed until the loop
        // says the window ended with no request, or polling is switched off.
        // A run for polled work or for the window's end is one the loop
        // no longer polls for: it must ask again (or the ring be armed).
        // A window starts with requests the guest notified; a storage
        // completion or a kick outside a window arms the ring as a queue
        // that does not poll does (slow storage would otherwise keep the
        // loop spinning for a window after each completion).
        let window = self.counters.poll_window();
        if why.polled || why.poll_over || window.is_zero() {
            self.polling = false;
        }
        self.unarmed =
            !window.is_zero() && !why.poll_over && (why.polled || why.port || self.polling);
        let mut taken = 0;
        loop {
            self.reap();
            self.try_fence();
            taken += self.consume();
            let fenced = self.fenced.is_some();
            self.reap();
            // A fence lifted by that reap stopped `consume` before the
            // ring's final check: requests pushed meanwhile would go
            // unseen, and the frontend, seeing no new event index, would
            // not notify. Look at the ring again.
            if fenced && self.fenced.is_none() && !self.failed {
                continue;
            }
            let done = self.busy == 0 && self.fenced.is_none();
            if !synchronous || done || self.failed {
                break;
            }
        }
        // What the last reap started (the write after a fence's flush).
        self.start_taken();
        // `|`, not `||`: the responses are published either way.
        if self.respond() | std::mem::take(&mut self.notify_once) {
            cx.notify(self.port);
            Counters::add(&self.counters.notifications, 1);
        }
        cx.poll_fd(self.busy > 0);
        // Requests taken start the window again (or the guest's event
        // starts one); a run within a window that took none (a completion,
        // a kick) leaves it as it is.
        if self.unarmed && !self.failed && (taken > 0 || !self.polling) {
            cx.poll_for(window);
            self.polling = true;
        }
    }

    fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.storage.wake_fd()
    }

    /// Requests to take: published on the ring (one read of its producer
    /// index) or left by an earlier process. A ring the queue cannot take
    /// from now (fenced, failed, no room for answers) has none; a broken
    /// one has, so that the run that follows fails it.
    fn has_work(&self) -> bool {
        if self.failed || self.fenced.is_some() {
            return false;
        }
        if !self.replay.is_empty() {
            return true;
        }
        match BackRing::<P>::resume(self.ring_map.mem(), self.ring) {
            Ok(mut ring) => ring.unconsumed_requests().map_or(true, |n| n > 0),
            Err(_) => true,
        }
    }
}
