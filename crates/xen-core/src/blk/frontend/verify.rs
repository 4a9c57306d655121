//! A verifying workload, as a guest's fio with `verify` would run: random
//! 4 KiB reads, writes and flushes kept `depth` deep over a range of
//! blocks, each write stamped with its block and a version, each read
//! checked against the last write acknowledged there. It tells which
//! writes a flush made durable, so that a test can check the disk after a
//! backend died. A block has at most one request in flight, so the model
//! is exact.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::{BlkFrontError, BlkOp, RequestId, SimBlkFront};

const BLOCK: usize = 4096;

/// What to run.
#[derive(Clone, Copy, Debug)]
pub struct VerifyWorkload {
    /// The first 4 KiB block used.
    pub first_block: u64,
    /// Blocks used, from `first_block`.
    pub blocks: u64,
    /// Requests kept in flight.
    pub depth: usize,
    /// Seeds the choices: a run replays exactly for the same answers.
    pub seed: u64,
    /// A flush after this many writes.
    pub flush_every: u32,
}

/// What a run did and found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Requests completed.
    pub requests: u64,
    /// Reads that found what they should.
    pub verified: u64,
    /// Flushes acknowledged.
    pub flushes: u64,
    /// Requests that failed, and reads that found something else: a line
    /// each (the first 20).
    pub failures: Vec<String>,
    /// Failures in all.
    pub failed: u64,
    /// For each block written before an acknowledged flush: the version
    /// the flush made durable (a later one may be there too).
    pub durable: Vec<(u64, u32)>,
    /// For each block written: the last version acknowledged.
    pub last: Vec<(u64, u32)>,
}

/// The bytes of `block` at `version`: (block, version) repeated.
pub fn stamp(block: u64, version: u32) -> Vec<u8> {
    let mut b = vec![0u8; BLOCK];
    for chunk in b.chunks_exact_mut(8) {
        chunk[..4].copy_from_slice(&(block as u32).to_le_bytes());
        chunk[4..].copy_from_slice(&version.to_le_bytes());
    }
    b
}

enum Op {
    Read(u64),
    Write(u64, u32),
    /// With the versions acknowledged when it was sent.
    Flush(HashMap<u64, u32>),
}

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

impl SimBlkFront {
    /// Runs `w` until `stop` is set, then lets what is in flight finish.
    /// `progress` counts the requests completed as they are. Fails only
    /// when the frontend itself can go no further (a timeout, a broken
    /// ring); failed requests and wrong data are in the report.
    pub fn verify(
        &mut self,
        w: &VerifyWorkload,
        stop: &AtomicBool,
        progress: &AtomicU64,
    ) -> Result<VerifyReport, BlkFrontError> {
        let mut rng = Rng(w.seed | 1);
        let mut report = VerifyReport::default();
        let mut acked: HashMap<u64, u32> = HashMap::new();
        let mut durable: HashMap<u64, u32> = HashMap::new();
        let mut busy: HashSet<u64> = HashSet::new();
        let mut flying: HashMap<RequestId, Op> = HashMap::new();
        let mut next_version = 0u32;
        let mut writes_since_flush = 0u32;
        let blocks = w.blocks.max(1);
        let fail = |report: &mut VerifyReport, line: String| {
            report.failed += 1;
            if report.failures.len() < 20 {
                report.failures.push(line);
            }
        };
        loop {
            while flying.len() < w.depth.max(1) && !stop.load(Ordering::Relaxed) {
                let (op, blk_op) = if writes_since_flush >= w.flush_every.max(1) {
                    writes_since_flush = 0;
                    (Op::Flush(acked.clone()), BlkOp::Flush)
                } else {
                    // A free block: at most one request per block.
                    let mut block = w.first_block + rng.below(blocks);
                    let mut tries = 0;
                    while busy.contains(&block) && tries < blocks {
                        block = w.first_block + (block - w.first_block + 1) % blocks;
                        tries += 1;
                    }
                    if busy.contains(&block) {
                        break;
                    }
                    busy.insert(block);
                    let sector = block * (BLOCK as u64 / 512);
                    if rng.below(2) == 0 {
                        next_version += 1;
                        writes_since_flush += 1;
                        (
                            Op::Write(block, next_version),
                            BlkOp::Write(sector, stamp(block, next_version), 0),
                        )
                    } else {
                        (Op::Read(block), BlkOp::Read(sector, BLOCK, 0))
                    }
                };
                let id = self.submit(blk_op)?;
                flying.insert(id, op);
            }
            if flying.is_empty() {
                break;
            }
            let (id, outcome) = self.wait_any()?;
            let Some(op) = flying.remove(&id) else {
                continue;
            };
            report.requests += 1;
            progress.fetch_add(1, Ordering::Relaxed);
            match (op, outcome) {
                (Op::Read(block), Ok(data)) => {
                    busy.remove(&block);
                    let want = acked.get(&block).copied().unwrap_or(0);
                    let expected = if want == 0 {
                        vec![0u8; BLOCK]
                    } else {
                        stamp(block, want)
                    };
                    if data == expected {
                        report.verified += 1;
                    } else {
                        let found = u32::from_le_bytes(data[4..8].try_into().unwrap_or([0; 4]));
                        fail(
                            &mut report,
                            format!("block {block}: read version {found}, want {want}"),
                        );
                    }
                }
                (Op::Write(block, version), Ok(_)) => {
                    busy.remove(&block);
                    acked.insert(block, version);
                }
                (Op::Flush(before), Ok(_)) => {
                    report.flushes += 1;
                    for (b, v) in before {
                        let d = durable.entry(b).or_insert(0);
                        *d = (*d).max(v);
                    }
                }
                (op, Err(e)) => {
                    if let Op::Read(b) | Op::Write(b, _) = op {
                        busy.remove(&b);
                    }
                    fail(&mut report, format!("request failed: {e}"));
                }
            }
        }
        let sorted = |m: HashMap<u64, u32>| {
            let mut v: Vec<(u64, u32)> = m.into_iter().collect();
            v.sort_unstable();
            v
        };
        report.durable = sorted(durable);
        report.last = sorted(acked);
        Ok(report)
    }
}
