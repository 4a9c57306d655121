//! A connection's outgoing queue. Replies are always kept; watch events are
//! coalesced with an identical event still waiting, and dropped past a bound
//! so that a client that stops reading cannot make the daemon grow without
//! limit (C xenstored likewise discards unread events).
//!
//! Two bounds apply to events: a count per connection, and a budget of
//! queued bytes per domain ([`DomainBudget`]) shared by all the outboxes of
//! that domain, so that opening more connections does not buy a guest more
//! of the daemon's memory (XSA-326). Over the budget, a connection's oldest
//! waiting events make way for its new one: a client that catches up then
//! learns the latest state rather than a stale one.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{watch, Notify};

use crate::wire::{Message, MsgType, HEADER_LEN};

/// The bytes of output queued for one domain's connections and not yet
/// taken by their writers, against the domain's limit.
#[derive(Debug)]
pub struct DomainBudget {
    used: AtomicUsize,
    limit: usize,
}

impl DomainBudget {
    /// A budget of `limit` bytes; 0 means unlimited (dom0), the bytes are
    /// still counted.
    pub fn new(limit: usize) -> DomainBudget {
        DomainBudget {
            used: AtomicUsize::new(0),
            limit,
        }
    }

    /// Bytes queued now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    /// The limit; 0 when unlimited.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Takes `n` bytes if they fit.
    fn try_take(&self, n: usize) -> bool {
        if self.limit == 0 {
            self.take(n);
            return true;
        }
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                u.checked_add(n).filter(|total| *total <= self.limit)
            })
            .is_ok()
    }

    /// Bytes free now; `usize::MAX` when unlimited.
    fn free(&self) -> usize {
        if self.limit == 0 {
            usize::MAX
        } else {
            self.limit.saturating_sub(self.used())
        }
    }

    /// Takes `n` bytes whether or not they fit (replies).
    fn take(&self, n: usize) {
        self.used.fetch_add(n, Ordering::AcqRel);
    }

    fn give_back(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }
}

/// Whether an outbox still takes messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Open,
    /// Closed by the daemon or the client: what is queued is still sent.
    Closed,
    /// Closed because the client's unread replies outgrew its domain's
    /// budget: what is queued is discarded and the writer stops at once.
    Killed,
}

/// What waits to be written to one connection.
pub struct Outbox {
    inner: Mutex<Inner>,
    /// Wakes the writer when something is queued or the connection closes.
    pub wake: Notify,
    state: watch::Sender<State>,
    max_events: usize,
    budget: Arc<DomainBudget>,
    /// Events dropped: past the count bound, or to keep the domain within
    /// its budget (oldest first).
    pub dropped: AtomicU64,
    /// Events merged into an identical queued one.
    pub coalesced: AtomicU64,
}

#[derive(Default)]
struct Inner {
    queue: VecDeque<Message>,
    queued_events: HashSet<Vec<u8>>,
    events: usize,
    /// Bytes of the queued events, replies and all, taken from the budget.
    bytes: usize,
    /// Bytes of the queued replies alone.
    reply_bytes: usize,
    killed: Option<String>,
}

/// Bytes a message takes on the wire: what the budget counts.
fn wire_len(msg: &Message) -> usize {
    HEADER_LEN + msg.payload.len()
}

fn is_event(msg: &Message) -> bool {
    msg.ty == MsgType::WatchEvent as u32
}

impl Outbox {
    /// An empty outbox holding at most `max_events` unsent events, queuing
    /// against its domain's `budget`.
    pub fn new(max_events: usize, budget: Arc<DomainBudget>) -> Outbox {
        Outbox {
            inner: Mutex::new(Inner::default()),
            wake: Notify::new(),
            state: watch::channel(State::Open).0,
            max_events,
            budget,
            dropped: AtomicU64::new(0),
            coalesced: AtomicU64::new(0),
        }
    }

