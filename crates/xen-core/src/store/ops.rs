//! Node operations (READ, WRITE, MKDIR, RM, DIRECTORY, DIRECTORY_PART,
//! GET_PERMS, SET_PERMS) over a [`View`], with Xen's permission rules and the
//! quotas that bind unprivileged domains. Every check happens before the
//! first change, so a failed request leaves nothing half-done.

use super::path::{basename, child_path, parent, self_and_ancestors};
use super::quota::{QuotaKind, Quotas};
use super::tree::Node;
use super::view::View;
use super::watch::{Change, MatchKind};
use super::ConnId;
use crate::wire::perms::{Perm, DOMID_ANY};
use crate::wire::{Errno, PAYLOAD_MAX};

/// Who is asking: the connection's domain and its standing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The connection.
    pub conn: ConnId,
    /// Its domain.
    pub domid: u32,
    /// Whether it is the privileged domain (dom0, or any Unix-socket client).
    pub privileged: bool,
    /// The domain this one acts for (SET_TARGET), if any.
    pub target: Option<u32>,
}

/// Rights of a caller on one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rights {
    /// May read.
    pub read: bool,
    /// May write.
    pub write: bool,
    /// Owns the node (may change its permissions).
    pub owner: bool,
}

impl Caller {
    fn is(&self, domid: u32) -> bool {
        domid == self.domid || Some(domid) == self.target
    }

    /// The caller's rights under a permission list: everything for the
    /// privileged domain, the owner and the owner's controller; otherwise the
    /// first entry after the owner that names the caller (or DOMID_ANY), else
    /// the owner entry's access.
    pub fn rights(&self, perms: &[Perm]) -> Rights {
        let Some(first) = perms.first() else {
            return Rights {
                read: self.privileged,
                write: self.privileged,
                owner: self.privileged,
            };
        };
        if self.privileged || self.is(first.domid) {
            return Rights {
                read: true,
                write: true,
                owner: true,
            };
        }
        let entry = perms[1..]
            .iter()
            .find(|p| self.is(p.domid) || p.domid == DOMID_ANY)
            .unwrap_or(first);
        Rights {
            read: entry.access.can_read(),
            write: entry.access.can_write(),
            owner: false,
        }
    }
}

/// The right a request needs on its node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// Read.
    Read,
    /// Write.
    Write,
    /// Write and ownership.
    Own,
}

impl Need {
    fn granted(self, r: Rights) -> bool {
        match self {
            Need::Read => r.read,
            Need::Write => r.write,
            Need::Own => r.write && r.owner,
        }
    }
}

/// A node operation in progress: the view it works on, who asks, and the
/// watch events it produces.
pub struct Ops<'v, 'a> {
    /// Live tree or transaction.
    pub view: &'v mut View<'a>,
    /// The caller.
    pub caller: Caller,
    /// Quotas in force.
    pub quotas: &'v Quotas,
    /// Watch events produced so far.
    pub changes: Vec<Change>,
}

impl<'v, 'a> Ops<'v, 'a> {
    /// Starts an operation.
    pub fn new(view: &'v mut View<'a>, caller: Caller, quotas: &'v Quotas) -> Ops<'v, 'a> {
        Ops {
            view,
            caller,
            quotas,
            changes: Vec::new(),
        }
    }

    /// The caller's limit for `kind`: `None` for the privileged domain and
    /// for a quota set to 0 (disabled).
    fn limit(&self, kind: QuotaKind) -> Option<u32> {
        if self.caller.privileged {
            return None;
        }
        Some(self.quotas.for_domain(self.caller.domid, kind)).filter(|l| *l != 0)
    }

    /// The error for a failed access to `path`, which must not reveal more
    /// than the caller may know: if the nearest existing ancestor does not
    /// grant the needed right, the answer is EACCES whatever the cause.
    fn hide_existence(&mut self, path: &str, errno: Errno, need: Need) -> Errno {
        let caller = self.caller;
        let nearest = self_and_ancestors(path)
            .skip(1)
            .find_map(|p| self.view.get(p).map(|n| caller.rights(&n.perms)));
        match nearest {
            Some(r) if need.granted(r) => errno,
            _ => Errno::EACCES,
        }
    }

