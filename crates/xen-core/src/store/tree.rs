//! The node tree and per-domain usage accounting.

use std::collections::{HashMap, HashSet};

use crate::wire::perms::{Access, Perm};

/// One node: a binary value, a permission list (first entry: owner and
/// default access), children in creation order, and the generation of its
/// last change (used for transaction conflicts and DIRECTORY_PART).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// The value; any bytes.
    pub value: Vec<u8>,
    /// Permission list, never empty.
    pub perms: Vec<Perm>,
    /// Names of the children, in creation order.
    pub children: Vec<String>,
    /// Generation of the last change.
    pub generation: u64,
}

impl Node {
    /// A node with no children.
    pub fn new(value: Vec<u8>, perms: Vec<Perm>) -> Node {
        debug_assert!(!perms.is_empty());
        Node {
            value,
            perms,
            children: Vec::new(),
            generation: 0,
        }
    }

    /// The owning domain.
    pub fn owner(&self) -> u32 {
        self.perms[0].domid
    }

    /// Bytes the node occupies for the node-size and memory quotas: value,
    /// children names (NUL-terminated) and permission entries.
    pub fn size(&self) -> u64 {
        let children: usize = self.children.iter().map(|c| c.len() + 1).sum();
        (self.value.len() + children + self.perms.len() * 8) as u64
    }

    /// The children list as DIRECTORY sends it.
    pub fn children_payload(&self) -> Vec<u8> {
        crate::wire::payload::join(&self.children)
    }
}

/// Nodes and bytes a domain owns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Number of nodes.
    pub nodes: i64,
    /// Bytes of node data (see [`Node::size`]).
    pub memory: i64,
}

/// Usage of every domain that owns something.
#[derive(Clone, Debug, Default)]
pub struct UsageTable(HashMap<u32, Usage>);

impl UsageTable {
    /// Usage of one domain.
    pub fn get(&self, domid: u32) -> Usage {
        self.0.get(&domid).copied().unwrap_or_default()
    }

    /// Adds (or, with `sign` -1, removes) a node's share.
    pub fn account(&mut self, node: &Node, sign: i64) {
        let u = self.0.entry(node.owner()).or_default();
        u.nodes += sign;
        u.memory += sign * node.size() as i64;
    }

    /// Applies a delta recorded by a transaction.
    pub fn apply(&mut self, domid: u32, delta: Usage) {
        let u = self.0.entry(domid).or_default();
        u.nodes += delta.nodes;
        u.memory += delta.memory;
    }

    /// Every domain with a non-zero usage.
    pub fn iter(&self) -> impl Iterator<Item = (u32, Usage)> + '_ {
        self.0
            .iter()
            .filter(|(_, u)| **u != Usage::default())
            .map(|(d, u)| (*d, *u))
    }
}

/// All nodes by absolute name, with a global generation counter.
#[derive(Clone, Debug)]
pub struct Tree {
    nodes: HashMap<String, Node>,
    generation: u64,
    /// While a journaled change is in progress: each node's value before
    /// its first change, so the change can be written out or undone.
    touched: Option<Touched>,
}

/// Nodes changed since tracking began, with their earlier values.
#[derive(Clone, Debug, Default)]
pub struct Touched {
    /// Name and value before the first change (`None`: the node was absent).
    pub before: Vec<(String, Option<Node>)>,
    seen: HashSet<String>,
}

impl Tree {
    /// The initial tree of a fresh daemon: `/`, `/tool`, `/tool/xenstored`,
    /// all owned by dom0 with no access for others.
    pub fn new() -> Tree {
        let mut tree = Tree::empty();
        let perms = vec![Perm::new(0, Access::None)];
        let mut root = Node::new(Vec::new(), perms.clone());
        root.children.push("tool".into());
        let mut tool = Node::new(Vec::new(), perms.clone());
        tool.children.push("xenstored".into());
        tree.insert("/", root);
        tree.insert("/tool", tool);
        tree.insert("/tool/xenstored", Node::new(Vec::new(), perms));
        tree
    }

    /// A tree with no nodes at all (before a restore).
    pub fn empty() -> Tree {
        Tree {
            nodes: HashMap::new(),
            generation: 0,
            touched: None,
        }
    }

    /// Starts remembering the earlier value of every node changed from now
    /// on (see [`Tree::take_touched`]).
    pub fn track(&mut self) {
        self.touched.get_or_insert_with(Touched::default);
    }

    /// The nodes changed since [`Tree::track`] or the previous call, and
    /// keeps tracking. Empty when not tracking.
    pub fn take_touched(&mut self) -> Vec<(String, Option<Node>)> {
        match &mut self.touched {
            Some(t) => {
                t.seen.clear();
                std::mem::take(&mut t.before)
            }
            None => Vec::new(),
        }
    }

    fn note(&mut self, path: &str) {
        if let Some(t) = &mut self.touched {
            if t.seen.insert(path.to_owned()) {
                t.before
                    .push((path.to_owned(), self.nodes.get(path).cloned()));
            }
        }
    }

    /// Puts back a node's earlier value (undoing a change), untracked and
    /// keeping the generation it had.
    pub fn put_back(&mut self, path: String, node: Option<Node>) {
        match node {
            Some(n) => {
                self.nodes.insert(path, n);
            }
            None => {
                self.nodes.remove(&path);
            }
        }
    }

    /// The node with this absolute name.
    pub fn get(&self, path: &str) -> Option<&Node> {
        self.nodes.get(path)
    }

    /// Mutable access without a generation change (callers bump it).
    pub fn get_mut(&mut self, path: &str) -> Option<&mut Node> {
        self.note(path);
        self.nodes.get_mut(path)
    }

    /// Inserts or replaces a node, giving it a new generation.
    pub fn insert(&mut self, path: &str, mut node: Node) -> Option<Node> {
        node.generation = self.bump();
        self.note(path);
        self.nodes.insert(path.to_owned(), node)
    }

    /// Inserts a node keeping the generation it has (restore).
    pub fn insert_raw(&mut self, path: String, node: Node) {
        self.generation = self.generation.max(node.generation);
        self.nodes.insert(path, node);
    }

    /// Raises the generation counter to at least `generation` (restore).
    pub fn raise_generation(&mut self, generation: u64) {
        self.generation = self.generation.max(generation);
    }

    /// Removes a node (not its children).
    pub fn remove(&mut self, path: &str) -> Option<Node> {
        self.note(path);
        self.nodes.remove(path)
    }

    /// A new generation number.
    pub fn bump(&mut self) -> u64 {
        self.generation += 1;
        self.generation
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Every node, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Node)> {
        self.nodes.iter()
    }

    /// The highest generation handed out.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Recomputes per-domain usage from scratch.
    pub fn usage(&self) -> UsageTable {
        let mut t = UsageTable::default();
        for node in self.nodes.values() {
            t.account(node, 1);
        }
        t
    }
}

impl Default for Tree {
    fn default() -> Tree {
        Tree::new()
    }
}
