//! The simulated hypervisor's own state: domains (memory, grant-table pin
//! counts, port generations) and every domain's event-channel port table.
//! Clients reach it in-process or through the control socket; both call
//! these functions.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use super::os::{memfd, EventFd};
use crate::platform::abi::{GRANT_ENTRIES_PER_PAGE, PAGE_SIZE};
use crate::platform::memory::Mmap;
use crate::platform::{DomId, Port};

/// Identifies an event-channel handle, which owns the ports bound through it.
pub type HandleId = u32;

/// How to create a simulated domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DomainConfig {
    /// Its id.
    pub domid: DomId,
    /// Pages of memory, the grant-table frames included.
    pub pages: u32,
    /// Frames of grant table at the start of memory (512 v1 entries each).
    pub grant_frames: u32,
    /// Event-channel ports (port 0 is never used).
    pub max_ports: u32,
}

impl DomainConfig {
    /// A domain with 1024 pages (4 MiB), 4 grant frames and 1024 ports.
    pub fn new(domid: DomId) -> DomainConfig {
        DomainConfig {
            domid,
            pages: 1024,
            grant_frames: 4,
            max_ports: 1024,
        }
    }

    /// Number of grant entries.
    pub fn grant_entries(&self) -> u32 {
        self.grant_frames * GRANT_ENTRIES_PER_PAGE as u32
    }
}

/// Bytes before the active grant entries in the `active` memory: `alive`
/// (u32) first.
pub const ACTIVE_HEADER: usize = 64;

/// Bytes of one active grant entry, the hypervisor-private state of one
/// grant reference (Xen's `struct active_grant_entry`), shared by every
/// process of the simulated host: four u32s at the offsets below.
pub const ACTIVE_ENTRY_SIZE: usize = 16;
/// The entry's lock: the pid of the process holding it, 0 when free. A
/// holder that died is recognised and the lock taken over (see
/// `domain_mem`).
pub const ACTIVE_LOCK: usize = 0;
/// Pin counts: read-only pins in the low 16 bits, writable pins in the high.
pub const ACTIVE_PIN: usize = 4;
/// The frame the entry granted when first pinned (valid while pinned).
pub const ACTIVE_FRAME: usize = 8;
/// The domain the entry was first pinned for (valid while pinned).
pub const ACTIVE_DOMID: usize = 12;

/// Size of the `active` memory of a domain.
pub fn active_len(config: &DomainConfig) -> usize {
    ACTIVE_HEADER + config.grant_entries() as usize * ACTIVE_ENTRY_SIZE
}

/// The shared-memory pieces of a domain, as descriptors.
pub struct DomainFds {
    /// The domain's configuration.
    pub config: DomainConfig,
    /// Guest memory (grant table in its first frames).
    pub memory: OwnedFd,
    /// Hypervisor-private: a header (`alive` u32 at 0) then one active entry
    /// ([`ACTIVE_ENTRY_SIZE`] bytes) per grant reference.
    pub active: OwnedFd,
    /// One u32 generation per port, bumped on every change of the port.
    pub portgen: OwnedFd,
}

#[derive(Clone)]
enum PortState {
    Free,
    Unbound {
        remote: DomId,
        fd: Arc<EventFd>,
        owner: HandleId,
    },
    Interdomain {
        remote: DomId,
        remote_port: Port,
        fd: Arc<EventFd>,
        owner: HandleId,
    },
}

/// A simulated domain's run state, as `XEN_DOMINF_*` flags describe it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DomainRunState {
    /// Paused (by the toolstack).
    pub paused: bool,
    /// Shut down, with its `SHUTDOWN_*` reason code.
    pub shutdown: Option<u32>,
}

/// `SHUTDOWN_*` codes of sched.h.
pub mod shutdown {
    /// Powered off.
    pub const POWEROFF: u32 = 0;
    /// Reboot requested.
    pub const REBOOT: u32 = 1;
    /// Suspended.
    pub const SUSPEND: u32 = 2;
    /// Crashed.
    pub const CRASH: u32 = 3;
    /// Watchdog fired.
    pub const WATCHDOG: u32 = 4;
    /// Soft reset requested.
    pub const SOFT_RESET: u32 = 5;
}

struct Domain {
    config: DomainConfig,
    run: DomainRunState,
    memory: Arc<OwnedFd>,
    active: Arc<OwnedFd>,
    active_map: Mmap,
    portgen_fd: Arc<OwnedFd>,
    portgen: Mmap,
    ports: Vec<PortState>,
}

impl Domain {
    fn bump(&self, port: Port) {
        if let Ok(a) = self.portgen.mem().atomic_u32(port as usize * 4) {
            a.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        }
    }
}

/// An errno for an event-channel request.
pub type Errno = i32;

/// Every simulated domain and event channel.
#[derive(Default)]
pub struct Core {
    domains: HashMap<DomId, Domain>,
    next_handle: HandleId,
}

