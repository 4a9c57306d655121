//! A connection's outgoing queue. Replies are always kept; watch events are
//! coalesced with an identical event still waiting, and dropped past a bound
//! so that a client that stops reading cannot make the daemon grow without
//! limit (C xenstored likewise discards unread events).

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use tokio::sync::Notify;

use crate::wire::{Message, MsgType};

/// What waits to be written to one connection.
pub struct Outbox {
    inner: Mutex<Inner>,
    /// Wakes the writer when something is queued or the connection closes.
    pub wake: Notify,
    max_events: usize,
    /// Events dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Events merged into an identical queued one.
    pub coalesced: AtomicU64,
}

#[derive(Default)]
struct Inner {
    queue: VecDeque<Message>,
    queued_events: HashSet<Vec<u8>>,
    events: usize,
    closed: bool,
}

impl Outbox {
    /// An empty outbox holding at most `max_events` unsent events.
    pub fn new(max_events: usize) -> Outbox {
        Outbox {
            inner: Mutex::new(Inner::default()),
            wake: Notify::new(),
            max_events,
            dropped: AtomicU64::new(0),
            coalesced: AtomicU64::new(0),
        }
    }

    /// Queues a reply or an event.
    pub fn push(&self, msg: Message) {
        let mut inner = self.inner.lock().expect("outbox lock");
        if inner.closed {
            return;
        }
        if msg.ty == MsgType::WatchEvent as u32 {
            if inner.queued_events.contains(&msg.payload) {
                self.coalesced.fetch_add(1, Ordering::Relaxed);
                return;
            }
            if inner.events >= self.max_events {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            inner.queued_events.insert(msg.payload.clone());
            inner.events += 1;
        }
        inner.queue.push_back(msg);
        drop(inner);
        self.wake.notify_one();
    }

    /// Takes everything queued, in order. `None` once closed and drained.
    pub fn drain(&self) -> Option<Vec<Message>> {
        let mut inner = self.inner.lock().expect("outbox lock");
        if inner.queue.is_empty() && inner.closed {
            return None;
        }
        inner.queued_events.clear();
        inner.events = 0;
        Some(inner.queue.drain(..).collect())
    }

    /// Closes the outbox: nothing more is queued; the writer stops once it
    /// has sent what is already there.
    pub fn close(&self) {
        self.inner.lock().expect("outbox lock").closed = true;
        self.wake.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(path: &str) -> Message {
        Message::watch_event(path, b"t")
    }

    #[test]
    fn identical_events_coalesce_and_replies_never_do() {
        let o = Outbox::new(10);
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
        let o = Outbox::new(3);
        for i in 0..10 {
            o.push(event(&format!("/e{i}")));
        }
        o.push(Message::new(MsgType::Read, 1, 0, Vec::new()));
        assert_eq!(o.drain().unwrap().len(), 4);
        assert_eq!(o.dropped.load(Ordering::Relaxed), 7);
    }

    #[test]
    fn closing_drains_then_ends() {
        let o = Outbox::new(3);
        o.push(event("/x"));
        o.close();
        o.push(event("/y"));
        assert_eq!(o.drain().unwrap(), vec![event("/x")]);
        assert_eq!(o.drain(), None);
    }
}
