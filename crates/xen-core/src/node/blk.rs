//! The block backend for JavaScript: a disk's storage, and a queue serving
//! a guest's ring from it. The data path stays on the platform's event
//! loop; JavaScript gets the disk's geometry, refusals as log lines, and
//! counters.

use std::path::PathBuf;
use std::sync::Mutex;

use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::Status;
use napi_derive::napi;

use super::platform_handle::NativePlatform;
use super::{coded_error, domid, Coded, Result};
use crate::blk::request::Offer;
use crate::blk::storage::{FileImage, FileOptions, Geometry, MemDisk, Storage};
use crate::blk::{BlkError, BlkQueue, QueueEvent, Restart, RingConfig};
use crate::ring::blkif::BlkifProtocol;

/// Indirect segments a queue accepts per request, as Linux blkback
/// advertises (`feature-max-indirect-segments`).
pub const MAX_INDIRECT_SEGMENTS: u32 = 256;

fn blk_error(e: BlkError) -> Coded {
    let code = match &e {
        BlkError::RingPages(_) => "EINVAL",
        BlkError::MapRing(_) => "EFAULT",
        BlkError::Ring(_) => "EPROTO",
        BlkError::Bind(_) => "ENOTCONN",
        BlkError::EventLoop(_) => "EIO",
        BlkError::Journal(_) => "ESTALE",
    };
    coded_error(code, e)
}

/// What a frontend is told about a disk.
#[napi(object)]
pub struct BlkGeometry {
    /// Size in 512-byte sectors.
    pub sectors: f64,
    /// Logical sector size in bytes.
    pub sector_size: u32,
    /// Physical sector size in bytes.
    pub physical_sector_size: u32,
    /// Writes are refused.
    pub read_only: bool,
    /// Completed writes may need a flush to be durable.
    pub flush: bool,
    /// Discard is offered, with its granularity and alignment in bytes.
    pub discard: bool,
    /// Bytes: discards should cover whole multiples of it.
    pub discard_granularity: u32,
    /// Bytes: where the first granule starts.
    pub discard_alignment: u32,
    /// Secure discard is offered.
    pub discard_secure: bool,
}

/// A disk size in 512-byte sectors from JavaScript: a whole number from 1
/// to 2^53.
fn disk_sectors(sectors: f64) -> Result<u64> {
    if sectors >= 1.0 && sectors.fract() == 0.0 && sectors <= 2f64.powi(53) {
        Ok(sectors as u64)
    } else {
        Err(coded_error("EINVAL", format!("{sectors} sectors")))
    }
}

enum Kind {
    /// Opened and locked once; each queue gets a handle on the same open
    /// file. `None` once closed (the lock then lasts only while a queue's
    /// handle does).
    File {
        path: PathBuf,
        image: Mutex<Option<FileImage>>,
    },
    Memory(MemDisk),
    Factory(StorageFactory),
    Qcow2(Qcow2Image),
}

/// A qcow2 image. Its queues share one open image (two opens of a writable
/// one would corrupt it): `open` refers to it while some queue has it open.
struct Qcow2Image {
    path: PathBuf,
    read_only: bool,
    open: Mutex<crate::blk::storage::WeakQcow2Disk>,
}

impl Qcow2Image {
    /// A handle on the image for one queue: on the open image if there is
    /// one, else on a new open.
    fn handle(&self) -> std::io::Result<crate::blk::storage::Qcow2Disk> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        match open.upgrade() {
            Some(disk) => disk,
            None => qcow2_open(&self.path, self.read_only).inspect(|d| *open = d.downgrade()),
        }
    }
}

/// Storage made by other code (e.g. implemented in JavaScript): opens a
/// fresh handle on it, one per queue.
pub(crate) type StorageFactory = Box<dyn Fn() -> Result<Box<dyn Storage>> + Send + Sync>;

/// A disk's storage: a raw image or block device, or memory. Each queue
/// serving it gets a handle of its own.
#[napi]
pub struct NativeBlkStorage {
    kind: Kind,
    geometry: Geometry,
}

