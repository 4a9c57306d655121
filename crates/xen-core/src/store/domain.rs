//! Domain requests (INTRODUCE, RELEASE, features, quotas, CONTROL) and what
//! a domain's departure does to the store.

use super::ops::{Caller, Ops};
use super::quota::QuotaKind;
use super::view::View;
use super::watch::{Change, MatchKind};
use super::{
    Domain, Done, Effect, Outcome, Store, INTRODUCE_DOMAIN, RELEASE_DOMAIN, SUPPORTED_FEATURES,
};
use crate::wire::perms::Perm;
use crate::wire::{payload, Errno};

/// First domain id Xen reserves (DOMID_FIRST_RESERVED); no real domain has it.
const DOMID_FIRST_RESERVED: u32 = 0x7ff0;

impl Store {
    pub(super) fn introduce(&mut self, p: &[u8], out: &mut Outcome) -> Result<Done, Errno> {
        let parts = payload::strings(p)?;
        let [d, gfn, evtchn] = match parts.as_slice() {
            [d, g, e] | [d, g, e, _] => [*d, *g, *e],
            _ => return Err(Errno::EINVAL),
        };
        let domid = payload::parse_domid(d)?;
        if domid == 0 || domid >= DOMID_FIRST_RESERVED {
            return Err(Errno::EINVAL);
        }
        let gfn: i64 = gfn.parse().map_err(|_| Errno::EINVAL)?;
        let evtchn: u32 = evtchn.parse().map_err(|_| Errno::EINVAL)?;
        let d = self.domains.entry(domid).or_insert_with(|| Domain {
            features: SUPPORTED_FEATURES,
            ..Domain::default()
        });
        // Introducing again only refreshes the ring details (as on resume).
        d.gfn = gfn;
        d.evtchn = evtchn;
        if !d.introduced {
            d.introduced = true;
            self.fire_special(INTRODUCE_DOMAIN, domid, out);
            out.effects.push(Effect::DomainIntroduced(domid));
        }
        Ok(Done::Reply(b"OK\0".to_vec()))
    }

    /// Releases a domain on the hypervisor's word (the domain died): same as
    /// a RELEASE request from dom0. Does nothing for an unknown domain.
    pub fn release_domain(&mut self, domid: u32) -> Outcome {
        let mut out = Outcome::default();
        self.before_meta_change();
        if self.domains.get(&domid).is_some_and(|d| d.introduced) {
            self.release_into(domid, &mut out);
        }
        out
    }

    /// Reports a domain's shutdown: fires `@releaseDomain` once, until RESUME.
    pub fn domain_shutdown(&mut self, domid: u32) -> Outcome {
        let mut out = Outcome::default();
        self.before_meta_change();
        if let Some(d) = self.domains.get_mut(&domid) {
            if d.introduced && !d.shutdown_reported {
                d.shutdown_reported = true;
                self.fire_special(RELEASE_DOMAIN, domid, &mut out);
            }
        }
        out
    }

    /// Domains introduced and not released.
    pub fn introduced_domains(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self
            .domains
            .iter()
            .filter(|(_, d)| d.introduced)
            .map(|(id, _)| *id)
            .collect();
        v.sort_unstable();
        v
    }

    /// What the engine knows of a domain.
    pub fn domain(&self, domid: u32) -> Option<&Domain> {
        self.domains.get(&domid)
    }

