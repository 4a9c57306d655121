//! Watches: registration, the index that finds the watches a change fires,
//! and the matching rules of C xenstored.

use std::collections::HashMap;

use super::path::{is_within, self_and_ancestors};
use super::ConnId;
use crate::wire::perms::Perm;

/// How a change matches watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatchKind {
    /// Watches on the changed node or any ancestor (within their depth).
    Subtree,
    /// Watches set exactly on the node (descendants of a removed subtree).
    Exact,
    /// Special event without a domain: exact name, watches without depth.
    SpecialPlain,
    /// Special event with a domain (`@releaseDomain/5`): watches set exactly
    /// on that name, or on the plain name with a depth of 1 or more.
    SpecialDomain,
}

/// A change that fires watches, with the permissions that decide who may see
/// it: the node's (before removal, after creation) and, for a permission
/// change, the old ones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// Absolute or special name of the changed node.
    pub path: String,
    /// Matching rule.
    pub kind: MatchKind,
    /// Permissions of the node.
    pub perms: Vec<Perm>,
    /// Permissions before a SET_PERMS.
    pub old_perms: Option<Vec<Perm>>,
}

/// Identifier of a registered watch.
pub type WatchId = u64;

/// A registered watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Watch {
    /// Connection that registered it.
    pub conn: ConnId,
    /// Absolute or special name watched.
    pub path: String,
    /// The caller's token, returned in every event.
    pub token: String,
    /// Length of the home-directory prefix when the watch was relative: event
    /// paths are reported without it.
    pub prefix_len: usize,
    /// Levels below `path` that match; `None`: all.
    pub depth: Option<u32>,
}

impl Watch {
    /// The path an event for `changed` reports to this watch.
    pub fn event_path<'p>(&self, changed: &'p str) -> &'p str {
        &changed[self.prefix_len.min(changed.len())..]
    }

    fn matches(&self, change: &Change) -> bool {
        match change.kind {
            MatchKind::Subtree => is_within(&change.path, &self.path, self.depth),
            MatchKind::Exact => change.path == self.path,
            MatchKind::SpecialPlain => change.path == self.path && self.depth.is_none(),
            MatchKind::SpecialDomain => {
                change.path == self.path
                    || (self.depth.is_some_and(|d| d > 0)
                        && is_within(&change.path, &self.path, self.depth))
            }
        }
    }
}

/// All watches, indexed by watched name and by connection, so that a change
/// looks up only the watches on its own name and its ancestors.
#[derive(Debug, Default)]
pub struct WatchIndex {
    watches: HashMap<WatchId, Watch>,
    by_path: HashMap<String, Vec<WatchId>>,
    by_conn: HashMap<ConnId, Vec<WatchId>>,
    next: WatchId,
}

impl WatchIndex {
    /// Registers a watch.
    pub fn add(&mut self, watch: Watch) -> WatchId {
        self.next += 1;
        let id = self.next;
        self.by_path.entry(watch.path.clone()).or_default().push(id);
        self.by_conn.entry(watch.conn).or_default().push(id);
        self.watches.insert(id, watch);
        id
    }

    /// The watch of `conn` on `path` with `token`.
    pub fn find(&self, conn: ConnId, path: &str, token: &str) -> Option<WatchId> {
        self.by_path.get(path)?.iter().copied().find(|id| {
            let w = &self.watches[id];
            w.conn == conn && w.token == token
        })
    }

    /// Removes one watch.
    pub fn remove(&mut self, id: WatchId) -> Option<Watch> {
        let w = self.watches.remove(&id)?;
        if let Some(ids) = self.by_path.get_mut(&w.path) {
            ids.retain(|i| *i != id);
            if ids.is_empty() {
                self.by_path.remove(&w.path);
            }
        }
        if let Some(ids) = self.by_conn.get_mut(&w.conn) {
            ids.retain(|i| *i != id);
            if ids.is_empty() {
                self.by_conn.remove(&w.conn);
            }
        }
        Some(w)
    }

    /// Removes every watch of a connection.
    pub fn remove_conn(&mut self, conn: ConnId) {
        for id in self.by_conn.remove(&conn).unwrap_or_default() {
            if let Some(w) = self.watches.remove(&id) {
                if let Some(ids) = self.by_path.get_mut(&w.path) {
                    ids.retain(|i| *i != id);
                    if ids.is_empty() {
                        self.by_path.remove(&w.path);
                    }
                }
            }
        }
    }

