//! The simulated guest's block device for JavaScript: the ring-level
//! blkfront of [`crate::blk::frontend`], with its I/O on worker threads so
//! that waiting for the backend never blocks the JavaScript thread. The
//! xenbus handshake is TypeScript's (`ts/simhost/block-frontend.ts`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use napi::bindgen_prelude::Buffer;
use napi_derive::napi;

use super::platform::NativeSimHost;
use super::{coded_error, domid, Coded, CodedResult, Outcome, Result};
use crate::blk::frontend::{
    BlkFrontError, FrontOptions, FrontStats, SimBlkFront, VerifyReport, VerifyWorkload,
};
use crate::ring::blkif::BlkifProtocol;

/// The code of a frontend failure: `EIO` for `BLKIF_RSP_ERROR`,
/// `EOPNOTSUPP` for `BLKIF_RSP_EOPNOTSUPP`, `EPROTO` when the backend broke
/// the protocol (including an undefined status, or answering while still
/// mapping the request's pages), `EINVAL` for bad arguments, `ETIMEDOUT`,
/// `ESHUTDOWN` once closed, `ENOMEM` when the guest has no free page, and
/// the grant or event-channel code of a platform failure.
fn blk_error(e: BlkFrontError) -> Coded {
    use BlkFrontError as E;
    let code = match &e {
        E::IoError(_) => "EIO".to_owned(),
        E::NotSupported(_) => "EOPNOTSUPP".to_owned(),
        E::BadStatus(..) | E::GrantStillMapped(..) | E::Backend(_) => "EPROTO".to_owned(),
        E::BadArgument(_) | E::TooManySegments(..) | E::UnknownRequest(_) | E::Idle => {
            "EINVAL".to_owned()
        }
        E::Timeout => "ETIMEDOUT".to_owned(),
        E::Closed => "ESHUTDOWN".to_owned(),
        E::NoGuestMemory => "ENOMEM".to_owned(),
        E::Grant(g) => g.code(),
        E::EventChannel(c) => c.code().to_owned(),
    };
    coded_error(&code, e)
}

fn closed_error() -> Coded {
    coded_error("ESHUTDOWN", "the block frontend was closed")
}

/// A whole number from JavaScript (a sector, a length): finite, not
/// negative, and exact (at most 2^53 - 1).
fn whole(v: f64, what: &str) -> CodedResult<u64> {
    const MAX_SAFE: f64 = 9_007_199_254_740_991.0;
    if v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v <= MAX_SAFE {
        Ok(v as u64)
    } else {
        Err(coded_error(
            "EINVAL",
            format!("{what} must be a whole number from 0 to 2^53-1, not {v}"),
        ))
    }
}

/// How to set up a simulated block frontend.
#[napi(object)]
pub struct SimBlkFrontOptions {
    /// The ring spans 2^order pages, 0 to 4 (default 0): the
    /// `ring-page-order` agreed with the backend.
    pub ring_page_order: Option<u32>,
    /// The slot layout (`protocol`; default: the native one).
    #[napi(ts_type = "'x86_64-abi' | 'x86_32-abi'")]
    pub protocol: Option<String>,
    /// The backend's `feature-max-indirect-segments`; absent: no indirect
    /// requests (at most 11 segments each).
    pub max_indirect_segments: Option<u32>,
    /// Requests in flight at most (default: as many as the ring has slots).
    pub queue_depth: Option<u32>,
    /// How long an operation waits for the backend before `ETIMEDOUT`
    /// (default 30000).
    pub timeout_ms: Option<u32>,
    /// The `handle` of requests (default 0).
    pub handle: Option<u32>,
    /// Persistent grants, negotiated with the backend (default false):
    /// pages are granted once and reused.
    pub persistent: Option<bool>,
}

/// Counters of a simulated block frontend.
#[napi(object)]
pub struct SimBlkFrontStats {
    /// Requests written to the ring.
    pub requests: f64,
    /// Responses taken from the ring.
    pub responses: f64,
    /// Events sent to the backend.
    pub notifications: f64,
    /// Times the frontend slept on its port.
    pub waits: f64,
}