#[napi]
impl NativeBlkStorage {
    /// A raw image file or a block device, opened and locked now (`EAGAIN`
    /// while another process holds it, or a process that died still has
    /// I/O in flight on it); each queue gets a handle on the same open
    /// file.
    #[napi(factory)]
    pub fn file(
        path: String,
        read_only: Option<bool>,
        direct: Option<bool>,
    ) -> Result<NativeBlkStorage> {
        let options = FileOptions {
            read_only: read_only.unwrap_or(false),
            direct: direct.unwrap_or(false),
            ..FileOptions::default()
        };
        let path = PathBuf::from(path);
        let image = FileImage::open(&path, options).map_err(|e| {
            let code = if e.kind() == std::io::ErrorKind::WouldBlock {
                "EAGAIN"
            } else {
                "EIO"
            };
            coded_error(code, format!("{}: {e}", path.display()))
        })?;
        let geometry = image.geometry();
        Ok(NativeBlkStorage {
            kind: Kind::File {
                path,
                image: Mutex::new(Some(image)),
            },
            geometry,
        })
    }

    /// An empty disk in memory of `sectors` 512-byte sectors (sparse: only
    /// what is written takes memory).
    #[napi(factory)]
    pub fn memory(sectors: f64, read_only: Option<bool>) -> Result<NativeBlkStorage> {
        let mut disk = MemDisk::new(disk_sectors(sectors)?);
        if read_only == Some(true) {
            disk = disk.read_only();
        }
        let geometry = disk.geometry();
        Ok(NativeBlkStorage {
            kind: Kind::Memory(disk),
            geometry,
        })
    }

    /// A qcow2 image file (opened now to check it and learn its size; the
    /// queues then share one open image). The backing image and external
    /// data file its header names are opened too, as QEMU does: give only
    /// images from a trusted source. Fails with EBUSY while another
    /// storage has the image open for writing.
    #[napi(factory)]
    pub fn qcow2(path: String, read_only: Option<bool>) -> Result<NativeBlkStorage> {
        let path = PathBuf::from(path);
        let read_only = read_only.unwrap_or(false);
        let disk = qcow2_open(&path, read_only)
            .map_err(|e| coded_error(crate::platform::io_error_name(&e), e))?;
        let geometry = disk.geometry();
        // Closed again until a queue needs it, so that the image is held
        // (locked) only while served.
        disk.close().map_err(|e| {
            let message = format!("{}: {e}", path.display());
            coded_error(crate::platform::io_error_name(&e), message)
        })?;
        Ok(NativeBlkStorage {
            kind: Kind::Qcow2(Qcow2Image {
                path,
                read_only,
                open: Mutex::default(),
            }),
            geometry,
        })
    }

    /// Size and features.
    #[napi(getter)]
    pub fn geometry(&self) -> BlkGeometry {
        let g = &self.geometry;
        BlkGeometry {
            sectors: g.sectors as f64,
            sector_size: g.sector_size,
            physical_sector_size: g.physical_sector_size,
            read_only: g.read_only,
            flush: g.volatile_cache,
            discard: g.discard.is_some(),
            discard_granularity: g.discard.map_or(0, |d| d.granularity),
            discard_alignment: g.discard.map_or(0, |d| d.alignment),
            discard_secure: g.discard.is_some_and(|d| d.secure),
        }
    }

