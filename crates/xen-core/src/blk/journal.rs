//! What a block queue must remember across a crash of its process, in a
//! small file that a restarted backend maps again (on tmpfs, `/run/xenrx`:
//! it has to outlive the process, not the host).
//!
//! A queue answers requests in the order it took them, so the ring's own
//! `rsp_prod` says which were answered: every request before it. What the
//! ring cannot say is what the requests from `rsp_prod` to the last one
//! taken were: their slots may hold responses written but not yet
//! published when the process died (a response is written into the slot of
//! its own request). So each request is copied here as it is taken (the
//! private copy the queue judges anyway: about a hundred bytes, no system
//! call), and the count of requests taken is stored after it. A restarted
//! queue serves the copies from `rsp_prod` up to that count again, then
//! takes the rest from the ring as usual.
//!
//! Nothing needs a barrier or a sync: the file is only read after the
//! process that wrote it has ended (its stores are then all in the page
//! cache, in any order), or after it handed over deliberately.
//!
//! Layout (little-endian): 128 bytes of header (magic, slot size, slot
//! count, the ring it belongs to, the count of requests taken), then one
//! slot per ring slot. Other ring-based backends keep the same kind of
//! journal with their own magic and ring identity ([`QueueJournal::create_for`]:
//! a vif's rings).

use std::fs::OpenOptions;
use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use super::backend::{RingConfig, MAX_RING_PAGE_ORDER};
use crate::platform::memory::Mmap;
use crate::ring::blkif::BlkifProtocol;

const MAGIC: &[u8; 8] = b"XRXBLKJ1";
const HEADER: usize = 128;
const OFF_SLOT_SIZE: usize = 8;
const OFF_SLOTS: usize = 12;
/// The ring's identity, word by word; a block ring's is its frontend, its
/// port, its layout, its page count and its pages' grant references.
const OFF_FRONTEND: usize = 16;
const OFF_TAKEN: usize = OFF_FRONTEND + 4 * (4 + (1 << MAX_RING_PAGE_ORDER));
/// Words of ring identity a header holds, from [`OFF_FRONTEND`] on.
pub const MAX_IDENTITY: usize = (OFF_TAKEN - OFF_FRONTEND) / 4;

/// The journal of one queue: the requests it took, by ring index.
pub struct QueueJournal {
    map: Mmap,
    path: PathBuf,
    slots: u32,
    slot_size: usize,
}

impl std::fmt::Debug for QueueJournal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueJournal")
            .field("path", &self.path)
            .field("slots", &self.slots)
            .field("taken", &self.taken())
            .finish()
    }
}

fn invalid(path: &Path, why: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{}: {why}", path.display()),
    )
}

/// The words that name a block ring: a journal of another ring (the
/// frontend reconnected meanwhile) is not this one's.
fn identity(ring: &RingConfig) -> Vec<u32> {
    let mut words = vec![
        u32::from(ring.frontend),
        ring.remote_port,
        match ring.protocol {
            BlkifProtocol::X86_64 => 64,
            BlkifProtocol::X86_32 => 32,
        },
        ring.ring_refs.len() as u32,
    ];
    words.extend(ring.ring_refs.iter().copied());
    words
}