    /// The node at `path`, if the caller has the right `need` on it.
    pub fn checked(&mut self, path: &str, need: Need) -> Result<&Node, Errno> {
        let caller = self.caller;
        let errno = match self.view.get(path) {
            None => Errno::ENOENT,
            Some(n) if need.granted(caller.rights(&n.perms)) => {
                return Ok(self.view.get(path).expect("just seen"));
            }
            Some(_) => Errno::EACCES,
        };
        Err(self.hide_existence(path, errno, need))
    }

    fn emit(&mut self, path: &str, kind: MatchKind, perms: &[Perm], old: Option<Vec<Perm>>) {
        self.changes.push(Change {
            path: path.to_owned(),
            kind,
            perms: perms.to_vec(),
            old_perms: old,
        });
    }

    /// READ.
    pub fn read(&mut self, path: &str) -> Result<Vec<u8>, Errno> {
        Ok(self.checked(path, Need::Read)?.value.clone())
    }

    /// DIRECTORY: children names, NUL-terminated; E2BIG past the payload limit.
    pub fn directory(&mut self, path: &str) -> Result<Vec<u8>, Errno> {
        let payload = self.checked(path, Need::Read)?.children_payload();
        if payload.len() > PAYLOAD_MAX {
            return Err(Errno::E2BIG);
        }
        Ok(payload)
    }

    /// DIRECTORY_PART: `generation\0` then as many whole names from byte
    /// `offset` of the children list as fit; the final part ends with an
    /// extra NUL, and an offset at or past the end gives `generation\0\0`.
    pub fn directory_part(&mut self, path: &str, offset: usize) -> Result<Vec<u8>, Errno> {
        let node = self.checked(path, Need::Read)?;
        let list = node.children_payload();
        let mut out = node.generation.to_string().into_bytes();
        out.push(0);
        if offset >= list.len() {
            out.push(0);
            return Ok(out);
        }
        let room = PAYLOAD_MAX - out.len() - 1;
        let mut end = offset;
        for name in list[offset..].split_inclusive(|b| *b == 0) {
            if end - offset + name.len() > room {
                break;
            }
            end += name.len();
        }
        out.extend_from_slice(&list[offset..end]);
        if end == list.len() {
            out.push(0);
        }
        Ok(out)
    }

    /// GET_PERMS on a regular node.
    pub fn get_perms(&mut self, path: &str) -> Result<Vec<Perm>, Errno> {
        Ok(self.checked(path, Need::Read)?.perms.clone())
    }

    /// WRITE: replaces the value, creating the node and missing parents.
    pub fn write(&mut self, path: &str, value: &[u8]) -> Result<(), Errno> {
        match self.checked(path, Need::Write).cloned() {
            Ok(node) => {
                let owner = node.owner();
                let mut new = node.clone();
                new.value = value.to_vec();
                self.check_size(&new)?;
                self.check_memory(owner, new.size() as i64 - node.size() as i64)?;
                let perms = new.perms.clone();
                self.view.modify(path, |n| n.value = value.to_vec());
                self.emit(path, MatchKind::Subtree, &perms, None);
                Ok(())
            }
            Err(Errno::ENOENT) => self.create(path, value),
            Err(e) => Err(e),
        }
    }

    /// MKDIR: creates the node and missing parents; nothing if it exists.
    pub fn mkdir(&mut self, path: &str) -> Result<(), Errno> {
        match self.checked(path, Need::Write) {
            Ok(_) => Ok(()),
            Err(Errno::ENOENT) => self.create(path, b""),
            Err(e) => Err(e),
        }
    }

