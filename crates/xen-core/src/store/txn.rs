//! Transactions with optimistic concurrency. A transaction copies each node
//! the first time it touches it (so its reads are stable), remembers the
//! generation it saw, and at commit fails with EAGAIN if any of those nodes
//! changed since: the node-level rule C xenstored uses.

use std::collections::{HashMap, HashSet};

use super::tree::{Node, Tree, Usage, UsageTable};
use super::watch::Change;
use crate::wire::Errno;

/// An open transaction of one connection.
#[derive(Debug, Default)]
pub struct Txn {
    /// The transaction's copy of every node it touched; `None`: absent.
    overlay: HashMap<String, Option<Node>>,
    /// Generation of each touched node when first touched; `None`: absent.
    seen: HashMap<String, Option<u64>>,
    /// Nodes the transaction changed.
    dirty: HashSet<String>,
    /// Usage changes per domain, applied at commit.
    usage: HashMap<u32, Usage>,
    /// Watch events to fire if and when the transaction commits.
    pub changes: Vec<Change>,
}

impl Txn {
    /// A transaction that has touched nothing yet.
    pub fn new() -> Txn {
        Txn::default()
    }

    /// Number of nodes touched, for the transaction-nodes quota.
    pub fn touched(&self) -> usize {
        self.overlay.len()
    }

    /// The transaction's view of a node, copying it in on first access.
    pub fn get<'t>(&'t mut self, tree: &Tree, path: &str) -> Option<&'t Node> {
        self.load(tree, path);
        self.overlay.get(path).and_then(Option::as_ref)
    }

    /// Puts a node (new or replaced) into the transaction.
    pub fn put(&mut self, tree: &Tree, path: &str, node: Node) {
        self.load(tree, path);
        if let Some(Some(old)) = self.overlay.get(path) {
            let old = old.clone();
            Self::account(&mut self.usage, &old, -1);
        }
        Self::account(&mut self.usage, &node, 1);
        self.overlay.insert(path.to_owned(), Some(node));
        self.dirty.insert(path.to_owned());
    }

    /// Removes a node (not its children) from the transaction's view.
    pub fn remove(&mut self, tree: &Tree, path: &str) -> Option<Node> {
        self.load(tree, path);
        let old = self.overlay.insert(path.to_owned(), None).flatten();
        if let Some(old) = &old {
            Self::account(&mut self.usage, old, -1);
        }
        self.dirty.insert(path.to_owned());
        old
    }

    /// Live usage of a domain with this transaction's changes applied.
    pub fn usage(&self, live: &UsageTable, domid: u32) -> Usage {
        let mut u = live.get(domid);
        if let Some(d) = self.usage.get(&domid) {
            u.nodes += d.nodes;
            u.memory += d.memory;
        }
        u
    }

    /// Checks for conflicts and, if there are none, applies the transaction
    /// to the live tree. Returns the watch events to fire.
    pub fn commit(self, tree: &mut Tree, usage: &mut UsageTable) -> Result<Vec<Change>, Errno> {
        let conflict = self
            .seen
            .iter()
            .any(|(path, gen)| tree.get(path).map(|n| n.generation) != *gen);
        if conflict {
            return Err(Errno::EAGAIN);
        }
        let mut overlay = self.overlay;
        for path in &self.dirty {
            match overlay.remove(path).flatten() {
                Some(node) => {
                    tree.insert(path, node);
                }
                None => {
                    tree.remove(path);
                }
            }
        }
        for (domid, delta) in self.usage {
            usage.apply(domid, delta);
        }
        Ok(self.changes)
    }

    fn load(&mut self, tree: &Tree, path: &str) {
        if !self.overlay.contains_key(path) {
            let live = tree.get(path);
            self.seen
                .insert(path.to_owned(), live.map(|n| n.generation));
            self.overlay.insert(path.to_owned(), live.cloned());
        }
    }

    fn account(usage: &mut HashMap<u32, Usage>, node: &Node, sign: i64) {
        let u = usage.entry(node.owner()).or_default();
        u.nodes += sign;
        u.memory += sign * node.size() as i64;
    }
}
