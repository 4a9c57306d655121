//! The console for JavaScript: a backend serving a guest's console page, and
//! the simulated guest's end. The data path stays on the backend's Rust
//! thread; JavaScript gets the output in batches.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use napi::bindgen_prelude::Buffer;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::Status;
use napi_derive::napi;

use super::platform::NativeSimHost;
use super::platform_handle::NativePlatform;
use super::{coded_error, domid, Coded, CodedResult, Outcome, Result};
use crate::console::{
    ConsoleBackend, ConsoleConfig, ConsoleError, ConsoleEvent, SimConsoleFrontend,
};
use crate::platform::sim::{SimEvtchn, SimGntTable};
use crate::platform::{DomId, GrantError};
use crate::ring::ConsoleIndexes;

fn console_error(e: ConsoleError) -> Coded {
    coded_error(&e.code(), e)
}

/// The grant reference through which a guest's primary console page is
/// mapped (Xen's `GNTTAB_RESERVED_CONSOLE`): the `ringRef` to serve a
/// primary console on, whatever frame its `console/ring-ref` names.
#[napi]
pub const GNTTAB_RESERVED_CONSOLE: u32 = crate::console::GNTTAB_RESERVED_CONSOLE;

/// Output chunks delivered together, at most this many per call.
const OUTPUT_BATCH: usize = 256;

/// How to serve a guest's console.
#[napi(object)]
pub struct ConsoleBackendOptions {
    /// The guest.
    pub frontend_domid: u32,
    /// Grant reference of the console page: a console device's `ring-ref`,
    /// or `GNTTAB_RESERVED_CONSOLE` for a primary console.
    pub ring_ref: u32,
    /// The guest's port (`console/port`).
    pub remote_port: u32,
    /// Also serve the console on a pseudo-terminal (default false).
    pub pty: Option<bool>,
    /// Events served per window before the guest is held (default 30; 0:
    /// no limit).
    pub rate_limit_events: Option<u32>,
    /// Rate-limit window in milliseconds (default 200).
    pub rate_limit_window_ms: Option<u32>,
}

/// Counters of a console backend.
#[napi(object)]
pub struct ConsoleBackendStats {
    /// Bytes of guest output consumed.
    pub bytes_out: f64,
    /// Bytes of input written into the guest's ring.
    pub bytes_in: f64,
    /// Events received from the guest.
    pub events: f64,
    /// Passes that found bogus indexes (clamped or refused).
    pub clamped: f64,
    /// Events held back by the rate limit.
    pub rate_limited: f64,
    /// Notifications sent to the guest.
    pub notifications: f64,
    /// Output bytes the pseudo-terminal could not take.
    pub pty_dropped: f64,
}

type OutputCallback = ThreadsafeFunction<Vec<Buffer>, (), Vec<Buffer>, Status, false, true>;
type NoticeCallback = ThreadsafeFunction<String, (), String, Status, false, true>;

/// A console backend.
#[napi]
pub struct NativeConsoleBackend {
    backend: ConsoleBackend,
    failure: Arc<Mutex<Option<String>>>,
}