impl Core {
    /// Creates a domain. Fails if the id is taken or the memory cannot be made.
    pub fn create_domain(&mut self, config: DomainConfig) -> std::io::Result<()> {
        if self.domains.contains_key(&config.domid) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("domain {} exists", config.domid),
            ));
        }
        if config.grant_frames == 0 || config.grant_frames >= config.pages || config.max_ports < 2 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "a domain needs grant frames, memory beyond them and ports",
            ));
        }
        let d = config.domid;
        let memory = memfd(
            &format!("xen-sim-d{d}-memory"),
            u64::from(config.pages) * PAGE_SIZE as u64,
        )?;
        let active_len = active_len(&config);
        let active = memfd(&format!("xen-sim-d{d}-active"), active_len as u64)?;
        let active_map = Mmap::map_fd(std::os::fd::AsFd::as_fd(&active), 0, active_len, true)?;
        // Mappers refuse a domain whose `alive` word is 0.
        active_map
            .mem()
            .store_u32(0, 1)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let portgen_fd = memfd(
            &format!("xen-sim-d{d}-ports"),
            u64::from(config.max_ports) * 4,
        )?;
        let portgen = Mmap::map_fd(
            std::os::fd::AsFd::as_fd(&portgen_fd),
            0,
            config.max_ports as usize * 4,
            true,
        )?;
        self.domains.insert(
            d,
            Domain {
                config,
                memory: Arc::new(memory),
                active: Arc::new(active),
                active_map,
                portgen_fd: Arc::new(portgen_fd),
                portgen,
                ports: vec![PortState::Free; config.max_ports as usize],
                run: DomainRunState::default(),
            },
        );
        Ok(())
    }

    /// Destroys a domain: its ports close (the other ends become unbound)
    /// and it can no longer be mapped or bound. Memory stays alive while
    /// someone still maps it.
    pub fn destroy_domain(&mut self, domid: DomId) -> bool {
        let Some(dom) = self.domains.remove(&domid) else {
            return false;
        };
        let _ = dom.active_map.mem().store_u32(0, 0);
        for state in &dom.ports {
            if let PortState::Interdomain {
                remote,
                remote_port,
                ..
            } = state
            {
                self.unbind_peer(*remote, *remote_port, domid);
            }
        }
        true
    }

    /// A domain's run state.
    pub fn run_state(&self, domid: DomId) -> Option<DomainRunState> {
        self.domains.get(&domid).map(|d| d.run)
    }

    /// Pauses or unpauses a domain; false if there is none.
    pub fn set_paused(&mut self, domid: DomId, paused: bool) -> bool {
        self.domains
            .get_mut(&domid)
            .map(|d| d.run.paused = paused)
            .is_some()
    }

    /// Records a domain's shutdown (SCHEDOP_shutdown) with its reason code;
    /// `None` clears it (a resumed suspend). False if there is no domain.
    pub fn set_shutdown(&mut self, domid: DomId, reason: Option<u32>) -> bool {
        self.domains
            .get_mut(&domid)
            .map(|d| d.run.shutdown = reason)
            .is_some()
    }

    /// Whether a domain exists.
    pub fn exists(&self, domid: DomId) -> bool {
        self.domains.contains_key(&domid)
    }

    /// Ids of every domain.
    pub fn domains(&self) -> Vec<DomId> {
        let mut v: Vec<DomId> = self.domains.keys().copied().collect();
        v.sort_unstable();
        v
    }

    /// Descriptors of a domain's shared memory.
    pub fn domain_fds(&self, domid: DomId) -> std::io::Result<DomainFds> {
        let d = self
            .domains
            .get(&domid)
            .ok_or_else(|| std::io::Error::from_raw_os_error(libc::ESRCH))?;
        Ok(DomainFds {
            config: d.config,
            memory: d.memory.try_clone()?,
            active: d.active.try_clone()?,
            portgen: d.portgen_fd.try_clone()?,
        })
    }

    /// A new handle id.
    pub fn open_handle(&mut self) -> HandleId {
        self.next_handle = self.next_handle.wrapping_add(1).max(1);
        self.next_handle
    }

    /// Closes every port bound through a handle.
    pub fn close_handle(&mut self, handle: HandleId) {
        let owned: Vec<(DomId, Port)> = self
            .domains
            .iter()
            .flat_map(|(d, dom)| {
                dom.ports
                    .iter()
                    .enumerate()
                    .filter_map(move |(p, s)| match s {
                        PortState::Unbound { owner, .. } | PortState::Interdomain { owner, .. }
                            if *owner == handle =>
                        {
                            Some((*d, p as Port))
                        }
                        _ => None,
                    })
            })
            .collect();
        for (d, p) in owned {
            let _ = self.unbind(handle, d, p);
        }
    }

    fn free_port(dom: &Domain) -> Option<Port> {
        dom.ports
            .iter()
            .enumerate()
            .skip(1)
            .find(|(_, s)| matches!(s, PortState::Free))
            .map(|(p, _)| p as Port)
    }

    /// EVTCHNOP_alloc_unbound for `domid`, to be bound by `remote`.
    pub fn alloc_unbound(
        &mut self,
        handle: HandleId,
        domid: DomId,
        remote: DomId,
    ) -> Result<(Port, Arc<EventFd>), Errno> {
        let dom = self.domains.get_mut(&domid).ok_or(libc::ESRCH)?;
        let port = Self::free_port(dom).ok_or(libc::ENOSPC)?;
        let fd = Arc::new(EventFd::new().map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?);
        dom.ports[port as usize] = PortState::Unbound {
            remote,
            fd: fd.clone(),
            owner: handle,
        };
        dom.bump(port);
        Ok((port, fd))
    }

    /// EVTCHNOP_bind_interdomain: a new port of `domid` connected to
    /// `remote_port` of `remote`, which must be unbound and meant for `domid`.
    pub fn bind_interdomain(
        &mut self,
        handle: HandleId,
        domid: DomId,
        remote: DomId,
        remote_port: Port,
    ) -> Result<(Port, Arc<EventFd>), Errno> {
        if !self.domains.contains_key(&domid) {
            return Err(libc::ESRCH);
        }
        let rdom = self.domains.get(&remote).ok_or(libc::ESRCH)?;
        match rdom.ports.get(remote_port as usize) {
            Some(PortState::Unbound { remote: r, .. }) if *r == domid => {}
            _ => return Err(libc::EINVAL),
        }
        let ldom = self.domains.get_mut(&domid).ok_or(libc::ESRCH)?;
        let port = Self::free_port(ldom).ok_or(libc::ENOSPC)?;
        let fd = Arc::new(EventFd::new().map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?);
        ldom.ports[port as usize] = PortState::Interdomain {
            remote,
            remote_port,
            fd: fd.clone(),
            owner: handle,
        };
        ldom.bump(port);
        let rdom = self.domains.get_mut(&remote).ok_or(libc::ESRCH)?;
        if let PortState::Unbound { fd: rfd, owner, .. } = rdom.ports[remote_port as usize].clone()
        {
            rdom.ports[remote_port as usize] = PortState::Interdomain {
                remote: domid,
                remote_port: port,
                fd: rfd,
                owner,
            };
            rdom.bump(remote_port);
        }
        Ok((port, fd))
    }

    /// EVTCHNOP_close of a port owned by `handle` (ENOTCONN otherwise).
    pub fn unbind(&mut self, handle: HandleId, domid: DomId, port: Port) -> Result<(), Errno> {
        let dom = self.domains.get_mut(&domid).ok_or(libc::ENOTCONN)?;
        let state = dom.ports.get(port as usize).cloned().ok_or(libc::EINVAL)?;
        let peer = match state {
            PortState::Unbound { owner, .. } if owner == handle => None,
            PortState::Interdomain {
                owner,
                remote,
                remote_port,
                ..
            } if owner == handle => Some((remote, remote_port)),
            _ => return Err(libc::ENOTCONN),
        };
        dom.ports[port as usize] = PortState::Free;
        dom.bump(port);
        if let Some((remote, remote_port)) = peer {
            self.unbind_peer(remote, remote_port, domid);
        }
        Ok(())
    }

    /// The other end of a closed channel goes back to unbound, as on Xen.
    fn unbind_peer(&mut self, remote: DomId, remote_port: Port, closed_by: DomId) {
        if let Some(rdom) = self.domains.get_mut(&remote) {
            if let Some(PortState::Interdomain { fd, owner, .. }) =
                rdom.ports.get(remote_port as usize).cloned()
            {
                rdom.ports[remote_port as usize] = PortState::Unbound {
                    remote: closed_by,
                    fd,
                    owner,
                };
                rdom.bump(remote_port);
            }
        }
    }

    /// The doorbell of the other end of a port, with the port's generation;
    /// `None` if the port has no connected other end.
    pub fn peer(&self, domid: DomId, port: Port) -> Result<Option<(u32, Arc<EventFd>)>, Errno> {
        let dom = self.domains.get(&domid).ok_or(libc::ESRCH)?;
        let generation = dom
            .portgen
            .mem()
            .load_u32(port as usize * 4)
            .map_err(|_| libc::EINVAL)?;
        let Some(PortState::Interdomain {
            remote,
            remote_port,
            ..
        }) = dom.ports.get(port as usize)
        else {
            return Ok(None);
        };
        let rdom = self.domains.get(remote).ok_or(libc::ESRCH)?;
        match rdom.ports.get(*remote_port as usize) {
            Some(PortState::Interdomain { fd, .. }) => Ok(Some((generation, fd.clone()))),
            _ => Ok(None),
        }
    }
}