    /// A domain leaves: its connections close (with their watches and
    /// transactions), the nodes it owns are removed, entries naming it leave
    /// every permission list (so a later domain reusing the id inherits
    /// nothing), its quotas are forgotten and `@releaseDomain` fires.
    pub(super) fn release_into(&mut self, domid: u32, out: &mut Outcome) {
        for conn in self.connections_of(domid) {
            self.disconnect(conn);
        }
        self.domains.remove(&domid);
        self.quotas.forget_domain(domid);
        for d in self.domains.values_mut() {
            if d.target == Some(domid) {
                d.target = None;
            }
        }

        let mut owned: Vec<String> = self
            .tree
            .iter()
            .filter(|(_, n)| n.owner() == domid)
            .map(|(p, _)| p.clone())
            .collect();
        owned.sort_by_key(String::len);
        let dom0 = Caller {
            conn: 0,
            domid: 0,
            privileged: true,
            target: None,
        };
        let mut changes = Vec::new();
        {
            let mut view = View::Live {
                tree: &mut self.tree,
                usage: &mut self.usage,
            };
            let mut ops = Ops::new(&mut view, dom0, &self.quotas);
            for path in owned {
                if path != "/" && ops.view.exists(&path) {
                    // Cannot fail for the privileged caller on an existing node.
                    let _ = ops.rm(&path);
                }
            }
            changes.append(&mut ops.changes);
        }
        let mentioning: Vec<String> = self
            .tree
            .iter()
            .filter(|(_, n)| n.perms[1..].iter().any(|p| p.domid == domid))
            .map(|(p, _)| p.clone())
            .collect();
        for path in mentioning {
            let generation = self.tree.bump();
            if let Some(n) = self.tree.get_mut(&path) {
                n.perms = without_domain(&n.perms, domid);
                n.generation = generation;
            }
        }
        for perms in self.special.values_mut() {
            *perms = without_domain(perms, domid);
        }
        self.usage = self.tree.usage();
        for c in &changes {
            self.fire(c, out);
        }
        self.fire_special(RELEASE_DOMAIN, domid, out);
        out.effects.push(Effect::DomainReleased(domid));
    }

    /// Fires a special event both plainly (`@releaseDomain`) and with the
    /// domain (`@releaseDomain/<domid>`, for depth-1 and per-domain watches).
    fn fire_special(&self, name: &str, domid: u32, out: &mut Outcome) {
        let perms = self.special.get(name).cloned().unwrap_or_default();
        for (path, kind) in [
            (name.to_owned(), MatchKind::SpecialPlain),
            (format!("{name}/{domid}"), MatchKind::SpecialDomain),
        ] {
            let change = Change {
                path,
                kind,
                perms: perms.clone(),
                old_perms: None,
            };
            self.fire(&change, out);
        }
    }

    pub(super) fn get_feature(&self, caller: &Caller, p: &[u8]) -> Result<Done, Errno> {
        let value = match payload::strings(p)?.as_slice() {
            [] | [""] => {
                if caller.privileged {
                    SUPPORTED_FEATURES
                } else {
                    self.domains
                        .get(&caller.domid)
                        .map_or(SUPPORTED_FEATURES, |d| d.features)
                }
            }
            [d] => {
                if !caller.privileged {
                    return Err(Errno::EACCES);
                }
                let domid = payload::parse_domid(d)?;
                self.domains
                    .get(&domid)
                    .map_or(SUPPORTED_FEATURES, |d| d.features)
            }
            _ => return Err(Errno::EINVAL),
        };
        Ok(Done::Reply(format!("{value}\0").into_bytes()))
    }

    pub(super) fn set_feature(&mut self, p: &[u8]) -> Result<Done, Errno> {
        let [d, v] = payload::exact::<2>(p)?;
        let domid = payload::parse_domid(d)?;
        let value: u32 = v.parse().map_err(|_| Errno::EINVAL)?;
        if value & !SUPPORTED_FEATURES != 0 {
            return Err(Errno::EINVAL);
        }
        let d = self.domains.entry(domid).or_insert_with(|| Domain {
            features: SUPPORTED_FEATURES,
            ..Domain::default()
        });
        if d.introduced {
            return Err(Errno::EBUSY);
        }
        d.features = value;
        Ok(Done::Reply(b"OK\0".to_vec()))
    }

    pub(super) fn get_quota(&self, p: &[u8]) -> Result<Done, Errno> {
        let value = match payload::strings(p)?.as_slice() {
            [] | [""] => {
                let names: Vec<&str> = QuotaKind::ALL.iter().map(|q| q.name()).collect();
                return Ok(Done::Reply(format!("{}\0", names.join(" ")).into_bytes()));
            }
            [q] => self
                .quotas
                .global(QuotaKind::from_name(q).ok_or(Errno::EINVAL)?),
            [d, q] => {
                let domid = payload::parse_domid(d)?;
                let kind = QuotaKind::from_name(q).ok_or(Errno::EINVAL)?;
                self.quotas.for_domain(domid, kind)
            }
            _ => return Err(Errno::EINVAL),
        };
        Ok(Done::Reply(format!("{value}\0").into_bytes()))
    }