    /// The disk's size changed: a file or block device is measured again,
    /// on the file it holds open (`sectors` must then be absent); a disk in
    /// memory or in JavaScript takes `sectors`. Returns the new geometry;
    /// the queues serving the disk learn it from [`NativeBlkQueue::resize`].
    /// A qcow2 image keeps its size (resizing one is qemu-img's job, with
    /// the image closed).
    #[napi]
    pub fn resize(&mut self, sectors: Option<f64>) -> Result<BlkGeometry> {
        let sectors = match (&self.kind, sectors) {
            (Kind::File { path, image, .. }, None) => {
                let image = image.lock().unwrap_or_else(|p| p.into_inner());
                let image = image
                    .as_ref()
                    .ok_or_else(|| coded_error("ESHUTDOWN", "the disk is closed"))?;
                image
                    .measure()
                    .map_err(|e| coded_error("EIO", format!("{}: {e}", path.display())))?
            }
            (Kind::Memory(_) | Kind::Factory(_), Some(n)) => disk_sectors(n)?,
            (Kind::Memory(_) | Kind::Factory(_), None) => {
                return Err(coded_error("EINVAL", "a new size in sectors is needed"))
            }
            (Kind::File { .. }, Some(_)) => {
                return Err(coded_error("EINVAL", "a file's size is its own"))
            }
            (Kind::Qcow2(_), _) => {
                return Err(coded_error(
                    "EOPNOTSUPP",
                    "a qcow2 image is not resized live",
                ))
            }
        };
        if let Kind::Memory(disk) = &mut self.kind {
            disk.resize(sectors);
        }
        self.geometry.sectors = sectors;
        Ok(self.geometry())
    }

    /// Reads bytes of a memory disk (for tests and demos).
    #[napi]
    pub fn read_memory(&self, offset: f64, length: u32) -> Result<napi::bindgen_prelude::Buffer> {
        match &self.kind {
            Kind::Memory(disk) => {
                let end = offset + f64::from(length);
                if offset < 0.0 || end > self.geometry.sectors as f64 * 512.0 {
                    return Err(coded_error("EINVAL", "outside the disk"));
                }
                Ok(disk.read_at(offset as u64, length as usize).into())
            }
            Kind::File { .. } | Kind::Factory(_) | Kind::Qcow2(_) => {
                Err(coded_error("EINVAL", "not a memory disk"))
            }
        }
    }

    /// A disk whose queues each get the storage `open` makes.
    pub(crate) fn from_factory(geometry: Geometry, open: StorageFactory) -> NativeBlkStorage {
        NativeBlkStorage {
            kind: Kind::Factory(open),
            geometry,
        }
    }

    /// Lets the image go now (its lock with it, once the queues' handles
    /// are gone too) rather than when JavaScript collects this object: the
    /// same image may be served again at once (a guest rebooted). Queues
    /// cannot be opened afterwards. Other storage kinds keep no lock.
    #[napi]
    pub fn close(&self) {
        if let Kind::File { image, .. } = &self.kind {
            image.lock().unwrap_or_else(|p| p.into_inner()).take();
        }
    }

    pub(crate) fn open(&self) -> Result<Box<dyn Storage>> {
        Ok(match &self.kind {
            Kind::Memory(disk) => Box::new(disk.clone()),
            Kind::File { path, image, .. } => Box::new(
                image
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .as_ref()
                    .ok_or_else(|| coded_error("ESHUTDOWN", format!("{}: closed", path.display())))?
                    .disk()
                    .map_err(|e| coded_error("EIO", format!("{}: {e}", path.display())))?,
            ),
            Kind::Factory(open) => open()?,
            Kind::Qcow2(image) => Box::new(
                image
                    .handle()
                    .map_err(|e| coded_error(crate::platform::io_error_name(&e), e))?,
            ),
        })
    }
}

/// Where a queue's ring is, as the frontend published it.
#[napi(object)]
pub struct BlkRingOptions {
    /// The guest.
    pub frontend_domid: u32,
    /// `ring-ref`, or `ring-ref0..N` (2^ring-page-order of them).
    pub ring_refs: Vec<u32>,
    /// The guest's `event-channel`.
    pub remote_port: u32,
    /// The frontend's `protocol` (absent: the backend's native layout).
    pub protocol: Option<String>,
    /// Persistent grants negotiated (`feature-persistent` on both ends;
    /// default false).
    pub persistent: Option<bool>,
    /// The queue's journal file: what a backend started after this one
    /// dies needs to take the ring over (removed when the queue stops).
    pub journal: Option<String>,
    /// Take over a ring a backend that died was serving, from its journal
    /// (default false: a ring the frontend just set up).
    pub resume: Option<bool>,
}

