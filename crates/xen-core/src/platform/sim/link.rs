//! How a client reaches the simulated hypervisor: directly in-process, or
//! through its control socket from another process. Only setup goes this
//! way (binding ports, opening a domain's memory); notifications and data
//! go straight through shared eventfds and memory.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};

use super::core::{Core, DomainFds, Errno, HandleId};
use super::os::EventFd;
use crate::platform::{DomId, Port};

/// Setup requests to the hypervisor.
pub trait Link: Send + Sync {
    /// A new event-channel handle.
    fn open_handle(&self) -> io::Result<HandleId>;
    /// Closes a handle and every port bound through it.
    fn close_handle(&self, handle: HandleId);
    /// A domain's shared memory.
    fn domain_fds(&self, domid: DomId) -> io::Result<DomainFds>;
    /// Allocates an unbound port of `domid` for `remote`.
    fn alloc_unbound(
        &self,
        handle: HandleId,
        domid: DomId,
        remote: DomId,
    ) -> Result<(Port, OwnedFd), Errno>;
    /// Binds a port of `domid` to `remote_port` of `remote`.
    fn bind_interdomain(
        &self,
        handle: HandleId,
        domid: DomId,
        remote: DomId,
        remote_port: Port,
    ) -> Result<(Port, OwnedFd), Errno>;
    /// Closes a port.
    fn unbind(&self, handle: HandleId, domid: DomId, port: Port) -> Result<(), Errno>;
    /// The other end's doorbell of a port, with the port's generation.
    fn peer(&self, domid: DomId, port: Port) -> Result<Option<(u32, OwnedFd)>, Errno>;
}

fn dup(fd: &EventFd) -> Result<OwnedFd, Errno> {
    fd.try_clone()
        .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))
}

/// The hypervisor in this process.
pub struct LocalLink(pub Arc<Mutex<Core>>);

impl LocalLink {
    fn core(&self) -> std::sync::MutexGuard<'_, Core> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Link for LocalLink {
    fn open_handle(&self) -> io::Result<HandleId> {
        Ok(self.core().open_handle())
    }

    fn close_handle(&self, handle: HandleId) {
        self.core().close_handle(handle);
    }

    fn domain_fds(&self, domid: DomId) -> io::Result<DomainFds> {
        self.core().domain_fds(domid)
    }

    fn alloc_unbound(
        &self,
        handle: HandleId,
        domid: DomId,
        remote: DomId,
    ) -> Result<(Port, OwnedFd), Errno> {
        let (port, fd) = self.core().alloc_unbound(handle, domid, remote)?;
        Ok((port, dup(&fd)?))
    }

    fn bind_interdomain(
        &self,
        handle: HandleId,
        domid: DomId,
        remote: DomId,
        remote_port: Port,
    ) -> Result<(Port, OwnedFd), Errno> {
        let (port, fd) = self
            .core()
            .bind_interdomain(handle, domid, remote, remote_port)?;
        Ok((port, dup(&fd)?))
    }

    fn unbind(&self, handle: HandleId, domid: DomId, port: Port) -> Result<(), Errno> {
        self.core().unbind(handle, domid, port)
    }

    fn peer(&self, domid: DomId, port: Port) -> Result<Option<(u32, OwnedFd)>, Errno> {
        match self.core().peer(domid, port)? {
            Some((generation, fd)) => Ok(Some((generation, dup(&fd)?))),
            None => Ok(None),
        }
    }
}
