//! Measurements of the platform for `bench/platform`: each function returns
//! its figure and a reference measured the same way in the same run.

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use super::abi::PAGE_SIZE;
use super::event_loop::wait_readable;
use super::memory::Mmap;
use super::sim::EventDoorbell;
use super::{CopySegment, CopySide, DomId, EventChannels, GrantMapper, GrantRef, Port};

/// Waits up to five seconds for the other end's answer on `fd`.
fn wait_answer(fd: std::os::fd::BorrowedFd<'_>) -> std::io::Result<()> {
    if wait_readable(fd, Some(Duration::from_secs(5))).unwrap_or(false) {
        Ok(())
    } else {
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "no answer",
        ))
    }
}

/// Repeats `step` for `duration` and returns the units per second it did;
/// `step` returns the units (operations or bytes) of one repetition.
fn per_second(
    duration: Duration,
    mut step: impl FnMut() -> std::io::Result<u64>,
) -> std::io::Result<f64> {
    let t0 = Instant::now();
    let mut units = 0u64;
    while t0.elapsed() < duration {
        units += step()?;
    }
    Ok(units as f64 / t0.elapsed().as_secs_f64())
}

/// Round trips through an event channel whose other end notifies back on
/// every event: nanoseconds per trip, notify to wake-up of the answer.
pub fn evtchn_round_trips(
    ch: &dyn EventChannels,
    port: Port,
    count: usize,
) -> std::io::Result<Vec<u64>> {
    let mut out = Vec::with_capacity(count);
    let mut pending = Vec::new();
    for _ in 0..count {
        let t0 = Instant::now();
        ch.notify(port).map_err(std::io::Error::other)?;
        loop {
            wait_answer(ch.fd())?;
            pending.clear();
            ch.pending(&mut pending).map_err(std::io::Error::other)?;
            if pending.contains(&port) {
                break;
            }
        }
        out.push(t0.elapsed().as_nanos() as u64);
        ch.unmask(port).map_err(std::io::Error::other)?;
    }
    Ok(out)
}

/// The reference for [`evtchn_round_trips`]: the same ping-pong over two
/// bare eventfds between two threads of this process.
pub fn eventfd_round_trips(count: usize) -> std::io::Result<Vec<u64>> {
    let ping = std::sync::Arc::new(EventDoorbell::new()?);
    let pong = std::sync::Arc::new(EventDoorbell::new()?);
    let (p2, q2) = (ping.clone(), pong.clone());
    let echo = std::thread::spawn(move || {
        for _ in 0..count {
            if !wait_readable(p2.as_fd(), Some(Duration::from_secs(5))).unwrap_or(false) {
                return;
            }
            let _ = p2.drain();
            let _ = q2.signal();
        }
    });
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let t0 = Instant::now();
        ping.signal()?;
        wait_answer(pong.as_fd())?;
        pong.drain()?;
        out.push(t0.elapsed().as_nanos() as u64);
    }
    let _ = echo.join();
    Ok(out)
}

/// Notifications sent per second on one port, for `duration`.
pub fn notify_rate(ch: &dyn EventChannels, port: Port, duration: Duration) -> std::io::Result<f64> {
    per_second(duration, || {
        for _ in 0..256 {
            ch.notify(port).map_err(std::io::Error::other)?;
        }
        Ok(256)
    })
}

/// Map-and-unmap operations per second for a batch of `refs`.
pub fn map_unmap_rate(
    dev: &dyn GrantMapper,
    domid: DomId,
    refs: &[GrantRef],
    duration: Duration,
) -> std::io::Result<f64> {
    per_second(duration, || {
        let m = dev.map(domid, refs, true).map_err(std::io::Error::other)?;
        drop(m);
        Ok(1)
    })
}

/// The reference for [`map_unmap_rate`]: mapping and unmapping the same
/// number of pages of a memfd with plain mmap.
pub fn mmap_munmap_rate(pages: usize, duration: Duration) -> std::io::Result<f64> {
    let fd = super::sim::memfd_for_bench(pages)?;
    per_second(duration, || {
        let mut region = Mmap::reserve(pages * PAGE_SIZE)?;
        for i in 0..pages {
            region.place_fd(
                i * PAGE_SIZE,
                fd.as_fd(),
                (i * PAGE_SIZE) as u64,
                PAGE_SIZE,
                true,
            )?;
        }
        drop(region);
        Ok(1)
    })
}

/// Grant-copy throughput in bytes per second: 4 KiB segments from the
/// granted frames `refs` into a local buffer, `batch` segments per call.
pub fn grant_copy_rate(
    dev: &dyn GrantMapper,
    domid: DomId,
    refs: &[GrantRef],
    batch: usize,
    duration: Duration,
) -> std::io::Result<f64> {
    let mut buf = vec![0u8; batch * PAGE_SIZE];
    per_second(duration, || {
        let mut segs: Vec<CopySegment<'_>> = buf
            .chunks_mut(PAGE_SIZE)
            .enumerate()
            .map(|(i, chunk)| {
                CopySegment::new(
                    CopySide::Grant {
                        domid,
                        gref: refs[i % refs.len()],
                        offset: 0,
                    },
                    CopySide::Into(chunk),
                    PAGE_SIZE as u16,
                )
            })
            .collect();
        dev.copy(&mut segs).map_err(std::io::Error::other)?;
        if segs.iter().any(|s| s.status != super::GntSt::Okay) {
            return Err(std::io::Error::other("a copy segment failed"));
        }
        Ok((batch * PAGE_SIZE) as u64)
    })
}

/// The reference for [`grant_copy_rate`]: plain memcpy of 4 KiB blocks from
/// a shared mapping into a local buffer.
pub fn memcpy_rate(pages: usize, batch: usize, duration: Duration) -> std::io::Result<f64> {
    let src = Mmap::anonymous(pages * PAGE_SIZE)?;
    src.mem()
        .fill(0, pages * PAGE_SIZE, 7)
        .map_err(std::io::Error::other)?;
    let mut buf = vec![0u8; batch * PAGE_SIZE];
    per_second(duration, || {
        for (i, chunk) in buf.chunks_mut(PAGE_SIZE).enumerate() {
            src.mem()
                .read((i % pages) * PAGE_SIZE, chunk)
                .map_err(std::io::Error::other)?;
        }
        std::hint::black_box(&buf);
        Ok((batch * PAGE_SIZE) as u64)
    })
}
