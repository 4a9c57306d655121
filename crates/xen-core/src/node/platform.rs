//! The simulated hypervisor for JavaScript: the hypervisor, its clients and
//! event channels. Enough to write tests and simulated hosts in TypeScript;
//! the data paths themselves stay in Rust.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use napi_derive::napi;

use super::domains::{shutdown_code, shutdown_name, DomainInfoJs};
use super::grants::{NativeGrantDevice, NativeGuestGrantTable};
use super::{
    coded_error, domid, evtchn_error, grant_error, io_error, CodedResult, Outcome, Result,
};
use crate::platform::event_loop::{wait_readable, Control, EventLoop, SourceHandle, Wake};
use crate::platform::sim::{ControlServer, DomainConfig, SimEvtchn, SimHost, SimHypervisor};
use crate::platform::{DomId, EventChannels};

/// How to create a simulated domain.
#[napi(object)]
pub struct SimDomainOptions {
    /// Domain id.
    pub domid: u32,
    /// Pages of memory (default 1024).
    pub pages: Option<u32>,
    /// Grant-table frames (default 4, 512 entries each).
    pub grant_frames: Option<u32>,
    /// Event-channel ports (default 1024).
    pub max_ports: Option<u32>,
}

/// The simulated hypervisor.
#[napi]
pub struct NativeSimHypervisor {
    hv: SimHypervisor,
    server: Mutex<Option<ControlServer>>,
}

#[napi]
impl NativeSimHypervisor {
    /// A hypervisor with no domains.
    #[napi(constructor)]
    pub fn new() -> NativeSimHypervisor {
        NativeSimHypervisor {
            hv: SimHypervisor::new(),
            server: Mutex::new(None),
        }
    }

    /// Creates a domain.
    #[napi]
    pub fn create_domain(&self, options: SimDomainOptions) -> Result<()> {
        let mut c = DomainConfig::new(domid(options.domid)?);
        c.pages = options.pages.unwrap_or(c.pages);
        c.grant_frames = options.grant_frames.unwrap_or(c.grant_frames);
        c.max_ports = options.max_ports.unwrap_or(c.max_ports);
        self.hv.create_domain(c).map_err(io_error)
    }

    /// Destroys a domain; false if there was none.
    #[napi]
    pub fn destroy_domain(&self, domid: u32) -> bool {
        DomId::try_from(domid).is_ok_and(|d| self.hv.destroy_domain(d))
    }

    /// Ids of the domains.
    #[napi]
    pub fn domains(&self) -> Vec<u32> {
        self.hv.domains().into_iter().map(u32::from).collect()
    }

    /// Pauses (true) or unpauses (false) a domain; false if there is none.
    #[napi]
    pub fn set_paused(&self, domid: u32, paused: bool) -> bool {
        DomId::try_from(domid).is_ok_and(|d| self.hv.set_paused(d, paused))
    }

    /// Shuts a domain down with a reason (poweroff, reboot, suspend, crash,
    /// watchdog, soft-reset), or clears its shutdown with `null`.
    #[napi]
    pub fn set_shutdown(&self, domid: u32, reason: Option<String>) -> Result<bool> {
        let code =
            match reason.as_deref() {
                None => None,
                Some(name) => Some(shutdown_code(name).ok_or_else(|| {
                    coded_error("EINVAL", format!("unknown shutdown reason {name}"))
                })?),
            };
        Ok(DomId::try_from(domid).is_ok_and(|d| self.hv.set_shutdown(d, code)))
    }

    /// Every domain's state, as the hypervisor would report it.
    #[napi]
    pub fn domain_info(&self) -> Vec<DomainInfoJs> {
        self.hv
            .domains()
            .into_iter()
            .filter_map(|d| {
                let run = self.hv.run_state(d)?;
                Some(DomainInfoJs {
                    domid: u32::from(d),
                    running: !run.paused && run.shutdown.is_none(),
                    paused: run.paused,
                    blocked: false,
                    dying: false,
                    shutdown: run.shutdown.map(shutdown_name),
                })
            })
            .collect()
    }

    /// Serves the control socket for clients in other processes.
    #[napi]
    pub fn serve(&self, path: String) -> Result<()> {
        let server = self
            .hv
            .serve(std::path::Path::new(&path))
            .map_err(io_error)?;
        *self.server.lock().unwrap_or_else(|p| p.into_inner()) = Some(server);
        Ok(())
    }

    /// Stops serving the control socket.
    #[napi]
    pub fn stop_serving(&self) {
        self.server.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    /// A client in this process.
    #[napi]
    pub fn host(&self) -> NativeSimHost {
        NativeSimHost {
            host: self.hv.host(),
        }
    }
}

impl Default for NativeSimHypervisor {
    fn default() -> Self {
        Self::new()
    }
}

/// A client of the simulated hypervisor.
#[napi]
pub struct NativeSimHost {
    host: SimHost,
}

impl NativeSimHost {
    /// The client, for other native classes that act on the simulated host.
    pub(crate) fn sim_host(&self) -> &SimHost {
        &self.host
    }
}

#[napi]
impl NativeSimHost {
    /// Connects to a hypervisor's control socket.
    #[napi(factory)]
    pub fn connect(path: String) -> Result<NativeSimHost> {
        Ok(NativeSimHost {
            host: SimHost::connect(std::path::Path::new(&path)).map_err(io_error)?,
        })
    }

