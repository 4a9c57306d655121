//! Block storage implemented in JavaScript. Each queue's requests are
//! handed to JavaScript in batches (one callback per batch); JavaScript
//! answers each one with `complete`, on an object shared by every queue of
//! the storage. The data path keeps the request's page buffers meanwhile:
//! writes travel as a copy, and a read's answer is copied into them.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use napi::bindgen_prelude::Buffer;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::Status;
use napi_derive::napi;
use rustix::event::EventfdFlags;
use tokio::sync::mpsc;

use super::blk::NativeBlkStorage;
use super::{coded_error, io_error, Result};
use crate::blk::storage::{
    check_range, DiscardInfo, Geometry, IoCompletion, IoOp, IoRequest, IoSegment, Storage,
    StorageError, SECTOR_SIZE,
};

/// Requests handed to JavaScript in one callback, at most.
const BATCH: usize = 256;

/// The largest disk a JavaScript number describes exactly, in sectors.
const MAX_SECTORS: f64 = 9_007_199_254_740_992.0 / 512.0;

/// What a storage implemented in JavaScript offers.
#[napi(object)]
pub struct BlkJsGeometry {
    /// Size in 512-byte sectors.
    pub sectors: f64,
    /// Writes and discards are refused.
    pub read_only: Option<bool>,
    /// Writes may sit in a volatile cache until a flush
    /// (`feature-flush-cache`).
    pub flush: Option<bool>,
    /// Discard is offered (granularity: one 512-byte sector).
    pub discard: Option<bool>,
    /// Secure discard is offered too (`discard-secure`).
    pub discard_secure: Option<bool>,
}

/// One request for JavaScript to serve.
#[napi(object)]
pub struct BlkJsRequest {
    /// Its name, for `complete`; unique across the storage's queues.
    pub tag: f64,
    /// `read`, `write`, `flush` or `discard`.
    #[napi(ts_type = "'read' | 'write' | 'flush' | 'discard'")]
    pub op: String,
    /// Byte offset on the disk.
    pub offset: f64,
    /// Bytes to read, write or discard (0 for a flush).
    pub length: f64,
    /// A write's bytes.
    pub data: Option<Buffer>,
    /// A discard that must make the data unrecoverable.
    pub secure: Option<bool>,
}

type RequestCallback =
    ThreadsafeFunction<Vec<BlkJsRequest>, (), Vec<BlkJsRequest>, Status, false, true>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One queue's side: its finished requests and its doorbell.
struct QueueShared {
    done: Mutex<Vec<IoCompletion>>,
    /// An eventfd, readable while `done` may hold completions.
    wake: OwnedFd,
}

impl QueueShared {
    fn push(&self, completion: IoCompletion) {
        lock(&self.done).push(completion);
        // A full counter is still readable: nothing is lost by ignoring it.
        let _ = rustix::io::write(&self.wake, &1u64.to_ne_bytes());
    }
}

/// A request JavaScript has not answered yet.
struct Pending {
    queue: Arc<QueueShared>,
    tag: u64,
    op: IoOp,
    segments: Vec<IoSegment>,
}

/// What every queue of the storage and its JavaScript handle share.
struct Hub {
    geometry: Geometry,
    pending: Mutex<HashMap<u64, Pending>>,
    next: AtomicU64,
    requests: mpsc::UnboundedSender<BlkJsRequest>,
}

impl Hub {
    /// Finishes request `id`; false if it is not waiting (answered already,
    /// or its queue stopped).
    fn complete(&self, id: u64, error: Option<String>, data: Option<&[u8]>) -> bool {
        let Some(mut p) = lock(&self.pending).remove(&id) else {
            return false;
        };
        let result = match (error, p.op) {
            (Some(e), _) => Err(StorageError::Io(io::Error::other(e))),
            (None, IoOp::Read) => fill(&mut p.segments, data),
            (None, _) => Ok(()),
        };
        p.queue.push(IoCompletion {
            tag: p.tag,
            result,
            segments: p.segments,
        });
        true
    }
}

/// Copies a read's answer into its buffers.
fn fill(segments: &mut [IoSegment], data: Option<&[u8]>) -> std::result::Result<(), StorageError> {
    let want: usize = segments.iter().map(|s| usize::from(s.len())).sum();
    let data = data.unwrap_or_default();
    if data.len() != want {
        return Err(StorageError::Io(io::Error::other(format!(
            "the read returned {} bytes, {want} were asked for",
            data.len()
        ))));
    }
    let mut at = 0;
    for s in segments {
        let n = usize::from(s.len());
        s.write_at(0, &data[at..at + n]);
        at += n;
    }
    Ok(())
}

/// One queue's handle on the storage.
struct JsStorage {
    hub: Arc<Hub>,
    queue: Arc<QueueShared>,
    /// The hub's, with this queue's view of the size (see `resize`).
    geometry: Geometry,
}

