//! The store's persistent state (nodes, special-node permissions, domains,
//! quotas) as bytes, for the daemon's state file. Connections, watches and
//! transactions are not persistent: clients re-register after a restart.
//!
//! Layout, little-endian: magic, version, then sections of length-prefixed
//! records, then an FNV-1a hash of everything before it, so that a damaged
//! file is refused rather than half-loaded.

use std::collections::HashMap;
use std::fmt;

use super::quota::{QuotaKind, Quotas};
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

pub(super) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

pub(super) struct Writer(pub(super) Vec<u8>);

impl Writer {
    pub(super) fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    pub(super) fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(super) fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(super) fn bytes(&mut self, b: &[u8]) {
        self.u32(b.len() as u32);
        self.0.extend_from_slice(b);
    }
    pub(super) fn perms(&mut self, perms: &[Perm]) {
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
    pub(super) fn node(&mut self, path: &str, n: &Node) {
        self.bytes(path.as_bytes());
        self.bytes(&n.value);
        self.u64(n.generation);
        self.perms(&n.perms);
        self.u32(n.children.len() as u32);
        for c in &n.children {
            self.bytes(c.as_bytes());
        }
    }
    pub(super) fn domain(&mut self, id: u32, d: &Domain) {
        self.u32(id);
        self.u8(u8::from(d.introduced) | (u8::from(d.shutdown_reported) << 1));
        self.u64(d.gfn as u64);
        self.u32(d.evtchn);
        self.u64(d.target.map_or(u64::MAX, u64::from));
        self.u32(d.features);
    }
    pub(super) fn quotas(&mut self, quotas: &Quotas) {
        let mut entries = quotas.entries();
        entries.sort_by_key(|(d, k, _)| (*d, k.name()));
        self.u32(entries.len() as u32);
        for (domid, kind, value) in entries {
            self.u64(domid.map_or(u64::MAX, u64::from));
            self.bytes(kind.name().as_bytes());
            self.u32(value);
        }
    }
}

pub(super) struct Reader<'a> {
    pub(super) data: &'a [u8],
    pub(super) pos: usize,
}

impl<'a> Reader<'a> {
    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8], RestoreError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.data.len())
            .ok_or_else(|| RestoreError("truncated".into()))?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    pub(super) fn u8(&mut self) -> Result<u8, RestoreError> {
        Ok(self.take(1)?[0])
    }
    pub(super) fn u32(&mut self) -> Result<u32, RestoreError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    pub(super) fn u64(&mut self) -> Result<u64, RestoreError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    pub(super) fn bytes(&mut self) -> Result<&'a [u8], RestoreError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    pub(super) fn string(&mut self) -> Result<String, RestoreError> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| RestoreError("bad name".into()))
    }
    /// A count of records, each at least `min` bytes: bounds allocations by
    /// the data actually present.
    pub(super) fn count(&mut self, min: usize) -> Result<usize, RestoreError> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min) > self.data.len() - self.pos {
            return Err(RestoreError("record count beyond the data".into()));
        }
        Ok(n)
    }
    pub(super) fn perms(&mut self) -> Result<Vec<Perm>, RestoreError> {
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
    pub(super) fn node(&mut self) -> Result<(String, Node), RestoreError> {
        let path = self.string()?;
        let value = self.bytes()?.to_vec();
        let generation = self.u64()?;
        let perms = self.perms()?;
        let children = (0..self.count(4)?)
            .map(|_| self.string())
            .collect::<Result<Vec<_>, _>>()?;
        let mut node = Node::new(value, perms);
        node.children = children;
        node.generation = generation;
        Ok((path, node))
    }
    pub(super) fn domain(&mut self) -> Result<(u32, Domain), RestoreError> {
        let id = self.u32()?;
        let flags = self.u8()?;
        let gfn = self.u64()? as i64;
        let evtchn = self.u32()?;
        let target = self.u64()?;
        let features = self.u32()?;
        Ok((
            id,
            Domain {
                introduced: flags & 1 != 0,
                shutdown_reported: flags & 2 != 0,
                gfn,
                evtchn,
                target: u32::try_from(target).ok(),
                features,
            },
        ))
    }
    pub(super) fn quotas(&mut self) -> Result<Quotas, RestoreError> {
        let mut quotas = Quotas::default();
        for _ in 0..self.count(16)? {
            let domid = self.u64()?;
            let kind = QuotaKind::from_name(&self.string()?)
                .ok_or_else(|| RestoreError("unknown quota".into()))?;
            let value = self.u32()?;
            match u32::try_from(domid) {
                Ok(d) => quotas.set_domain(d, kind, value),
                Err(_) => quotas.set_global(kind, value),
            }
        }
        Ok(quotas)
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
            w.node(path, self.tree.get(path).expect("listed"));
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
            w.domain(*id, d);
        }
        w.quotas(&self.quotas);
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
            let (path, node) = r.node()?;
            tree.insert_raw(path, node);
        }
        tree.raise_generation(generation);
        let usage = tree.usage();
        let mut store = Store::from_parts(tree, usage);
        // The file lists the special nodes itself; no defaults fill a gap.
        store.special.clear();
        for _ in 0..r.count(9)? {
            let name = r.string()?;
            let perms = r.perms()?;
            store.special.insert(name, perms);
        }
        let mut domains = HashMap::new();
        for _ in 0..r.count(25)? {
            let (id, d) = r.domain()?;
            domains.insert(id, d);
        }
        store.domains = domains;
        store.quotas = r.quotas()?;
        if r.pos != body.len() {
            return Err(RestoreError("trailing bytes".into()));
        }
        store.check().map_err(RestoreError)?;
        Ok(store)
    }
}
