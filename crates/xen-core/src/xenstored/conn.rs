//! One client connection: a reader that decodes requests and hands them to
//! the engine, and a writer that sends what the engine queued.
//!
//! Back-pressure: a connection may have a bounded number of requests whose
//! replies are not yet written; past that the reader stops reading, so a
//! client that floods requests without reading replies stalls itself only.
//!
//! Per-domain limits: a guest may open several connections on its socket,
//! each acting as the domain. How many it may hold open, and how many bytes
//! of unread output all of them together may hold in the daemon, are counted
//! per domain ([`Domains`]), so that more connections buy no more memory.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::outbox::{DomainBudget, Outbox};
use super::{EngineMsg, Shared};
use crate::wire::{FrameDecoder, MsgType};

/// What the engine and the connection's tasks share.
pub struct ConnShared {
    /// Outgoing messages.
    pub outbox: Outbox,
    permits: Semaphore,
}

impl ConnShared {
    fn new(max_events: usize, budget: Arc<DomainBudget>) -> ConnShared {
        ConnShared {
            outbox: Outbox::new(max_events, budget),
            permits: Semaphore::new(0),
        }
    }

    /// Closes the connection from the daemon's side.
    pub fn close(&self) {
        self.outbox.close();
    }
}

/// The accounting of every domain with connections: how many are open on
/// its socket, and its output budget.
#[derive(Default)]
pub(super) struct Domains {
    map: Mutex<HashMap<u32, DomainEntry>>,
}

struct DomainEntry {
    /// Connections open on the domain's socket.
    connections: usize,
    /// Held by the outboxes of all its connections, socket or local: the
    /// budget lives as long as one of them, and a domain has one at a time.
    budget: Weak<DomainBudget>,
}

impl Domains {
    /// The output budget of `domid`, shared with its other connections:
    /// unlimited for dom0, `max_output` bytes (0: unlimited) for a guest.
    fn budget(&self, domid: u32, max_output: usize) -> Arc<DomainBudget> {
        let mut map = self.map.lock().expect("domains lock");
        let entry = map.entry(domid).or_insert_with(|| DomainEntry {
            connections: 0,
            budget: Weak::new(),
        });
        if let Some(b) = entry.budget.upgrade() {
            return b;
        }
        let limit = if domid == 0 { 0 } else { max_output };
        let b = Arc::new(DomainBudget::new(limit));
        entry.budget = Arc::downgrade(&b);
        b
    }

    /// Bytes queued for `domid`'s connections and not yet taken by their
    /// writers.
    pub(super) fn pending_output(&self, domid: u32) -> usize {
        let map = self.map.lock().expect("domains lock");
        map.get(&domid)
            .and_then(|e| e.budget.upgrade())
            .map_or(0, |b| b.used())
    }

    /// Forgets domains with nothing open: domain ids are reused, and a
    /// long-running daemon sees many come and go.
    fn prune(map: &mut HashMap<u32, DomainEntry>) {
        map.retain(|_, e| e.connections > 0 || e.budget.strong_count() > 0);
    }
}

/// A connection's place among those open on its domain's socket, given back
/// when the connection ends (dropped by [`serve_admitted`]).
pub(super) struct DomainSlot {
    shared: Arc<Shared>,
    domid: u32,
}

impl Drop for DomainSlot {
    fn drop(&mut self) {
        let mut map = self.shared.domains.map.lock().expect("domains lock");
        if let Some(e) = map.get_mut(&self.domid) {
            e.connections -= 1;
        }
        Domains::prune(&mut map);
    }
}

/// Admits a connection accepted on `domid`'s socket, or refuses it (counted
/// and logged) when the domain already has `max_domain_connections` open.
/// dom0's socket has no limit.
pub(super) fn admit(shared: &Arc<Shared>, domid: u32) -> Option<DomainSlot> {
    let limit = shared.config.max_domain_connections;
    let mut map = shared.domains.map.lock().expect("domains lock");
    Domains::prune(&mut map);
    let entry = map.entry(domid).or_insert_with(|| DomainEntry {
        connections: 0,
        budget: Weak::new(),
    });
    if domid != 0 && limit != 0 && entry.connections >= limit {
        let open = entry.connections;
        drop(map);
        shared.stats.refused.fetch_add(1, Ordering::Relaxed);
        (shared.config.log)(&format!(
            "domain {domid}: connection refused, {open} connections open (limit {limit})"
        ));
        return None;
    }
    entry.connections += 1;
    Some(DomainSlot {
        shared: shared.clone(),
        domid,
    })
}