impl JsStorage {
    fn new(hub: Arc<Hub>) -> io::Result<JsStorage> {
        let wake = rustix::event::eventfd(0, EventfdFlags::NONBLOCK | EventfdFlags::CLOEXEC)?;
        Ok(JsStorage {
            geometry: hub.geometry,
            hub,
            queue: Arc::new(QueueShared {
                done: Mutex::new(Vec::new()),
                wake,
            }),
        })
    }
}

impl Storage for JsStorage {
    fn geometry(&self) -> Geometry {
        self.geometry
    }

    fn resize(&mut self, sectors: u64) {
        self.geometry.sectors = sectors;
    }

    fn submit(&mut self, request: IoRequest) {
        let refused = match (check_range(&self.geometry, &request), request.op) {
            (Err(e), _) => Some(e),
            (Ok(()), IoOp::Discard { .. }) if self.geometry.discard.is_none() => {
                Some(StorageError::Unsupported)
            }
            _ => None,
        };
        if let Some(e) = refused {
            self.queue.push(IoCompletion {
                tag: request.tag,
                result: Err(e),
                segments: request.segments,
            });
            return;
        }
        let id = self.hub.next.fetch_add(1, Ordering::Relaxed);
        let (op, length, data, secure) = match request.op {
            IoOp::Read => ("read", request.data_len(), None, None),
            IoOp::Write => {
                let mut bytes = vec![0; request.data_len() as usize];
                let mut at = 0;
                for s in &request.segments {
                    let n = usize::from(s.len());
                    s.read_at(0, &mut bytes[at..at + n]);
                    at += n;
                }
                ("write", request.data_len(), Some(Buffer::from(bytes)), None)
            }
            IoOp::Flush => ("flush", 0, None, None),
            IoOp::Discard { len, secure } => ("discard", len, None, Some(secure)),
        };
        lock(&self.hub.pending).insert(
            id,
            Pending {
                queue: self.queue.clone(),
                tag: request.tag,
                op: request.op,
                segments: request.segments,
            },
        );
        let sent = self.hub.requests.send(BlkJsRequest {
            tag: id as f64,
            op: op.to_owned(),
            offset: request.offset as f64,
            length: length as f64,
            data,
            secure,
        });
        if sent.is_err() {
            // No one to serve it: fail it rather than leave it hanging.
            self.hub
                .complete(id, Some("the storage is closed".to_owned()), None);
        }
    }

    fn completions(&mut self, out: &mut Vec<IoCompletion>) {
        // The doorbell first, then the list: a completion pushed after the
        // take rings again.
        let mut count = [0u8; 8];
        let _ = rustix::io::read(&self.queue.wake, &mut count);
        out.append(&mut lock(&self.queue.done));
    }

    /// A write's data is copied from its segments into the handler's
    /// Buffer, and a read's answer into them: from and to a guest's page
    /// directly.
    fn accepts_guest_pages(&self) -> bool {
        true
    }

    fn wake_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.queue.wake.as_fd())
    }
}

impl Drop for JsStorage {
    fn drop(&mut self) {
        // The queue stopped: what JavaScript still holds is forgotten, and
        // its answers are ignored.
        lock(&self.hub.pending).retain(|_, p| !Arc::ptr_eq(&p.queue, &self.queue));
    }
}

/// A disk whose storage is implemented in JavaScript: requests go to
/// `onRequests` in batches, and each is answered with `complete`.
#[napi]
pub struct NativeBlkJsStorage {
    hub: Arc<Hub>,
}