    /// Creates `path` with `value`, and its missing ancestors with empty
    /// values. New nodes inherit the permissions of their parent; an
    /// unprivileged creator becomes their owner.
    fn create(&mut self, path: &str, value: &[u8]) -> Result<(), Errno> {
        let mut missing = vec![path];
        let mut top = parent(path);
        while let Some(p) = top {
            if self.view.exists(p) {
                break;
            }
            missing.push(p);
            top = parent(p);
        }
        let Some(existing) = top else {
            return Err(Errno::ENOENT);
        };
        let caller = self.caller;
        let base = self.view.get(existing).expect("exists").clone();
        if !caller.rights(&base.perms).write {
            return Err(Errno::EACCES);
        }
        let mut perms = base.perms.clone();
        if !caller.privileged {
            perms[0].domid = caller.domid;
        }
        let owner = perms[0].domid;

        // Quotas, all checked before anything changes.
        let mut grown = base.clone();
        grown
            .children
            .push(basename(missing[missing.len() - 1]).to_owned());
        self.check_size(&grown)?;
        let leaf = Node::new(value.to_vec(), perms.clone());
        self.check_size(&leaf)?;
        if let Some(limit) = self.limit(QuotaKind::Nodes) {
            if self.view.usage(owner).nodes + missing.len() as i64 > i64::from(limit) {
                return Err(Errno::ENOSPC);
            }
        }
        let added: u64 = leaf.size()
            + missing[1..]
                .iter()
                .map(|p| Node::new(Vec::new(), perms.clone()).size() + basename(p).len() as u64 + 1)
                .sum::<u64>();
        self.check_memory(owner, added as i64)?;

        // Create top-down: link each new node into its parent.
        let mut parent_path = existing.to_owned();
        for p in missing.iter().rev() {
            let name = basename(p).to_owned();
            self.view.modify(&parent_path, |n| n.children.push(name));
            let v = if *p == path {
                value.to_vec()
            } else {
                Vec::new()
            };
            self.view.put(p, Node::new(v, perms.clone()));
            parent_path = (*p).to_owned();
        }
        self.emit(path, MatchKind::Subtree, &perms, None);
        Ok(())
    }

    /// RM: removes the node and its subtree. A missing node whose parent
    /// exists is not an error (C xenstored's rule); `/` cannot be removed.
    pub fn rm(&mut self, path: &str) -> Result<(), Errno> {
        match self.checked(path, Need::Write) {
            Ok(_) => {}
            Err(Errno::ENOENT) => {
                let parent_exists = parent(path).is_some_and(|p| self.view.exists(p));
                return if parent_exists {
                    Ok(())
                } else {
                    Err(Errno::ENOENT)
                };
            }
            Err(e) => return Err(e),
        }
        let Some(parent_path) = parent(path) else {
            return Err(Errno::EINVAL);
        };
        // Walk the subtree without recursion (deep trees must not exhaust
        // the stack): each removed descendant fires watches set exactly on
        // it, the removed root fires watches on itself and its ancestors.
        let mut stack = vec![path.to_owned()];
        while let Some(p) = stack.pop() {
            let Some(node) = self.view.remove(&p) else {
                continue;
            };
            let kind = if p == path {
                MatchKind::Subtree
            } else {
                MatchKind::Exact
            };
            self.emit(&p, kind, &node.perms, None);
            stack.extend(node.children.iter().map(|c| child_path(&p, c)));
        }
        let name = basename(path).to_owned();
        self.view
            .modify(parent_path, |n| n.children.retain(|c| *c != name));
        Ok(())
    }

    /// SET_PERMS on a regular node.
    pub fn set_perms(&mut self, path: &str, perms: Vec<Perm>) -> Result<(), Errno> {
        if let Some(limit) = self.limit(QuotaKind::Permissions) {
            if perms.len() > limit as usize {
                return Err(Errno::ENOSPC);
            }
        }
        let node = self.checked(path, Need::Own)?.clone();
        let old = node.perms.clone();
        if !self.caller.privileged && perms[0].domid != node.owner() {
            return Err(Errno::EPERM);
        }
        let mut new = node.clone();
        new.perms = perms.clone();
        self.check_size(&new)?;
        self.view.modify(path, |n| n.perms = perms.clone());
        self.emit(path, MatchKind::Subtree, &perms, Some(old));
        Ok(())
    }

    fn check_size(&self, node: &Node) -> Result<(), Errno> {
        match self.limit(QuotaKind::NodeSize) {
            Some(limit) if node.size() > u64::from(limit) => Err(Errno::ENOSPC),
            _ => Ok(()),
        }
    }

    /// The memory quota binds what an unprivileged caller adds to its own
    /// nodes (nodes it creates are its own).
    fn check_memory(&self, owner: u32, delta: i64) -> Result<(), Errno> {
        match self.limit(QuotaKind::Memory) {
            Some(limit) if owner == self.caller.domid && delta > 0 => {
                if self.view.usage(owner).memory + delta > i64::from(limit) {
                    Err(Errno::ENOSPC)
                } else {
                    Ok(())
                }
            }
            _ => Ok(()),
        }
    }
}
