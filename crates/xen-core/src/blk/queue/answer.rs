//! The answering half of a block queue: collecting what storage finished,
//! the steps of a fenced request (flush, write, flush again for a
//! barrier), and writing and publishing responses in the order the
//! requests were taken, with a notification only when the ring asks for
//! one.

use super::*;

impl<P: BlkifAbi> QueueSource<P> {
    /// Puts the answer of request `seq` in its place in the order.
    pub(super) fn answer(&mut self, seq: u32, response: Response) {
        let i = seq.wrapping_sub(self.answered) as usize;
        if let Some(place @ None) = self.answers.get_mut(i) {
            *place = Some(response);
        } else {
            debug_assert!(false, "request {seq} answered twice or never taken");
        }
    }

    pub(super) fn refuse(&mut self, seq: u32, id: u64, operation: u8, status: i16, reason: String) {
        Counters::add(&self.counters.errors, 1);
        self.answer(
            seq,
            Response {
                id,
                operation,
                status,
            },
        );
        (self.sink)(QueueEvent::Refused { id, reason });
    }

    /// Starts the fenced request once nothing earlier is in flight.
    pub(super) fn try_fence(&mut self) {
        if self.busy > 0 {
            return;
        }
        let Some((checked, write)) = &mut self.fenced else {
            return;
        };
        let checked = *checked;
        match write.as_ref().map(|w| w.offset) {
            // The flush ahead of the write.
            Some(_) => {
                Counters::add(&self.counters.flushes, 1);
                self.ticket = self.fenced_ticket;
                self.submit(
                    checked,
                    IoOp::Flush,
                    0,
                    Vec::new(),
                    None,
                    Step::FlushThenWrite,
                );
            }
            None => self.fenced = None,
        }
    }

    /// Answers what storage finished.
    pub(super) fn reap(&mut self) {
        // Requests taken before are started first: storage that finishes
        // them inside `submit` has their results now.
        self.start_taken();
        let mut done = std::mem::take(&mut self.completions);
        self.storage.completions(&mut done);
        // A new batch of answers: the clock is read again for it.
        self.stamp = None;
        for c in done.drain(..) {
            self.finish(c);
        }
        self.completions = done;
    }

    pub(super) fn finish(&mut self, c: IoCompletion) {
        let Some(f) = self.inflight.get_mut(c.tag as usize).and_then(Option::take) else {
            // Not ours: a storage bug; its buffers are still good.
            self.recycle(c.segments);
            return;
        };
        self.free_tags.push(c.tag as usize);
        self.busy -= 1;
        let mut guest = f.guest;
        let result = match c.result {
            Err(e) => Err(format!("storage: {e}")),
            Ok(()) => Ok(()),
        };
        let mut data = c.segments;
        let result = result.and_then(|()| {
            // Only a read keeps its guest segments: copy the data there.
            if !guest.is_empty() {
                Counters::add(&self.counters.bytes_read, bytes_of(&data));
                self.copy(&mut data, &guest, Direction::IntoGuest)
            } else {
                Ok(())
            }
        });
        self.recycle(data);
        guest.clear();
        self.guest_lists.push(guest);
        // The request's later steps (if any) are timed as the request.
        self.ticket = f.ticket;
        if result.is_err() || f.step == Step::Answer {
            let now = self.stamp();
            self.counters.answered(f.ticket.kind, f.ticket.since, now);
        }
        match (result, f.step) {
            (Err(reason), _) => {
                // A failed flush ahead of a write fails the write too.
                if f.step == Step::FlushThenWrite {
                    if let Some((_, Some(w))) = self.fenced.take() {
                        self.recycle(w.segments);
                    }
                }
                self.refuse(f.ticket.seq, f.id, f.operation, BLKIF_RSP_ERROR, reason);
            }
            (Ok(()), Step::Answer) => self.answer(
                f.ticket.seq,
                Response {
                    id: f.id,
                    operation: f.operation,
                    status: BLKIF_RSP_OKAY,
                },
            ),
            (Ok(()), Step::FlushThenWrite) => {
                if let Some((checked, Some(w))) = self.fenced.take() {
                    let barrier = checked.operation == crate::ring::blkif::BLKIF_OP_WRITE_BARRIER;
                    let step = if barrier {
                        Step::WriteThenFlush
                    } else {
                        Step::Answer
                    };
                    // Still fenced until the write is answered.
                    self.fenced = Some((checked, None));
                    self.submit(checked, IoOp::Write, w.offset, w.segments, None, step);
                }
            }
            (Ok(()), Step::WriteThenFlush) => {
                let checked = Checked {
                    id: f.id,
                    operation: f.operation,
                    plan: Plan::Flush,
                };
                Counters::add(&self.counters.flushes, 1);
                self.submit(checked, IoOp::Flush, 0, Vec::new(), None, Step::Answer);
            }
        }
        if self.busy == 0 {
            if let Some((_, None)) = self.fenced {
                self.fenced = None;
            }
        }
    }

    /// Answers what is done now and notifies the frontend directly if the
    /// ring asks for it, in the middle of a pass.
    pub(super) fn publish_now(&mut self) {
        self.reap();
        if self.respond() && self.evtchn.notify(self.port).is_ok() {
            Counters::add(&self.counters.notifications, 1);
        }
    }

    /// Writes the waiting responses and publishes them; whether the
    /// frontend must be notified.
    /// Only answers whose every earlier request is answered go out: a
    /// request that finishes early waits for those taken before it.
    pub(super) fn respond(&mut self) -> bool {
        if !matches!(self.answers.front(), Some(Some(_))) {
            return false;
        }
        let Ok(mut ring) = BackRing::<P>::resume(self.ring_map.mem(), self.ring) else {
            return false;
        };
        while let Some(Some(r)) = self.answers.front() {
            if let Err(e) = ring.write_response(&r.encode::<P>()) {
                self.ring = ring.state();
                self.fail(e.to_string());
                return false;
            }
            self.answers.pop_front();
            self.answered = self.answered.wrapping_add(1);
            Counters::add(&self.counters.responses, 1);
        }
        let notify = ring.push_responses_and_check_notify();
        self.ring = ring.state();
        match notify {
            Ok(n) => n,
            Err(e) => {
                self.fail(e.to_string());
                false
            }
        }
    }
}
