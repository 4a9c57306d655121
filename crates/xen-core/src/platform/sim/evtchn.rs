//! Event channels on the simulated hypervisor. Each port has an eventfd as
//! its doorbell; a handle watches its ports' doorbells in an epoll set, one
//! shot each, so a delivered port stays masked until unmasked. Notifying
//! writes straight to the other end's doorbell: no hypervisor round trip.

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::{Arc, Mutex};

use super::core::HandleId;
use super::domain_mem::DomainMem;
use super::os::{Epoll, EventFd};
use super::SimHost;
use crate::platform::{DomId, EventChannels, EvtchnError, Port};

struct PortEntry {
    own: EventFd,
    /// The other end's doorbell, as of a port generation.
    peer: Option<(u32, EventFd)>,
}

/// An event-channel handle of one simulated domain.
pub struct SimEvtchn {
    host: SimHost,
    domid: DomId,
    handle: HandleId,
    epoll: Epoll,
    ports: Mutex<HashMap<Port, PortEntry>>,
    own_domain: Arc<DomainMem>,
}

impl SimEvtchn {
    pub(super) fn open(host: SimHost, domid: DomId) -> Result<SimEvtchn, EvtchnError> {
        let own_domain = host.domain_mem(domid).map_err(|e| {
            EvtchnError::new(
                e.raw_os_error().unwrap_or(libc::ESRCH),
                format!("open event channels of domain {domid}"),
            )
        })?;
        let handle = host.link().open_handle()?;
        Ok(SimEvtchn {
            host,
            domid,
            handle,
            epoll: Epoll::new()?,
            ports: Mutex::new(HashMap::new()),
            own_domain,
        })
    }

    /// The domain this handle acts for.
    pub fn domid(&self) -> DomId {
        self.domid
    }

    fn ports(&self) -> std::sync::MutexGuard<'_, HashMap<Port, PortEntry>> {
        self.ports.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn add(&self, port: Port, fd: std::os::fd::OwnedFd) -> Result<Port, EvtchnError> {
        let own = EventFd::from_owned(fd);
        self.epoll.add(own.as_fd(), u64::from(port))?;
        self.ports().insert(port, PortEntry { own, peer: None });
        Ok(port)
    }
}

impl EventChannels for SimEvtchn {
    fn bind_interdomain(&self, remote: DomId, remote_port: Port) -> Result<Port, EvtchnError> {
        let (port, fd) = self
            .host
            .link()
            .bind_interdomain(self.handle, self.domid, remote, remote_port)
            .map_err(|e| {
                EvtchnError::new(e, format!("bind to port {remote_port} of domain {remote}"))
            })?;
        self.add(port, fd)
    }

    fn alloc_unbound(&self, remote: DomId) -> Result<Port, EvtchnError> {
        let (port, fd) = self
            .host
            .link()
            .alloc_unbound(self.handle, self.domid, remote)
            .map_err(|e| EvtchnError::new(e, format!("allocate a port for domain {remote}")))?;
        self.add(port, fd)
    }

    fn unbind(&self, port: Port) -> Result<(), EvtchnError> {
        let entry = self
            .ports()
            .remove(&port)
            .ok_or_else(|| EvtchnError::new(libc::ENOTCONN, format!("unbind port {port}")))?;
        let _ = self.epoll.remove(entry.own.as_fd());
        self.host
            .link()
            .unbind(self.handle, self.domid, port)
            .map_err(|e| EvtchnError::new(e, format!("unbind port {port}")))
    }

    fn notify(&self, port: Port) -> Result<(), EvtchnError> {
        let generation = self.own_domain.port_generation(port);
        let mut ports = self.ports();
        let entry = ports
            .get_mut(&port)
            .ok_or_else(|| EvtchnError::new(libc::ENOTCONN, format!("notify port {port}")))?;
        let fresh = matches!((&entry.peer, generation), (Some((g, _)), Some(now)) if *g == now);
        if !fresh {
            // The port changed since we looked (bound, rebound, closed):
            // ask the hypervisor who is at the other end now.
            entry.peer = self
                .host
                .link()
                .peer(self.domid, port)
                .map_err(|e| EvtchnError::new(e, format!("notify port {port}")))?
                .map(|(g, fd)| (g, EventFd::from_owned(fd)));
        }
        match &entry.peer {
            Some((_, fd)) => fd.signal().map_err(EvtchnError::from),
            // No other end: the event is dropped, as on Xen.
            None => Ok(()),
        }
    }

    fn pending(&self, out: &mut Vec<Port>) -> Result<(), EvtchnError> {
        let mut ready = Vec::new();
        self.epoll.wait(&mut ready, 0)?;
        let ports = self.ports();
        for data in ready {
            let port = data as Port;
            if let Some(entry) = ports.get(&port) {
                entry.own.drain()?;
                out.push(port);
            }
        }
        Ok(())
    }

    fn unmask(&self, port: Port) -> Result<(), EvtchnError> {
        // Like writing a port to /dev/xen/evtchn: ports of other handles are
        // ignored.
        if let Some(entry) = self.ports().get(&port) {
            self.epoll.rearm(entry.own.as_fd(), u64::from(port))?;
        }
        Ok(())
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.epoll.as_fd()
    }
}

impl Drop for SimEvtchn {
    fn drop(&mut self) {
        self.host.link().close_handle(self.handle);
    }
}
