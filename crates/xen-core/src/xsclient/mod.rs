//! An async XenStore client: one connection, many concurrent requests matched
//! by request id, watch events delivered on their own channel, transactions.
//!
//! It speaks to C xenstored, to `/dev/xen/xenbus`, or to the embedded daemon,
//! and by default reconnects after the daemon restarts: requests in flight
//! fail with [`XsError::ConnectionLost`], watches are registered again (each
//! fires once, so watchers re-read), and transactions opened on the old
//! connection answer EAGAIN so that retry loops start them over.

mod conn;
pub mod endpoint;
mod error;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

pub use self::endpoint::Endpoint;
pub use self::error::XsError;
use crate::wire::perms::{self, Perm};
use crate::wire::{payload, Errno, Message, MsgType, PAYLOAD_MAX};

/// A watch event: the changed path (as the watch named it) and the token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchEvent {
    /// Path of the change.
    pub path: String,
    /// Token of the watch.
    pub token: String,
}

/// An open transaction: its id on the connection that started it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tx {
    /// Transaction id.
    pub id: u32,
    /// Connection generation it belongs to.
    pub generation: u32,
}

/// Client options.
#[derive(Clone, Debug)]
pub struct Options {
    /// Reconnect when the connection drops.
    pub reconnect: bool,
    /// First wait before reconnecting; doubles up to `max_backoff`.
    pub backoff: Duration,
    /// Longest wait between reconnection attempts.
    pub max_backoff: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            reconnect: true,
            backoff: Duration::from_millis(20),
            max_backoff: Duration::from_secs(1),
        }
    }
}

struct Pending {
    reply: oneshot::Sender<Result<(Message, u32), XsError>>,
    /// Generation of the connection the request went out on.
    sent: Option<u32>,
}

struct Outgoing {
    msg: Message,
    /// Generation a transactional request belongs to.
    tx_generation: Option<u32>,
}

/// Connection state, as seen by callers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Connecting (first time or again).
    Connecting,
    /// Connected; the number counts connections made.
    Connected(u32),
    /// Closed for good.
    Closed,
}

struct Inner {
    out: mpsc::UnboundedSender<Outgoing>,
    pending: Mutex<HashMap<u32, Pending>>,
    next_req: AtomicU32,
    watches: Mutex<HashSet<(String, String)>>,
    events: mpsc::UnboundedSender<WatchEvent>,
    state: watch::Sender<State>,
}

impl Inner {
    fn fail_pending(&self, which: impl Fn(&Pending) -> bool, err: XsError) {
        let mut pending = self.pending.lock().expect("pending lock");
        let ids: Vec<u32> = pending
            .iter()
            .filter(|(_, p)| which(p))
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            if let Some(p) = pending.remove(&id) {
                let _ = p.reply.send(Err(err.clone()));
            }
        }
    }
}

/// A XenStore client. Cheap to clone; the connection closes when the last
/// clone is dropped or [`XsClient::close`] is called.
#[derive(Clone)]
pub struct XsClient {
    inner: Arc<Inner>,
    events: Arc<Mutex<Option<mpsc::UnboundedReceiver<WatchEvent>>>>,
    _owner: Arc<Owner>,
}

struct Owner {
    stop: watch::Sender<bool>,
}

impl Drop for Owner {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

impl XsClient {
    /// Connects to `endpoint`. Fails if the first connection cannot be made.
    pub async fn connect(endpoint: Endpoint, options: Options) -> Result<XsClient, XsError> {
        let first = endpoint
            .open()
            .await
            .map_err(|e| XsError::Connect(Arc::new(e)))?;
        let (out, out_rx) = mpsc::unbounded_channel();
        let (events, events_rx) = mpsc::unbounded_channel();
        let (state, _) = watch::channel(State::Connecting);
        let (stop, stop_rx) = watch::channel(false);
        let inner = Arc::new(Inner {
            out,
            pending: Mutex::new(HashMap::new()),
            next_req: AtomicU32::new(1),
            watches: Mutex::new(HashSet::new()),
            events,
            state,
        });
        tokio::spawn(conn::run(
            inner.clone(),
            endpoint,
            options,
            first,
            out_rx,
            stop_rx,
        ));
        Ok(XsClient {
            inner,
            events: Arc::new(Mutex::new(Some(events_rx))),
            _owner: Arc::new(Owner { stop }),
        })
    }

    /// Connects to the XenStore found by [`Endpoint::discover`].
    pub async fn discover(options: Options) -> Result<XsClient, XsError> {
        let endpoint = Endpoint::discover().map_err(|e| XsError::Connect(Arc::new(e)))?;
        XsClient::connect(endpoint, options).await
    }

    /// The watch-event stream. There is one; the first caller gets it.
    pub fn take_events(&self) -> Option<mpsc::UnboundedReceiver<WatchEvent>> {
        self.events.lock().expect("events lock").take()
    }

    /// The connection state, as a watchable value.
    pub fn state(&self) -> watch::Receiver<State> {
        self.inner.state.subscribe()
    }

    /// Closes the connection; requests in flight fail with [`XsError::Closed`].
    pub fn close(&self) {
        let _ = self._owner.stop.send(true);
    }