impl From<FrontStats> for SimBlkFrontStats {
    fn from(s: FrontStats) -> SimBlkFrontStats {
        SimBlkFrontStats {
            requests: s.requests as f64,
            responses: s.responses as f64,
            notifications: s.notifications as f64,
            waits: s.waits as f64,
        }
    }
}

/// A verifying workload (see `verify`).
#[napi(object)]
pub struct SimBlkVerifyWorkload {
    /// The first 4 KiB block used.
    pub first_block: u32,
    /// Blocks used.
    pub blocks: u32,
    /// Requests kept in flight.
    pub depth: u32,
    /// Seeds the random choices.
    pub seed: u32,
    /// A flush after this many writes.
    pub flush_every: u32,
}

/// What a verifying workload did and found.
#[napi(object)]
pub struct SimBlkVerifyReport {
    /// Requests completed.
    pub requests: f64,
    /// Reads that found what they should.
    pub verified: f64,
    /// Flushes acknowledged.
    pub flushes: f64,
    /// Requests that failed and reads that found something else.
    pub failed: f64,
    /// The first 20 of those, a line each.
    pub failures: Vec<String>,
    /// [block, version] for each block an acknowledged flush made durable.
    pub durable: Vec<Vec<u32>>,
    /// [block, version] last acknowledged for each block written.
    pub last: Vec<Vec<u32>>,
}

impl From<VerifyReport> for SimBlkVerifyReport {
    fn from(r: VerifyReport) -> Self {
        let pairs = |v: Vec<(u64, u32)>| v.into_iter().map(|(b, n)| vec![b as u32, n]).collect();
        SimBlkVerifyReport {
            requests: r.requests as f64,
            verified: r.verified as f64,
            flushes: r.flushes as f64,
            failed: r.failed as f64,
            failures: r.failures,
            durable: pairs(r.durable),
            last: pairs(r.last),
        }
    }
}

/// What the worker threads share with the JavaScript object.
struct Shared {
    fe: Mutex<SimBlkFront>,
    /// Set by close: operations not yet started fail with `ESHUTDOWN`.
    closed: AtomicBool,
    /// The counters as of the last operation, for `stats()` while one runs.
    stats: Mutex<FrontStats>,
    /// Tells a running `verify` to stop.
    stop: AtomicBool,
    /// Requests a running `verify` completed.
    progress: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, SimBlkFront> {
        self.fe.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn record(&self, fe: &SimBlkFront) {
        *self.stats.lock().unwrap_or_else(|p| p.into_inner()) = fe.stats();
    }
}

/// The guest's end of a block device on the simulated hypervisor: ring
/// pages granted to the backend, an unbound port for it, and blocking
/// blkfront I/O run on worker threads. Operations run one at a time, in
/// the order they were called.
#[napi]
pub struct NativeSimBlkFront {
    shared: Arc<Shared>,
    ring_refs: Vec<u32>,
    port: u32,
    protocol: &'static str,
    ring_page_order: u32,
}

#[napi]
impl NativeSimBlkFront {
    /// Sets up a block device of guest `domid` for `backendDomid`: 2^order
    /// ring pages granted writable and initialised, an unbound port, from
    /// the guest's grant table (shared with `host.gnttab()`) and a new
    /// event-channel handle of its own.
    #[napi(factory)]
    pub fn create(
        host: &NativeSimHost,
        domid: u32,
        backend_domid: u32,
        options: Option<SimBlkFrontOptions>,
    ) -> Result<NativeSimBlkFront> {
        let guest = self::domid(domid)?;
        let backend = self::domid(backend_domid)?;
        let o = options.unwrap_or(SimBlkFrontOptions {
            ring_page_order: None,
            protocol: None,
            max_indirect_segments: None,
            queue_depth: None,
            timeout_ms: None,
            handle: None,
            persistent: None,
        });
        let protocol = BlkifProtocol::from_xenstore(o.protocol.as_deref()).ok_or_else(|| {
            coded_error(
                "EINVAL",
                format!(
                    "unknown blkif protocol {:?} (x86_64-abi or x86_32-abi)",
                    o.protocol.as_deref().unwrap_or_default()
                ),
            )
        })?;
        let handle = match o.handle {
            None => 0,
            Some(h) => u16::try_from(h)
                .map_err(|_| coded_error("EINVAL", format!("handle {h} above 65535")))?,
        };
        if o.queue_depth == Some(0) {
            return Err(coded_error("EINVAL", "queue depth 0"));
        }
        let defaults = FrontOptions::default();
        let options = FrontOptions {
            ring_page_order: o.ring_page_order.unwrap_or(0),
            protocol,
            max_indirect_segments: o.max_indirect_segments,
            queue_depth: o.queue_depth,
            handle,
            timeout: o
                .timeout_ms
                .map_or(defaults.timeout, |ms| Duration::from_millis(u64::from(ms))),
            persistent: o.persistent.unwrap_or(false),
        };
        let sim = host.sim_host();
        let gnttab = sim.gnttab(guest).map_err(|e| coded_error(&e.code(), e))?;
        let evtchn = sim.evtchn(guest).map_err(|e| coded_error(e.code(), e))?;
        let fe = SimBlkFront::new(gnttab, Arc::new(evtchn), backend, options).map_err(blk_error)?;
        let (ring_refs, port) = (fe.ring_refs().to_vec(), fe.port());
        let protocol = fe.protocol().layout().protocol;
        let ring_page_order = fe.ring_page_order();
        let stats = Mutex::new(fe.stats());
        Ok(NativeSimBlkFront {
            shared: Arc::new(Shared {
                fe: Mutex::new(fe),
                closed: AtomicBool::new(false),
                stats,
                stop: AtomicBool::new(false),
                progress: AtomicU64::new(0),
            }),
            ring_refs,
            port,
            protocol,
            ring_page_order,
        })
    }

