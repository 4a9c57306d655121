//! The store's persistent state (nodes, special-node permissions, domains,
//! quotas) as bytes, for the daemon's state file. Connections, watches and
//! transactions are not persistent: clients re-register after a restart.
//!
//! Layout, little-endian: magic, version, then sections of length-prefixed
//! records, then an FNV-1a hash of everything before it, so that a damaged
//! file is refused rather than half-loaded.

use std::collections::HashMap;
use std::fmt;

use super::quota::QuotaKind;
use super::tree::{Node, Tree};
use super::{Domain, Store};
use crate::wire::perms::{Access, Perm};

const MAGIC: &[u8; 8] = b"XENRXST1";

/// Why a state file could not be loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoreError(pub String);

impl fmt::Display for RestoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid XenStore state: {}", self.0)
    }
}

impl std::error::Error for RestoreError {}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        self.u32(b.len() as u32);
        self.0.extend_from_slice(b);
    }
    fn perms(&mut self, perms: &[Perm]) {
        self.u32(perms.len() as u32);
        for p in perms {
            self.u32(p.domid);
            self.u8(match p.access {
                Access::None => 0,
                Access::Read => 1,
                Access::Write => 2,
                Access::Both => 3,
            });
        }
    }
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RestoreError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.data.len())
            .ok_or_else(|| RestoreError("truncated".into()))?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, RestoreError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, RestoreError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64, RestoreError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn bytes(&mut self) -> Result<&'a [u8], RestoreError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn string(&mut self) -> Result<String, RestoreError> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| RestoreError("bad name".into()))
    }
    /// A count of records, each at least `min` bytes: bounds allocations by
    /// the data actually present.
    fn count(&mut self, min: usize) -> Result<usize, RestoreError> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min) > self.data.len() - self.pos {
            return Err(RestoreError("record count beyond the data".into()));
        }
        Ok(n)
    }
    fn perms(&mut self) -> Result<Vec<Perm>, RestoreError> {
        let n = self.count(5)?;
        if n == 0 {
            return Err(RestoreError("empty permission list".into()));
        }
        (0..n)
            .map(|_| {
                let domid = self.u32()?;
                let access = match self.u8()? {
                    0 => Access::None,
                    1 => Access::Read,
                    2 => Access::Write,
                    3 => Access::Both,
                    _ => return Err(RestoreError("bad access".into())),
                };
                Ok(Perm::new(domid, access))
            })
            .collect()
    }
}

impl Store {
    /// The persistent state as bytes.
    pub fn snapshot(&self) -> Vec<u8> {
        let mut w = Writer(Vec::with_capacity(64 + self.tree.len() * 64));
        w.0.extend_from_slice(MAGIC);
        w.u64(self.tree.generation());
        let mut paths: Vec<&String> = self.tree.iter().map(|(p, _)| p).collect();
        paths.sort();
        w.u32(paths.len() as u32);
        for path in paths {
            let n = self.tree.get(path).expect("listed");
            w.bytes(path.as_bytes());
            w.bytes(&n.value);
            w.u64(n.generation);
            w.perms(&n.perms);
            w.u32(n.children.len() as u32);
            for c in &n.children {
                w.bytes(c.as_bytes());
            }
        }
        let mut special: Vec<_> = self.special.iter().collect();
        special.sort_by(|a, b| a.0.cmp(b.0));
        w.u32(special.len() as u32);
        for (name, perms) in special {
            w.bytes(name.as_bytes());
            w.perms(perms);
        }
        let mut domains: Vec<_> = self.domains.iter().collect();
        domains.sort_by_key(|(id, _)| **id);
        w.u32(domains.len() as u32);
        for (id, d) in domains {
            w.u32(*id);
            w.u8(u8::from(d.introduced) | (u8::from(d.shutdown_reported) << 1));
            w.u64(d.gfn as u64);
            w.u32(d.evtchn);
            w.u64(d.target.map_or(u64::MAX, u64::from));
            w.u32(d.features);
        }
        let quotas = self.quotas.entries();
        w.u32(quotas.len() as u32);
        for (domid, kind, value) in quotas {
            w.u64(domid.map_or(u64::MAX, u64::from));
            w.bytes(kind.name().as_bytes());
            w.u32(value);
        }
        let hash = fnv1a(&w.0);
        w.u64(hash);
        w.0
    }

    /// Rebuilds a store from [`Store::snapshot`] bytes, after checking that
    /// they are whole and consistent.
    pub fn restore(data: &[u8]) -> Result<Store, RestoreError> {
        if data.len() < MAGIC.len() + 8 || &data[..MAGIC.len()] != MAGIC {
            return Err(RestoreError("not a xenrx XenStore state file".into()));
        }
        let (body, hash) = data.split_at(data.len() - 8);
        if fnv1a(body) != u64::from_le_bytes(hash.try_into().expect("8 bytes")) {
            return Err(RestoreError("checksum mismatch".into()));
        }
        let mut r = Reader {
            data: body,
            pos: MAGIC.len(),
        };
        let generation = r.u64()?;
        let mut tree = Tree::empty();
        for _ in 0..r.count(20)? {
            let path = r.string()?;
            let value = r.bytes()?.to_vec();
            let node_gen = r.u64()?;
            let perms = r.perms()?;
            let children = (0..r.count(4)?)
                .map(|_| r.string())
                .collect::<Result<Vec<_>, _>>()?;
            let mut node = Node::new(value, perms);
            node.children = children;
            node.generation = node_gen;
            tree.insert_raw(path, node);
        }
        while tree.generation() < generation {
            tree.bump();
        }
        let usage = tree.usage();
        let mut store = Store::from_parts(tree, usage);
        for _ in 0..r.count(9)? {
            let name = r.string()?;
            let perms = r.perms()?;
            store.special.insert(name, perms);
        }
        let mut domains = HashMap::new();
        for _ in 0..r.count(25)? {
            let id = r.u32()?;
            let flags = r.u8()?;
            let gfn = r.u64()? as i64;
            let evtchn = r.u32()?;
            let target = r.u64()?;
            let features = r.u32()?;
            domains.insert(
                id,
                Domain {
                    introduced: flags & 1 != 0,
                    shutdown_reported: flags & 2 != 0,
                    gfn,
                    evtchn,
                    target: u32::try_from(target).ok(),
                    features,
                },
            );
        }
        store.domains = domains;
        for _ in 0..r.count(16)? {
            let domid = r.u64()?;
            let kind = QuotaKind::from_name(&r.string()?)
                .ok_or_else(|| RestoreError("unknown quota".into()))?;
            let value = r.u32()?;
            match u32::try_from(domid) {
                Ok(d) => store.quotas.set_domain(d, kind, value),
                Err(_) => store.quotas.set_global(kind, value),
            }
        }
        if r.pos != body.len() {
            return Err(RestoreError("trailing bytes".into()));
        }
        store.check().map_err(RestoreError)?;
        Ok(store)
    }
}