    /// Sends a request and waits for its reply's payload. `tx` names the
    /// transaction, if any.
    pub async fn request(
        &self,
        ty: MsgType,
        tx: Option<Tx>,
        payload: Vec<u8>,
    ) -> Result<Vec<u8>, XsError> {
        self.request_gen(ty, tx, payload).await.map(|(p, _)| p)
    }

    async fn request_gen(
        &self,
        ty: MsgType,
        tx: Option<Tx>,
        payload: Vec<u8>,
    ) -> Result<(Vec<u8>, u32), XsError> {
        if payload.len() > PAYLOAD_MAX {
            // The daemon would drop the connection: refuse here instead.
            return Err(XsError::Errno(Errno::E2BIG));
        }
        if *self.inner.state.borrow() == State::Closed {
            return Err(XsError::Closed);
        }
        let req_id = loop {
            let id = self.inner.next_req.fetch_add(1, Ordering::Relaxed);
            if id != 0 {
                break id;
            }
        };
        let (reply, rx) = oneshot::channel();
        self.inner
            .pending
            .lock()
            .expect("pending lock")
            .insert(req_id, Pending { reply, sent: None });
        let msg = Message::new(ty, req_id, tx.map_or(0, |t| t.id), payload);
        let outgoing = Outgoing {
            msg,
            tx_generation: tx.map(|t| t.generation),
        };
        if self.inner.out.send(outgoing).is_err() {
            self.inner
                .pending
                .lock()
                .expect("pending lock")
                .remove(&req_id);
            return Err(XsError::Closed);
        }
        let (reply, generation) = rx.await.map_err(|_| XsError::Closed)??;
        if let Some(e) = reply.as_error() {
            return Err(match e {
                Ok(errno) => XsError::Errno(errno),
                Err(name) => XsError::Protocol(format!("unknown error {name:?}")),
            });
        }
        if reply.ty != ty as u32 {
            return Err(XsError::Protocol(format!(
                "reply of type {} to a {} request",
                reply.ty,
                ty.name()
            )));
        }
        Ok((reply.payload, generation))
    }

    async fn path_request(
        &self,
        ty: MsgType,
        tx: Option<Tx>,
        path: &str,
    ) -> Result<Vec<u8>, XsError> {
        self.request(ty, tx, payload::join(&[path])).await
    }

    /// READ: the value, as bytes.
    pub async fn read(&self, tx: Option<Tx>, path: &str) -> Result<Vec<u8>, XsError> {
        self.path_request(MsgType::Read, tx, path).await
    }

    /// WRITE.
    pub async fn write(&self, tx: Option<Tx>, path: &str, value: &[u8]) -> Result<(), XsError> {
        let mut p = Vec::with_capacity(path.len() + 1 + value.len());
        p.extend_from_slice(path.as_bytes());
        p.push(0);
        p.extend_from_slice(value);
        self.request(MsgType::Write, tx, p).await.map(drop)
    }

    /// MKDIR.
    pub async fn mkdir(&self, tx: Option<Tx>, path: &str) -> Result<(), XsError> {
        self.path_request(MsgType::Mkdir, tx, path).await.map(drop)
    }

    /// RM.
    pub async fn rm(&self, tx: Option<Tx>, path: &str) -> Result<(), XsError> {
        self.path_request(MsgType::Rm, tx, path).await.map(drop)
    }

    /// The children of a node. Long lists are fetched with DIRECTORY_PART,
    /// starting over if the node changes between parts.
    pub async fn directory(&self, tx: Option<Tx>, path: &str) -> Result<Vec<String>, XsError> {
        match self.path_request(MsgType::Directory, tx, path).await {
            Ok(p) => strings(&p),
            Err(XsError::Errno(Errno::E2BIG)) => self.directory_parts(tx, path).await,
            Err(e) => Err(e),
        }
    }

    async fn directory_parts(&self, tx: Option<Tx>, path: &str) -> Result<Vec<String>, XsError> {
        'restart: loop {
            let mut names = Vec::new();
            let mut offset = 0usize;
            let mut generation: Option<Vec<u8>> = None;
            loop {
                let p = self
                    .request(
                        MsgType::DirectoryPart,
                        tx,
                        payload::join(&[path, &offset.to_string()]),
                    )
                    .await?;
                let nul = p
                    .iter()
                    .position(|b| *b == 0)
                    .ok_or_else(|| XsError::Protocol("DIRECTORY_PART without generation".into()))?;
                let (gen, chunk) = (&p[..nul], &p[nul + 1..]);
                match &generation {
                    Some(g) if g != gen => continue 'restart,
                    _ => generation = Some(gen.to_vec()),
                }
                let last = chunk.is_empty() || chunk == b"\0" || chunk.ends_with(b"\0\0");
                let body = if last && !chunk.is_empty() {
                    &chunk[..chunk.len() - 1]
                } else {
                    chunk
                };
                if body.is_empty() && !last {
                    return Err(XsError::Protocol("empty DIRECTORY_PART".into()));
                }
                offset += body.len();
                names.extend(strings(body)?);
                if last {
                    return Ok(names);
                }
            }
        }
    }

