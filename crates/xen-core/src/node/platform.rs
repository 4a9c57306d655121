//! The hypervisor platform for JavaScript: the simulated hypervisor, its
//! clients, event channels and grants. Enough to write tests and simulated
//! hosts in TypeScript; the data paths themselves stay in Rust.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use napi::bindgen_prelude::Buffer;
use napi_derive::napi;

use super::coded_error;
use crate::platform::bench;
use crate::platform::poll::{EventLoop, Notifier};
use crate::platform::sim::{
    ControlServer, DomainConfig, SimEvtchn, SimGntTable, SimGntdev, SimHost, SimHypervisor,
};
use crate::platform::{
    CopySegment, CopySide, DomId, EventChannels, EvtchnError, GrantError, GrantMapper,
    GrantMapping, GrantTable, Port,
};

fn grant_error(e: GrantError) -> napi::Error {
    coded_error(&e.code(), e)
}

fn evtchn_error(e: EvtchnError) -> napi::Error {
    coded_error(e.code(), e)
}

fn io_error(e: std::io::Error) -> napi::Error {
    coded_error(
        crate::platform::errno_name(e.raw_os_error().unwrap_or(libc::EIO)),
        e,
    )
}

fn domid(v: u32) -> napi::Result<DomId> {
    DomId::try_from(v).map_err(|_| coded_error("EINVAL", format!("domain id {v} out of range")))
}

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
    pub fn create_domain(&self, options: SimDomainOptions) -> napi::Result<()> {
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
    pub fn set_shutdown(&self, domid: u32, reason: Option<String>) -> napi::Result<bool> {
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
    pub fn serve(&self, path: String) -> napi::Result<()> {
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

/// A domain's state (XEN_DOMINF_* flags and the shutdown reason).
#[napi(object)]
pub struct DomainInfoJs {
    /// Domain id.
    pub domid: u32,
    /// Running (or runnable).
    pub running: bool,
    /// Paused.
    pub paused: bool,
    /// Blocked on an event.
    pub blocked: bool,
    /// Being destroyed.
    pub dying: bool,
    /// Shut down: poweroff, reboot, suspend, crash, watchdog, soft-reset or
    /// `code-<n>`.
    pub shutdown: Option<String>,
}

const SHUTDOWN_NAMES: [&str; 6] = [
    "poweroff",
    "reboot",
    "suspend",
    "crash",
    "watchdog",
    "soft-reset",
];

fn shutdown_code(name: &str) -> Option<u32> {
    SHUTDOWN_NAMES
        .iter()
        .position(|n| *n == name)
        .map(|i| i as u32)
}

fn shutdown_name(code: u32) -> String {
    SHUTDOWN_NAMES
        .get(code as usize)
        .map_or_else(|| format!("code-{code}"), |n| (*n).to_owned())
}

/// Domain information from the real hypervisor (libxenctrl, loaded at run
/// time). Opening fails with ENODEV in a build without the `xen` feature or
/// on a host without Xen.
#[napi]
pub struct NativeXenCtrl {
    #[cfg(feature = "xen")]
    ctrl: Mutex<crate::platform::xen::XenCtrl>,
}

#[napi]
impl NativeXenCtrl {
    /// Opens libxenctrl.
    #[napi(factory)]
    pub fn open() -> napi::Result<NativeXenCtrl> {
        #[cfg(feature = "xen")]
        {
            let ctrl =
                crate::platform::xen::XenCtrl::open().map_err(|e| coded_error("ENODEV", e))?;
            Ok(NativeXenCtrl {
                ctrl: Mutex::new(ctrl),
            })
        }
        #[cfg(not(feature = "xen"))]
        {
            Err(coded_error(
                "ENODEV",
                "this build of xenrx has no real-hypervisor support (cargo feature xen)",
            ))
        }
    }

    /// Every domain's state.
    #[napi]
    pub fn domain_info(&self) -> napi::Result<Vec<DomainInfoJs>> {
        #[cfg(feature = "xen")]
        {
            use crate::platform::xen::ShutdownReason as R;
            let list = self
                .ctrl
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .domains()
                .map_err(io_error)?;
            Ok(list
                .into_iter()
                .map(|i| DomainInfoJs {
                    domid: u32::from(i.domid),
                    running: i.running,
                    paused: i.paused,
                    blocked: i.blocked,
                    dying: i.dying,
                    shutdown: i.shutdown.map(|r| match r {
                        R::Poweroff => shutdown_name(0),
                        R::Reboot => shutdown_name(1),
                        R::Suspend => shutdown_name(2),
                        R::Crash => shutdown_name(3),
                        R::Watchdog => shutdown_name(4),
                        R::SoftReset => shutdown_name(5),
                        R::Other(c) => shutdown_name(c),
                    }),
                })
                .collect())
        }
        #[cfg(not(feature = "xen"))]
        {
            Err(coded_error(
                "ENODEV",
                "no real-hypervisor support in this build",
            ))
        }
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
    pub fn connect(path: String) -> napi::Result<NativeSimHost> {
        Ok(NativeSimHost {
            host: SimHost::connect(std::path::Path::new(&path)).map_err(io_error)?,
        })
    }

    /// Event channels of a domain.
    #[napi]
    pub fn evtchn(&self, domid: u32) -> napi::Result<NativeEventChannel> {
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
    pub fn gntdev(&self, domid: u32) -> napi::Result<NativeGrantDevice> {
        Ok(NativeGrantDevice {
            dev: Arc::new(self.host.gntdev(self::domid(domid)?)),
        })
    }

    /// The grant table and memory of guest `domid`.
    #[napi]
    pub fn gnttab(&self, domid: u32) -> napi::Result<NativeGuestGrantTable> {
        Ok(NativeGuestGrantTable {
            gt: self.host.gnttab(self::domid(domid)?).map_err(grant_error)?,
        })
    }
}

/// Event channels of one domain.
#[napi]
pub struct NativeEventChannel {
    ch: Arc<SimEvtchn>,
}

#[napi]
impl NativeEventChannel {
    /// Binds a local port to `remotePort` of `remote`.
    #[napi]
    pub fn bind_interdomain(&self, remote: u32, remote_port: u32) -> napi::Result<u32> {
        self.ch
            .bind_interdomain(domid(remote)?, remote_port)
            .map_err(evtchn_error)
    }

    /// Allocates a port `remote` may bind to.
    #[napi]
    pub fn alloc_unbound(&self, remote: u32) -> napi::Result<u32> {
        self.ch.alloc_unbound(domid(remote)?).map_err(evtchn_error)
    }

    /// Closes a port.
    #[napi]
    pub fn unbind(&self, port: u32) -> napi::Result<()> {
        self.ch.unbind(port).map_err(evtchn_error)
    }

    /// Signals the other end of a port.
    #[napi]
    pub fn notify(&self, port: u32) -> napi::Result<()> {
        self.ch.notify(port).map_err(evtchn_error)
    }

    /// Ports with a pending event (masked until unmasked), without waiting.
    #[napi]
    pub fn pending(&self) -> napi::Result<Vec<u32>> {
        let mut out = Vec::new();
        self.ch.pending(&mut out).map_err(evtchn_error)?;
        Ok(out)
    }

    /// Waits up to `timeoutMs` for pending ports.
    #[napi]
    pub async fn wait_pending(&self, timeout_ms: u32) -> napi::Result<Vec<u32>> {
        let ch = self.ch.clone();
        tokio::task::spawn_blocking(move || {
            let deadline = std::time::Instant::now() + Duration::from_millis(u64::from(timeout_ms));
            loop {
                let mut out = Vec::new();
                ch.pending(&mut out).map_err(evtchn_error)?;
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                if !out.is_empty() || left.is_zero() {
                    return Ok(out);
                }
                let mut p = libc::pollfd {
                    fd: std::os::fd::AsRawFd::as_raw_fd(&ch.fd()),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd.
                unsafe { libc::poll(&mut p, 1, left.as_millis().min(i32::MAX as u128) as i32) };
            }
        })
        .await
        .map_err(|e| coded_error("EIO", e))?
    }

    /// Re-enables delivery for a port.
    #[napi]
    pub fn unmask(&self, port: u32) -> napi::Result<()> {
        self.ch.unmask(port).map_err(evtchn_error)
    }

    /// Answers every event on `port` with a notification back, on a Rust
    /// thread (a simulated peer for tests and benchmarks).
    #[napi]
    pub fn start_echo(&self, port: u32) -> napi::Result<NativeEcho> {
        let lp = EventLoop::spawn(
            "xenrx-echo",
            self.ch.clone(),
            move |ports: &[Port], n: &mut Notifier| {
                if ports.contains(&port) {
                    n.notify(port);
                }
            },
        )
        .map_err(io_error)?;
        Ok(NativeEcho {
            lp: Mutex::new(Some(lp)),
        })
    }
}

/// A running echo peer.
#[napi]
pub struct NativeEcho {
    lp: Mutex<Option<EventLoop>>,
}

#[napi]
impl NativeEcho {
    /// Stops it.
    #[napi]
    pub fn stop(&self) {
        if let Some(lp) = self.lp.lock().unwrap_or_else(|p| p.into_inner()).take() {
            lp.stop();
        }
    }
}

/// A grant to copy to or from.
#[napi(object)]
pub struct GrantSpan {
    /// Granting domain.
    pub domid: u32,
    /// Grant reference.
    pub gref: u32,
    /// Offset in the frame.
    pub offset: u32,
    /// Bytes (for copies out of the grant).
    pub length: Option<u32>,
    /// Bytes (for copies into the grant).
    pub data: Option<Buffer>,
}

/// The result of one copy segment.
#[napi(object)]
pub struct CopyResult {
    /// GNTST code (0: okay).
    pub status: i32,
    /// The bytes copied out, for a successful copy out.
    pub data: Option<Buffer>,
}

fn u16_of(v: u32, what: &str) -> napi::Result<u16> {
    u16::try_from(v).map_err(|_| coded_error("EINVAL", format!("{what} {v} out of range")))
}

/// The gntdev of a backend domain.
#[napi]
pub struct NativeGrantDevice {
    dev: Arc<SimGntdev>,
}

#[napi]
impl NativeGrantDevice {
    /// Maps a batch of grants of `domid` into one contiguous mapping.
    #[napi]
    pub fn map(
        &self,
        domid: u32,
        refs: Vec<u32>,
        writable: bool,
    ) -> napi::Result<NativeGrantMapping> {
        let m = self
            .dev
            .map(self::domid(domid)?, &refs, writable)
            .map_err(grant_error)?;
        Ok(NativeGrantMapping {
            map: Mutex::new(Some(m)),
        })
    }

    /// Copies buffers into grants; one GNTST status per segment.
    #[napi]
    pub fn copy_in(&self, spans: Vec<GrantSpan>) -> napi::Result<Vec<i32>> {
        let datas: Vec<Vec<u8>> = spans
            .iter()
            .map(|s| s.data.as_deref().unwrap_or(&[]).to_vec())
            .collect();
        let mut segs = Vec::with_capacity(spans.len());
        for (s, data) in spans.iter().zip(&datas) {
            segs.push(CopySegment::new(
                CopySide::From(data),
                CopySide::Grant {
                    domid: domid(s.domid)?,
                    gref: s.gref,
                    offset: u16_of(s.offset, "offset")?,
                },
                u16_of(data.len() as u32, "length")?,
            ));
        }
        self.dev.copy(&mut segs).map_err(grant_error)?;
        Ok(segs.iter().map(|s| s.status as i32).collect())
    }

    /// Copies out of grants.
    #[napi]
    pub fn copy_out(&self, spans: Vec<GrantSpan>) -> napi::Result<Vec<CopyResult>> {
        let mut bufs: Vec<Vec<u8>> = spans
            .iter()
            .map(|s| vec![0u8; s.length.unwrap_or(0) as usize])
            .collect();
        let mut segs = Vec::with_capacity(spans.len());
        for (s, buf) in spans.iter().zip(bufs.iter_mut()) {
            let len = u16_of(buf.len() as u32, "length")?;
            segs.push(CopySegment::new(
                CopySide::Grant {
                    domid: domid(s.domid)?,
                    gref: s.gref,
                    offset: u16_of(s.offset, "offset")?,
                },
                CopySide::Into(buf),
                len,
            ));
        }
        self.dev.copy(&mut segs).map_err(grant_error)?;
        let statuses: Vec<i32> = segs.iter().map(|s| s.status as i32).collect();
        drop(segs);
        Ok(statuses
            .into_iter()
            .zip(bufs)
            .map(|(status, data)| CopyResult {
                status,
                data: (status == 0).then(|| data.into()),
            })
            .collect())
    }
}

/// Frames of another domain mapped here.
#[napi]
pub struct NativeGrantMapping {
    map: Mutex<Option<GrantMapping>>,
}

impl NativeGrantMapping {
    fn with<R>(&self, f: impl FnOnce(&GrantMapping) -> napi::Result<R>) -> napi::Result<R> {
        let guard = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let m = guard
            .as_ref()
            .ok_or_else(|| coded_error("EBADF", "the mapping was unmapped"))?;
        f(m)
    }
}

#[napi]
impl NativeGrantMapping {
    /// Size in bytes.
    #[napi(getter)]
    pub fn length(&self) -> napi::Result<u32> {
        self.with(|m| Ok(m.len() as u32))
    }

    /// Whether it is writable.
    #[napi(getter)]
    pub fn writable(&self) -> napi::Result<bool> {
        self.with(|m| Ok(m.writable()))
    }

    /// Copies bytes out.
    #[napi]
    pub fn read(&self, offset: u32, length: u32) -> napi::Result<Buffer> {
        self.with(|m| {
            let mut buf = vec![0u8; length as usize];
            m.mem()
                .read(offset as usize, &mut buf)
                .map_err(|e| coded_error("ERANGE", e))?;
            Ok(buf.into())
        })
    }

    /// Copies bytes in (a read-only mapping refuses).
    #[napi]
    pub fn write(&self, offset: u32, data: Buffer) -> napi::Result<()> {
        self.with(|m| {
            if !m.writable() {
                return Err(coded_error("EACCES", "the mapping is read-only"));
            }
            m.mem()
                .write(offset as usize, &data)
                .map_err(|e| coded_error("ERANGE", e))
        })
    }

    /// Unmaps (also done when garbage-collected).
    #[napi]
    pub fn unmap(&self) {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}

/// A guest's grant table and memory.
#[napi]
pub struct NativeGuestGrantTable {
    gt: Arc<SimGntTable>,
}

#[napi]
impl NativeGuestGrantTable {
    /// A free frame of guest memory, zeroed.
    #[napi]
    pub fn alloc_page(&self) -> napi::Result<u32> {
        self.gt
            .alloc_page()
            .ok_or_else(|| coded_error("ENOMEM", "guest memory is full"))
    }

    /// Returns a frame.
    #[napi]
    pub fn free_page(&self, frame: u32) {
        self.gt.free_page(frame);
    }

    /// Reads guest memory.
    #[napi]
    pub fn read_page(&self, frame: u32, offset: u32, length: u32) -> napi::Result<Buffer> {
        let page = self
            .gt
            .page(frame)
            .ok_or_else(|| coded_error("ERANGE", format!("no frame {frame}")))?;
        let mut buf = vec![0u8; length as usize];
        page.read(offset as usize, &mut buf)
            .map_err(|e| coded_error("ERANGE", e))?;
        Ok(buf.into())
    }

    /// Writes guest memory.
    #[napi]
    pub fn write_page(&self, frame: u32, offset: u32, data: Buffer) -> napi::Result<()> {
        let page = self
            .gt
            .page(frame)
            .ok_or_else(|| coded_error("ERANGE", format!("no frame {frame}")))?;
        page.write(offset as usize, &data)
            .map_err(|e| coded_error("ERANGE", e))
    }

    /// Grants a frame to `to`.
    #[napi]
    pub fn grant(&self, to: u32, frame: u32, readonly: bool) -> napi::Result<u32> {
        self.gt
            .grant(domid(to)?, frame, readonly)
            .map_err(grant_error)
    }

    /// Ends a grant (EBUSY while the grantee maps it).
    #[napi]
    pub fn end_access(&self, gref: u32) -> napi::Result<()> {
        self.gt.end_access(gref).map_err(grant_error)
    }

    /// The flags word of an entry (GTF_reading 8, GTF_writing 16 while used).
    #[napi]
    pub fn entry_flags(&self, gref: u32) -> Option<u32> {
        self.gt.entry_flags(gref).map(u32::from)
    }

    /// Writes an entry directly, as a hostile guest may.
    #[napi]
    pub fn write_entry(&self, gref: u32, flags: u32, to: u32, frame: u32) -> napi::Result<bool> {
        Ok(self
            .gt
            .write_entry(gref, u16_of(flags, "flags")?, domid(to)?, frame))
    }
}

/// Latencies (ns) of event-channel round trips to an echo peer.
#[napi]
pub fn bench_evtchn_round_trips(
    ch: &NativeEventChannel,
    port: u32,
    count: u32,
) -> napi::Result<Vec<f64>> {
    let v = bench::evtchn_round_trips(ch.ch.as_ref(), port, count as usize).map_err(io_error)?;
    Ok(v.into_iter().map(|n| n as f64).collect())
}

/// Latencies (ns) of the same ping-pong over bare eventfds, two threads.
#[napi]
pub fn bench_eventfd_round_trips(count: u32) -> napi::Result<Vec<f64>> {
    let v = bench::eventfd_round_trips(count as usize).map_err(io_error)?;
    Ok(v.into_iter().map(|n| n as f64).collect())
}

/// Notifications per second on one port.
#[napi]
pub fn bench_notify_rate(ch: &NativeEventChannel, port: u32, millis: u32) -> napi::Result<f64> {
    bench::notify_rate(
        ch.ch.as_ref(),
        port,
        Duration::from_millis(u64::from(millis)),
    )
    .map_err(io_error)
}

/// Grant map+unmap operations per second for a batch.
#[napi]
pub fn bench_map_unmap_rate(
    dev: &NativeGrantDevice,
    domid: u32,
    refs: Vec<u32>,
    millis: u32,
) -> napi::Result<f64> {
    bench::map_unmap_rate(
        dev.dev.as_ref(),
        self::domid(domid)?,
        &refs,
        Duration::from_millis(u64::from(millis)),
    )
    .map_err(io_error)
}

/// Plain mmap+munmap operations per second for `pages` pages of a memfd.
#[napi]
pub fn bench_mmap_munmap_rate(pages: u32, millis: u32) -> napi::Result<f64> {
    bench::mmap_munmap_rate(pages as usize, Duration::from_millis(u64::from(millis)))
        .map_err(io_error)
}

/// Grant-copy bytes per second, 4 KiB segments, `batch` per call.
#[napi]
pub fn bench_grant_copy_rate(
    dev: &NativeGrantDevice,
    domid: u32,
    refs: Vec<u32>,
    batch: u32,
    millis: u32,
) -> napi::Result<f64> {
    bench::grant_copy_rate(
        dev.dev.as_ref(),
        self::domid(domid)?,
        &refs,
        batch as usize,
        Duration::from_millis(u64::from(millis)),
    )
    .map_err(io_error)
}

/// memcpy bytes per second, 4 KiB blocks, `batch` per round.
#[napi]
pub fn bench_memcpy_rate(pages: u32, batch: u32, millis: u32) -> napi::Result<f64> {
    bench::memcpy_rate(
        pages as usize,
        batch as usize,
        Duration::from_millis(u64::from(millis)),
    )
    .map_err(io_error)
}
