//! Block backend throughput for `bench/blk`: the simulated blkfront of a
//! guest drives [`BlkQueue`]s (on dom0's platform event loop) serving a
//! sparse [`MemDisk`], for a given time; 4 KiB random IOPS and large
//! sequential transfers. Read them against [`memcpy_blocks`] of the same
//! sizes, measured in the same run.
//!
//! Each frontend runs on its own thread and keeps its queue depth of
//! requests in flight: it sleeps on its port in [`SimBlkFront::wait_any`]
//! (never spinning), takes every response already there, and refills the
//! ring with one push. With grant copy, the data of a request crosses three
//! copies: the storage's (MemDisk chunk to the backend's page buffer, or
//! back), the backend's grant copy (its buffer to the guest page, or back)
//! and the frontend's own (the guest page to the caller's buffer, or back).
//! With persistent grants the backend hands MemDisk the guest's mapped
//! pages, so its own copy goes: two copies.
//!
//! Reads find real data: the region read is written first, each 4 KiB
//! block stamped with its number, and every page read is checked against
//! its stamp. Writes are stamped too, and each frontend reads back its last
//! write at the end (through the ring and on the disk itself).

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::frontend::{BlkOp, FrontOptions, IoResult, RequestId, SimBlkFront};
use super::request::Offer;
use super::storage::{MemDisk, Storage};
use super::{BlkQueue, BlkStats, QueueEvent, RingConfig};
use crate::platform::sim::{DomainConfig, SimHypervisor};
use crate::platform::{DomId, Platform};

const BACK: DomId = 0;
const GUEST: DomId = 11;
const PAGE: usize = 4096;
const SECTORS_PER_PAGE: u64 = (PAGE / 512) as u64;
/// The disk: 1 GiB, sparse.
pub const DISK_BYTES: u64 = 1 << 30;
/// Where the benchmarks read and write, written before the run.
pub const REGION_BYTES: u64 = 64 << 20;
/// Segments a request carries in its slot; more go indirect.
const MAX_DIRECT: u32 = 11;
/// Ring slots per page in the native layout.
const SLOTS_PER_PAGE: u32 = 32;

/// What a run does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Workload {
    /// Queues (frontend thread + ring + [`BlkQueue`] each) of one guest's
    /// disk.
    pub queues: usize,
    /// Requests each frontend keeps in flight.
    pub depth: u32,
    /// Pages (4 KiB segments) per request.
    pub segments: u32,
    /// Writes, or reads.
    pub write: bool,
    /// Random blocks, or one after the other.
    pub random: bool,
    /// Bytes at the start of the disk that are written first and then read
    /// or written (split between the queues).
    pub region_bytes: u64,
    /// Persistent grants negotiated (as Linux blkfront does by default),
    /// else a grant per page per request and grant copy.
    pub persistent: bool,
    /// The queues keep latency histograms (as they do by default).
    pub timing: bool,
    /// How long the queues poll their rings after taking requests (zero,
    /// the default: they wait for events).
    pub poll: Duration,
}

/// What a run measured, over its timed window (after a warm-up).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct BlkFigures {
    /// Requests completed per second, all queues.
    pub requests_per_sec: f64,
    /// Data bytes moved per second, all queues.
    pub bytes_per_sec: f64,
    /// Requests completed in the window.
    pub requests: u64,
    /// Length of the window.
    pub seconds: f64,
    /// Requests whose data was checked: every read (a stamp per page, the
    /// first read of each queue byte for byte), and each queue's last write
    /// read back through the ring and from the disk.
    pub verified: u64,
    /// Events the backend sent per response, in the window.
    pub backend_notifications_per_request: f64,
    /// Events the frontends sent per request, whole run.
    pub frontend_notifications_per_request: f64,
    /// Times a frontend slept on its port per request, whole run.
    pub frontend_waits_per_request: f64,
    /// CPUs the process kept busy in the window (user + system time over
    /// wall time), from `/proc/self/stat`; 0 if unreadable.
    pub cpu_busy: f64,
}

fn other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// The reference: bytes per second of memcpy of `block_bytes` blocks
/// between two page-aligned buffers (as the backend's and the disk's page
/// buffers are). Alignment matters: on some CPUs (AMD Zen's `rep movsb`)
/// a 4 KiB memcpy whose destination is a few bytes past the source's page
/// offset runs 20 times slower, which is what two fresh `Vec`s would give.
/// Both buffers stay in the CPU's caches: what a copy costs at best.
pub fn memcpy_blocks(block_bytes: usize, duration: Duration) -> io::Result<f64> {
    copy_blocks(block_bytes, block_bytes, duration)
}