#[napi]
impl NativeConsoleBackend {
    /// Serves a guest's console on `platform`'s event loop. `onOutput` gets
    /// the guest's output in batches of chunks, in order; `onNotice` what
    /// went wrong on the way (bogus indexes clamped, the event channel
    /// failing). Neither keeps the process alive.
    #[napi(
        factory,
        ts_args_type = "platform: NativePlatform, options: ConsoleBackendOptions, onOutput: (chunks: Buffer[]) => void, onNotice?: (message: string) => void"
    )]
    pub fn start(
        platform: &NativePlatform,
        options: ConsoleBackendOptions,
        on_output: OutputCallback,
        on_notice: Option<NoticeCallback>,
    ) -> Result<NativeConsoleBackend> {
        let frontend = domid(options.frontend_domid)?;
        let defaults = ConsoleConfig::default();
        let config = ConsoleConfig {
            rate_limit_events: options
                .rate_limit_events
                .unwrap_or(defaults.rate_limit_events),
            rate_limit_window: options
                .rate_limit_window_ms
                .map_or(defaults.rate_limit_window, |ms| {
                    Duration::from_millis(u64::from(ms))
                }),
            pty: options.pty.unwrap_or(false),
        };

        // The backend's thread hands chunks over; a task batches whatever
        // piled up while JavaScript was busy into one call.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
        let failure = Arc::new(Mutex::new(None));
        let failed = failure.clone();
        let sink = Box::new(move |event: ConsoleEvent| match event {
            ConsoleEvent::Output(bytes) => {
                let _ = tx.send(bytes);
            }
            ConsoleEvent::BogusIndexes(b) => {
                if let Some(n) = &on_notice {
                    n.call(
                        format!(
                            "guest ring indexes out of range (prod {} cons {}: {} bytes in a {}-byte buffer); clamped",
                            b.prod,
                            b.cons,
                            b.distance(),
                            b.size
                        ),
                        ThreadsafeFunctionCallMode::NonBlocking,
                    );
                }
            }
            ConsoleEvent::Failed(e) => {
                if let Some(n) = &on_notice {
                    n.call(
                        format!("event channel failed: {e}"),
                        ThreadsafeFunctionCallMode::NonBlocking,
                    );
                }
                *failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
            }
        });

        let backend = ConsoleBackend::start(
            platform.platform(),
            frontend,
            options.ring_ref,
            options.remote_port,
            config,
            sink,
        )
        .map_err(console_error)?;

        napi::bindgen_prelude::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut batch = vec![Buffer::from(first)];
                while batch.len() < OUTPUT_BATCH {
                    match rx.try_recv() {
                        Ok(more) => batch.push(more.into()),
                        Err(_) => break,
                    }
                }
                on_output.call(batch, ThreadsafeFunctionCallMode::NonBlocking);
            }
            // The backend stopped: dropping the callback releases it.
        });
        Ok(NativeConsoleBackend { backend, failure })
    }

    /// Puts input into the guest's ring; returns the bytes accepted (fewer
    /// when the ring is full, 0 once stopped).
    #[napi]
    pub fn write(&self, data: Buffer) -> u32 {
        self.backend.write_input(&data) as u32
    }

    /// The pseudo-terminal's slave path, if the console has one.
    #[napi(getter)]
    pub fn pty_path(&self) -> Option<String> {
        self.backend
            .pty_path()
            .map(|p| p.to_string_lossy().into_owned())
    }

    /// Why the backend stopped serving on its own (an event-channel
    /// failure), if it did.
    #[napi(getter)]
    pub fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The counters.
    #[napi]
    pub fn stats(&self) -> ConsoleBackendStats {
        let s = self.backend.stats();
        ConsoleBackendStats {
            bytes_out: s.bytes_out as f64,
            bytes_in: s.bytes_in as f64,
            events: s.events as f64,
            clamped: s.clamped as f64,
            rate_limited: s.rate_limited as f64,
            notifications: s.notifications as f64,
            pty_dropped: s.pty_dropped as f64,
        }
    }

    /// Stops serving: leaves the event loop, closes the port, unmaps the
    /// page. Idempotent.
    #[napi]
    pub fn stop(&self) {
        self.backend.stop();
    }
}

/// The guest's end of a console on the simulated hypervisor.
#[napi]
pub struct NativeConsoleFrontend {
    fe: Arc<SimConsoleFrontend>,
}

/// What a simulated guest's console is made of: its grant table and event
/// channels, and the backend domain it is for.
fn guest_side(
    host: &NativeSimHost,
    domid: u32,
    backend_domid: u32,
) -> Result<(Arc<SimGntTable>, Arc<SimEvtchn>, DomId)> {
    let guest = self::domid(domid)?;
    let backend = self::domid(backend_domid)?;
    let host = host.sim_host();
    let gnttab = host.gnttab(guest).map_err(|e| coded_error(&e.code(), e))?;
    let evtchn = host.evtchn(guest).map_err(|e| coded_error(e.code(), e))?;
    Ok((gnttab, Arc::new(evtchn), backend))
}