/// Counters of a block queue.
#[napi(object)]
pub struct BlkQueueStats {
    /// Requests taken off the ring.
    pub requests: f64,
    /// Responses published.
    pub responses: f64,
    /// Reads handed to storage.
    pub reads: f64,
    /// Writes handed to storage.
    pub writes: f64,
    /// Flushes handed to storage.
    pub flushes: f64,
    /// Flush and barrier requests accepted (blkback's `f_req`).
    pub flush_requests: f64,
    /// Discards handed to storage.
    pub discards: f64,
    /// Sectors read (`rd_sect`).
    pub sectors_read: f64,
    /// Sectors written (`wr_sect`).
    pub sectors_written: f64,
    /// Times taking requests stopped for a barrier or a flush carrying
    /// data to wait for every earlier request.
    pub fence_waits: f64,
    /// Bytes copied to the guest.
    pub bytes_read: f64,
    /// Bytes copied from the guest.
    pub bytes_written: f64,
    /// Requests answered with an error.
    pub errors: f64,
    /// Notifications sent to the guest.
    pub notifications: f64,
    /// Persistent grants mapped (0 without `feature-persistent`).
    pub persistent_maps: f64,
    /// Latency of reads, from taken off the ring to answered.
    pub read_latency: BlkLatency,
    /// Of writes.
    pub write_latency: BlkLatency,
    /// Of flushes, flushes carrying data and barriers.
    pub flush_latency: BlkLatency,
    /// Of discards.
    pub discard_latency: BlkLatency,
}

/// A latency histogram: requests per bucket, bucket `i` holding those that
/// took at most 2^i microseconds (and more than the bucket before); the
/// last bucket holds anything slower.
#[napi(object)]
pub struct BlkLatency {
    /// Requests per bucket (not cumulative).
    pub buckets: Vec<f64>,
    /// The sum of their latencies in microseconds.
    pub sum_us: f64,
}

fn latency(l: &crate::blk::Latency) -> BlkLatency {
    BlkLatency {
        buckets: l.buckets.iter().map(|&n| n as f64).collect(),
        sum_us: l.sum_us as f64,
    }
}

type NoticeCallback = ThreadsafeFunction<String, (), String, Status, false, true>;

/// A block queue serving a guest's ring.
#[napi]
pub struct NativeBlkQueue {
    queue: BlkQueue,
    failure: std::sync::Arc<Mutex<Option<String>>>,
}

