//! The engine thread: takes requests in passes, journals each change as it
//! is made, makes a pass's changes durable with one sync (group commit) and
//! only then sends what depended on them.
//!
//! Within a pass, what was answered before the first change goes out at
//! once; from the first change on, replies and events wait for the pass's
//! sync, so nobody learns of a change that a crash could still take back,
//! and nobody waits for more than the one sync of the pass they were in.
//!
//! A change that cannot be journalled (a full disk) is undone at once and
//! its request fails with ENOSPC or EIO; one whose sync fails is undone with
//! the rest of its pass. Either way no acknowledged change is ever lost and
//! no failed one is ever applied. Service resumes by itself once the disk
//! takes writes again.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use super::conn::ConnShared;
use super::journal::{self, Journal};
use super::{bind, spawn_acceptor, EngineMsg, Shared};
use crate::store::quota::QuotaKind;
use crate::store::{ChangeSet, ConnId, Delivery, Effect, Outcome, Store};
use crate::wire::Message;

/// Where a change came from, to answer or retry it if it is undone.
enum Origin {
    /// A client's request: its connection and the request.
    Request(ConnId, Message),
    /// The hypervisor's report: retried in a later pass.
    Hypervisor(EngineMsg),
    /// The inspection hook (tests).
    Inspect,
}

/// What one request or event produced, held until its pass is durable.
struct Held {
    /// The change it made and where it came from, if it made one.
    change: Option<(ChangeSet, Origin)>,
    outcome: Outcome,
}

/// One pass's output.
#[derive(Default)]
struct Pass {
    /// Sent before the sync: nothing in it depends on this pass's changes.
    ready: Vec<Delivery>,
    /// Sent after the sync, in order.
    held: Vec<Held>,
    changed: bool,
}

pub(super) struct Engine {
    store: Store,
    shared: Arc<Shared>,
    tx: mpsc::UnboundedSender<EngineMsg>,
    journal: Option<Journal>,
    conns: HashMap<ConnId, (u32, Arc<ConnShared>)>,
    domain_listeners: HashMap<u32, watch::Sender<bool>>,
    /// Hypervisor reports whose change could not be made durable yet.
    retry: Vec<EngineMsg>,
}

impl Engine {
    pub(super) fn new(
        store: Store,
        journal: Option<Journal>,
        shared: Arc<Shared>,
        tx: mpsc::UnboundedSender<EngineMsg>,
    ) -> Engine {
        Engine {
            store,
            shared,
            tx,
            journal,
            conns: HashMap::new(),
            domain_listeners: HashMap::new(),
            retry: Vec::new(),
        }
    }

    fn log(&self, line: &str) {
        (self.shared.config.log)(line);
    }

    pub(super) fn run(mut self, mut rx: mpsc::UnboundedReceiver<EngineMsg>) {
        for domid in self.store.introduced_domains() {
            self.open_domain_socket(domid);
        }
        while let Some(first) = rx.blocking_recv() {
            let mut batch = std::mem::take(&mut self.retry);
            batch.push(first);
            while batch.len() < 512 {
                match rx.try_recv() {
                    Ok(m) => batch.push(m),
                    Err(_) => break,
                }
            }
            let mut pass = Pass::default();
            let mut stop = None;
            for m in batch {
                match m {
                    EngineMsg::Connect { domid, conn, reply } => {
                        let id = self.store.connect(domid);
                        let limit = if domid == 0 {
                            self.shared.config.dom0_outstanding
                        } else {
                            match self.store.quota(domid, QuotaKind::Outstanding) {
                                0 => self.shared.config.dom0_outstanding,
                                n => n as usize,
                            }
                        };
                        self.conns.insert(id, (domid, conn));
                        let _ = reply.send((id, limit));
                    }
                    EngineMsg::Request { conn, msg } => {
                        self.shared.stats.requests.fetch_add(1, Ordering::Relaxed);
                        let out = self.store.handle(conn, &msg);
                        self.settle(&mut pass, out, Origin::Request(conn, msg));
                    }
                    EngineMsg::Disconnect { conn } => {
                        self.store.disconnect(conn);
                        self.conns.remove(&conn);
                    }
                    EngineMsg::DomainDied(domid) => {
                        let out = self.store.release_domain(domid);
                        let origin = Origin::Hypervisor(EngineMsg::DomainDied(domid));
                        self.settle(&mut pass, out, origin);
                    }
                    EngineMsg::DomainShutdown(domid) => {
                        let out = self.store.domain_shutdown(domid);
                        let origin = Origin::Hypervisor(EngineMsg::DomainShutdown(domid));
                        self.settle(&mut pass, out, origin);
                    }
                    EngineMsg::Inspect(f) => {
                        self.store.before_meta_change();
                        f(&mut self.store);
                        self.settle(&mut pass, Outcome::default(), Origin::Inspect);
                    }
                    EngineMsg::Stop(done) => stop = Some(done),
                }
            }
            self.finish(pass);
            if let Some(done) = stop {
                self.shutdown();
                let _ = done.send(());
                return;
            }
        }
    }

