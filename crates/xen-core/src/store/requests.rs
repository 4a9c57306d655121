//! Requests about watches, transactions and special nodes.

use super::ops::Caller;
use super::quota::QuotaKind;
use super::txn::Txn;
use super::watch::Watch;
use super::{Done, Outcome, Store};
use crate::wire::perms::Perm;
use crate::wire::{features, payload, Errno, Message};

impl Store {
    pub(super) fn watch(&mut self, caller: &Caller, p: &[u8]) -> Result<Done, Errno> {
        let parts = payload::strings(p)?;
        let (raw, token, depth) = match parts.as_slice() {
            [raw, token] => (*raw, *token, None),
            [raw, token, depth] if self.feature_enabled(caller, features::WATCH_DEPTH) => {
                let d: u32 = depth.parse().map_err(|_| Errno::EINVAL)?;
                (*raw, *token, Some(d))
            }
            _ => return Err(Errno::EINVAL),
        };
        let path = self.canon(caller, raw, true)?;
        if self.watches.find(caller.conn, &path.abs, token).is_some() {
            return Err(Errno::EEXIST);
        }
        if !caller.privileged {
            // Per domain, as in C xenstored: a guest may open any number of
            // connections, and a per-connection count would multiply its
            // quota by that number.
            let limit = self.quotas.for_domain(caller.domid, QuotaKind::Watches);
            if limit != 0 && self.domain_watches(caller.domid) >= limit as usize {
                return Err(Errno::ENOSPC);
            }
        }
        let watch = Watch {
            conn: caller.conn,
            path: path.abs.clone(),
            token: token.to_owned(),
            prefix_len: path.prefix_len,
            depth,
        };
        // The first event comes straight away, after the reply.
        let first = Message::watch_event(watch.event_path(&path.abs), token.as_bytes());
        self.watches.add(watch);
        Ok(Done::ReplyThen(b"OK\0".to_vec(), first))
    }

    pub(super) fn transaction_start(&mut self, caller: &Caller, tx_id: u32) -> Result<Done, Errno> {
        if tx_id != 0 {
            return Err(Errno::EBUSY);
        }
        let limit = self
            .quotas
            .for_domain(caller.domid, QuotaKind::Transactions);
        // Per domain over all its connections, like watches.
        if !caller.privileged
            && limit != 0
            && self.domain_transactions(caller.domid) >= limit as usize
        {
            return Err(Errno::ENOSPC);
        }
        let conn = self.conns.get_mut(&caller.conn).ok_or(Errno::ENOENT)?;
        // Ids start at 1, are never 0, and skip ids still in use after a wrap.
        let mut id = conn.last_tx;
        loop {
            id = id.wrapping_add(1);
            if id != 0 && !conn.txns.contains_key(&id) {
                break;
            }
        }
        conn.last_tx = id;
        conn.txns.insert(id, Txn::new());
        let mut reply = id.to_string().into_bytes();
        reply.push(0);
        Ok(Done::Reply(reply))
    }

    pub(super) fn transaction_end(
        &mut self,
        caller: &Caller,
        tx: u32,
        commit: bool,
        out: &mut Outcome,
    ) -> Result<(), Errno> {
        if tx == 0 {
            return Err(Errno::ENOENT);
        }
        let txn = self
            .conns
            .get_mut(&caller.conn)
            .and_then(|c| c.txns.remove(&tx))
            .ok_or(Errno::ENOENT)?;
        if !commit {
            return Ok(());
        }
        let changes = txn.commit(&mut self.tree, &mut self.usage)?;
        for c in &changes {
            self.fire(c, out);
        }
        Ok(())
    }

    /// Watches registered by every connection acting as `domid`.
    fn domain_watches(&self, domid: u32) -> usize {
        let conns = self
            .conns
            .iter()
            .filter(|(_, c)| c.domid == domid)
            .map(|(id, _)| *id);
        self.watches.count_all(conns)
    }

    /// Transactions open on every connection acting as `domid`.
    fn domain_transactions(&self, domid: u32) -> usize {
        self.conns
            .values()
            .filter(|c| c.domid == domid)
            .map(|c| c.txns.len())
            .sum()
    }

    pub(super) fn special_perms(
        &self,
        caller: &Caller,
        name: &str,
        own: bool,
    ) -> Result<Vec<Perm>, Errno> {
        let perms = self.special.get(name).ok_or(Errno::ENOENT)?;
        let r = caller.rights(perms);
        let allowed = if own { r.write && r.owner } else { r.read };
        if !allowed {
            return Err(Errno::EACCES);
        }
        Ok(perms.clone())
    }

    pub(super) fn set_special_perms(
        &mut self,
        caller: &Caller,
        name: &str,
        perms: Vec<Perm>,
    ) -> Result<(), Errno> {
        self.special_perms(caller, name, true)?;
        self.special.insert(name.to_owned(), perms);
        Ok(())
    }
}