/// Serves a connection admitted on a domain's socket, then gives its place
/// back.
pub(super) async fn serve_admitted<S>(
    stream: S,
    slot: DomainSlot,
    tx: mpsc::UnboundedSender<EngineMsg>,
    shared: Arc<Shared>,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    serve(stream, slot.domid, tx, shared).await;
    drop(slot);
}

/// Serves a connection acting as `domid` until either side closes it.
pub(super) async fn serve<S>(
    stream: S,
    domid: u32,
    tx: mpsc::UnboundedSender<EngineMsg>,
    shared: Arc<Shared>,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let budget = shared
        .domains
        .budget(domid, shared.config.max_domain_output);
    let conn = Arc::new(ConnShared::new(shared.config.max_queued_events, budget));
    let (reply, registered) = oneshot::channel();
    if tx
        .send(EngineMsg::Connect {
            domid,
            conn: conn.clone(),
            reply,
        })
        .is_err()
    {
        return;
    }
    let Ok((id, outstanding)) = registered.await else {
        return;
    };
    conn.permits.add_permits(outstanding);
    let (reader, writer) = tokio::io::split(stream);
    let writing = tokio::spawn(write_loop(writer, conn.clone()));
    let reason = read_loop(reader, id, &conn, &tx).await;
    if let Some(reason) = reason {
        shared.stats.killed.fetch_add(1, Ordering::Relaxed);
        (shared.config.log)(&format!("closing connection of domain {domid}: {reason}"));
    } else if let Some(reason) = conn.outbox.killed() {
        (shared.config.log)(&format!("closing connection of domain {domid}: {reason}"));
    }
    let _ = tx.send(EngineMsg::Disconnect { conn: id });
    conn.close();
    let _ = writing.await;
}

/// Reads requests until EOF or close. Returns why the daemon closed the
/// connection, if it did for a protocol violation.
async fn read_loop<R: AsyncRead + Unpin>(
    mut reader: R,
    id: u64,
    conn: &ConnShared,
    tx: &mpsc::UnboundedSender<EngineMsg>,
) -> Option<String> {
    let mut decoder = FrameDecoder::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = tokio::select! {
            r = reader.read(&mut buf) => match r {
                Ok(0) | Err(_) => return None,
                Ok(n) => n,
            },
            _ = conn.outbox.closed() => return None,
        };
        decoder.push(&buf[..n]);
        loop {
            let msg = match decoder.next_message() {
                Ok(Some(msg)) => msg,
                Ok(None) => break,
                // Nothing after a bad length can be framed: drop the client.
                Err(e) => return Some(e.to_string()),
            };
            let permit = tokio::select! {
                p = conn.permits.acquire() => match p {
                    Ok(p) => p,
                    Err(_) => return None,
                },
                _ = conn.outbox.closed() => return None,
            };
            // Given back by the writer once the reply is sent.
            permit.forget();
            if tx.send(EngineMsg::Request { conn: id, msg }).is_err() {
                return None;
            }
        }
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(mut writer: W, conn: Arc<ConnShared>) {
    let mut buf = Vec::with_capacity(16 * 1024);
    while let Some(msgs) = conn.outbox.drain() {
        if msgs.is_empty() {
            conn.outbox.wake.notified().await;
            continue;
        }
        buf.clear();
        let mut replies = 0;
        for m in &msgs {
            m.encode_into(&mut buf);
            if m.ty != MsgType::WatchEvent as u32 {
                replies += 1;
            }
        }
        let written = tokio::select! {
            r = writer.write_all(&buf) => r.is_ok(),
            // A killed connection's client is not reading: waiting for it
            // would keep the connection, and its place, forever.
            _ = conn.outbox.was_killed() => false,
        };
        if !written {
            conn.close();
            break;
        }
        conn.permits.add_permits(replies);
    }
    let _ = writer.shutdown().await;
}
