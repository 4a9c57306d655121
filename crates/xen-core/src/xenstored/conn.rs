//! One client connection: a reader that decodes requests and hands them to
//! the engine, and a writer that sends what the engine queued.
//!
//! Back-pressure: a connection may have a bounded number of requests whose
//! replies are not yet written; past that the reader stops reading, so a
//! client that floods requests without reading replies stalls itself only.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};

use super::outbox::Outbox;
use super::{EngineMsg, Shared};
use crate::wire::{FrameDecoder, MsgType};

/// What the engine and the connection's tasks share.
pub struct ConnShared {
    /// Outgoing messages.
    pub outbox: Outbox,
    closed: watch::Sender<bool>,
    permits: Semaphore,
}

impl ConnShared {
    fn new(max_events: usize) -> ConnShared {
        ConnShared {
            outbox: Outbox::new(max_events),
            closed: watch::channel(false).0,
            permits: Semaphore::new(0),
        }
    }

    /// Closes the connection from the daemon's side.
    pub fn close(&self) {
        self.outbox.close();
        let _ = self.closed.send(true);
    }
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
    let conn = Arc::new(ConnShared::new(shared.config.max_queued_events));
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
    let mut closed = conn.closed.subscribe();
    let mut decoder = FrameDecoder::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = tokio::select! {
            r = reader.read(&mut buf) => match r {
                Ok(0) | Err(_) => return None,
                Ok(n) => n,
            },
            _ = closed.changed() => return None,
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
                _ = closed.changed() => return None,
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
        if writer.write_all(&buf).await.is_err() {
            conn.close();
            break;
        }
        conn.permits.add_permits(replies);
    }
    let _ = writer.shutdown().await;
}