    /// GET_PERMS.
    pub async fn get_perms(&self, tx: Option<Tx>, path: &str) -> Result<Vec<Perm>, XsError> {
        let p = self.path_request(MsgType::GetPerms, tx, path).await?;
        let list =
            payload::strings(&p).map_err(|_| XsError::Protocol("bad GET_PERMS reply".into()))?;
        perms::parse_list(&list).map_err(|_| XsError::Protocol("bad permission in reply".into()))
    }

    /// SET_PERMS.
    pub async fn set_perms(
        &self,
        tx: Option<Tx>,
        path: &str,
        list: &[Perm],
    ) -> Result<(), XsError> {
        let mut parts = vec![path.to_owned()];
        parts.extend(list.iter().map(Perm::to_string));
        self.request(MsgType::SetPerms, tx, payload::join(&parts))
            .await
            .map(drop)
    }

    /// WATCH. The watch survives reconnections.
    pub async fn watch(&self, path: &str, token: &str) -> Result<(), XsError> {
        let key = (path.to_owned(), token.to_owned());
        let fresh = self
            .inner
            .watches
            .lock()
            .expect("watches lock")
            .insert(key.clone());
        let r = self
            .request(MsgType::Watch, None, payload::join(&[path, token]))
            .await;
        if r.is_err() && fresh {
            self.inner
                .watches
                .lock()
                .expect("watches lock")
                .remove(&key);
        }
        r.map(drop)
    }

    /// UNWATCH.
    pub async fn unwatch(&self, path: &str, token: &str) -> Result<(), XsError> {
        self.inner
            .watches
            .lock()
            .expect("watches lock")
            .remove(&(path.to_owned(), token.to_owned()));
        self.request(MsgType::Unwatch, None, payload::join(&[path, token]))
            .await
            .map(drop)
    }

    /// TRANSACTION_START.
    pub async fn transaction_start(&self) -> Result<Tx, XsError> {
        let (p, generation) = self
            .request_gen(MsgType::TransactionStart, None, b"\0".to_vec())
            .await?;
        let id = strings(&p)?
            .first()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| XsError::Protocol("bad transaction id".into()))?;
        Ok(Tx { id, generation })
    }

    /// TRANSACTION_END: commit (EAGAIN on conflict) or abort.
    pub async fn transaction_end(&self, tx: Tx, commit: bool) -> Result<(), XsError> {
        let arg = if commit { "T" } else { "F" };
        self.request(MsgType::TransactionEnd, Some(tx), payload::join(&[arg]))
            .await
            .map(drop)
    }

    /// GET_DOMAIN_PATH.
    pub async fn get_domain_path(&self, domid: u32) -> Result<String, XsError> {
        let p = self
            .request(
                MsgType::GetDomainPath,
                None,
                payload::join(&[domid.to_string()]),
            )
            .await?;
        first_string(&p)
    }

    /// INTRODUCE.
    pub async fn introduce(&self, domid: u32, gfn: u64, evtchn: u32) -> Result<(), XsError> {
        let parts = [domid.to_string(), gfn.to_string(), evtchn.to_string()];
        self.request(MsgType::Introduce, None, payload::join(&parts))
            .await
            .map(drop)
    }

    /// RELEASE.
    pub async fn release(&self, domid: u32) -> Result<(), XsError> {
        self.request(MsgType::Release, None, payload::join(&[domid.to_string()]))
            .await
            .map(drop)
    }

    /// IS_DOMAIN_INTRODUCED.
    pub async fn is_domain_introduced(&self, domid: u32) -> Result<bool, XsError> {
        let p = self
            .request(
                MsgType::IsDomainIntroduced,
                None,
                payload::join(&[domid.to_string()]),
            )
            .await?;
        Ok(first_string(&p)? == "T")
    }

    /// SET_TARGET.
    pub async fn set_target(&self, domid: u32, target: u32) -> Result<(), XsError> {
        let parts = [domid.to_string(), target.to_string()];
        self.request(MsgType::SetTarget, None, payload::join(&parts))
            .await
            .map(drop)
    }

    /// RESET_WATCHES: drops this connection's watches and transactions.
    pub async fn reset_watches(&self) -> Result<(), XsError> {
        self.inner.watches.lock().expect("watches lock").clear();
        self.request(MsgType::ResetWatches, None, b"\0".to_vec())
            .await
            .map(drop)
    }

    /// CONTROL with arguments; returns the reply text.
    pub async fn control(&self, args: &[&str]) -> Result<String, XsError> {
        let p = self
            .request(MsgType::Control, None, payload::join(args))
            .await?;
        first_string(&p)
    }
}

fn strings(p: &[u8]) -> Result<Vec<String>, XsError> {
    payload::strings(p)
        .map(|v| v.into_iter().map(String::from).collect())
        .map_err(|_| XsError::Protocol("malformed string list".into()))
}

fn first_string(p: &[u8]) -> Result<String, XsError> {
    strings(p)?
        .into_iter()
        .next()
        .ok_or_else(|| XsError::Protocol("empty reply".into()))
}

#[cfg(test)]
mod tests;
