//! One interface over the live tree and a transaction's copy of it, so every
//! node operation is written once.

use super::tree::{Node, Tree, Usage, UsageTable};
use super::txn::Txn;

/// Where a request's node operations go.
pub enum View<'a> {
    /// Straight to the live tree.
    Live {
        /// The tree.
        tree: &'a mut Tree,
        /// Per-domain usage, kept in step with the tree.
        usage: &'a mut UsageTable,
    },
    /// Into an open transaction.
    Txn {
        /// The live tree, read on first access.
        tree: &'a Tree,
        /// Live usage, to which the transaction's deltas are added.
        usage: &'a UsageTable,
        /// The transaction.
        txn: &'a mut Txn,
    },
}

impl View<'_> {
    /// The node with this absolute name.
    pub fn get(&mut self, path: &str) -> Option<&Node> {
        match self {
            View::Live { tree, .. } => tree.get(path),
            View::Txn { tree, txn, .. } => txn.get(tree, path),
        }
    }

    /// Whether the node exists.
    pub fn exists(&mut self, path: &str) -> bool {
        self.get(path).is_some()
    }

    /// Creates or replaces a node.
    pub fn put(&mut self, path: &str, node: Node) {
        match self {
            View::Live { tree, usage } => {
                usage.account(&node, 1);
                if let Some(old) = tree.insert(path, node) {
                    usage.account(&old, -1);
                }
            }
            View::Txn { tree, txn, .. } => txn.put(tree, path, node),
        }
    }

    /// Changes a node in place (a copy, inside a transaction). Returns false
    /// if the node does not exist.
    pub fn modify(&mut self, path: &str, f: impl FnOnce(&mut Node)) -> bool {
        match self {
            View::Live { tree, usage } => {
                let generation = tree.bump();
                let Some(node) = tree.get_mut(path) else {
                    return false;
                };
                usage.account(node, -1);
                f(node);
                node.generation = generation;
                usage.account(node, 1);
                true
            }
            View::Txn { tree, txn, .. } => {
                let Some(mut node) = txn.get(tree, path).cloned() else {
                    return false;
                };
                f(&mut node);
                txn.put(tree, path, node);
                true
            }
        }
    }

    /// Removes one node (not its children).
    pub fn remove(&mut self, path: &str) -> Option<Node> {
        match self {
            View::Live { tree, usage } => {
                let old = tree.remove(path)?;
                usage.account(&old, -1);
                Some(old)
            }
            View::Txn { tree, txn, .. } => txn.remove(tree, path),
        }
    }

    /// What a domain owns, as this view sees it.
    pub fn usage(&self, domid: u32) -> Usage {
        match self {
            View::Live { usage, .. } => usage.get(domid),
            View::Txn { usage, txn, .. } => txn.usage(usage, domid),
        }
    }
}
