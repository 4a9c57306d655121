//! Durable state: the last snapshot plus a journal of the changes committed
//! since, in numbered segments beside the state file.
//!
//! - `<state>`: the snapshot; its header names its epoch, the first segment
//!   it does not include.
//! - `<state>.journal.<n>`: segment `n`, a header then records. A record is
//!   its length, an FNV-1a hash and the store's change record
//!   ([`Store::record`]); a torn or damaged record ends the segment.
//!
//! Loading reads the snapshot and replays segments epoch, epoch + 1, ... in
//! order. Only the last segment can end in a torn record (earlier ones were
//! complete before the next was made); it is cut back to its last whole
//! record. Segments older than the snapshot are left-overs of a compaction
//! that stopped before removing them.
//!
//! Appending costs the size of the change. When the journal has grown past
//! the snapshot's size (and a floor), a new segment starts and a background
//! thread folds the closed segments into a new snapshot, reading only files,
//! so the engine never serialises the whole store.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;

use super::state_file::{self, dir_of, sync_dir};
use super::state_lock::StateLock;
use crate::store::Store;

const SEGMENT_MAGIC: &[u8; 8] = b"XENRXJ01";
const SEGMENT_HEADER_LEN: u64 = 16;
const RECORD_HEADER_LEN: usize = 12;
/// Journal bytes below which no compaction starts, whatever the snapshot's
/// size: small stores are not rewritten for every few changes.
pub const DEFAULT_COMPACT_FLOOR: u64 = 8 << 20;

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Path of segment `n` of the journal of `state`.
pub fn segment_path(state: &Path, n: u64) -> PathBuf {
    let mut name = state.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".journal.{n}"));
    state.with_file_name(name)
}

/// The segment numbers present beside `state`, in order.
fn segments(state: &Path) -> io::Result<Vec<u64>> {
    let mut prefix = state.file_name().unwrap_or_default().to_os_string();
    prefix.push(".journal.");
    let prefix = prefix.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for entry in fs::read_dir(dir_of(state))? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if let Some(n) = name.strip_prefix(&prefix).and_then(|n| n.parse().ok()) {
            found.push(n);
        }
    }
    found.sort_unstable();
    Ok(found)
}

/// The records of a segment, and the length of its whole part.
struct SegmentRecords<'a> {
    records: Vec<&'a [u8]>,
    whole_len: u64,
}

fn parse_segment<'a>(path: &Path, n: u64, bytes: &'a [u8]) -> io::Result<SegmentRecords<'a>> {
    let bad = |what: &str| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("journal segment {}: {what}", path.display()),
        )
    };
    if bytes.len() < SEGMENT_HEADER_LEN as usize || &bytes[..8] != SEGMENT_MAGIC {
        return Err(bad("not a xenrx XenStore journal segment"));
    }
    if bytes[8..16] != n.to_le_bytes() {
        return Err(bad("its header names another segment"));
    }
    let mut pos = SEGMENT_HEADER_LEN as usize;
    let mut records = Vec::new();
    while let Some(header) = bytes.get(pos..pos + RECORD_HEADER_LEN) {
        let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
        let hash = u64::from_le_bytes(header[4..].try_into().expect("8 bytes"));
        let start = pos + RECORD_HEADER_LEN;
        let Some(body) = start.checked_add(len).and_then(|end| bytes.get(start..end)) else {
            break;
        };
        if fnv1a(body) != hash {
            break;
        }
        records.push(body);
        pos = start + len;
    }
    Ok(SegmentRecords {
        records,
        whole_len: pos as u64,
    })
}

/// The store as the snapshot and the segments `[epoch, until)` have it
/// (all segments if `until` is `None`). Returns the store, the snapshot's
/// epoch and size, and the last segment read with its whole length.
struct Loaded {
    store: Store,
    epoch: u64,
    snapshot_len: u64,
    last: Option<(u64, u64)>,
    journal_len: u64,
}

