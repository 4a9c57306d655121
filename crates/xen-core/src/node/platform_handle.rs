//! The platform for JavaScript: one value, chosen once (simulated or real
//! Xen), that every backend takes. Rust data paths run on its event loop
//! without touching JavaScript; ports whose data path is in TypeScript get
//! their events in batches through one thread-safe function.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use napi::bindgen_prelude::AsyncTask;
use napi::{Env, Task};

use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::Status;
use napi_derive::napi;

use super::grants::NativeGrantDevice;
use super::platform::NativeSimHost;
use super::{coded_error, domid, evtchn_error, io_error, Result};
use crate::platform::event_loop::SourceHandle;
use crate::platform::port_batch::{BindError, Listener, PortBatch};
use crate::platform::Platform;

/// Tells JavaScript that ports fired; it then takes them with
/// `takeEvents()`, so everything that fired meanwhile comes as one batch.
type EventsCallback = ThreadsafeFunction<(), (), (), Status, false, true>;

/// The backend domain's hypervisor interfaces and event loop.
#[napi]
pub struct NativePlatform {
    platform: Arc<Platform>,
    js: Arc<PortBatch>,
    sources: Mutex<HashMap<u32, SourceHandle>>,
}

impl NativePlatform {
    /// The platform, for other native classes (backends) that run on it.
    pub(crate) fn platform(&self) -> &Arc<Platform> {
        &self.platform
    }

    fn wrap(platform: Platform) -> NativePlatform {
        NativePlatform {
            platform: Arc::new(platform),
            js: PortBatch::new(),
            sources: Mutex::new(HashMap::new()),
        }
    }
}

#[napi]
impl NativePlatform {
    /// Backend domain `domid` of the simulated hypervisor `host` reaches.
    #[napi(factory)]
    pub fn simulated(host: &NativeSimHost, domid: u32) -> Result<NativePlatform> {
        let p = Platform::simulated(host.sim_host(), self::domid(domid)?).map_err(evtchn_error)?;
        Ok(NativePlatform::wrap(p))
    }

    /// The real hypervisor through `/dev/xen`, for domain `domid` (this
    /// process's domain: 0 in dom0). ENODEV where there is no Xen, or in
    /// builds without real-hypervisor support.
    #[napi(factory)]
    pub fn xen(domid: u32) -> Result<NativePlatform> {
        let domid = self::domid(domid)?;
        #[cfg(feature = "xen-devices")]
        {
            let p = Platform::xen(domid).map_err(|e| coded_error("ENODEV", e))?;
            Ok(NativePlatform::wrap(p))
        }
        #[cfg(not(feature = "xen-devices"))]
        {
            let _ = domid;
            Err(coded_error(
                "ENODEV",
                "this build of xenrx has no real-hypervisor support (cargo feature xen-devices)",
            ))
        }
    }

    /// `"simulated"` or `"xen"`.
    #[napi(getter)]
    pub fn kind(&self) -> String {
        self.platform.kind().name().into()
    }

    /// How the event loop waits: `"io_uring"` (the event channels' reads
    /// and unmasks in the wait's system call) or `"epoll"`.
    #[napi(getter)]
    pub fn event_wait(&self) -> String {
        self.platform.event_loop().wait_kind().into()
    }

    /// The backend domain.
    #[napi(getter)]
    pub fn domid(&self) -> u32 {
        u32::from(self.platform.domid())
    }

    /// Sets the one function told when ports bound with `bindForJs` fire
    /// (it then calls `takeEvents`). It does not keep the process alive.
    #[napi(ts_args_type = "onEvents: () => void")]
    pub fn listen(&self, on_events: EventsCallback) {
        let tell: Listener = Arc::new(move || {
            on_events.call((), ThreadsafeFunctionCallMode::NonBlocking);
        });
        self.js.listen(Some(tell));
    }

    /// Whether the event loop still runs its data paths: resolves within
    /// `timeout_ms` (from a worker thread, so a stuck loop sticks nothing).
    #[napi(ts_return_type = "Promise<boolean>")]
    pub fn event_loop_responds(&self, timeout_ms: u32) -> AsyncTask<LoopProbe> {
        AsyncTask::new(LoopProbe {
            platform: self.platform.clone(),
            timeout: Duration::from_millis(u64::from(timeout_ms)),
        })
    }

    /// The ports that fired since the last call, each once per event. Each
    /// stays masked until `unmask(port)`.
    #[napi]
    pub fn take_events(&self) -> Vec<u32> {
        self.js.take()
    }

    /// Binds a port to `remotePort` of `remoteDomid` whose events go to
    /// JavaScript (see `listen`). Returns the local port.
    #[napi]
    pub fn bind_for_js(&self, remote_domid: u32, remote_port: u32) -> Result<u32> {
        let (port, handle) = self
            .js
            .bind(&self.platform, domid(remote_domid)?, remote_port)
            .map_err(|e| match e {
                BindError::EventChannel(e) => evtchn_error(e),
                BindError::EventLoop(e) => io_error(e),
            })?;
        self.sources
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(port, handle);
        Ok(port)
    }

    /// Closes a port bound with `bindForJs` (ENOTCONN if it is not one).
    #[napi]
    pub fn unbind(&self, port: u32) -> Result<()> {
        let handle = self
            .sources
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&port);
        let Some(handle) = handle else {
            return Err(coded_error(
                "ENOTCONN",
                format!("port {port} is not bound here"),
            ));
        };
        drop(handle.remove());
        self.platform.evtchn().unbind(port).map_err(evtchn_error)
    }

    /// Signals the other end of a port.
    #[napi]
    pub fn notify(&self, port: u32) -> Result<()> {
        self.platform.evtchn().notify(port).map_err(evtchn_error)
    }

    /// Re-enables delivery for a port after its event was handled; an event
    /// that came meanwhile is delivered at once.
    #[napi]
    pub fn unmask(&self, port: u32) -> Result<()> {
        self.platform.evtchn().unmask(port).map_err(evtchn_error)
    }

    /// The platform's grant mapper (map, copy).
    #[napi]
    pub fn grant_device(&self) -> NativeGrantDevice {
        NativeGrantDevice {
            dev: self.platform.gntdev().clone(),
        }
    }

    /// Closes the ports bound for JavaScript and stops the event loop.
    #[napi]
    pub fn stop(&self) {
        let sources: Vec<(u32, SourceHandle)> = self
            .sources
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .collect();
        for (port, handle) in sources {
            drop(handle.remove());
            let _ = self.platform.evtchn().unbind(port);
        }
        self.js.listen(None);
        self.platform.event_loop().stop();
    }
}

/// The event loop's health probe, run off the JavaScript thread.
pub struct LoopProbe {
    platform: Arc<Platform>,
    timeout: Duration,
}

impl Task for LoopProbe {
    type Output = bool;
    type JsValue = bool;

    fn compute(&mut self) -> napi::Result<bool> {
        Ok(self.platform.event_loop().responds(self.timeout))
    }

    fn resolve(&mut self, _env: Env, alive: bool) -> napi::Result<bool> {
        Ok(alive)
    }
}