    /// Event channels of a domain.
    #[napi]
    pub fn evtchn(&self, domid: u32) -> Result<NativeEventChannel> {
        Ok(NativeEventChannel {
            ch: Arc::new(
                self.host
                    .evtchn(self::domid(domid)?)
                    .map_err(evtchn_error)?,
            ),
        })
    }

    /// The gntdev of a backend in `domid`.
    #[napi]
    pub fn gntdev(&self, domid: u32) -> Result<NativeGrantDevice> {
        Ok(NativeGrantDevice {
            dev: Arc::new(self.host.gntdev(self::domid(domid)?)),
        })
    }

    /// The grant table and memory of guest `domid`.
    #[napi]
    pub fn gnttab(&self, domid: u32) -> Result<NativeGuestGrantTable> {
        Ok(NativeGuestGrantTable {
            gt: self.host.gnttab(self::domid(domid)?).map_err(grant_error)?,
        })
    }
}

/// Event channels of one domain.
#[napi]
pub struct NativeEventChannel {
    pub(crate) ch: Arc<SimEvtchn>,
}

#[napi]
impl NativeEventChannel {
    /// Binds a local port to `remotePort` of `remote`.
    #[napi]
    pub fn bind_interdomain(&self, remote: u32, remote_port: u32) -> Result<u32> {
        self.ch
            .bind_interdomain(domid(remote)?, remote_port)
            .map_err(evtchn_error)
    }

    /// Allocates a port `remote` may bind to.
    #[napi]
    pub fn alloc_unbound(&self, remote: u32) -> Result<u32> {
        self.ch.alloc_unbound(domid(remote)?).map_err(evtchn_error)
    }

    /// Closes a port.
    #[napi]
    pub fn unbind(&self, port: u32) -> Result<()> {
        self.ch.unbind(port).map_err(evtchn_error)
    }

    /// Signals the other end of a port.
    #[napi]
    pub fn notify(&self, port: u32) -> Result<()> {
        self.ch.notify(port).map_err(evtchn_error)
    }

    /// Ports with a pending event (masked until unmasked), without waiting.
    #[napi]
    pub fn pending(&self) -> Result<Vec<u32>> {
        let mut out = Vec::new();
        self.ch.pending(&mut out).map_err(evtchn_error)?;
        Ok(out)
    }

    /// Waits up to `timeoutMs` for pending ports.
    #[napi(ts_return_type = "Promise<Array<number>>")]
    pub async fn wait_pending(&self, timeout_ms: u32) -> napi::Result<Outcome<Vec<u32>>> {
        let r: CodedResult<Vec<u32>> = async {
            let ch = self.ch.clone();
            tokio::task::spawn_blocking(move || {
                let deadline =
                    std::time::Instant::now() + Duration::from_millis(u64::from(timeout_ms));
                loop {
                    let mut out = Vec::new();
                    ch.pending(&mut out).map_err(evtchn_error)?;
                    let left = deadline.saturating_duration_since(std::time::Instant::now());
                    if !out.is_empty() || left.is_zero() {
                        return Ok(out);
                    }
                    let _ = wait_readable(ch.fd(), Some(left));
                }
            })
            .await
            .map_err(|e| coded_error("EIO", e))?
        }
        .await;
        Ok(r.into())
    }

    /// Re-enables delivery for a port.
    #[napi]
    pub fn unmask(&self, port: u32) -> Result<()> {
        self.ch.unmask(port).map_err(evtchn_error)
    }

    /// Answers every event on `port` with a notification back, on a Rust
    /// thread (a simulated peer for tests and benchmarks).
    #[napi]
    pub fn start_echo(&self, port: u32) -> Result<NativeEcho> {
        let lp = EventLoop::spawn("xenrx-echo", self.ch.clone()).map_err(io_error)?;
        let echo = move |why: Wake, cx: &mut Control<'_>| {
            if why.port {
                cx.notify(port);
            }
        };
        let source = lp
            .add(Some(port), Box::new(echo), false)
            .map_err(io_error)?;
        Ok(NativeEcho {
            running: Mutex::new(Some((source, lp))),
        })
    }
}

/// A running echo peer.
#[napi]
pub struct NativeEcho {
    running: Mutex<Option<(SourceHandle, EventLoop)>>,
}

#[napi]
impl NativeEcho {
    /// Stops it.
    #[napi]
    pub fn stop(&self) {
        if let Some((source, lp)) = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            drop(source.remove());
            lp.stop();
        }
    }
}