    /// The ring's grant references: `ring-ref` for order 0, else
    /// `ring-ref0..N-1`.
    #[napi(getter)]
    pub fn ring_refs(&self) -> Vec<u32> {
        self.ring_refs.clone()
    }

    /// The port the backend binds to (`event-channel`).
    #[napi(getter)]
    pub fn port(&self) -> u32 {
        self.port
    }

    /// The slot layout's XenStore name (`protocol`).
    #[napi(getter)]
    pub fn protocol(&self) -> String {
        self.protocol.to_owned()
    }

    /// `ring-page-order`.
    #[napi(getter)]
    pub fn ring_page_order(&self) -> u32 {
        self.ring_page_order
    }

    /// Runs `op` on a worker thread once the operations before it are done.
    async fn run<T: Send + 'static>(
        &self,
        op: impl FnOnce(&mut SimBlkFront) -> std::result::Result<T, BlkFrontError> + Send + 'static,
    ) -> CodedResult<T> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(closed_error());
        }
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || {
            let mut fe = shared.lock();
            if shared.closed.load(Ordering::Acquire) {
                return Err(closed_error());
            }
            let r = op(&mut fe);
            shared.record(&fe);
            r.map_err(blk_error)
        })
        .await
        .map_err(|e| coded_error("EIO", e))?
    }

    /// Reads `length` bytes (whole 512-byte sectors) from `sector`, in as
    /// many requests as the segment limit needs.
    #[napi(ts_return_type = "Promise<Buffer>")]
    pub async fn read(&self, sector: f64, length: f64) -> napi::Result<Outcome<Buffer>> {
        let r: CodedResult<Buffer> = async {
            let sector = whole(sector, "sector")?;
            let len = usize::try_from(whole(length, "length")?)
                .map_err(|_| coded_error("EINVAL", "length too large"))?;
            let data = self.run(move |fe| fe.read(sector, len)).await?;
            Ok(data.into())
        }
        .await;
        Ok(r.into())
    }

    /// Writes `data` (whole 512-byte sectors) at `sector`.
    #[napi(ts_return_type = "Promise<void>")]
    pub async fn write(&self, sector: f64, data: Buffer) -> napi::Result<Outcome<()>> {
        let r: CodedResult<()> = async {
            let sector = whole(sector, "sector")?;
            let data = data.to_vec();
            self.run(move |fe| fe.write(sector, &data)).await
        }
        .await;
        Ok(r.into())
    }

    /// Flushes the backend's write cache (`BLKIF_OP_FLUSH_DISKCACHE`).
    #[napi(ts_return_type = "Promise<void>")]
    pub async fn flush(&self) -> napi::Result<Outcome<()>> {
        Ok(self.run(SimBlkFront::flush).await.into())
    }

    /// Discards `sectors` sectors from `sector` (`BLKIF_OP_DISCARD`, with
    /// `BLKIF_DISCARD_SECURE` if `secure`).
    #[napi(ts_return_type = "Promise<void>")]
    pub async fn discard(
        &self,
        sector: f64,
        sectors: f64,
        secure: Option<bool>,
    ) -> napi::Result<Outcome<()>> {
        let r: CodedResult<()> = async {
            let sector = whole(sector, "sector")?;
            let n = whole(sectors, "sectors")?;
            let secure = secure.unwrap_or(false);
            self.run(move |fe| fe.discard(sector, n, secure)).await
        }
        .await;
        Ok(r.into())
    }

    /// Runs a verifying workload until `stopVerify()`: random 4 KiB reads
    /// and writes `depth` deep over `blocks` blocks from `firstBlock`, a
    /// flush every `flushEvery` writes, each read checked against the
    /// last write acknowledged there. Other operations wait until it ends.
    #[napi(ts_return_type = "Promise<SimBlkVerifyReport>")]
    pub async fn verify(
        &self,
        workload: SimBlkVerifyWorkload,
    ) -> napi::Result<Outcome<SimBlkVerifyReport>> {
        let w = VerifyWorkload {
            first_block: workload.first_block as u64,
            blocks: workload.blocks as u64,
            depth: workload.depth as usize,
            seed: workload.seed as u64,
            flush_every: workload.flush_every,
        };
        self.shared.stop.store(false, Ordering::Release);
        self.shared.progress.store(0, Ordering::Release);
        let shared = self.shared.clone();
        let r = self
            .run(move |fe| fe.verify(&w, &shared.stop, &shared.progress))
            .await
            .map(SimBlkVerifyReport::from);
        Ok(r.into())
    }

    /// Tells a running `verify` to stop: it lets its requests finish, then
    /// resolves.
    #[napi]
    pub fn stop_verify(&self) {
        self.shared.stop.store(true, Ordering::Release);
    }

    /// Requests the running (or last) `verify` completed so far.
    #[napi]
    pub fn verify_progress(&self) -> f64 {
        self.shared.progress.load(Ordering::Acquire) as f64
    }

    /// The counters (as of the last operation while one is running).
    #[napi]
    pub fn stats(&self) -> SimBlkFrontStats {
        match self.shared.fe.try_lock() {
            Ok(fe) => fe.stats().into(),
            Err(_) => (*self.shared.stats.lock().unwrap_or_else(|p| p.into_inner())).into(),
        }
    }

    /// Whether close was called.
    #[napi(getter)]
    pub fn closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    /// Closes the device: operations not yet started fail with
    /// `ESHUTDOWN`, requests in flight are dropped, every grant ends and
    /// the port is closed. `EBUSY` while an operation is still running or
    /// the backend still maps a page (which then stays granted): call
    /// again later. Never blocks.
    #[napi]
    pub fn close(&self) -> Result<()> {
        self.shared.closed.store(true, Ordering::Release);
        let mut fe = match self.shared.fe.try_lock() {
            Ok(fe) => fe,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => {
                return Err(coded_error("EBUSY", "an operation is still running"))
            }
        };
        let r = fe.close();
        self.shared.record(&fe);
        r.map_err(blk_error)
    }
}
