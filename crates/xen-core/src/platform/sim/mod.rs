//! The simulated hypervisor: domains whose memory is a memfd with a v1 grant
//! table in its first frames, and interdomain event channels over eventfds,
//! with Xen's semantics. It works inside one process and across processes:
//! other processes reach it through its control socket, which hands over
//! descriptors (memfds, eventfds) with SCM_RIGHTS.
//!
//! - [`SimHypervisor`]: the hypervisor itself (creates and destroys domains,
//!   serves the control socket).
//! - [`SimHost`]: a client of it, in-process or remote, from which a domain
//!   gets its event channels ([`SimEvtchn`]), a backend its gntdev
//!   ([`SimGntdev`]) and a frontend its grant table and memory
//!   ([`SimGntTable`]).

mod core;
mod domain_mem;
mod evtchn;
mod grant;
mod link;
mod os;
mod rpc;

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};

pub use self::core::{shutdown, DomainConfig, DomainRunState};
pub use self::evtchn::SimEvtchn;
pub use self::grant::{SimGntTable, SimGntdev};
pub use self::os::EventFd as EventDoorbell;
pub use self::rpc::ControlServer;

use self::core::Core;
use self::domain_mem::DomainMem;
use self::link::{Link, LocalLink};
use crate::platform::{DomId, EvtchnError, GrantError};

/// A memfd of `pages` pages, for the benchmarks' references.
pub fn memfd_for_bench(pages: usize) -> io::Result<std::os::fd::OwnedFd> {
    os::memfd(
        "xen-sim-bench",
        (pages * crate::platform::abi::PAGE_SIZE) as u64,
    )
}

/// The simulated hypervisor.
#[derive(Clone, Default)]
pub struct SimHypervisor {
    core: Arc<Mutex<Core>>,
}

impl SimHypervisor {
    /// A hypervisor with no domains.
    pub fn new() -> SimHypervisor {
        SimHypervisor::default()
    }

    fn core(&self) -> std::sync::MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Creates a domain.
    pub fn create_domain(&self, config: DomainConfig) -> io::Result<()> {
        self.core().create_domain(config)
    }

    /// Destroys a domain: its event channels close and it can no longer be
    /// mapped; existing mappings stay valid until unmapped, as on Xen.
    pub fn destroy_domain(&self, domid: DomId) -> bool {
        self.core().destroy_domain(domid)
    }

    /// Ids of the domains.
    pub fn domains(&self) -> Vec<DomId> {
        self.core().domains()
    }

    /// Whether a domain exists.
    pub fn exists(&self, domid: DomId) -> bool {
        self.core().exists(domid)
    }

    /// A domain's run state.
    pub fn run_state(&self, domid: DomId) -> Option<DomainRunState> {
        self.core().run_state(domid)
    }

    /// Pauses or unpauses a domain.
    pub fn set_paused(&self, domid: DomId, paused: bool) -> bool {
        self.core().set_paused(domid, paused)
    }

    /// Shuts a domain down with a `SHUTDOWN_*` reason, or clears it.
    pub fn set_shutdown(&self, domid: DomId, reason: Option<u32>) -> bool {
        self.core().set_shutdown(domid, reason)
    }

    /// A client in this process.
    pub fn host(&self) -> SimHost {
        SimHost::with_link(Arc::new(LocalLink(self.core.clone())))
    }

    /// Serves the control socket at `path` for clients in other processes.
    pub fn serve(&self, path: &Path) -> io::Result<ControlServer> {
        ControlServer::start(self.core.clone(), path)
    }
}

/// A client of the simulated hypervisor.
#[derive(Clone)]
pub struct SimHost {
    link: Arc<dyn Link>,
    domains: Arc<Mutex<HashMap<DomId, Arc<DomainMem>>>>,
    gnttabs: Arc<Mutex<HashMap<DomId, Arc<SimGntTable>>>>,
}

impl SimHost {
    fn with_link(link: Arc<dyn Link>) -> SimHost {
        SimHost {
            link,
            domains: Arc::new(Mutex::new(HashMap::new())),
            gnttabs: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Connects to a hypervisor's control socket (from another process).
    pub fn connect(path: &Path) -> io::Result<SimHost> {
        Ok(SimHost::with_link(Arc::new(rpc::RemoteLink::connect(
            path,
        )?)))
    }

    pub(crate) fn link(&self) -> &dyn Link {
        self.link.as_ref()
    }

    /// A domain's memory mapped here, from the cache unless the domain died
    /// (its id may since name a new domain).
    pub(crate) fn domain_mem(&self, domid: DomId) -> io::Result<Arc<DomainMem>> {
        let mut cache = self.domains.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(dm) = cache.get(&domid) {
            if dm.alive() {
                return Ok(dm.clone());
            }
            cache.remove(&domid);
        }
        let dm = Arc::new(DomainMem::map(self.link.domain_fds(domid)?)?);
        cache.insert(domid, dm.clone());
        Ok(dm)
    }

    /// Event channels of `domid`.
    pub fn evtchn(&self, domid: DomId) -> Result<SimEvtchn, EvtchnError> {
        SimEvtchn::open(self.clone(), domid)
    }

    /// The gntdev of a backend running in `domid`.
    pub fn gntdev(&self, domid: DomId) -> SimGntdev {
        SimGntdev {
            host: self.clone(),
            domid,
        }
    }

    /// The grant table and memory of the guest `domid` (its frontend side).
    /// One per guest and client: it owns the guest's grant-entry and page
    /// allocation, so every caller shares it.
    pub fn gnttab(&self, domid: DomId) -> Result<Arc<SimGntTable>, GrantError> {
        let mut tables = self.gnttabs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(gt) = tables.get(&domid) {
            if gt.alive() {
                return Ok(gt.clone());
            }
            tables.remove(&domid);
        }
        let dm = self
            .domain_mem(domid)
            .map_err(|_| GrantError::status(0, crate::platform::GntSt::BadDomain))?;
        let gt = Arc::new(SimGntTable::new(dm));
        tables.insert(domid, gt.clone());
        Ok(gt)
    }
}

#[cfg(test)]
mod tests;
