//! The daemon's snapshot file, written atomically: a temporary file beside
//! it, synced, renamed over the old one, and the directory synced, so that a
//! crash at any point leaves either the old snapshot or the new one.
//!
//! A snapshot starts with a header naming the first journal segment it does
//! not include (its epoch); files of the earlier format, a bare store
//! snapshot, load as epoch 0.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::store::Store;

const HEADER_MAGIC: &[u8; 8] = b"XENRXSF2";
const HEADER_LEN: usize = 16;

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// The directory a state file lives in (`.` for a bare name).
pub fn dir_of(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Syncs a directory, so that names created or renamed in it are durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes `bytes` to `path` atomically and durably.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = temp_path(path);
    let written = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    if let Err(e) = written {
        // A full disk must not also keep the half-written copy's space.
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fs::rename(&tmp, path)?;
    sync_dir(dir_of(path))
}

/// Writes a snapshot of `store` covering the journal before segment `epoch`.
pub fn write_snapshot(path: &Path, epoch: u64, store: &Store) -> io::Result<u64> {
    let body = store.snapshot();
    let mut bytes = Vec::with_capacity(HEADER_LEN + body.len());
    bytes.extend_from_slice(HEADER_MAGIC);
    bytes.extend_from_slice(&epoch.to_le_bytes());
    bytes.extend_from_slice(&body);
    write_atomic(path, &bytes)?;
    Ok(bytes.len() as u64)
}

/// A loaded snapshot.
pub struct Snapshot {
    /// The store as the snapshot has it.
    pub store: Store,
    /// The first journal segment the snapshot does not include.
    pub epoch: u64,
    /// Size of the file in bytes (0 when there is none).
    pub len: u64,
}

/// Loads the snapshot at `path`; a missing file gives a fresh store.
pub fn read_snapshot(path: &Path) -> io::Result<Snapshot> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(Snapshot {
                store: Store::new(),
                epoch: 0,
                len: 0,
            })
        }
        Err(e) => return Err(e),
    };
    let (epoch, body) = match bytes.strip_prefix(HEADER_MAGIC.as_slice()) {
        Some(rest) if rest.len() >= 8 => {
            let (epoch, body) = rest.split_at(8);
            (u64::from_le_bytes(epoch.try_into().expect("8 bytes")), body)
        }
        _ => (0, bytes.as_slice()),
    };
    let store = Store::restore(body).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {e}", path.display()),
        )
    })?;
    Ok(Snapshot {
        store,
        epoch,
        len: bytes.len() as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_is_a_fresh_store_and_damage_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        assert_eq!(read_snapshot(&path).unwrap().store.node_count(), 3);
        write_snapshot(&path, 7, &Store::new()).unwrap();
        assert!(!temp_path(&path).exists());
        let s = read_snapshot(&path).unwrap();
        assert_eq!((s.store.node_count(), s.epoch), (3, 7));
        fs::write(&path, b"garbage").unwrap();
        let err = read_snapshot(&path).err().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("not a xenrx XenStore state file"));
    }

    #[test]
    fn a_snapshot_of_the_earlier_format_loads_as_epoch_zero() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        write_atomic(&path, &Store::new().snapshot()).unwrap();
        let s = read_snapshot(&path).unwrap();
        assert_eq!((s.store.node_count(), s.epoch), (3, 0));
    }
}