/// The second reference of the sequential workloads, which move
/// [`REGION_BYTES`] of the disk, far more than the caches hold: bytes per
/// second of memcpy of `block_bytes` blocks taken in turn from a
/// page-aligned region of that size into one page-aligned block. A
/// sequential read cannot take the disk's data out of memory faster.
pub fn memcpy_from_region(block_bytes: usize, duration: Duration) -> io::Result<f64> {
    copy_blocks(block_bytes, REGION_BYTES as usize, duration)
}

/// memcpy of `block_bytes` blocks, taken in turn from a page-aligned source
/// of `source_bytes` (rounded down to whole blocks), into one page-aligned
/// block; bytes per second.
fn copy_blocks(block_bytes: usize, source_bytes: usize, duration: Duration) -> io::Result<f64> {
    if block_bytes == 0 {
        return Err(other("empty blocks"));
    }
    let blocks = (source_bytes / block_bytes).max(1);
    let mut src_buf = vec![0u8; blocks * block_bytes + PAGE];
    let mut dst_buf = vec![0u8; block_bytes + PAGE];
    let src = page_aligned(&mut src_buf, blocks * block_bytes);
    // Byte i is i % 251: each block differs from the next.
    let period: Vec<u8> = (0..251u8).collect();
    for chunk in src.chunks_mut(period.len()) {
        chunk.copy_from_slice(&period[..chunk.len()]);
    }
    let src = &*src;
    let dst = page_aligned(&mut dst_buf, block_bytes);
    // Enough blocks per clock reading that reading it costs nothing, in
    // whole passes over the source.
    let passes = ((64 << 20) / block_bytes.max(PAGE) + 1).div_ceil(blocks);
    let t0 = Instant::now();
    let mut bytes = 0u64;
    while t0.elapsed() < duration {
        for _ in 0..passes {
            for block in src.chunks_exact(block_bytes) {
                dst.copy_from_slice(std::hint::black_box(block));
                std::hint::black_box(&mut *dst);
            }
        }
        bytes += (passes * blocks * block_bytes) as u64;
    }
    let seconds = t0.elapsed().as_secs_f64();
    // A pass ends with the source's last block.
    if *dst != src[(blocks - 1) * block_bytes..] {
        return Err(other("memcpy copied the wrong bytes"));
    }
    Ok(bytes as f64 / seconds)
}

/// `len` bytes of `buf` starting on a page boundary (`buf` has a page to
/// spare).
fn page_aligned(buf: &mut [u8], len: usize) -> &mut [u8] {
    let skip = (PAGE - buf.as_ptr() as usize % PAGE) % PAGE;
    &mut buf[skip..skip + len]
}

/// Runs a workload for `duration` (after a warm-up of a tenth of it, at
/// most 100 ms) on a [`DISK_BYTES`] `MemDisk` and returns its figures.
pub fn run(w: &Workload, duration: Duration) -> io::Result<BlkFigures> {
    let disk = MemDisk::new(DISK_BYTES / 512);
    run_with(w, duration, &|| Ok(Box::new(disk.clone())), Some(&disk))
}

