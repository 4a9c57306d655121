//! Changes to the store's persistent state, one request at a time, for the
//! daemon's journal.
//!
//! While journaling is on, the store remembers what each change replaced:
//! the earlier value of every node it touched and, for the rare requests
//! that can change domains, quotas or the special nodes' permissions, a copy
//! of those small tables. From that the daemon gets a record of the new
//! values (its size follows the change, not the store) to append to the
//! journal, and, if the record cannot be made durable, puts the old values
//! back so the change never happened.
//!
//! A record is a list of operations, each a tag byte and its fields in the
//! encoding of the state file.

use std::collections::{BTreeSet, HashMap};

use super::persist::{Reader, Writer};
use super::quota::Quotas;
use super::tree::Node;
use super::{Domain, RestoreError, Store};
use crate::wire::perms::Perm;

const TAG_GENERATION: u8 = 1;
const TAG_NODE: u8 = 2;
const TAG_NODE_GONE: u8 = 3;
const TAG_SPECIAL: u8 = 4;
const TAG_SPECIAL_GONE: u8 = 5;
const TAG_DOMAIN: u8 = 6;
const TAG_DOMAIN_GONE: u8 = 7;
const TAG_QUOTAS: u8 = 8;

/// The tables that change rarely and only by privileged requests or the
/// hypervisor's reports: copied whole before such a change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Meta {
    special: HashMap<String, Vec<Perm>>,
    domains: HashMap<u32, Domain>,
    quotas: Quotas,
}

/// One change to the persistent state and what it replaced.
#[derive(Debug, Default)]
pub struct ChangeSet {
    nodes: Vec<(String, Option<Node>)>,
    meta: Option<Meta>,
}

impl ChangeSet {
    /// Number of nodes the change touched.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }
}

impl Store {
    /// Starts journaling: from now on every change to the persistent state
    /// is remembered until [`Store::take_change`] hands it out.
    pub fn start_journal(&mut self) {
        self.tree.track();
        self.journaled = true;
    }

    /// Copies the rarely-changed tables (domains, quotas, special-node
    /// permissions) before something may change them: the engine's own
    /// requests do it, and so must a caller changing the store directly
    /// (the daemon's inspection hook).
    pub fn before_meta_change(&mut self) {
        if self.journaled && self.meta_before.is_none() {
            self.meta_before = Some(self.meta());
        }
    }

    fn meta(&self) -> Meta {
        Meta {
            special: self.special.clone(),
            domains: self.domains.clone(),
            quotas: self.quotas.clone(),
        }
    }

    /// What changed since the last call, or `None` if nothing persistent did.
    pub fn take_change(&mut self) -> Option<ChangeSet> {
        let nodes = self.tree.take_touched();
        let meta = self.meta_before.take().filter(|before| {
            before.special != self.special
                || before.domains != self.domains
                || before.quotas != self.quotas
        });
        if nodes.is_empty() && meta.is_none() {
            return None;
        }
        Some(ChangeSet { nodes, meta })
    }

    /// The journal record of a change: the new value of everything it
    /// touched.
    pub fn record(&self, change: &ChangeSet) -> Vec<u8> {
        let mut w = Writer(Vec::with_capacity(64 + change.nodes.len() * 96));
        w.u8(TAG_GENERATION);
        w.u64(self.tree.generation());
        for (path, _) in &change.nodes {
            match self.tree.get(path) {
                Some(node) => {
                    w.u8(TAG_NODE);
                    w.node(path, node);
                }
                None => {
                    w.u8(TAG_NODE_GONE);
                    w.bytes(path.as_bytes());
                }
            }
        }
        if let Some(before) = &change.meta {
            let names: BTreeSet<&String> =
                before.special.keys().chain(self.special.keys()).collect();
            for name in names {
                match self.special.get(name) {
                    Some(perms) if before.special.get(name) != Some(perms) => {
                        w.u8(TAG_SPECIAL);
                        w.bytes(name.as_bytes());
                        w.perms(perms);
                    }
                    Some(_) => {}
                    None => {
                        w.u8(TAG_SPECIAL_GONE);
                        w.bytes(name.as_bytes());
                    }
                }
            }
            let ids: BTreeSet<u32> = before
                .domains
                .keys()
                .chain(self.domains.keys())
                .copied()
                .collect();
            for id in ids {
                match self.domains.get(&id) {
                    Some(d) if before.domains.get(&id) != Some(d) => {
                        w.u8(TAG_DOMAIN);
                        w.domain(id, d);
                    }
                    Some(_) => {}
                    None => {
                        w.u8(TAG_DOMAIN_GONE);
                        w.u32(id);
                    }
                }
            }
            if before.quotas != self.quotas {
                w.u8(TAG_QUOTAS);
                w.quotas(&self.quotas);
            }
        }
        w.0
    }

    /// Takes a change back: everything it touched gets its earlier value.
    /// Generations stay as they are, so a transaction that saw the undone
    /// value still conflicts.
    pub fn undo(&mut self, change: ChangeSet) {
        for (path, before) in change.nodes {
            if let Some(now) = self.tree.get(&path) {
                self.usage.account(now, -1);
            }
            if let Some(before) = &before {
                self.usage.account(before, 1);
            }
            self.tree.put_back(path, before);
        }
        if let Some(meta) = change.meta {
            self.special = meta.special;
            self.domains = meta.domains;
            self.quotas = meta.quotas;
        }
    }

    /// Applies a journal record to a store being restored. Call
    /// [`Store::finish_replay`] after the last one.
    pub fn replay(&mut self, record: &[u8]) -> Result<(), RestoreError> {
        let mut r = Reader {
            data: record,
            pos: 0,
        };
        while r.pos < record.len() {
            match r.u8()? {
                TAG_GENERATION => {
                    let generation = r.u64()?;
                    self.tree.raise_generation(generation);
                }
                TAG_NODE => {
                    let (path, node) = r.node()?;
                    self.tree.insert_raw(path, node);
                }
                TAG_NODE_GONE => {
                    self.tree.put_back(r.string()?, None);
                }
                TAG_SPECIAL => {
                    let name = r.string()?;
                    let perms = r.perms()?;
                    self.special.insert(name, perms);
                }
                TAG_SPECIAL_GONE => {
                    self.special.remove(&r.string()?);
                }
                TAG_DOMAIN => {
                    let (id, d) = r.domain()?;
                    self.domains.insert(id, d);
                }
                TAG_DOMAIN_GONE => {
                    self.domains.remove(&r.u32()?);
                }
                TAG_QUOTAS => self.quotas = r.quotas()?,
                tag => return Err(RestoreError(format!("unknown journal operation {tag}"))),
            }
        }
        Ok(())
    }

    /// Ends a replay: recomputes what each domain owns and checks that the
    /// result is a consistent store.
    pub fn finish_replay(&mut self) -> Result<(), RestoreError> {
        self.usage = self.tree.usage();
        self.check().map_err(RestoreError)
    }
}
