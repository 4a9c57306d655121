//! The platform benchmarks' measurements, for bench/platform.

use std::time::Duration;

use napi_derive::napi;

use super::bench_blk_js::BlkBenchWorkload;
use super::grants::NativeGrantDevice;
use super::platform::NativeEventChannel;
use super::{domid, io_error, Result};
use crate::platform::bench;

/// Latencies (ns) of event-channel round trips to an echo peer.
#[napi]
pub fn bench_evtchn_round_trips(
    ch: &NativeEventChannel,
    port: u32,
    count: u32,
) -> Result<Vec<f64>> {
    let v = bench::evtchn_round_trips(ch.ch.as_ref(), port, count as usize).map_err(io_error)?;
    Ok(v.into_iter().map(|n| n as f64).collect())
}

/// Latencies (ns) of the same ping-pong over bare eventfds, two threads.
#[napi]
pub fn bench_eventfd_round_trips(count: u32) -> Result<Vec<f64>> {
    let v = bench::eventfd_round_trips(count as usize).map_err(io_error)?;
    Ok(v.into_iter().map(|n| n as f64).collect())
}

/// Notifications per second on one port.
#[napi]
pub fn bench_notify_rate(ch: &NativeEventChannel, port: u32, millis: u32) -> Result<f64> {
    bench::notify_rate(
        ch.ch.as_ref(),
        port,
        Duration::from_millis(u64::from(millis)),
    )
    .map_err(io_error)
}

/// Grant map+unmap operations per second for a batch.
#[napi]
pub fn bench_map_unmap_rate(
    dev: &NativeGrantDevice,
    domid: u32,
    refs: Vec<u32>,
    millis: u32,
) -> Result<f64> {
    bench::map_unmap_rate(
        dev.dev.as_ref(),
        self::domid(domid)?,
        &refs,
        Duration::from_millis(u64::from(millis)),
    )
    .map_err(io_error)
}

/// Plain mmap+munmap operations per second for `pages` pages of a memfd.
#[napi]
pub fn bench_mmap_munmap_rate(pages: u32, millis: u32) -> Result<f64> {
    bench::mmap_munmap_rate(pages as usize, Duration::from_millis(u64::from(millis)))
        .map_err(io_error)
}

/// Grant-copy bytes per second, 4 KiB segments, `batch` per call.
#[napi]
pub fn bench_grant_copy_rate(
    dev: &NativeGrantDevice,
    domid: u32,
    refs: Vec<u32>,
    batch: u32,
    millis: u32,
) -> Result<f64> {
    bench::grant_copy_rate(
        dev.dev.as_ref(),
        self::domid(domid)?,
        &refs,
        batch as usize,
        Duration::from_millis(u64::from(millis)),
    )
    .map_err(io_error)
}

/// memcpy bytes per second, 4 KiB blocks, `batch` per round.
#[napi]
pub fn bench_memcpy_rate(pages: u32, batch: u32, millis: u32) -> Result<f64> {
    bench::memcpy_rate(
        pages as usize,
        batch as usize,
        Duration::from_millis(u64::from(millis)),
    )
    .map_err(io_error)
}

/// Request+response round trips per second through `queues` simulated blkif
/// rings, the backend on a platform event loop.
#[napi]
pub fn bench_ring_round_trips(queues: u32, millis: u32) -> Result<f64> {
    crate::ring::bench::ring_round_trips(queues as usize, Duration::from_millis(u64::from(millis)))
        .map_err(io_error)
}

/// What a block backend benchmark measured (bench/blk), over its window.
#[napi(object)]
pub struct BlkBenchFigures {
    /// Requests completed per second, all queues.
    pub requests_per_sec: f64,
    /// Data bytes moved per second, all queues.
    pub bytes_per_sec: f64,
    /// Requests completed in the window.
    pub requests: f64,
    /// Length of the window, in seconds.
    pub seconds: f64,
    /// Requests whose data was checked (reads, and writes read back).
    pub verified: f64,
    /// Events the backend sent per response.
    pub backend_notifications_per_request: f64,
    /// Events the frontends sent per request.
    pub frontend_notifications_per_request: f64,
    /// Times a frontend slept on its port per request.
    pub frontend_waits_per_request: f64,
    /// CPUs the process kept busy in the window.
    pub cpu_busy: f64,
}

impl From<crate::blk::bench::BlkFigures> for BlkBenchFigures {
    fn from(f: crate::blk::bench::BlkFigures) -> BlkBenchFigures {
        BlkBenchFigures {
            requests_per_sec: f.requests_per_sec,
            bytes_per_sec: f.bytes_per_sec,
            requests: f.requests as f64,
            seconds: f.seconds,
            verified: f.verified as f64,
            backend_notifications_per_request: f.backend_notifications_per_request,
            frontend_notifications_per_request: f.frontend_notifications_per_request,
            frontend_waits_per_request: f.frontend_waits_per_request,
            cpu_busy: f.cpu_busy,
        }
    }
}

/// Runs `workload` on a MemDisk of [`crate::blk::bench::DISK_BYTES`] (the
/// first 64 MiB written first), each read checked; its figures. Any
/// workload: queues, depth, request size, latency histograms on or off,
/// polling.
#[napi]
pub fn bench_blk_workload(workload: BlkBenchWorkload) -> Result<BlkBenchFigures> {
    crate::blk::bench::run(
        &workload.workload(),
        Duration::from_millis(u64::from(workload.millis)),
    )
    .map(BlkBenchFigures::from)
    .map_err(io_error)
}

/// memcpy bytes per second of `block_bytes` blocks between two page-aligned
/// buffers.
#[napi]
pub fn bench_memcpy_blocks(block_bytes: u32, millis: u32) -> Result<f64> {
    crate::blk::bench::memcpy_blocks(
        block_bytes as usize,
        Duration::from_millis(u64::from(millis)),
    )
    .map_err(io_error)
}

/// memcpy bytes per second of `block_bytes` blocks taken in turn from a
/// region the size of the block benchmark's (out of the caches) into one
/// page-aligned block.
#[napi]
pub fn bench_memcpy_from_region(block_bytes: u32, millis: u32) -> Result<f64> {
    crate::blk::bench::memcpy_from_region(
        block_bytes as usize,
        Duration::from_millis(u64::from(millis)),
    )
    .map_err(io_error)
}
