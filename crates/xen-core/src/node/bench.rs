//! The platform benchmarks' measurements, for bench/platform.

use std::time::Duration;

use napi_derive::napi;

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
