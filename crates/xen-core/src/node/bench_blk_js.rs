//! The block benchmark on a storage implemented in JavaScript, for
//! bench/blk: a workload of [`crate::blk::bench`] served by the storage's
//! handler (`BlockStorage.custom`) instead of a MemDisk. It runs off the
//! JavaScript thread (a promise), which stays free to serve the handler.

use std::cell::RefCell;
use std::time::Duration;

use napi::bindgen_prelude::AsyncTask;
use napi::{Env, Task};
use napi_derive::napi;

use super::bench::BlkBenchFigures;
use super::blk::NativeBlkStorage;
use super::{coded_error, Result};
use crate::blk::bench::{run_with, BlkFigures, Workload, REGION_BYTES};
use crate::blk::storage::Storage;

/// A block benchmark workload (see bench/blk).
#[napi(object)]
pub struct BlkBenchWorkload {
    /// Queues (frontend thread + ring + queue each).
    pub queues: u32,
    /// Requests each frontend keeps in flight.
    pub depth: u32,
    /// 4 KiB pages per request (indirect above 11).
    pub segments: u32,
    /// Writes, or reads.
    pub write: bool,
    /// Random blocks, or one after the other.
    pub random: bool,
    /// Persistent grants, else grant copy.
    pub persistent: bool,
    /// How long the queues poll their rings after taking requests, in
    /// microseconds (default 0: no polling).
    pub poll_micros: Option<u32>,
    /// Whether the queues keep latency histograms (default true).
    pub timing: Option<bool>,
    /// How long to measure.
    pub millis: u32,
}

impl BlkBenchWorkload {
    pub(super) fn workload(&self) -> Workload {
        Workload {
            queues: self.queues as usize,
            depth: self.depth,
            segments: self.segments,
            write: self.write,
            random: self.random,
            region_bytes: REGION_BYTES,
            persistent: self.persistent,
            timing: self.timing.unwrap_or(true),
            poll: Duration::from_micros(u64::from(self.poll_micros.unwrap_or(0))),
        }
    }
}

/// The run, on a worker thread, with a storage handle per queue.
pub struct BlkStorageBench {
    workload: Workload,
    duration: Duration,
    storages: Vec<Box<dyn Storage>>,
}

impl Task for BlkStorageBench {
    type Output = BlkFigures;
    type JsValue = BlkBenchFigures;

    fn compute(&mut self) -> napi::Result<BlkFigures> {
        let storages = RefCell::new(std::mem::take(&mut self.storages));
        let open = || {
            storages
                .borrow_mut()
                .pop()
                .ok_or_else(|| std::io::Error::other("no storage left"))
        };
        run_with(&self.workload, self.duration, &open, None)
            .map_err(|e| napi::Error::from_reason(e.to_string()))
    }

    fn resolve(&mut self, _env: Env, figures: BlkFigures) -> napi::Result<BlkBenchFigures> {
        Ok(figures.into())
    }
}

/// Runs `workload` on `storage` (over the first 64 MiB, written through
/// the rings first), each read checked against what was written; resolves
/// to its figures. Meant for a storage whose requests are served on the
/// JavaScript thread (`BlockStorage.custom`), which this leaves free.
#[napi(ts_return_type = "Promise<BlkBenchFigures>")]
pub fn bench_blk_js_storage(
    storage: &NativeBlkStorage,
    workload: BlkBenchWorkload,
) -> Result<AsyncTask<BlkStorageBench>> {
    if workload.queues == 0 || workload.queues > 16 {
        return Err(coded_error("EINVAL", format!("{} queues", workload.queues)));
    }
    let storages = (0..workload.queues)
        .map(|_| storage.open())
        .collect::<Result<Vec<_>>>()?;
    Ok(AsyncTask::new(BlkStorageBench {
        workload: workload.workload(),
        duration: Duration::from_millis(u64::from(workload.millis)),
        storages,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blk::bench::DISK_BYTES;
    use crate::blk::storage::MemDisk;

    #[test]
    fn a_storage_factory_serves_the_queues_after_the_rings_wrote_the_region() {
        let disk = MemDisk::new(DISK_BYTES / 512);
        let open = || Ok(Box::new(disk.clone()) as Box<dyn Storage>);
        for write in [false, true] {
            let w = Workload {
                queues: 2,
                depth: 8,
                segments: 1,
                write,
                random: true,
                region_bytes: 4 << 20,
                persistent: true,
                timing: true,
                poll: Duration::ZERO,
            };
            let f = run_with(&w, Duration::from_millis(30), &open, None).unwrap();
            // Reads found the stamps the rings wrote (the disk started empty).
            assert!(f.requests > 0, "{f:?}");
            assert!(f.verified >= if write { 2 } else { f.requests }, "{f:?}");
        }
    }
}