    /// Queues a reply or an event. An event that does not fit the domain's
    /// budget pushes out this connection's oldest events, or is dropped if
    /// that does not make room. A reply is never dropped: it pushes out
    /// events, and if the connection's unread replies alone outgrow the
    /// budget the connection is killed instead (see [`Outbox::killed`]).
    pub fn push(&self, msg: Message) {
        let mut inner = self.inner.lock().expect("outbox lock");
        if *self.state.borrow() != State::Open {
            return;
        }
        let size = wire_len(&msg);
        if is_event(&msg) {
            if inner.queued_events.contains(&msg.payload) {
                self.coalesced.fetch_add(1, Ordering::Relaxed);
                return;
            }
            // Dropping our old events is pointless if even all of them
            // would not make room (the rest of the budget is held by the
            // domain's other connections).
            let event_bytes = inner.bytes - inner.reply_bytes;
            if inner.events >= self.max_events
                || self.budget.free().saturating_add(event_bytes) < size
            {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            while !self.budget.try_take(size) {
                if !self.drop_oldest_event(&mut inner) {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
            inner.queued_events.insert(msg.payload.clone());
            inner.events += 1;
        } else {
            while !self.budget.try_take(size) {
                if self.drop_oldest_event(&mut inner) {
                    continue;
                }
                // Only replies of ours are left. They are bounded by the
                // outstanding-request quota, so going over the budget by
                // them is bounded too, unless that quota is larger than the
                // budget: then the client is not reading at all.
                let replies = inner.reply_bytes + size;
                if replies > self.budget.limit() {
                    let reason = format!(
                        "{replies} bytes of unread replies exceed its domain's output budget of {} bytes",
                        self.budget.limit()
                    );
                    self.kill(&mut inner, reason);
                    drop(inner);
                    self.wake.notify_one();
                    return;
                }
                self.budget.take(size);
                break;
            }
            inner.reply_bytes += size;
        }
        inner.bytes += size;
        inner.queue.push_back(msg);
        drop(inner);
        self.wake.notify_one();
    }

    /// Drops the oldest queued event, giving its bytes back. False if no
    /// event is queued.
    fn drop_oldest_event(&self, inner: &mut Inner) -> bool {
        let Some(at) = inner.queue.iter().position(is_event) else {
            return false;
        };
        let old = inner.queue.remove(at).expect("position is in the queue");
        inner.queued_events.remove(&old.payload);
        inner.events -= 1;
        let size = wire_len(&old);
        inner.bytes -= size;
        self.budget.give_back(size);
        self.dropped.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Discards everything queued and closes the outbox for good.
    fn kill(&self, inner: &mut Inner, reason: String) {
        self.dropped
            .fetch_add(inner.events as u64, Ordering::Relaxed);
        inner.queue.clear();
        inner.queued_events.clear();
        inner.events = 0;
        self.budget.give_back(std::mem::take(&mut inner.bytes));
        inner.reply_bytes = 0;
        inner.killed = Some(reason);
        self.state.send_replace(State::Killed);
    }

    /// Takes everything queued, in order, giving its bytes back to the
    /// domain's budget. `None` once closed and drained.
    pub fn drain(&self) -> Option<Vec<Message>> {
        let mut inner = self.inner.lock().expect("outbox lock");
        if inner.queue.is_empty() && *self.state.borrow() != State::Open {
            return None;
        }
        inner.queued_events.clear();
        inner.events = 0;
        inner.reply_bytes = 0;
        self.budget.give_back(std::mem::take(&mut inner.bytes));
        Some(inner.queue.drain(..).collect())
    }

    /// Closes the outbox: nothing more is queued; the writer stops once it
    /// has sent what is already there.
    pub fn close(&self) {
        {
            let _inner = self.inner.lock().expect("outbox lock");
            self.state.send_if_modified(|s| {
                let open = *s == State::Open;
                if open {
                    *s = State::Closed;
                }
                open
            });
        }
        self.wake.notify_one();
    }

    /// Why the outbox killed its connection, if it did.
    pub fn killed(&self) -> Option<String> {
        self.inner.lock().expect("outbox lock").killed.clone()
    }

    /// Bytes queued here now.
    #[cfg(test)]
    pub fn pending(&self) -> usize {
        self.inner.lock().expect("outbox lock").bytes
    }

    /// Resolves once the outbox is closed or killed (at once if it is).
    pub async fn closed(&self) {
        let mut rx = self.state.subscribe();
        // The sender lives in `self`: waiting cannot fail.
        let _ = rx.wait_for(|s| *s != State::Open).await;
    }

    /// Resolves once the outbox is killed (at once if it is): the writer
    /// then abandons even a write in progress, since a client that does not
    /// read would hold it forever.
    pub async fn was_killed(&self) {
        let mut rx = self.state.subscribe();
        let _ = rx.wait_for(|s| *s == State::Killed).await;
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        let inner = self.inner.get_mut().unwrap_or_else(|e| e.into_inner());
        let bytes = inner.bytes;
        self.budget.give_back(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(path: &str) -> Message {
        Message::watch_event(path, b"t")
    }

    fn reply(id: u32, len: usize) -> Message {
        Message::new(MsgType::Read, id, 0, vec![b'v'; len])
    }

    fn unlimited(max_events: usize) -> Outbox {
        Outbox::new(max_events, Arc::new(DomainBudget::new(0)))
    }

    #[test]
    fn identical_events_coalesce_and_replies_never_do() {
        let o = unlimited(10);
        let reply = Message::new(MsgType::Read, 1, 0, b"v".to_vec());
        o.push(event("/a"));
        o.push(reply.clone());
        o.push(event("/a"));
        o.push(reply.clone());
        o.push(event("/b"));
        let got = o.drain().unwrap();
        assert_eq!(got, vec![event("/a"), reply.clone(), reply, event("/b")]);
        assert_eq!(o.coalesced.load(Ordering::Relaxed), 1);
        // Once sent, the same event queues again.
        o.push(event("/a"));
        assert_eq!(o.drain().unwrap(), vec![event("/a")]);
    }

    #[test]
    fn events_past_the_bound_are_dropped() {
        let o = unlimited(3);
        for i in 0..10 {
            o.push(event(&format!("/e{i}")));
        }
        o.push(Message::new(MsgType::Read, 1, 0, Vec::new()));
        assert_eq!(o.drain().unwrap().len(), 4);
        assert_eq!(o.dropped.load(Ordering::Relaxed), 7);
    }

    #[test]
    fn closing_drains_then_ends() {
        let o = unlimited(3);
        o.push(event("/x"));
        o.close();
        o.push(event("/y"));
        assert_eq!(o.drain().unwrap(), vec![event("/x")]);
        assert_eq!(o.drain(), None);
    }

    #[test]
    fn over_the_domain_budget_the_oldest_events_of_the_connection_go_first() {
        let size = wire_len(&event("/e0"));
        let budget = Arc::new(DomainBudget::new(3 * size));
        let o = Outbox::new(100, budget.clone());
        let r = reply(1, 0);
        o.push(event("/e0"));
        o.push(r.clone());
        o.push(event("/e1"));
        // Full (two events and a reply); each new event pushes out the
        // oldest one, never the reply.
        assert!(budget.used() <= 3 * size);
        for i in 2..6 {
            o.push(event(&format!("/e{i}")));
            assert!(budget.used() <= budget.limit());
        }
        assert_eq!(o.dropped.load(Ordering::Relaxed), 4);
        // Coalescing still applies to what is queued.
        o.push(event("/e5"));
        assert_eq!(o.coalesced.load(Ordering::Relaxed), 1);
        assert_eq!(o.drain().unwrap(), vec![r, event("/e4"), event("/e5")]);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn connections_of_a_domain_share_its_budget() {
        let size = wire_len(&event("/a0"));
        let budget = Arc::new(DomainBudget::new(4 * size));
        let a = Outbox::new(100, budget.clone());
        let b = Outbox::new(100, budget.clone());
        for i in 0..3 {
            a.push(event(&format!("/a{i}")));
        }
        b.push(event("/b0"));
        assert_eq!(budget.used(), 4 * size);
        // b has one event to give up; a's events are not b's to drop.
        b.push(event("/b1"));
        assert_eq!(b.drain().unwrap(), vec![event("/b1")]);
        a.push(event("/a3"));
        assert_eq!(budget.used(), 4 * size);
        // With nothing of its own queued and the budget full, b's new
        // event is dropped rather than anything of a's.
        b.push(event("/b2"));
        assert_eq!(b.pending(), 0);
        assert_eq!(b.dropped.load(Ordering::Relaxed), 2);
        assert_eq!(
            a.drain().unwrap(),
            vec![event("/a0"), event("/a1"), event("/a2"), event("/a3")]
        );
        assert_eq!(a.dropped.load(Ordering::Relaxed), 0);
        // Once a's writer took its output, b has the room.
        b.push(event("/b3"));
        b.push(event("/b4"));
        assert_eq!(b.drain().unwrap(), vec![event("/b3"), event("/b4")]);
        // An event too large for what the others leave drops nothing old.
        let big = Message::watch_event(&format!("/{}", "x".repeat(200)), b"t");
        let small = Arc::new(DomainBudget::new(100));
        let c = Outbox::new(100, small.clone());
        c.push(event("/c0"));
        c.push(big);
        assert_eq!(c.drain().unwrap(), vec![event("/c0")]);
        assert_eq!(c.dropped.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn bytes_go_back_on_drain_kill_and_drop() {
        let budget = Arc::new(DomainBudget::new(1000));
        let o = Outbox::new(100, budget.clone());
        o.push(event("/a"));
        o.push(reply(1, 10));
        let queued = wire_len(&event("/a")) + wire_len(&reply(1, 10));
        assert_eq!((budget.used(), o.pending()), (queued, queued));
        o.drain().unwrap();
        assert_eq!((budget.used(), o.pending()), (0, 0));
        o.push(event("/b"));
        let other = Outbox::new(100, budget.clone());
        other.push(event("/c"));
        drop(o);
        assert_eq!(budget.used(), wire_len(&event("/c")));
        // Closing keeps the queue for the writer; its bytes go when taken.
        other.close();
        assert_eq!(budget.used(), wire_len(&event("/c")));
        other.drain().unwrap();
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn replies_are_never_dropped_but_too_many_unread_kill_the_connection() {
        let budget = Arc::new(DomainBudget::new(200));
        let o = Outbox::new(100, budget.clone());
        o.push(event("/a"));
        o.push(event("/b"));
        // A reply pushes out events to fit.
        let big = reply(1, 200 - HEADER_LEN - wire_len(&event("/a")));
        o.push(big.clone());
        assert_eq!(o.dropped.load(Ordering::Relaxed), 1);
        assert_eq!(o.killed(), None);
        // Another domain connection holds the rest: a reply still queues,
        // over the budget, as long as this connection's replies fit in it.
        let other = Outbox::new(100, budget.clone());
        let small = reply(2, 0);
        o.push(small.clone());
        other.push(reply(9, 0));
        assert!(budget.used() > budget.limit());
        assert_eq!(o.drain().unwrap(), vec![big, small]);
        assert_eq!(o.dropped.load(Ordering::Relaxed), 2);
        // Unread replies beyond the budget on their own: killed, and all
        // its output goes.
        for id in 0..12 {
            o.push(reply(id, 0));
        }
        assert_eq!(o.killed(), None);
        o.push(reply(12, 0));
        let why = o.killed().expect("killed");
        assert!(why.contains("unread replies"), "{why}");
        assert_eq!(o.pending(), 0);
        assert_eq!(budget.used(), wire_len(&reply(9, 0)));
        o.push(reply(13, 0));
        assert_eq!(o.drain(), None);
        // Closing afterwards does not turn it back into a plain close.
        o.close();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(o.was_killed());
    }

    #[test]
    fn unlimited_budgets_still_count() {
        let budget = Arc::new(DomainBudget::new(0));
        let o = Outbox::new(100_000, budget.clone());
        for i in 0..10_000 {
            o.push(event(&format!("/e{i}")));
        }
        assert_eq!(o.dropped.load(Ordering::Relaxed), 0);
        assert_eq!(budget.used(), o.pending());
        assert!(budget.used() > 100_000);
    }
}
