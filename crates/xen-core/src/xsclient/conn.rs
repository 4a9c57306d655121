//! The client's connection task: writes requests, reads replies and events,
//! and reconnects when the daemon goes away.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

use super::endpoint::{Endpoint, Halves};
use super::{Inner, Options, Outgoing, State, WatchEvent, XsError};
use crate::wire::{payload, Errno, FrameDecoder, Message, MsgType};

enum Ended {
    /// The client was closed.
    Stop,
    /// The connection broke.
    Lost,
}

pub(super) async fn run(
    inner: Arc<Inner>,
    endpoint: Endpoint,
    options: Options,
    first: Halves,
    mut out_rx: mpsc::UnboundedReceiver<Outgoing>,
    mut stop: watch::Receiver<bool>,
) {
    let mut generation = 0u32;
    let mut halves = Some(first);
    let mut backoff = options.backoff;
    loop {
        let (mut reader, mut writer) = match halves.take() {
            Some(h) => h,
            None => {
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => break,
                }
                match endpoint.open().await {
                    Ok(h) => h,
                    Err(_) => {
                        backoff = (backoff * 2).min(options.max_backoff);
                        continue;
                    }
                }
            }
        };
        generation = generation.wrapping_add(1).max(1);
        backoff = options.backoff;
        inner.state.send_replace(State::Connected(generation));
        let registered = if generation > 1 {
            reregister_watches(&inner, &mut writer).await
        } else {
            Ok(())
        };
        let ended = match registered {
            Ok(()) => {
                serve(
                    &inner,
                    generation,
                    &mut reader,
                    &mut writer,
                    &mut out_rx,
                    &mut stop,
                )
                .await
            }
            Err(_) => Ended::Lost,
        };
        inner.fail_pending(|p| p.sent == Some(generation), XsError::ConnectionLost);
        match ended {
            Ended::Stop => break,
            Ended::Lost if !options.reconnect => break,
            Ended::Lost => {
                inner.state.send_replace(State::Connecting);
            }
        }
    }
    inner.state.send_replace(State::Closed);
    out_rx.close();
    while out_rx.try_recv().is_ok() {}
    inner.fail_pending(|_| true, XsError::Closed);
}

/// Registers every watch again on a new connection. Their replies carry
/// request id 0, which no caller uses, and are ignored; the daemon fires
/// each watch once, which tells watchers to re-read.
async fn reregister_watches<W: AsyncWrite + Unpin + ?Sized>(
    inner: &Inner,
    writer: &mut W,
) -> std::io::Result<()> {
    let watches: Vec<(String, String)> = inner
        .watches
        .lock()
        .expect("watches lock")
        .iter()
        .cloned()
        .collect();
    if watches.is_empty() {
        return Ok(());
    }
    let mut buf = Vec::new();
    for (path, token) in watches {
        Message::new(MsgType::Watch, 0, 0, payload::join(&[path, token])).encode_into(&mut buf);
    }
    writer.write_all(&buf).await
}

async fn serve<R, W>(
    inner: &Inner,
    generation: u32,
    reader: &mut R,
    writer: &mut W,
    out_rx: &mut mpsc::UnboundedReceiver<Outgoing>,
    stop: &mut watch::Receiver<bool>,
) -> Ended
where
    R: AsyncRead + Unpin + ?Sized,
    W: AsyncWrite + Unpin + ?Sized,
{
    let mut decoder = FrameDecoder::new();
    let mut buf = vec![0u8; 16 * 1024];
    let mut wbuf = Vec::with_capacity(16 * 1024);
    loop {
        tokio::select! {
            r = reader.read(&mut buf) => {
                let n = match r {
                    Ok(0) | Err(_) => return Ended::Lost,
                    Ok(n) => n,
                };
                decoder.push(&buf[..n]);
                loop {
                    match decoder.next_message() {
                        Ok(Some(m)) => dispatch(inner, m, generation),
                        Ok(None) => break,
                        Err(_) => return Ended::Lost,
                    }
                }
            }
            o = out_rx.recv() => {
                let Some(first) = o else { return Ended::Stop };
                wbuf.clear();
                let mut next = Some(first);
                let mut count = 0;
                while let Some(out) = next.take() {
                    queue(inner, generation, out, &mut wbuf);
                    count += 1;
                    if count < 64 {
                        next = out_rx.try_recv().ok();
                    }
                }
                if !wbuf.is_empty() && writer.write_all(&wbuf).await.is_err() {
                    return Ended::Lost;
                }
            }
            _ = stop.changed() => return Ended::Stop,
        }
    }
}

/// Encodes one request, unless it belongs to a transaction of an earlier
/// connection: that transaction is gone, which callers learn as EAGAIN.
fn queue(inner: &Inner, generation: u32, out: Outgoing, wbuf: &mut Vec<u8>) {
    let mut pending = inner.pending.lock().expect("pending lock");
    if out.tx_generation.is_some_and(|g| g != generation) {
        if let Some(p) = pending.remove(&out.msg.req_id) {
            let _ = p.reply.send(Err(XsError::Errno(Errno::EAGAIN)));
        }
        return;
    }
    if let Some(p) = pending.get_mut(&out.msg.req_id) {
        p.sent = Some(generation);
        out.msg.encode_into(wbuf);
    }
}

fn dispatch(inner: &Inner, msg: Message, generation: u32) {
    if msg.ty == MsgType::WatchEvent as u32 {
        if let Ok(parts) = payload::strings(&msg.payload) {
            if let [path, token, ..] = parts.as_slice() {
                let _ = inner.events.send(WatchEvent {
                    path: (*path).to_owned(),
                    token: (*token).to_owned(),
                });
            }
        }
        return;
    }
    let p = inner
        .pending
        .lock()
        .expect("pending lock")
        .remove(&msg.req_id);
    if let Some(p) = p {
        let _ = p.reply.send(Ok((msg, generation)));
    }
}