#[napi]
impl NativeConsoleFrontend {
    /// Sets up a console of guest `domid` for `backendDomid`: a granted
    /// page and an unbound port, from the guest's grant table (shared with
    /// `host.gnttab()`).
    #[napi(factory)]
    pub fn create(
        host: &NativeSimHost,
        domid: u32,
        backend_domid: u32,
    ) -> Result<NativeConsoleFrontend> {
        let (gnttab, evtchn, backend) = guest_side(host, domid, backend_domid)?;
        let fe = SimConsoleFrontend::new(gnttab, evtchn, backend).map_err(console_error)?;
        Ok(NativeConsoleFrontend { fe: Arc::new(fe) })
    }

    /// Sets up the primary console of guest `domid` for `backendDomid`, as
    /// the domain builder and a PV guest do: the page in the reserved grant
    /// entry `GNTTAB_RESERVED_CONSOLE` (0) for the backend, and an unbound
    /// port. `frame` is what the toolstack writes as `console/ring-ref`.
    /// EBUSY if the guest already has a primary console.
    #[napi(factory)]
    pub fn create_primary(
        host: &NativeSimHost,
        domid: u32,
        backend_domid: u32,
    ) -> Result<NativeConsoleFrontend> {
        let (gnttab, evtchn, backend) = guest_side(host, domid, backend_domid)?;
        let fe = SimConsoleFrontend::new_primary(gnttab, evtchn, backend).map_err(|e| match e {
            ConsoleError::Grant(GrantError::InUse(_)) => coded_error(
                "EBUSY",
                format!("domain {domid} already has a primary console"),
            ),
            e => console_error(e),
        })?;
        Ok(NativeConsoleFrontend { fe: Arc::new(fe) })
    }

    /// Grant reference of the page: a console device's `ring-ref`; for a
    /// primary console the reserved entry, 0.
    #[napi(getter)]
    pub fn ring_ref(&self) -> u32 {
        self.fe.ring_ref()
    }

    /// The guest frame holding the page (a primary console's
    /// `console/ring-ref`).
    #[napi(getter)]
    pub fn frame(&self) -> u32 {
        self.fe.frame()
    }

    /// The port for the backend (`console/port`).
    #[napi(getter)]
    pub fn port(&self) -> u32 {
        self.fe.port()
    }

    /// Writes output and notifies the backend; returns the bytes written
    /// (fewer when the ring is full).
    #[napi]
    pub fn write(&self, data: Buffer) -> u32 {
        self.fe.write(&data) as u32
    }

    /// The input waiting in the ring (possibly empty).
    #[napi]
    pub fn read_input(&self) -> Buffer {
        self.fe.read_input().into()
    }

    /// Waits up to `timeoutMs` for input; resolves to it (empty if none).
    #[napi(ts_return_type = "Promise<Buffer>")]
    pub async fn wait_input(&self, timeout_ms: u32) -> napi::Result<Outcome<Buffer>> {
        let r: CodedResult<Buffer> = async {
            let fe = self.fe.clone();
            let data = tokio::task::spawn_blocking(move || {
                fe.wait_input(Duration::from_millis(u64::from(timeout_ms)))
            })
            .await
            .map_err(|e| coded_error("EIO", e))?;
            Ok(data.into())
        }
        .await;
        Ok(r.into())
    }

    /// Signals the backend without writing (to storm it in tests).
    #[napi]
    pub fn notify(&self) {
        self.fe.notify();
    }

    /// Overwrites the ring's indexes, as a hostile guest may.
    #[napi]
    pub fn set_indexes(
        &self,
        in_cons: u32,
        in_prod: u32,
        out_cons: u32,
        out_prod: u32,
    ) -> Result<()> {
        let ok = self.fe.set_indexes(ConsoleIndexes {
            in_cons,
            in_prod,
            out_cons,
            out_prod,
        });
        if ok {
            Ok(())
        } else {
            Err(coded_error("EBADF", "the console was closed"))
        }
    }

    /// Ends the backend's access and closes the port; EBUSY while the
    /// backend still maps the page.
    #[napi]
    pub fn close(&self) -> Result<()> {
        self.fe.close().map_err(console_error)
    }
}
