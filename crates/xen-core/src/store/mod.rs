//! The XenStore engine: the node tree, permissions, transactions, watches,
//! domains and quotas, with no I/O. A daemon feeds it one request at a time
//! per connection and delivers what it returns.

mod domain;
mod journal;
mod ops;
pub mod path;
mod persist;
pub mod quota;
mod requests;
mod tree;
mod txn;
mod view;
pub mod watch;

use std::collections::HashMap;

pub use journal::ChangeSet;
pub use ops::{Caller, Rights};
pub use persist::RestoreError;
pub use tree::{Node, Usage};

use self::ops::Ops;
use self::path::{canonicalize, parent, CanonPath};
use self::quota::{QuotaKind, Quotas};
use self::tree::{Tree, UsageTable};
use self::txn::Txn;
use self::view::View;
use self::watch::{Change, MatchKind, Watch, WatchIndex};
use crate::wire::perms::{self as wperms, Access, Perm};
use crate::wire::{features, payload, Errno, Message, MsgType, PAYLOAD_MAX};

/// Identifies a client connection to the engine.
pub type ConnId = u64;

/// Special names that exist from the start, with their permissions.
pub const INTRODUCE_DOMAIN: &str = "@introduceDomain";
/// Fired when a domain is released, shut down or destroyed.
pub const RELEASE_DOMAIN: &str = "@releaseDomain";

/// Features this engine offers every domain.
pub const SUPPORTED_FEATURES: u32 = features::WATCH_DEPTH | features::DOMID_ANY;

/// A message for one connection, in the order it must be sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// Recipient.
    pub conn: ConnId,
    /// Reply or watch event.
    pub msg: Message,
}

/// Something the daemon around the engine must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// A domain was introduced: open its connection endpoint.
    DomainIntroduced(u32),
    /// A domain was released: close its endpoint and its connections.
    DomainReleased(u32),
    /// CONTROL print: a line for the daemon's log.
    Log(String),
}

/// Everything one request produced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Replies and watch events, in order.
    pub deliveries: Vec<Delivery>,
    /// Work for the daemon.
    pub effects: Vec<Effect>,
}

impl Outcome {
    /// The deliveries for one connection.
    pub fn for_conn(&self, conn: ConnId) -> impl Iterator<Item = &Message> {
        self.deliveries
            .iter()
            .filter(move |d| d.conn == conn)
            .map(|d| &d.msg)
    }
}

struct Conn {
    domid: u32,
    privileged: bool,
    txns: HashMap<u32, Txn>,
    last_tx: u32,
}

/// A domain the engine knows of.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Domain {
    /// INTRODUCE was received and not yet followed by RELEASE.
    pub introduced: bool,
    /// Guest frame of its XenStore ring, as INTRODUCE gave it.
    pub gfn: i64,
    /// Its event channel, as INTRODUCE gave it.
    pub evtchn: u32,
    /// The domain it acts for (SET_TARGET).
    pub target: Option<u32>,
    /// Ring features it may use.
    pub features: u32,
    /// @releaseDomain was fired for its shutdown (re-armed by RESUME).
    pub shutdown_reported: bool,
}

enum Done {
    Reply(Vec<u8>),
    ReplyThen(Vec<u8>, Message),
}

/// The XenStore engine.
pub struct Store {
    tree: Tree,
    usage: UsageTable,
    special: HashMap<String, Vec<Perm>>,
    conns: HashMap<ConnId, Conn>,
    next_conn: ConnId,
    domains: HashMap<u32, Domain>,
    quotas: Quotas,
    watches: WatchIndex,
    /// Changes are remembered for the daemon's journal.
    journaled: bool,
    /// The rarely-changed tables before the change in progress, if it may
    /// touch them.
    meta_before: Option<journal::Meta>,
}

impl Default for Store {
    fn default() -> Store {
        Store::new()
    }
}

impl Store {
    /// A fresh store: the initial tree and the special nodes.
    pub fn new() -> Store {
        let tree = Tree::new();
        let usage = tree.usage();
        Store::from_parts(tree, usage)
    }

    fn from_parts(tree: Tree, usage: UsageTable) -> Store {
        let dom0_only = vec![Perm::new(0, Access::None)];
        let special = [INTRODUCE_DOMAIN, RELEASE_DOMAIN]
            .into_iter()
            .map(|s| (s.to_owned(), dom0_only.clone()))
            .collect();
        Store {
            tree,
            usage,
            special,
            conns: HashMap::new(),
            next_conn: 0,
            domains: HashMap::new(),
            quotas: Quotas::default(),
            watches: WatchIndex::default(),
            journaled: false,
            meta_before: None,
        }
    }

