//! Quotas with C xenstored's defaults. They bind unprivileged domains only;
//! dom0 is exempt. A value of 0 disables that check, as in SET_QUOTA.

use std::collections::HashMap;

/// A quota XenStore knows, with the name GET_QUOTA/SET_QUOTA use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QuotaKind {
    /// Nodes a domain may own.
    Nodes,
    /// Watches per domain, over all its connections.
    Watches,
    /// Open transactions per domain, over all its connections.
    Transactions,
    /// Bytes of one node: value, permissions and the names of its children.
    NodeSize,
    /// Entries in a node's permission list.
    Permissions,
    /// Requests a connection may have outstanding.
    Outstanding,
    /// Bytes of node data a domain may own.
    Memory,
    /// Nodes one transaction may touch.
    TransactionNodes,
    /// Length of a path once a `/local/domain/<id>/` prefix is left out.
    PathLength,
}

impl QuotaKind {
    /// Every quota, in the order GET_QUOTA lists them.
    pub const ALL: [QuotaKind; 9] = [
        QuotaKind::Nodes,
        QuotaKind::Watches,
        QuotaKind::Transactions,
        QuotaKind::NodeSize,
        QuotaKind::Permissions,
        QuotaKind::Outstanding,
        QuotaKind::Memory,
        QuotaKind::TransactionNodes,
        QuotaKind::PathLength,
    ];

    /// The protocol name.
    pub fn name(self) -> &'static str {
        match self {
            QuotaKind::Nodes => "nodes",
            QuotaKind::Watches => "watches",
            QuotaKind::Transactions => "transactions",
            QuotaKind::NodeSize => "node-size",
            QuotaKind::Permissions => "permissions",
            QuotaKind::Outstanding => "outstanding",
            QuotaKind::Memory => "memory",
            QuotaKind::TransactionNodes => "transaction-nodes",
            QuotaKind::PathLength => "path-length",
        }
    }

    /// The quota with this protocol name.
    pub fn from_name(name: &str) -> Option<QuotaKind> {
        QuotaKind::ALL.into_iter().find(|q| q.name() == name)
    }

    /// C xenstored's default.
    pub fn default_value(self) -> u32 {
        match self {
            QuotaKind::Nodes => 1000,
            QuotaKind::Watches => 128,
            QuotaKind::Transactions => 10,
            QuotaKind::NodeSize => 2048,
            QuotaKind::Permissions => 5,
            QuotaKind::Outstanding => 20,
            QuotaKind::Memory => 2_621_440,
            QuotaKind::TransactionNodes => 1024,
            QuotaKind::PathLength => crate::wire::REL_PATH_MAX as u32,
        }
    }
}

/// Global quota values plus per-domain overrides.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Quotas {
    global: HashMap<QuotaKind, u32>,
    per_domain: HashMap<u32, HashMap<QuotaKind, u32>>,
}

impl Quotas {
    /// The global value (the default for domains without an override).
    pub fn global(&self, kind: QuotaKind) -> u32 {
        self.global
            .get(&kind)
            .copied()
            .unwrap_or_else(|| kind.default_value())
    }

    /// The value that applies to `domid`.
    pub fn for_domain(&self, domid: u32, kind: QuotaKind) -> u32 {
        self.per_domain
            .get(&domid)
            .and_then(|m| m.get(&kind))
            .copied()
            .unwrap_or_else(|| self.global(kind))
    }

    /// Sets the global value.
    pub fn set_global(&mut self, kind: QuotaKind, value: u32) {
        self.global.insert(kind, value);
    }

    /// Sets a domain's own value.
    pub fn set_domain(&mut self, domid: u32, kind: QuotaKind, value: u32) {
        self.per_domain
            .entry(domid)
            .or_default()
            .insert(kind, value);
    }

    /// Forgets a domain's overrides (when it is released).
    pub fn forget_domain(&mut self, domid: u32) {
        self.per_domain.remove(&domid);
    }

    /// Whether `used` stays within the quota `limit` (0 means unlimited).
    pub fn within(limit: u32, used: u64) -> bool {
        limit == 0 || used <= u64::from(limit)
    }

    /// Every explicitly set value, for persistence: (domain or None, kind, value).
    pub fn entries(&self) -> Vec<(Option<u32>, QuotaKind, u32)> {
        let mut out: Vec<_> = self.global.iter().map(|(k, v)| (None, *k, *v)).collect();
        for (d, m) in &self.per_domain {
            out.extend(m.iter().map(|(k, v)| (Some(*d), *k, *v)));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let mut q = Quotas::default();
        assert_eq!(q.for_domain(5, QuotaKind::Nodes), 1000);
        q.set_global(QuotaKind::Nodes, 50);
        assert_eq!(q.for_domain(5, QuotaKind::Nodes), 50);
        q.set_domain(5, QuotaKind::Nodes, 7);
        assert_eq!(q.for_domain(5, QuotaKind::Nodes), 7);
        assert_eq!(q.for_domain(6, QuotaKind::Nodes), 50);
        q.forget_domain(5);
        assert_eq!(q.for_domain(5, QuotaKind::Nodes), 50);
        assert!(Quotas::within(0, u64::MAX));
        assert!(Quotas::within(3, 3));
        assert!(!Quotas::within(3, 4));
        for k in QuotaKind::ALL {
            assert_eq!(QuotaKind::from_name(k.name()), Some(k));
        }
    }
}