#[napi]
impl NativeBlkQueue {
    /// Serves the ring on `platform`'s event loop from `storage`.
    /// `onNotice` gets one line per refused request and the ring's failure.
    #[napi(
        factory,
        ts_args_type = "platform: NativePlatform, storage: NativeBlkStorage, ring: BlkRingOptions, onNotice?: (message: string) => void"
    )]
    pub fn start(
        platform: &NativePlatform,
        storage: &NativeBlkStorage,
        ring: BlkRingOptions,
        on_notice: Option<NoticeCallback>,
    ) -> Result<NativeBlkQueue> {
        let protocol = BlkifProtocol::from_xenstore(ring.protocol.as_deref()).ok_or_else(|| {
            coded_error(
                "EPROTONOSUPPORT",
                format!("unknown protocol {:?}", ring.protocol),
            )
        })?;
        let config = RingConfig {
            frontend: domid(ring.frontend_domid)?,
            ring_refs: ring.ring_refs,
            remote_port: ring.remote_port,
            protocol,
            persistent: ring.persistent.unwrap_or(false),
        };
        let offer = Offer {
            geometry: storage.geometry,
            barrier: true,
            max_indirect_segments: MAX_INDIRECT_SEGMENTS,
        };
        let failure = std::sync::Arc::new(Mutex::new(None));
        let failed = failure.clone();
        let sink = Box::new(move |event: QueueEvent| {
            let line = match &event {
                QueueEvent::Refused { id, reason } => format!("request {id:#x} refused: {reason}"),
                QueueEvent::Failed(reason) => {
                    *failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason.clone());
                    format!("ring broken, device stopped: {reason}")
                }
            };
            if let Some(n) = &on_notice {
                n.call(line, ThreadsafeFunctionCallMode::NonBlocking);
            }
        });
        let restart = Restart {
            journal: ring.journal.map(PathBuf::from),
            resume: ring.resume.unwrap_or(false),
        };
        let queue = BlkQueue::start_with(
            platform.platform(),
            &config,
            offer,
            storage.open()?,
            sink,
            &restart,
        )
        .map_err(blk_error)?;
        Ok(NativeBlkQueue { queue, failure })
    }

    /// Why the queue stopped serving on its own (a broken ring), if it did.
    #[napi(getter)]
    pub fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The counters.
    #[napi]
    pub fn stats(&self) -> BlkQueueStats {
        let s = self.queue.stats();
        BlkQueueStats {
            requests: s.requests as f64,
            responses: s.responses as f64,
            reads: s.reads as f64,
            writes: s.writes as f64,
            flushes: s.flushes as f64,
            flush_requests: s.flush_requests as f64,
            discards: s.discards as f64,
            sectors_read: s.sectors_read as f64,
            sectors_written: s.sectors_written as f64,
            fence_waits: s.fence_waits as f64,
            bytes_read: s.bytes_read as f64,
            bytes_written: s.bytes_written as f64,
            errors: s.errors as f64,
            notifications: s.notifications as f64,
            persistent_maps: s.persistent_maps as f64,
            read_latency: latency(&s.read_latency),
            write_latency: latency(&s.write_latency),
            flush_latency: latency(&s.flush_latency),
            discard_latency: latency(&s.discard_latency),
        }
    }

    /// Hands the ring over to the process that takes this one's place:
    /// stops serving without a word to the frontend and keeps the journal
    /// (requests not answered are the next backend's to serve). The queue
    /// is then stopped.
    #[napi]
    pub fn hand_over(&self) {
        self.queue.hand_over();
    }

    /// Switches the latency histograms on (the default) or off; the other
    /// counters are always kept.
    #[napi]
    pub fn set_timing(&self, on: bool) {
        self.queue.set_timing(on);
    }

    /// Polls the ring for `micros` microseconds after the queue takes
    /// requests, rather than sleeping until the frontend's next event (0:
    /// no polling, the default); from the queue's next run.
    #[napi]
    pub fn set_poll(&self, micros: u32) {
        self.queue
            .set_poll(std::time::Duration::from_micros(u64::from(micros)));
    }

    /// The disk now has `sectors` 512-byte sectors: requests are judged
    /// against that from the queue's next run on.
    #[napi]
    pub fn resize(&self, sectors: f64) -> Result<()> {
        self.queue.resize(disk_sectors(sectors)?);
        Ok(())
    }

    /// Stops serving: leaves the event loop, closes the port, unmaps the
    /// ring. Idempotent.
    #[napi]
    pub fn stop(&self) {
        self.queue.stop();
    }
}

/// `feature-max-indirect-segments` of the block backend.
#[napi]
pub fn blk_max_indirect_segments() -> u32 {
    MAX_INDIRECT_SEGMENTS
}

fn qcow2_open(
    path: &std::path::Path,
    read_only: bool,
) -> std::io::Result<crate::blk::storage::Qcow2Disk> {
    let options = crate::blk::storage::Qcow2Options {
        read_only,
        ..Default::default()
    };
    crate::blk::storage::Qcow2Disk::open(path, options)
}

/// The format of the disk image at `path`, from its content: "qcow2" (it
/// starts with the qcow2 magic) or "raw" (anything else). A guess: a guest
/// with raw write access to an image can make it look like qcow2, so ask
/// only about images no guest has written raw, or know the format instead.
#[napi(ts_return_type = "'qcow2' | 'raw'")]
pub fn blk_image_format(path: String) -> Result<String> {
    let qcow2 = crate::blk::storage::is_qcow2(&path)
        .map_err(|e| coded_error(crate::platform::io_error_name(&e), format!("{path}: {e}")))?;
    Ok(if qcow2 { "qcow2" } else { "raw" }.to_owned())
}