    /// Opens a connection acting as `domid`. Domain 0 is privileged.
    pub fn connect(&mut self, domid: u32) -> ConnId {
        self.next_conn += 1;
        self.conns.insert(
            self.next_conn,
            Conn {
                domid,
                privileged: domid == 0,
                txns: HashMap::new(),
                last_tx: 0,
            },
        );
        self.next_conn
    }

    /// Closes a connection: its watches and transactions go with it.
    pub fn disconnect(&mut self, conn: ConnId) {
        self.conns.remove(&conn);
        self.watches.remove_conn(conn);
    }

    /// Whether the connection is open.
    pub fn is_connected(&self, conn: ConnId) -> bool {
        self.conns.contains_key(&conn)
    }

    /// Connections acting as `domid`.
    pub fn connections_of(&self, domid: u32) -> Vec<ConnId> {
        let mut v: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.domid == domid)
            .map(|(id, _)| *id)
            .collect();
        v.sort_unstable();
        v
    }

    /// Number of nodes in the live tree.
    pub fn node_count(&self) -> usize {
        self.tree.len()
    }

    /// Number of registered watches.
    pub fn watch_count(&self) -> usize {
        self.watches.len()
    }

    /// The quota value that applies to a domain.
    pub fn quota(&self, domid: u32, kind: QuotaKind) -> u32 {
        self.quotas.for_domain(domid, kind)
    }

    /// What a domain owns.
    pub fn usage(&self, domid: u32) -> Usage {
        self.usage.get(domid)
    }

    /// The live node at an absolute name (for inspection and tests).
    pub fn node(&self, path: &str) -> Option<&Node> {
        self.tree.get(path)
    }

    /// Handles one request from `conn`. An unknown connection gets nothing.
    pub fn handle(&mut self, conn: ConnId, msg: &Message) -> Outcome {
        let mut out = Outcome::default();
        if !self.conns.contains_key(&conn) {
            return out;
        }
        if self.journaled && may_change_meta(msg) {
            self.before_meta_change();
        }
        match self.dispatch(conn, msg, &mut out) {
            Ok(Done::Reply(p)) if p.len() <= PAYLOAD_MAX => out.push(conn, msg.reply(p)),
            Ok(Done::Reply(_)) => out.push(conn, msg.error(Errno::E2BIG)),
            Ok(Done::ReplyThen(p, then)) => {
                out.push(conn, msg.reply(p));
                out.push(conn, then);
            }
            Err(e) => out.push(conn, msg.error(e)),
        }
        out
    }

    fn caller(&self, conn: ConnId) -> Caller {
        let c = &self.conns[&conn];
        Caller {
            conn,
            domid: c.domid,
            privileged: c.privileged,
            target: self.domains.get(&c.domid).and_then(|d| d.target),
        }
    }

    fn canon(&self, caller: &Caller, raw: &str, special: bool) -> Result<CanonPath, Errno> {
        let quota = if caller.privileged {
            QuotaKind::PathLength.default_value()
        } else {
            self.quotas.for_domain(caller.domid, QuotaKind::PathLength)
        };
        let limit = if quota == 0 {
            usize::MAX
        } else {
            quota as usize
        };
        canonicalize(caller.domid, raw, special, limit)
    }

    fn feature_enabled(&self, caller: &Caller, bit: u32) -> bool {
        caller.privileged
            || self
                .domains
                .get(&caller.domid)
                .map_or(SUPPORTED_FEATURES, |d| d.features)
                & bit
                != 0
    }

    fn dispatch(&mut self, conn: ConnId, msg: &Message, out: &mut Outcome) -> Result<Done, Errno> {
        let caller = self.caller(conn);
        let ty = match msg.msg_type() {
            None
            | Some(MsgType::WatchEvent)
            | Some(MsgType::Error)
            | Some(MsgType::Restrict)
            | Some(MsgType::Invalid) => return Err(Errno::ENOSYS),
            Some(t) => t,
        };
        if ty.is_privileged() && !caller.privileged {
            return Err(Errno::EACCES);
        }
        let tx = if ty.uses_transaction() { msg.tx_id } else { 0 };
        let p = &msg.payload;
        let ok = || Ok(Done::Reply(b"OK\0".to_vec()));
        match ty {
            MsgType::Read => {
                let path = self.canon(&caller, payload::one_arg(p)?, false)?;
                self.node_op(caller, tx, out, |ops| ops.read(&path.abs))
                    .map(Done::Reply)
            }
            MsgType::Directory => {
                let path = self.canon(&caller, payload::one_arg(p)?, false)?;
                self.node_op(caller, tx, out, |ops| ops.directory(&path.abs))
                    .map(Done::Reply)
            }
            MsgType::DirectoryPart => {
                let [raw, offset] = payload::exact::<2>(p)?;
                let path = self.canon(&caller, raw, false)?;
                let offset: usize = offset.parse().map_err(|_| Errno::EINVAL)?;
                self.node_op(caller, tx, out, |ops| ops.directory_part(&path.abs, offset))
                    .map(Done::Reply)
            }
            MsgType::GetPerms => {
                let path = self.canon(&caller, payload::one_arg(p)?, true)?;
                let perms = if path.is_special() {
                    self.special_perms(&caller, &path.abs, false)?
                } else {
                    self.node_op(caller, tx, out, |ops| ops.get_perms(&path.abs))?
                };
                Ok(Done::Reply(wperms::encode_list(&perms)))
            }
            MsgType::Write => {
                let (raw, value) = payload::path_and_value(p)?;
                let path = self.canon(&caller, raw, false)?;
                self.node_op(caller, tx, out, |ops| ops.write(&path.abs, value))?;
                ok()
            }
            MsgType::Mkdir => {
                let path = self.canon(&caller, payload::one_arg(p)?, false)?;
                self.node_op(caller, tx, out, |ops| ops.mkdir(&path.abs))?;
                ok()
            }
            MsgType::Rm => {
                let path = self.canon(&caller, payload::one_arg(p)?, false)?;
                self.node_op(caller, tx, out, |ops| ops.rm(&path.abs))?;
                ok()
            }
            MsgType::SetPerms => {
                let parts = payload::strings(p)?;
                let (raw, list) = parts.split_first().ok_or(Errno::EINVAL)?;
                let path = self.canon(&caller, raw, true)?;
                let perms = wperms::parse_list(list)?;
                if path.is_special() {
                    self.set_special_perms(&caller, &path.abs, perms)?;
                } else {
                    self.node_op(caller, tx, out, |ops| ops.set_perms(&path.abs, perms))?;
                }
                ok()
            }
            MsgType::Watch => self.watch(&caller, p),
            MsgType::Unwatch => {
                let parts = payload::strings(p)?;
                let (raw, token) = match parts.as_slice() {
                    [raw, token] | [raw, token, _] => (*raw, *token),
                    _ => return Err(Errno::EINVAL),
                };
                let path = self.canon(&caller, raw, true)?;
                let id = self
                    .watches
                    .find(conn, &path.abs, token)
                    .ok_or(Errno::ENOENT)?;
                self.watches.remove(id);
                ok()
            }
            MsgType::TransactionStart => self.transaction_start(&caller, msg.tx_id),
            MsgType::TransactionEnd => {
                let commit = match payload::one_arg(p)? {
                    "T" => true,
                    "F" => false,
                    _ => return Err(Errno::EINVAL),
                };
                self.transaction_end(&caller, tx, commit, out)?;
                ok()
            }
            MsgType::ResetWatches => {
                self.watches.remove_conn(conn);
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.txns.clear();
                }
                ok()
            }
            MsgType::GetDomainPath => {
                let domid = payload::parse_domid(payload::one_arg(p)?)?;
                let mut v = path::domain_path(domid).into_bytes();
                v.push(0);
                Ok(Done::Reply(v))
            }
            MsgType::Introduce => self.introduce(p, out),
            MsgType::Release => {
                let domid = payload::parse_domid(payload::one_arg(p)?)?;
                if !self.domains.get(&domid).is_some_and(|d| d.introduced) {
                    return Err(Errno::ENOENT);
                }
                self.release_into(domid, out);
                ok()
            }
            MsgType::IsDomainIntroduced => {
                let domid = payload::parse_domid(payload::one_arg(p)?)?;
                let yes = domid == 0 || self.domains.get(&domid).is_some_and(|d| d.introduced);
                Ok(Done::Reply(if yes { b"T\0" } else { b"F\0" }.to_vec()))
            }
            MsgType::Resume => {
                let domid = payload::parse_domid(payload::one_arg(p)?)?;
                let d = self
                    .domains
                    .get_mut(&domid)
                    .filter(|d| d.introduced)
                    .ok_or(Errno::ENOENT)?;
                d.shutdown_reported = false;
                ok()
            }
            MsgType::SetTarget => {
                let [d, t] = payload::exact::<2>(p)?;
                let (domid, target) = (payload::parse_domid(d)?, payload::parse_domid(t)?);
                let d = self
                    .domains
                    .get_mut(&domid)
                    .filter(|d| d.introduced)
                    .ok_or(Errno::ENOENT)?;
                d.target = Some(target);
                ok()
            }
            MsgType::GetFeature => self.get_feature(&caller, p),
            MsgType::SetFeature => self.set_feature(p),
            MsgType::GetQuota => self.get_quota(p),
            MsgType::SetQuota => self.set_quota(p),
            MsgType::Control => self.control(p, out),
            MsgType::WatchEvent | MsgType::Error | MsgType::Restrict | MsgType::Invalid => {
                Err(Errno::ENOSYS)
            }
        }
    }

    /// Runs a node operation on the live tree (firing its watches now) or in
    /// the caller's transaction `tx` (queueing them for the commit).
    fn node_op<R>(
        &mut self,
        caller: Caller,
        tx: u32,
        out: &mut Outcome,
        f: impl FnOnce(&mut Ops<'_, '_>) -> Result<R, Errno>,
    ) -> Result<R, Errno> {
        let Store {
            tree,
            usage,
            conns,
            quotas,
            ..
        } = self;
        if tx == 0 {
            let mut view = View::Live { tree, usage };
            let mut ops = Ops::new(&mut view, caller, quotas);
            let r = f(&mut ops)?;
            let changes = std::mem::take(&mut ops.changes);
            for c in &changes {
                self.fire(c, out);
            }
            return Ok(r);
        }
        let txn = conns
            .get_mut(&caller.conn)
            .and_then(|c| c.txns.get_mut(&tx))
            .ok_or(Errno::ENOENT)?;
        if !caller.privileged {
            let limit = quotas.for_domain(caller.domid, QuotaKind::TransactionNodes);
            if limit != 0 && txn.touched() >= limit as usize {
                return Err(Errno::ENOSPC);
            }
        }
        let (r, changes) = {
            let (tree, usage): (&Tree, &UsageTable) = (tree, usage);
            let mut view = View::Txn { tree, usage, txn };
            let mut ops = Ops::new(&mut view, caller, quotas);
            let r = f(&mut ops)?;
            (r, std::mem::take(&mut ops.changes))
        };
        if let Some(txn) = conns
            .get_mut(&caller.conn)
            .and_then(|c| c.txns.get_mut(&tx))
        {
            txn.changes.extend(changes);
        }
        Ok(r)
    }

    /// Delivers a change to every watch it matches whose connection may see
    /// it. Events too large for one message are dropped.
    fn fire(&self, change: &Change, out: &mut Outcome) {
        for w in self.watches.matching(change) {
            if !self.may_see(w, change) {
                continue;
            }
            let msg = Message::watch_event(w.event_path(&change.path), w.token.as_bytes());
            if msg.fits() {
                out.push(w.conn, msg);
            }
        }
    }

    /// Whether the watch's connection may learn of the change: it can read
    /// the node under its old or new permissions, or read its parent.
    fn may_see(&self, w: &Watch, change: &Change) -> bool {
        let Some(conn) = self.conns.get(&w.conn) else {
            return false;
        };
        let caller = self.caller(w.conn);
        if conn.privileged
            || caller.rights(&change.perms).read
            || change
                .old_perms
                .as_ref()
                .is_some_and(|old| caller.rights(old).read)
        {
            return true;
        }
        if matches!(
            change.kind,
            MatchKind::SpecialPlain | MatchKind::SpecialDomain
        ) {
            return false;
        }
        parent(&change.path)
            .and_then(|p| self.tree.get(p))
            .is_some_and(|n| caller.rights(&n.perms).read)
    }
}

/// Whether a request may change domains, quotas or the special nodes'
/// permissions: only privileged requests and SET_PERMS on `@` names do.
fn may_change_meta(msg: &Message) -> bool {
    match msg.msg_type() {
        Some(MsgType::SetPerms) => msg.payload.first() == Some(&b'@'),
        Some(MsgType::IsDomainIntroduced | MsgType::GetQuota) => false,
        Some(t) => t.is_privileged(),
        None => false,
    }
}

impl Outcome {
    fn push(&mut self, conn: ConnId, msg: Message) {
        self.deliveries.push(Delivery { conn, msg });
    }
}

#[cfg(test)]
mod tests;