    /// Journals what a request or event changed (undoing it if that fails)
    /// and files its output in the pass.
    fn settle(&mut self, pass: &mut Pass, outcome: Outcome, origin: Origin) {
        let change = match &mut self.journal {
            Some(_) => self.store.take_change(),
            None => None,
        };
        let Some(change) = change else {
            if pass.changed {
                pass.held.push(Held {
                    change: None,
                    outcome,
                });
            } else {
                // Nothing this pass changed is in it: no reason to wait.
                self.apply_effects(outcome.effects);
                pass.ready.extend(outcome.deliveries);
            }
            return;
        };
        let record = self.store.record(&change);
        let journal = self.journal.as_mut().expect("journaling");
        match journal.append(&record) {
            Ok(()) => {
                pass.changed = true;
                pass.held.push(Held {
                    change: Some((change, origin)),
                    outcome,
                });
            }
            Err(e) => {
                self.store.undo(change);
                self.shared.stats.unsaved.fetch_add(1, Ordering::Relaxed);
                self.log(&format!("change not saved, undone: {e}"));
                let failed = self.refuse(origin, journal::errno_of(&e));
                if pass.changed {
                    pass.held.push(Held {
                        change: None,
                        outcome: failed,
                    });
                } else {
                    pass.ready.extend(failed.deliveries);
                }
                self.close_orphans();
            }
        }
    }

    /// The outcome of a change that was undone: its request fails with
    /// `errno`; a hypervisor report is tried again in the next pass.
    fn refuse(&mut self, origin: Origin, errno: crate::wire::Errno) -> Outcome {
        let mut out = Outcome::default();
        match origin {
            Origin::Request(conn, msg) => out.deliveries.push(Delivery {
                conn,
                msg: msg.error(errno),
            }),
            Origin::Hypervisor(m) => self.retry.push(m),
            Origin::Inspect => {}
        }
        out
    }

    /// Ends a pass: sends what did not wait, makes the pass's changes
    /// durable, then sends the rest (or, if the sync failed, undoes them).
    fn finish(&mut self, pass: Pass) {
        self.deliver(pass.ready);
        let synced = match (&mut self.journal, pass.changed) {
            (Some(j), true) => j.sync(),
            _ => Ok(()),
        };
        match synced {
            Ok(()) => {
                if pass.changed {
                    self.shared.stats.persists.fetch_add(1, Ordering::Relaxed);
                }
                for held in pass.held {
                    self.apply_effects(held.outcome.effects);
                    self.deliver(held.outcome.deliveries);
                }
            }
            Err(e) => {
                self.log(&format!(
                    "cannot sync the journal, undoing the last changes: {e}"
                ));
                let errno = journal::errno_of(&e);
                let mut answers = Vec::new();
                for held in pass.held.into_iter().rev() {
                    match held.change {
                        Some((change, origin)) => {
                            self.store.undo(change);
                            self.shared.stats.unsaved.fetch_add(1, Ordering::Relaxed);
                            answers.push(self.refuse(origin, errno));
                        }
                        // Read before the failure: answered as read.
                        None => answers.push(held.outcome),
                    }
                }
                for out in answers.into_iter().rev() {
                    self.apply_effects(out.effects);
                    self.deliver(out.deliveries);
                }
                self.close_orphans();
            }
        }
        if let Some(j) = &mut self.journal {
            for line in j.maintain() {
                (self.shared.config.log)(&line);
            }
        }
    }

    fn deliver(&self, deliveries: Vec<Delivery>) {
        for d in deliveries {
            if let Some((_, c)) = self.conns.get(&d.conn) {
                c.outbox.push(d.msg);
            }
        }
    }

    /// Closes connections the store no longer knows: an undone release had
    /// already dropped them there.
    fn close_orphans(&mut self) {
        let orphans: Vec<ConnId> = self
            .conns
            .keys()
            .copied()
            .filter(|id| !self.store.is_connected(*id))
            .collect();
        for id in orphans {
            if let Some((_, c)) = self.conns.remove(&id) {
                c.close();
            }
        }
    }

    fn apply_effects(&mut self, effects: Vec<Effect>) {
        for effect in effects {
            self.apply(effect);
        }
    }

    fn apply(&mut self, effect: Effect) {
        match effect {
            Effect::DomainIntroduced(domid) => self.open_domain_socket(domid),
            Effect::DomainReleased(domid) => {
                if let Some(stop) = self.domain_listeners.remove(&domid) {
                    let _ = stop.send(true);
                }
                let path = self.shared.config.domain_dir().join(domid.to_string());
                let _ = std::fs::remove_file(path);
                let gone: Vec<ConnId> = self
                    .conns
                    .iter()
                    .filter(|(_, (d, _))| *d == domid)
                    .map(|(id, _)| *id)
                    .collect();
                for id in gone {
                    if let Some((_, c)) = self.conns.remove(&id) {
                        c.close();
                    }
                }
            }
            Effect::Log(line) => self.log(&line),
        }
    }

    fn open_domain_socket(&mut self, domid: u32) {
        let path = self.shared.config.domain_dir().join(domid.to_string());
        match bind(&path, &self.shared.rt) {
            Ok(listener) => {
                let (stop, stop_rx) = watch::channel(false);
                spawn_acceptor(&self.shared, listener, domid, self.tx.clone(), stop_rx);
                self.domain_listeners.insert(domid, stop);
            }
            Err(e) => self.log(&format!("cannot open socket for domain {domid}: {e}")),
        }
    }

    fn shutdown(&mut self) {
        // Every change is durable already; a compaction under way finishes
        // (its snapshot is complete or not there at all).
        if let Some(j) = &mut self.journal {
            if let Some(line) = j.finish_compaction() {
                (self.shared.config.log)(&line);
            }
        }
        self.journal = None;
        for (_, (_, c)) in self.conns.drain() {
            c.close();
        }
        for (domid, stop) in self.domain_listeners.drain() {
            let _ = stop.send(true);
            let _ = std::fs::remove_file(self.shared.config.domain_dir().join(domid.to_string()));
        }
        let _ = std::fs::remove_file(&self.shared.config.socket);
        let _ = std::fs::remove_dir(self.shared.config.domain_dir());
    }
}