#[napi]
impl NativeBlkJsStorage {
    /// Makes the storage; `onRequests` gets each batch of requests.
    #[napi(
        factory,
        ts_args_type = "geometry: BlkJsGeometry, onRequests: (requests: BlkJsRequest[]) => void"
    )]
    pub fn create(
        geometry: BlkJsGeometry,
        on_requests: RequestCallback,
    ) -> Result<NativeBlkJsStorage> {
        let sectors = geometry.sectors;
        if !(sectors >= 1.0 && sectors.fract() == 0.0 && sectors <= MAX_SECTORS) {
            return Err(coded_error("EINVAL", format!("{sectors} sectors")));
        }
        let geometry = Geometry {
            sectors: sectors as u64,
            sector_size: SECTOR_SIZE as u32,
            physical_sector_size: SECTOR_SIZE as u32,
            read_only: geometry.read_only == Some(true),
            volatile_cache: geometry.flush == Some(true),
            discard: (geometry.discard == Some(true)).then_some(DiscardInfo {
                granularity: SECTOR_SIZE as u32,
                alignment: 0,
                secure: geometry.discard_secure == Some(true),
            }),
        };
        let (tx, mut rx) = mpsc::unbounded_channel::<BlkJsRequest>();
        napi::bindgen_prelude::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut batch = vec![first];
                while batch.len() < BATCH {
                    match rx.try_recv() {
                        Ok(more) => batch.push(more),
                        Err(_) => break,
                    }
                }
                on_requests.call(batch, ThreadsafeFunctionCallMode::NonBlocking);
            }
            // Every handle is gone: dropping the callback releases it.
        });
        Ok(NativeBlkJsStorage {
            hub: Arc::new(Hub {
                geometry,
                pending: Mutex::new(HashMap::new()),
                next: AtomicU64::new(0),
                requests: tx,
            }),
        })
    }

    /// The storage, for queues (each queue gets a handle of its own).
    #[napi]
    pub fn storage(&self) -> NativeBlkStorage {
        let hub = self.hub.clone();
        NativeBlkStorage::from_factory(
            self.hub.geometry,
            Box::new(move || {
                JsStorage::new(hub.clone())
                    .map(|s| Box::new(s) as Box<dyn Storage>)
                    .map_err(io_error)
            }),
        )
    }

    /// Answers request `tag`: `error` fails it; a read passes its bytes
    /// (exactly the length asked for). False if the request is not waiting
    /// (answered already, or its queue stopped).
    #[napi]
    pub fn complete(&self, tag: f64, error: Option<String>, data: Option<Buffer>) -> bool {
        if !(tag >= 0.0 && tag.fract() == 0.0) {
            return false;
        }
        self.hub
            .complete(tag as u64, error, data.as_ref().map(|d| &d[..]))
    }

    /// Requests handed out and not answered yet.
    #[napi(getter)]
    pub fn in_flight(&self) -> u32 {
        lock(&self.hub.pending).len() as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blk::storage::Page;

    fn hub(sectors: u64) -> (Arc<Hub>, mpsc::UnboundedReceiver<BlkJsRequest>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let geometry = Geometry {
            sectors,
            sector_size: 512,
            physical_sector_size: 512,
            read_only: false,
            volatile_cache: true,
            discard: None,
        };
        let hub = Hub {
            geometry,
            pending: Mutex::new(HashMap::new()),
            next: AtomicU64::new(0),
            requests: tx,
        };
        (Arc::new(hub), rx)
    }

    fn request(tag: u64, op: IoOp, offset: u64, fill: u8) -> IoRequest {
        let mut page = Page::new_boxed();
        page.0.fill(fill);
        IoRequest {
            tag,
            op,
            offset,
            segments: vec![IoSegment::new(page, 512, 1024)],
        }
    }

    #[test]
    fn requests_go_out_and_answers_come_back_into_the_buffers() {
        let (hub, mut rx) = hub(64);
        let mut s = JsStorage::new(hub.clone()).unwrap();
        s.submit(request(7, IoOp::Write, 512, 0x11));
        s.submit(request(8, IoOp::Read, 0, 0));
        let w = rx.try_recv().unwrap();
        let r = rx.try_recv().unwrap();
        assert_eq!(
            (w.op.as_str(), w.offset, w.length),
            ("write", 512.0, 1024.0)
        );
        assert!(w.data.as_ref().unwrap().iter().all(|&b| b == 0x11));
        assert_eq!((r.op.as_str(), r.length), ("read", 1024.0));
        let mut out = Vec::new();
        s.completions(&mut out);
        assert!(out.is_empty());
        // Answered twice, the second answer is ignored; an error fails a request.
        assert!(hub.complete(r.tag as u64, None, Some(&[0x22; 1024])));
        assert!(!hub.complete(r.tag as u64, None, Some(&[0x22; 1024])));
        assert!(hub.complete(w.tag as u64, Some("no".into()), None));
        s.completions(&mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].tag, 8);
        assert!(out[0].result.is_ok());
        assert!(out[0].segments[0].bytes().iter().all(|&b| b == 0x22));
        assert_eq!(out[1].tag, 7);
        assert!(out[1].result.is_err());
    }

    #[test]
    fn wrong_lengths_and_ranges_fail_and_a_dropped_queue_forgets_its_requests() {
        let (hub, mut rx) = hub(4);
        let mut s = JsStorage::new(hub.clone()).unwrap();
        s.submit(request(1, IoOp::Read, 2048, 0));
        s.submit(request(
            2,
            IoOp::Discard {
                len: 512,
                secure: false,
            },
            0,
            0,
        ));
        s.submit(request(3, IoOp::Read, 0, 0));
        let r = rx.try_recv().unwrap();
        assert!(rx.try_recv().is_err(), "refused requests never go out");
        assert!(hub.complete(r.tag as u64, None, Some(&[0; 512])));
        let mut out = Vec::new();
        s.completions(&mut out);
        let failed: Vec<u64> = out
            .iter()
            .filter(|c| c.result.is_err())
            .map(|c| c.tag)
            .collect();
        assert_eq!(failed, [1, 2, 3]);
        s.submit(request(4, IoOp::Flush, 0, 0));
        let f = rx.try_recv().unwrap();
        assert_eq!(lock(&hub.pending).len(), 1);
        drop(s);
        assert!(lock(&hub.pending).is_empty());
        assert!(!hub.complete(f.tag as u64, None, None));
    }
}