impl QueueJournal {
    fn map(path: &Path, create: bool, slots: u32, slot_size: usize) -> io::Result<QueueJournal> {
        let len = HEADER + slots as usize * slot_size;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(create)
            .open(path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        if create {
            file.set_len(len as u64)?;
        } else if file.metadata()?.len() != len as u64 {
            return Err(invalid(path, "not the size of this ring's journal"));
        }
        let map = Mmap::map_fd(file.as_fd(), 0, len, true)?;
        Ok(QueueJournal {
            map,
            path: path.to_owned(),
            slots,
            slot_size,
        })
    }

    /// A new journal for `ring` (`slots` slots of `slot_size` bytes), its
    /// count of requests taken at `start`; replaces any file at `path`.
    pub fn create(
        path: &Path,
        ring: &RingConfig,
        slots: u32,
        slot_size: usize,
        start: u32,
    ) -> io::Result<QueueJournal> {
        QueueJournal::create_for(path, MAGIC, &identity(ring), slots, slot_size, start)
    }

    /// The journal a queue of `ring` left at `path`, refused unless it is
    /// that ring's, with the same slots.
    pub fn open(
        path: &Path,
        ring: &RingConfig,
        slots: u32,
        slot_size: usize,
    ) -> io::Result<QueueJournal> {
        QueueJournal::open_for(path, MAGIC, &identity(ring), slots, slot_size)
    }

    /// A new journal of any ring: `magic` says what kind of queue keeps it,
    /// `identity` (at most [`MAX_IDENTITY`] words) which ring it is.
    pub fn create_for(
        path: &Path,
        magic: &[u8; 8],
        identity: &[u32],
        slots: u32,
        slot_size: usize,
        start: u32,
    ) -> io::Result<QueueJournal> {
        if identity.len() > MAX_IDENTITY {
            return Err(invalid(path, "too many ring pages"));
        }
        let j = QueueJournal::map(path, true, slots, slot_size)?;
        let mem = j.map.mem();
        let header = |offset: usize, v: u32| mem.store_u32(offset, v).expect("in the header");
        mem.write(0, magic).expect("in the header");
        header(OFF_SLOT_SIZE, slot_size as u32);
        header(OFF_SLOTS, slots);
        for (i, v) in identity.iter().enumerate() {
            header(OFF_FRONTEND + 4 * i, *v);
        }
        j.set_taken(start);
        Ok(j)
    }

    /// The journal of any ring left at `path` (see [`QueueJournal::create_for`]),
    /// refused unless it has that magic, that identity and the same slots.
    pub fn open_for(
        path: &Path,
        magic: &[u8; 8],
        identity: &[u32],
        slots: u32,
        slot_size: usize,
    ) -> io::Result<QueueJournal> {
        let j = QueueJournal::map(path, false, slots, slot_size)?;
        let mem = j.map.mem();
        let mut found = [0u8; 8];
        mem.read(0, &mut found).expect("in the header");
        let field = |offset: usize| mem.load_u32(offset).expect("in the header");
        if &found != magic {
            return Err(invalid(path, "not a journal of this kind of xenrx queue"));
        }
        if field(OFF_SLOT_SIZE) as usize != slot_size || field(OFF_SLOTS) != slots {
            return Err(invalid(path, "slots of another size or number"));
        }
        if identity.len() > MAX_IDENTITY
            || identity
                .iter()
                .enumerate()
                .any(|(i, v)| field(OFF_FRONTEND + 4 * i) != *v)
        {
            return Err(invalid(path, "the journal of another ring"));
        }
        Ok(j)
    }

    /// Keeps a copy of the request taken as number `seq` (its ring index).
    pub fn record(&self, seq: u32, request: &[u8]) {
        let len = request.len().min(self.slot_size);
        let at = HEADER + (seq % self.slots) as usize * self.slot_size;
        self.map
            .mem()
            .write(at, &request[..len])
            .expect("slot inside the journal");
    }

    /// The copy of request `seq`, into `out` (up to the slot size).
    pub fn request(&self, seq: u32, out: &mut [u8]) {
        let len = out.len().min(self.slot_size);
        let at = HEADER + (seq % self.slots) as usize * self.slot_size;
        self.map
            .mem()
            .read(at, &mut out[..len])
            .expect("slot inside the journal");
    }

    /// Requests taken so far: the ring index of the next one.
    pub fn set_taken(&self, taken: u32) {
        self.map
            .mem()
            .atomic_u32(OFF_TAKEN)
            .expect("in the header")
            .store(taken, Ordering::Release);
    }

    /// What [`QueueJournal::set_taken`] last stored.
    pub fn taken(&self) -> u32 {
        self.map
            .mem()
            .load_u32_with(OFF_TAKEN, Ordering::Acquire)
            .expect("in the header")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(port: u32) -> RingConfig {
        RingConfig {
            frontend: 3,
            ring_refs: vec![8, 9],
            remote_port: port,
            protocol: BlkifProtocol::X86_64,
            persistent: true,
        }
    }

    #[test]
    fn a_journal_keeps_the_requests_taken_and_belongs_to_one_ring() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q0");
        let j = QueueJournal::create(&path, &ring(5), 4, 112, 7).unwrap();
        assert_eq!(j.taken(), 7);
        j.record(7, &[0xaa; 112]);
        j.record(8, &[0xbb; 112]);
        j.set_taken(9);
        drop(j);
        let j = QueueJournal::open(&path, &ring(5), 4, 112).unwrap();
        assert_eq!(j.taken(), 9);
        let mut out = [0u8; 112];
        j.request(8, &mut out);
        assert_eq!(out, [0xbb; 112]);
        // Slot 11 is slot 7's place again, four requests later.
        j.request(11, &mut out);
        assert_eq!(out, [0xaa; 112]);
        // Another ring, other slots, or not a journal at all: refused.
        let err = QueueJournal::open(&path, &ring(6), 4, 112).unwrap_err();
        assert!(err.to_string().contains("another ring"), "{err}");
        assert!(QueueJournal::open(&path, &ring(5), 8, 112).is_err());
        assert!(QueueJournal::open(&path, &ring(5), 4, 64).is_err());
        std::fs::write(&path, vec![0u8; HEADER + 4 * 112]).unwrap();
        let err = QueueJournal::open(&path, &ring(5), 4, 112).unwrap_err();
        assert!(
            err.to_string().contains("not a journal of this kind"),
            "{err}"
        );
        assert!(QueueJournal::open(&dir.path().join("none"), &ring(5), 4, 112).is_err());
    }
}