    pub(super) fn set_quota(&mut self, p: &[u8]) -> Result<Done, Errno> {
        let parse = |q: &str, v: &str| -> Result<(QuotaKind, u32), Errno> {
            Ok((
                QuotaKind::from_name(q).ok_or(Errno::EINVAL)?,
                v.parse().map_err(|_| Errno::EINVAL)?,
            ))
        };
        match payload::strings(p)?.as_slice() {
            [q, v] => {
                let (kind, value) = parse(q, v)?;
                self.quotas.set_global(kind, value);
            }
            [d, q, v] => {
                let domid = payload::parse_domid(d)?;
                let (kind, value) = parse(q, v)?;
                self.quotas.set_domain(domid, kind, value);
            }
            _ => return Err(Errno::EINVAL),
        }
        Ok(Done::Reply(b"OK\0".to_vec()))
    }

    pub(super) fn control(&mut self, p: &[u8], out: &mut Outcome) -> Result<Done, Errno> {
        let parts = payload::strings(p)?;
        let reply = match parts.as_slice() {
            ["check"] => {
                self.check().map_err(|e| {
                    out.effects.push(Effect::Log(format!("check failed: {e}")));
                    Errno::EIO
                })?;
                "OK".to_owned()
            }
            ["print", text] => {
                out.effects.push(Effect::Log((*text).to_owned()));
                "OK".to_owned()
            }
            ["memreport"] | ["memreport", _] => format!(
                "nodes {} watches {} connections {} domains {}",
                self.tree.len(),
                self.watches.len(),
                self.conns.len(),
                self.introduced_domains().len()
            ),
            ["help"] => "check\nprint|<string>\nmemreport\nhelp\n".to_owned(),
            _ => return Err(Errno::EINVAL),
        };
        Ok(Done::Reply(format!("{reply}\0").into_bytes()))
    }

    /// Integrity check: every child listed exists, every node but `/` is
    /// listed by its parent, and usage matches the tree.
    pub fn check(&self) -> Result<(), String> {
        if self.tree.get("/").is_none() {
            return Err("no root node".into());
        }
        // The special nodes always exist, and no others: a watch on them
        // must behave the same before and after a restart.
        if self.special.len() != 2
            || [INTRODUCE_DOMAIN, RELEASE_DOMAIN]
                .iter()
                .any(|name| self.special.get(*name).is_none_or(|p| p.is_empty()))
        {
            return Err("the special nodes must be exactly @introduceDomain and @releaseDomain, each with permissions".into());
        }
        for (path, node) in self.tree.iter() {
            if node.perms.is_empty() {
                return Err(format!("{path} has no permissions"));
            }
            for c in &node.children {
                let child = super::path::child_path(path, c);
                if self.tree.get(&child).is_none() {
                    return Err(format!("{path} lists missing child {c}"));
                }
            }
            if let Some(parent) = super::path::parent(path) {
                let listed = self
                    .tree
                    .get(parent)
                    .is_some_and(|p| p.children.iter().any(|c| c == super::path::basename(path)));
                if !listed {
                    return Err(format!("{path} is not listed by its parent"));
                }
            }
        }
        let fresh = self.tree.usage();
        for (domid, u) in fresh.iter() {
            if self.usage.get(domid) != u {
                return Err(format!("usage of domain {domid} is out of step"));
            }
        }
        for (domid, u) in self.usage.iter() {
            if fresh.get(domid) != u {
                return Err(format!("usage of domain {domid} is out of step"));
            }
        }
        Ok(())
    }
}

/// A permission list without the entries after the owner's that name `domid`.
fn without_domain(perms: &[Perm], domid: u32) -> Vec<Perm> {
    let (owner, rest) = perms
        .split_first()
        .expect("permission lists are never empty");
    std::iter::once(*owner)
        .chain(rest.iter().copied().filter(|p| p.domid != domid))
        .collect()
}
