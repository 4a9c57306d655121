//! The platform, chosen once: the backend domain's event channels and grant
//! mapper, simulated or real, with the one event loop that waits on those
//! event channels. Data paths, the napi surface and the TypeScript classes
//! take a [`Platform`]; nothing above it names a simulator type.

use std::fmt;
use std::io;
use std::sync::Arc;

use super::event_loop::EventLoop;
use super::sim::SimHost;
use super::{DomId, EventChannels, EvtchnError, GrantMapper};

/// Which hypervisor a platform talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlatformKind {
    /// The simulated hypervisor (in this process, or another one's through
    /// its control socket).
    Simulated,
    /// Xen, through Linux's `/dev/xen` devices.
    Xen,
}

impl PlatformKind {
    /// `"simulated"` or `"xen"`.
    pub fn name(self) -> &'static str {
        match self {
            PlatformKind::Simulated => "simulated",
            PlatformKind::Xen => "xen",
        }
    }
}

/// The backend domain's hypervisor interfaces and its event loop.
pub struct Platform {
    kind: PlatformKind,
    domid: DomId,
    evtchn: Arc<dyn EventChannels>,
    gntdev: Arc<dyn GrantMapper>,
    event_loop: EventLoop,
}

impl fmt::Debug for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Platform({} d{})", self.kind.name(), self.domid)
    }
}

impl Platform {
    /// A platform over the given interfaces (the constructors below, and
    /// tests with fakes); starts its event loop.
    pub fn new(
        kind: PlatformKind,
        domid: DomId,
        evtchn: Arc<dyn EventChannels>,
        gntdev: Arc<dyn GrantMapper>,
    ) -> io::Result<Platform> {
        let event_loop = EventLoop::spawn(&format!("xenrx-events-d{domid}"), evtchn.clone())?;
        Ok(Platform {
            kind,
            domid,
            evtchn,
            gntdev,
            event_loop,
        })
    }

    /// Backend domain `domid` of the simulated hypervisor `host` reaches.
    pub fn simulated(host: &SimHost, domid: DomId) -> Result<Platform, EvtchnError> {
        let evtchn = Arc::new(host.evtchn(domid)?);
        let gntdev = Arc::new(host.gntdev(domid));
        Ok(Platform::new(
            PlatformKind::Simulated,
            domid,
            evtchn,
            gntdev,
        )?)
    }

    /// The real hypervisor through `/dev/xen`, for the domain this process
    /// runs in (`domid`: 0 in dom0, a driver domain's own id elsewhere).
    #[cfg(feature = "xen-devices")]
    pub fn xen(domid: DomId) -> Result<Platform, super::xen::PlatformUnavailable> {
        let xen = super::xen::XenPlatform::open()?;
        Platform::new(
            PlatformKind::Xen,
            domid,
            Arc::new(xen.evtchn),
            Arc::new(xen.gntdev),
        )
        .map_err(|e| super::xen::PlatformUnavailable(format!("event loop: {e}")))
    }

    /// Which hypervisor.
    pub fn kind(&self) -> PlatformKind {
        self.kind
    }

    /// The backend domain.
    pub fn domid(&self) -> DomId {
        self.domid
    }

    /// Its event channels: ports bound here are delivered to the event loop.
    pub fn evtchn(&self) -> &Arc<dyn EventChannels> {
        &self.evtchn
    }

    /// Its grant mapper.
    pub fn gntdev(&self) -> &Arc<dyn GrantMapper> {
        &self.gntdev
    }

    /// Its event loop.
    pub fn event_loop(&self) -> &EventLoop {
        &self.event_loop
    }
}