fn load(state: &Path, until: Option<u64>, log: &dyn Fn(&str)) -> io::Result<Loaded> {
    let snapshot = state_file::read_snapshot(state)?;
    let mut store = snapshot.store;
    let wanted: Vec<u64> = segments(state)?
        .into_iter()
        .filter(|n| *n >= snapshot.epoch && until.is_none_or(|u| *n < u))
        .collect();
    let mut last = None;
    let mut journal_len = 0;
    let mut replayed = false;
    for (i, n) in wanted.iter().copied().enumerate() {
        if n != snapshot.epoch + i as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "journal of {}: segment {} is missing",
                    state.display(),
                    snapshot.epoch + i as u64
                ),
            ));
        }
        let path = segment_path(state, n);
        let bytes = fs::read(&path)?;
        let parsed = parse_segment(&path, n, &bytes)?;
        let is_last = i + 1 == wanted.len();
        if parsed.whole_len < bytes.len() as u64 {
            if !is_last || until.is_some() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "journal segment {} is damaged at byte {}",
                        path.display(),
                        parsed.whole_len
                    ),
                ));
            }
            log(&format!(
                "journal segment {}: dropping {} bytes of a record that was never completed",
                path.display(),
                bytes.len() as u64 - parsed.whole_len
            ));
        }
        for record in parsed.records {
            store.replay(record).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("journal segment {}: {e}", path.display()),
                )
            })?;
            replayed = true;
        }
        journal_len += parsed.whole_len;
        last = Some((n, parsed.whole_len));
    }
    if replayed {
        store.finish_replay().map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} with its journal: {e}", state.display()),
            )
        })?;
    }
    Ok(Loaded {
        store,
        epoch: snapshot.epoch,
        snapshot_len: snapshot.len,
        last,
        journal_len,
    })
}

/// Creates segment `n`, header included, atomically and durably.
fn create_segment(state: &Path, n: u64) -> io::Result<File> {
    let path = segment_path(state, n);
    let mut header = Vec::with_capacity(SEGMENT_HEADER_LEN as usize);
    header.extend_from_slice(SEGMENT_MAGIC);
    header.extend_from_slice(&n.to_le_bytes());
    state_file::write_atomic(&path, &header)?;
    OpenOptions::new().read(true).write(true).open(&path)
}

/// The store a state file and its journal hold, read without taking the
/// lock (for inspection; a running daemon may be appending).
pub fn read_state(state: &Path) -> io::Result<Store> {
    load(state, None, &|_| {}).map(|l| l.store)
}

/// Failures a test makes the journal's disk report.
#[cfg(test)]
#[derive(Debug, Default)]
pub struct Faults {
    /// Appends write part of their record, then fail with ENOSPC.
    pub full: std::sync::atomic::AtomicBool,
    /// Syncs fail with EIO.
    pub sync_fails: std::sync::atomic::AtomicBool,
}

/// How the journal is kept.
#[derive(Clone, Copy, Debug)]
pub struct JournalOptions {
    /// Sync each group of changes to disk before replying.
    pub fsync: bool,
    /// Journal bytes below which no compaction starts.
    pub compact_floor: u64,
}

/// A compaction's outcome, from the background thread.
enum Compacted {
    Done { epoch: u64, snapshot_len: u64 },
    Failed(String),
}

/// The open journal of a state file.
pub struct Journal {
    state: PathBuf,
    options: JournalOptions,
    _lock: StateLock,
    file: File,
    segment: u64,
    /// Bytes of the current segment written (whole records only).
    len: u64,
    /// Bytes of the current segment known durable.
    synced: u64,
    /// A failed sync could not be cut back: changes must not be appended
    /// to this segment any more.
    poisoned: bool,
    /// Journal bytes not yet folded into a snapshot.
    journal_len: u64,
    snapshot_len: u64,
    compacting: bool,
    /// After a failed compaction or segment switch: journal size at which
    /// to try again (a full disk is not retried at every change).
    retry_at: u64,
    to_compactor: Option<mpsc::Sender<u64>>,
    from_compactor: mpsc::Receiver<Compacted>,
    compactor: Option<JoinHandle<()>>,
    #[cfg(test)]
    pub(super) faults: std::sync::Arc<Faults>,
}