    /// Number of watches of a connection.
    pub fn count(&self, conn: ConnId) -> usize {
        self.by_conn.get(&conn).map_or(0, Vec::len)
    }

    /// Number of watches of all the given connections: a domain's watches
    /// over every connection it has open, for the per-domain quota.
    pub fn count_all(&self, conns: impl IntoIterator<Item = ConnId>) -> usize {
        conns.into_iter().map(|c| self.count(c)).sum()
    }

    /// Total number of watches.
    pub fn len(&self) -> usize {
        self.watches.len()
    }

    /// Whether no watch is registered.
    pub fn is_empty(&self) -> bool {
        self.watches.is_empty()
    }

    /// Watches a change fires, before permission filtering, in registration
    /// order per watched name, innermost name first.
    pub fn matching<'a>(&'a self, change: &'a Change) -> impl Iterator<Item = &'a Watch> + 'a {
        let names: Vec<&str> = match change.kind {
            MatchKind::Exact | MatchKind::SpecialPlain => vec![change.path.as_str()],
            MatchKind::Subtree | MatchKind::SpecialDomain => {
                self_and_ancestors(&change.path).collect()
            }
        };
        names
            .into_iter()
            .filter_map(|name| self.by_path.get(name))
            .flatten()
            .map(|id| &self.watches[id])
            .filter(move |w| w.matches(change))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::perms::Access;

    fn watch(conn: ConnId, path: &str, depth: Option<u32>) -> Watch {
        Watch {
            conn,
            path: path.into(),
            token: "t".into(),
            prefix_len: 0,
            depth,
        }
    }

    fn change(path: &str, kind: MatchKind) -> Change {
        Change {
            path: path.into(),
            kind,
            perms: vec![Perm::new(0, Access::None)],
            old_perms: None,
        }
    }

    fn hits(index: &WatchIndex, c: &Change) -> Vec<String> {
        index.matching(c).map(|w| w.path.clone()).collect()
    }

    #[test]
    fn subtree_changes_fire_watches_on_the_node_and_ancestors() {
        let mut idx = WatchIndex::default();
        for p in ["/", "/a", "/a/b", "/a/b/c", "/x"] {
            idx.add(watch(1, p, None));
        }
        assert_eq!(
            hits(&idx, &change("/a/b", MatchKind::Subtree)),
            ["/a/b", "/a", "/"]
        );
        assert_eq!(hits(&idx, &change("/a/b/c", MatchKind::Exact)), ["/a/b/c"]);
    }

    #[test]
    fn depth_limits_matches() {
        let mut idx = WatchIndex::default();
        idx.add(watch(1, "/a", Some(1)));
        assert_eq!(hits(&idx, &change("/a/b", MatchKind::Subtree)).len(), 1);
        assert!(hits(&idx, &change("/a/b/c", MatchKind::Subtree)).is_empty());
    }

    #[test]
    fn special_events() {
        let mut idx = WatchIndex::default();
        idx.add(watch(1, "@releaseDomain", None));
        idx.add(watch(2, "@releaseDomain", Some(1)));
        idx.add(watch(3, "@releaseDomain/5", None));
        let plain: Vec<_> = idx
            .matching(&change("@releaseDomain", MatchKind::SpecialPlain))
            .map(|w| w.conn)
            .collect();
        assert_eq!(plain, [1]);
        let mut dom: Vec<_> = idx
            .matching(&change("@releaseDomain/5", MatchKind::SpecialDomain))
            .map(|w| w.conn)
            .collect();
        dom.sort();
        assert_eq!(dom, [2, 3]);
    }

    #[test]
    fn removal_by_connection() {
        let mut idx = WatchIndex::default();
        let a = idx.add(watch(1, "/a", None));
        idx.add(watch(2, "/a", None));
        assert_eq!(idx.find(1, "/a", "t"), Some(a));
        idx.remove_conn(1);
        assert_eq!(idx.count(1), 0);
        assert_eq!(idx.len(), 1);
        assert_eq!(idx.find(1, "/a", "t"), None);
    }

    #[test]
    fn relative_event_paths() {
        let w = Watch {
            prefix_len: "/local/domain/5/".len(),
            ..watch(1, "/local/domain/5/device", None)
        };
        assert_eq!(w.event_path("/local/domain/5/device/vbd"), "device/vbd");
    }
}