/// [`run`] on the storage `open` makes (once per queue). With `disk`, the
/// MemDisk `open` serves, the region is written on it first and the last
/// writes are checked on it too; without, each frontend writes its share of
/// the region through its ring first (reads are checked through the ring).
pub fn run_with(
    w: &Workload,
    duration: Duration,
    open: &dyn Fn() -> io::Result<Box<dyn Storage>>,
    disk: Option<&MemDisk>,
) -> io::Result<BlkFigures> {
    let region_blocks = w.region_bytes / PAGE as u64;
    if w.queues == 0
        || w.depth == 0
        || w.segments == 0
        || w.segments > 256
        || region_blocks / (w.queues as u64) < u64::from(w.segments)
    {
        return Err(other(format!("unworkable benchmark: {w:?}")));
    }
    let order = (0..=super::MAX_RING_PAGE_ORDER)
        .find(|o| SLOTS_PER_PAGE << o >= w.depth)
        .ok_or_else(|| other(format!("queue depth {} above a ring's slots", w.depth)))?;
    let hv = SimHypervisor::new();
    hv.create_domain(DomainConfig::new(BACK))?;
    // Room for every request in flight (data pages and an indirect page
    // each), twice over, and the rings.
    let grants = 256 + w.queues as u32 * (16 + 2 * w.depth * (w.segments + 1));
    let grant_frames = grants.div_ceil(512);
    hv.create_domain(DomainConfig {
        pages: grants + grant_frames,
        grant_frames,
        max_ports: 64,
        ..DomainConfig::new(GUEST)
    })?;
    let host = hv.host();
    let platform = Arc::new(Platform::simulated(&host, BACK).map_err(other)?);
    if let Some(disk) = disk {
        prewrite(disk, w.region_bytes);
    }
    let gnttab = host.gnttab(GUEST).map_err(other)?;
    let indirect = if w.segments > MAX_DIRECT {
        w.segments
    } else {
        0
    };
    let events: Arc<Mutex<Vec<QueueEvent>>> = Arc::default();
    let mut lanes = Vec::new();
    let mut queues = Vec::new();
    let lane_blocks = region_blocks / w.queues as u64;
    for q in 0..w.queues {
        let evtchn = Arc::new(host.evtchn(GUEST).map_err(other)?);
        let options = FrontOptions {
            ring_page_order: order,
            max_indirect_segments: (indirect > 0).then_some(indirect),
            queue_depth: Some(w.depth),
            persistent: w.persistent,
            ..FrontOptions::default()
        };
        let front = SimBlkFront::new(gnttab.clone(), evtchn, BACK, options).map_err(other)?;
        let ring = RingConfig {
            frontend: GUEST,
            ring_refs: front.ring_refs().to_vec(),
            remote_port: front.port(),
            protocol: front.protocol(),
            persistent: w.persistent,
        };
        let storage = open()?;
        let offer = Offer {
            geometry: storage.geometry(),
            barrier: true,
            max_indirect_segments: indirect,
        };
        let sink = events.clone();
        let queue = BlkQueue::start(
            &platform,
            &ring,
            offer,
            storage,
            Box::new(move |e| sink.lock().unwrap_or_else(|p| p.into_inner()).push(e)),
        )
        .map_err(other)?;
        queue.set_timing(w.timing);
        queue.set_poll(w.poll);
        queues.push(queue);
        lanes.push(Lane::new(
            front,
            w,
            q as u64 * lane_blocks,
            lane_blocks,
            disk.cloned(),
        ));
    }
    if disk.is_none() {
        lanes.iter_mut().try_for_each(Lane::fill)?;
    }
    // The frontends count from here on (not the filling).
    let pre: Vec<_> = lanes.iter().map(|l| l.front.stats()).collect();
    let counters: Vec<AtomicU64> = (0..w.queues).map(|_| AtomicU64::new(0)).collect();
    let stop = AtomicBool::new(false);
    let completed = || -> u64 { counters.iter().map(|c| c.load(Ordering::Relaxed)).sum() };
    let backend = |queues: &[BlkQueue]| -> (u64, u64) {
        queues
            .iter()
            .map(BlkQueue::stats)
            .fold((0, 0), |a, s| (a.0 + s.responses, a.1 + s.notifications))
    };
    let warmup = (duration / 10).min(Duration::from_millis(100));
    let (window, lanes) = std::thread::scope(|s| {
        let workers: Vec<_> = lanes
            .into_iter()
            .zip(&counters)
            .map(|(mut lane, counter)| {
                let stop = &stop;
                s.spawn(move || {
                    let r = lane.run(stop, counter);
                    (lane, r)
                })
            })
            .collect();
        std::thread::sleep(warmup);
        let (c0, b0, cpu0, t0) = (completed(), backend(&queues), cpu_ticks(), Instant::now());
        std::thread::sleep(duration);
        let (c1, b1, cpu1, t1) = (completed(), backend(&queues), cpu_ticks(), Instant::now());
        stop.store(true, Ordering::Relaxed);
        let lanes: Vec<_> = workers
            .into_iter()
            .map(|h| h.join().map_err(|_| other("a frontend thread panicked")))
            .collect();
        let cpu = match (cpu0, cpu1) {
            (Some(a), Some(b)) => (b - a) as f64 / 100.0,
            _ => 0.0,
        };
        let window = Window {
            requests: c1 - c0,
            responses: b1.0 - b0.0,
            notifications: b1.1 - b0.1,
            seconds: (t1 - t0).as_secs_f64(),
            cpu,
        };
        (window, lanes)
    });
    let stats: Vec<BlkStats> = queues.iter().map(BlkQueue::stats).collect();
    for q in &queues {
        q.stop();
    }
    let mut fronts = Vec::new();
    let mut verified = 0;
    let mut first_error = None;
    for lane in lanes {
        let (lane, result) = lane?;
        match result {
            Ok(()) => verified += lane.verified,
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
        fronts.push(lane.front);
    }
    let (mut requests, mut notifications, mut waits) = (0, 0, 0);
    for (mut f, p) in fronts.into_iter().zip(pre) {
        let s = f.stats();
        (requests, notifications, waits) = (
            requests + s.requests - p.requests,
            notifications + s.notifications - p.notifications,
            waits + s.waits - p.waits,
        );
        let _ = f.close();
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    let events = events.lock().unwrap_or_else(|p| p.into_inner());
    let errors: u64 = stats.iter().map(|s| s.errors).sum();
    if errors > 0 || !events.is_empty() {
        return Err(other(format!(
            "the backend refused {errors} requests: {:?}",
            events.first()
        )));
    }
    let per = |n: u64, d: u64| if d == 0 { 0.0 } else { n as f64 / d as f64 };
    let rate = window.requests as f64 / window.seconds;
    Ok(BlkFigures {
        requests_per_sec: rate,
        bytes_per_sec: rate * f64::from(w.segments) * PAGE as f64,
        requests: window.requests,
        seconds: window.seconds,
        verified,
        backend_notifications_per_request: per(window.notifications, window.responses),
        frontend_notifications_per_request: per(notifications, requests),
        frontend_waits_per_request: per(waits, requests),
        cpu_busy: window.cpu / window.seconds,
    })
}

struct Window {
    requests: u64,
    responses: u64,
    notifications: u64,
    seconds: f64,
    cpu: f64,
}

/// User + system time of the process, in clock ticks (USER_HZ, 100 on
/// Linux).
fn cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces): state is the
    // 3rd field, utime the 14th, stime the 15th.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split(' ').skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Stamps a 4 KiB block: its number and the write's generation (0 for the
/// data written before the run), then a byte derived from both.
fn stamp(page: &mut [u8], block: u64, generation: u64) {
    page[..8].copy_from_slice(&block.to_le_bytes());
    page[8..16].copy_from_slice(&generation.to_le_bytes());
    page[16..].fill(fill_byte(block, generation));
}

fn fill_byte(block: u64, generation: u64) -> u8 {
    ((block.wrapping_mul(31) ^ generation.wrapping_mul(7)) as u8) | 1
}

/// `pages` blocks from `block`, stamped with `generation`.
fn stamped(block: u64, pages: usize, generation: u64) -> Vec<u8> {
    let mut data = vec![0u8; pages * PAGE];
    for (i, page) in data.chunks_exact_mut(PAGE).enumerate() {
        stamp(page, block + i as u64, generation);
    }
    data
}

/// Writes the region, 1 MiB at a time, each block stamped.
fn prewrite(disk: &MemDisk, bytes: u64) {
    let chunk_pages = 256u64;
    let blocks = bytes / PAGE as u64;
    let mut block = 0;
    while block < blocks {
        let n = chunk_pages.min(blocks - block);
        disk.write_at(block * PAGE as u64, &stamped(block, n as usize, 0));
        block += n;
    }
}

/// One frontend and its share of the region.
struct Lane {
    front: SimBlkFront,
    disk: Option<MemDisk>,
    write: bool,
    random: bool,
    pages: u64,
    depth: usize,
    base: u64,
    blocks: u64,
    rng: u64,
    next: u64,
    generation: u64,
    /// Requests in flight: (first block, generation).
    in_flight: HashMap<RequestId, (u64, u64)>,
    last_write: Option<(u64, u64)>,
    verified: u64,
    checked_whole: bool,
}

impl Lane {
    fn new(
        front: SimBlkFront,
        w: &Workload,
        base: u64,
        blocks: u64,
        disk: Option<MemDisk>,
    ) -> Lane {
        Lane {
            front,
            disk,
            write: w.write,
            random: w.random,
            pages: u64::from(w.segments),
            depth: w.depth as usize,
            base,
            blocks,
            rng: 0x9e37_79b9_7f4a_7c15 ^ base.wrapping_add(1).wrapping_mul(0xff51_afd7_ed55_8ccd),
            next: 0,
            generation: 0,
            in_flight: HashMap::with_capacity(w.depth as usize),
            last_write: None,
            verified: 0,
            checked_whole: false,
        }
    }

    /// xorshift64*.
    fn random(&mut self) -> u64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// The first block of the next request.
    fn next_block(&mut self) -> u64 {
        let slots = self.blocks / self.pages;
        let slot = if self.random {
            self.random() % slots
        } else {
            let s = self.next % slots;
            self.next += 1;
            s
        };
        self.base + slot * self.pages
    }

    fn submit(&mut self, n: usize) -> io::Result<()> {
        let mut ops = Vec::with_capacity(n);
        let mut tags = Vec::with_capacity(n);
        for _ in 0..n {
            let block = self.next_block();
            let sector = block * SECTORS_PER_PAGE;
            let len = self.pages as usize * PAGE;
            if self.write {
                self.generation += 1;
                let data = stamped(block, self.pages as usize, self.generation);
                ops.push(BlkOp::Write(sector, data, 0));
                tags.push((block, self.generation));
            } else {
                ops.push(BlkOp::Read(sector, len, 0));
                tags.push((block, 0));
            }
        }
        let ids = self.front.submit_many(ops).map_err(other)?;
        for (id, tag) in ids.into_iter().zip(tags) {
            self.in_flight.insert(id, tag);
            if self.write {
                self.last_write = Some(tag);
            }
        }
        Ok(())
    }

    fn complete(&mut self, (id, result): (RequestId, IoResult)) -> io::Result<()> {
        let (block, generation) = self
            .in_flight
            .remove(&id)
            .ok_or_else(|| other(format!("an answer to a request not sent: {id:?}")))?;
        let data = result.map_err(other)?;
        if !self.write {
            self.check(block, generation, &data)?;
        }
        Ok(())
    }

    /// Checks a read: each page's stamp and last byte, and the first read
    /// byte for byte.
    fn check(&mut self, block: u64, generation: u64, data: &[u8]) -> io::Result<()> {
        if data.len() != self.pages as usize * PAGE {
            return Err(other(format!("read {} bytes", data.len())));
        }
        if !self.checked_whole {
            if data != stamped(block, self.pages as usize, generation) {
                return Err(other(format!("block {block}: wrong data")));
            }
            self.checked_whole = true;
        }
        for (i, page) in data.chunks_exact(PAGE).enumerate() {
            let b = block + i as u64;
            let ok = page[..8] == b.to_le_bytes()
                && page[8..16] == generation.to_le_bytes()
                && page[PAGE - 1] == fill_byte(b, generation);
            if !ok {
                return Err(other(format!("block {b}: wrong data")));
            }
        }
        self.verified += 1;
        Ok(())
    }

    /// Writes the lane's blocks (stamped, generation 0) through the ring,
    /// no more pages at a time than its requests in flight carry.
    fn fill(&mut self) -> io::Result<()> {
        let end = self.base + self.blocks;
        let chunk = (self.pages * self.depth as u64).min(256);
        for block in (self.base..end).step_by(chunk as usize) {
            let data = stamped(block, chunk.min(end - block) as usize, 0);
            let sector = block * SECTORS_PER_PAGE;
            self.front.write(sector, &data).map_err(other)?;
        }
        Ok(())
    }

    /// Keeps `depth` requests in flight until `stop`, counting answers in
    /// `done`; then takes the last answers, and after writes reads the last
    /// one back.
    fn run(&mut self, stop: &AtomicBool, done: &AtomicU64) -> io::Result<()> {
        self.submit(self.depth)?;
        while !stop.load(Ordering::Relaxed) {
            // Sleeps on the port (after the final check) until an answer.
            let first = self.front.wait_any().map_err(other)?;
            self.complete(first)?;
            // Answers already taken off the ring are waiting: no sleep.
            let ready = self.in_flight.len() - self.front.in_flight();
            for _ in 0..ready {
                let next = self.front.wait_any().map_err(other)?;
                self.complete(next)?;
            }
            done.fetch_add(1 + ready as u64, Ordering::Relaxed);
            self.submit(1 + ready)?;
        }
        while !self.in_flight.is_empty() {
            let next = self.front.wait_any().map_err(other)?;
            self.complete(next)?;
        }
        if let Some((block, generation)) = self.last_write {
            let want = stamped(block, self.pages as usize, generation);
            let sector = block * SECTORS_PER_PAGE;
            let back = self.front.read(sector, want.len()).map_err(other)?;
            let on_disk = |d: &MemDisk| d.read_at(block * PAGE as u64, want.len()) == want;
            if back != want || !self.disk.as_ref().is_none_or(on_disk) {
                return Err(other(format!("block {block}: the last write is not there")));
            }
            self.verified += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