impl Journal {
    /// Locks `state`, loads the store it and its journal hold, and opens
    /// the journal for appending. The store comes back journaling.
    pub fn open(
        state: &Path,
        options: JournalOptions,
        log: super::Logger,
    ) -> io::Result<(Store, Journal)> {
        let dir = dir_of(state);
        if !dir.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "the directory of state file {} does not exist: {}",
                    state.display(),
                    dir.display()
                ),
            ));
        }
        let lock = StateLock::acquire(state)?;
        let loaded = load(state, None, &*log)?;
        let mut store = loaded.store;
        store.start_journal();
        for stale in segments(state)?.into_iter().filter(|n| *n < loaded.epoch) {
            let _ = fs::remove_file(segment_path(state, stale));
        }
        let (segment, file, len) = match loaded.last {
            Some((n, whole)) => {
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(segment_path(state, n))?;
                if file.metadata()?.len() != whole {
                    file.set_len(whole)?;
                    file.sync_all()?;
                }
                (n, file, whole)
            }
            None => (
                loaded.epoch,
                create_segment(state, loaded.epoch)?,
                SEGMENT_HEADER_LEN,
            ),
        };
        let (to_compactor, jobs) = mpsc::channel();
        let (results, from_compactor) = mpsc::channel();
        let compactor = {
            let state = state.to_owned();
            let log = log.clone();
            std::thread::Builder::new()
                .name("xenstored-compact".into())
                .spawn(move || compact_loop(&state, jobs, results, log))?
        };
        Ok((
            store,
            Journal {
                state: state.to_owned(),
                options,
                _lock: lock,
                file,
                segment,
                len,
                synced: len,
                poisoned: false,
                journal_len: loaded.journal_len,
                snapshot_len: loaded.snapshot_len,
                compacting: false,
                retry_at: 0,
                to_compactor: Some(to_compactor),
                from_compactor,
                compactor: Some(compactor),
                #[cfg(test)]
                faults: Default::default(),
            },
        ))
    }

    /// Appends one change record. On failure nothing of it stays in the
    /// journal and the caller must undo the change.
    pub fn append(&mut self, record: &[u8]) -> io::Result<()> {
        if self.poisoned {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        let len =
            u32::try_from(record.len()).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
        let mut frame = Vec::with_capacity(RECORD_HEADER_LEN + record.len());
        frame.extend_from_slice(&len.to_le_bytes());
        frame.extend_from_slice(&fnv1a(record).to_le_bytes());
        frame.extend_from_slice(record);
        let written = self.file.write_all_at(&frame, self.len);
        #[cfg(test)]
        let written = written.and_then(|()| {
            if self.faults.full.load(std::sync::atomic::Ordering::Relaxed) {
                // As a full disk does: part of the record made it.
                self.file.set_len(self.len + frame.len() as u64 / 2)?;
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
            Ok(())
        });
        if let Err(e) = written {
            // Part of the frame may be there: cut it off, so the next record
            // starts where a reader expects it.
            if self.file.set_len(self.len).is_err() {
                self.poisoned = true;
            }
            return Err(e);
        }
        self.len += frame.len() as u64;
        self.journal_len += frame.len() as u64;
        Ok(())
    }

    /// Makes every appended record durable (one sync for the whole group).
    /// On failure the records since the last sync are cut off again and the
    /// caller must undo their changes.
    pub fn sync(&mut self) -> io::Result<()> {
        if self.len == self.synced {
            return Ok(());
        }
        if self.options.fsync {
            let synced = self.file.sync_data();
            #[cfg(test)]
            let synced = synced.and_then(|()| {
                if self
                    .faults
                    .sync_fails
                    .load(std::sync::atomic::Ordering::Relaxed)
                {
                    return Err(io::Error::from_raw_os_error(libc::EIO));
                }
                Ok(())
            });
            if let Err(e) = synced {
                let cut = self
                    .file
                    .set_len(self.synced)
                    .and_then(|()| self.file.sync_all());
                if cut.is_err() {
                    self.poisoned = true;
                }
                self.journal_len -= self.len - self.synced;
                self.len = self.synced;
                return Err(e);
            }
        }
        self.synced = self.len;
        Ok(())
    }

    /// Between groups of changes: takes a finished compaction's result and,
    /// when the journal has outgrown the snapshot, starts a new segment and
    /// hands the closed ones to the compactor. Returns lines for the log.
    pub fn maintain(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        while let Ok(result) = self.from_compactor.try_recv() {
            lines.extend(self.compacted(result));
        }
        let due = self.journal_len >= self.options.compact_floor.max(self.snapshot_len)
            && self.journal_len >= self.retry_at;
        if due && !self.compacting && self.len == self.synced {
            match create_segment(&self.state, self.segment + 1) {
                Ok(file) => {
                    self.segment += 1;
                    self.file = file;
                    self.len = SEGMENT_HEADER_LEN;
                    self.synced = SEGMENT_HEADER_LEN;
                    self.poisoned = false;
                    self.journal_len += SEGMENT_HEADER_LEN;
                    if let Some(tx) = &self.to_compactor {
                        self.compacting = tx.send(self.segment).is_ok();
                    }
                }
                Err(e) => {
                    self.retry_later();
                    lines.push(format!("cannot start a new journal segment: {e}"));
                }
            }
        }
        lines
    }

    fn retry_later(&mut self) {
        self.retry_at = self.journal_len + self.options.compact_floor.max(self.snapshot_len);
    }

    /// Bytes of the segments from `epoch` on: the journal a snapshot of
    /// `epoch` leaves to replay.
    fn journal_len_from(&self, epoch: u64) -> u64 {
        (epoch..self.segment)
            .filter_map(|n| fs::metadata(segment_path(&self.state, n)).ok())
            .map(|m| m.len())
            .sum::<u64>()
            + self.len
    }

    /// Waits for a running compaction to end (used when stopping and by
    /// tests), then applies its result.
    pub fn finish_compaction(&mut self) -> Option<String> {
        if !self.compacting {
            return None;
        }
        let result = self.from_compactor.recv().ok()?;
        self.compacted(result)
    }

    /// Takes in a compaction's result; a line for the log if it failed.
    fn compacted(&mut self, result: Compacted) -> Option<String> {
        self.compacting = false;
        match result {
            Compacted::Done {
                epoch,
                snapshot_len,
            } => {
                self.snapshot_len = snapshot_len;
                self.journal_len = self.journal_len_from(epoch);
                None
            }
            Compacted::Failed(e) => {
                self.retry_later();
                Some(format!("compaction failed: {e}"))
            }
        }
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        drop(self.to_compactor.take());
        if let Some(t) = self.compactor.take() {
            let _ = t.join();
        }
    }
}

/// The compactor: for each epoch it is given, folds the snapshot and the
/// segments before that epoch into a new snapshot, then removes them.
fn compact_loop(
    state: &Path,
    jobs: mpsc::Receiver<u64>,
    results: mpsc::Sender<Compacted>,
    log: super::Logger,
) {
    for epoch in jobs {
        let result = (|| {
            let loaded = load(state, Some(epoch), &*log)?;
            let snapshot_len = state_file::write_snapshot(state, epoch, &loaded.store)?;
            for n in loaded.epoch..epoch {
                let _ = fs::remove_file(segment_path(state, n));
            }
            sync_dir(dir_of(state))?;
            Ok::<_, io::Error>(snapshot_len)
        })();
        let msg = match result {
            Ok(snapshot_len) => Compacted::Done {
                epoch,
                snapshot_len,
            },
            Err(e) => Compacted::Failed(e.to_string()),
        };
        if results.send(msg).is_err() {
            return;
        }
    }
}

/// The XenStore errno for a failure to make a change durable: `ENOSPC`
/// when the disk (or a quota on it) is full, `EIO` otherwise.
pub fn errno_of(e: &io::Error) -> crate::wire::Errno {
    match e.raw_os_error() {
        Some(libc::ENOSPC) | Some(libc::EDQUOT) | Some(libc::EFBIG) => crate::wire::Errno::ENOSPC,
        _ => crate::wire::Errno::EIO,
    }
}
