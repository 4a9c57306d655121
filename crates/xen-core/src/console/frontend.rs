//! The guest's end of a console on the simulated hypervisor: what a guest
//! kernel's console driver does, for tests, demos and benchmarks. It can
//! also misbehave on purpose (bogus indexes, event storms) to test backends.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::ConsoleError;
use crate::platform::event_loop::wait_readable;
use crate::platform::sim::SimGntTable;
use crate::platform::{DomId, EventChannels, GrantError, GrantRef, GrantTable, Port, SharedMem};
use crate::ring::{ConsoleIndexes, ConsoleRing};

/// A simulated guest console: a page of guest memory granted to the
/// backend, and an unbound port for it to bind.
pub struct SimConsoleFrontend {
    gnttab: Arc<SimGntTable>,
    evtchn: Arc<dyn EventChannels>,
    backend: DomId,
    frame: u32,
    ring_ref: GrantRef,
    port: Port,
    /// One producer of `out` at a time, as the ring requires.
    writer: Mutex<()>,
    /// One consumer of `in` at a time.
    reader: Mutex<()>,
    /// Close progress: (grant ended, port unbound).
    closing: Mutex<(bool, bool)>,
    open: AtomicBool,
}

impl SimConsoleFrontend {
    /// Sets up a console of the guest that owns `gnttab`, for the backend
    /// domain `backend`. `evtchn` is the guest's event-channel handle; it
    /// should serve only this console, since waiting takes every event it
    /// delivers.
    pub fn new(
        gnttab: Arc<SimGntTable>,
        evtchn: Arc<dyn EventChannels>,
        backend: DomId,
    ) -> Result<SimConsoleFrontend, ConsoleError> {
        Self::with_grant(gnttab, evtchn, backend, |gt, frame| {
            gt.grant(backend, frame, false)
        })
    }

    /// Sets up the guest's primary console as the domain builder and a PV
    /// guest do: the page is placed in the reserved grant entry
    /// [`super::GNTTAB_RESERVED_CONSOLE`] for `backend` (so
    /// [`SimConsoleFrontend::ring_ref`] is that entry, and
    /// [`SimConsoleFrontend::frame`] what the toolstack writes as
    /// `console/ring-ref`), with an unbound port for `backend`. Fails with
    /// [`crate::platform::GrantError::InUse`] if the guest already has one.
    pub fn new_primary(
        gnttab: Arc<SimGntTable>,
        evtchn: Arc<dyn EventChannels>,
        backend: DomId,
    ) -> Result<SimConsoleFrontend, ConsoleError> {
        Self::with_grant(gnttab, evtchn, backend, |gt, frame| {
            gt.grant_reserved(super::GNTTAB_RESERVED_CONSOLE, backend, frame, false)
                .map(|()| super::GNTTAB_RESERVED_CONSOLE)
        })
    }

    /// A fresh page, granted by `grant`, and an unbound port.
    fn with_grant(
        gnttab: Arc<SimGntTable>,
        evtchn: Arc<dyn EventChannels>,
        backend: DomId,
        grant: impl FnOnce(&SimGntTable, u32) -> Result<GrantRef, GrantError>,
    ) -> Result<SimConsoleFrontend, ConsoleError> {
        let frame = gnttab.alloc_page().ok_or(ConsoleError::NoGuestMemory)?;
        let checked = gnttab
            .page(frame)
            .ok_or(ConsoleError::NoGuestMemory)
            .and_then(|p| ConsoleRing::frontend(p).map_err(ConsoleError::Ring));
        if let Err(e) = checked {
            gnttab.free_page(frame);
            return Err(e);
        }
        let ring_ref = match grant(&gnttab, frame) {
            Ok(r) => r,
            Err(e) => {
                gnttab.free_page(frame);
                return Err(ConsoleError::Grant(e));
            }
        };
        let port = match evtchn.alloc_unbound(backend) {
            Ok(p) => p,
            Err(e) => {
                let _ = gnttab.end_access(ring_ref);
                gnttab.free_page(frame);
                return Err(ConsoleError::EventChannel(e));
            }
        };
        Ok(SimConsoleFrontend {
            gnttab,
            evtchn,
            backend,
            frame,
            ring_ref,
            port,
            writer: Mutex::new(()),
            reader: Mutex::new(()),
            closing: Mutex::new((false, false)),
            open: AtomicBool::new(true),
        })
    }

    /// The grant reference of the console page: what a console device
    /// writes as its `ring-ref`; for the primary console, the reserved
    /// entry (its `console/ring-ref` is [`SimConsoleFrontend::frame`]).
    pub fn ring_ref(&self) -> GrantRef {
        self.ring_ref
    }

    /// The port the backend binds to (the guest's `console/port`).
    pub fn port(&self) -> Port {
        self.port
    }

    /// The guest frame holding the page (a primary console's
    /// `console/ring-ref`).
    pub fn frame(&self) -> u32 {
        self.frame
    }

    /// The guest.
    pub fn domid(&self) -> DomId {
        self.gnttab.domid()
    }

    /// The backend domain.
    pub fn backend(&self) -> DomId {
        self.backend
    }

    /// The raw page, to play a hostile guest. `None` once closed.
    pub fn page(&self) -> Option<SharedMem<'_>> {
        if !self.open.load(Ordering::Acquire) {
            return None;
        }
        self.gnttab.page(self.frame)
    }

    /// The guest's view of the ring. `None` once closed.
    pub fn ring(&self) -> Option<ConsoleRing<'_>> {
        ConsoleRing::frontend(self.page()?).ok()
    }

    /// Writes as much of `data` into `out` as fits and notifies the backend;
    /// returns the bytes written (0 when full, closed, or if the indexes
    /// were made bogus).
    pub fn write(&self, data: &[u8]) -> usize {
        let n = {
            let _one_writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
            match self.ring().map(|r| r.write(data)) {
                Some(Ok(n)) => n,
                _ => 0,
            }
        };
        if n > 0 {
            self.notify();
        }
        n
    }

    /// Writes all of `data`, waiting for the backend to make room; returns
    /// the bytes written, fewer if `timeout` passed first.
    pub fn write_all(&self, data: &[u8], timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        let mut done = 0;
        while done < data.len() && self.open.load(Ordering::Acquire) {
            let n = self.write(&data[done..]);
            done += n;
            if n == 0 && !self.wait_notified(deadline.saturating_duration_since(Instant::now())) {
                // Room may have been made without an event reaching us
                // (another waiter took it): try once more before giving up.
                done += self.write(&data[done..]);
                if Instant::now() >= deadline {
                    break;
                }
            }
        }
        done
    }

    /// Reads the input the backend put into `in`, notifying it of the room
    /// made.
    pub fn read_input(&self) -> Vec<u8> {
        let mut data = Vec::new();
        {
            let _one_reader = self.reader.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(ring) = self.ring() {
                let _ = ring.read(&mut data);
            }
        }
        if !data.is_empty() {
            self.notify();
        }
        data
    }

    /// Waits up to `timeout` for input; returns it (empty if none came).
    pub fn wait_input(&self, timeout: Duration) -> Vec<u8> {
        let deadline = Instant::now() + timeout;
        loop {
            let data = self.read_input();
            if !data.is_empty() {
                return data;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !self.wait_notified(left) {
                return self.read_input();
            }
        }
    }

    /// Waits up to `timeout` for an event from the backend and re-enables
    /// delivery; true if one came.
    pub fn wait_notified(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut ports = Vec::new();
        loop {
            ports.clear();
            if self.evtchn.pending(&mut ports).is_err() {
                return false;
            }
            for p in &ports {
                let _ = self.evtchn.unmask(*p);
            }
            if ports.contains(&self.port) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !self.open.load(Ordering::Acquire) {
                return false;
            }
            let _ = wait_readable(self.evtchn.fd(), Some(left));
        }
    }

    /// Signals the backend (also usable on its own, to storm it).
    pub fn notify(&self) {
        let _ = self.evtchn.notify(self.port);
    }

    /// The indexes as they are now; `None` once closed.
    pub fn indexes(&self) -> Option<ConsoleIndexes> {
        self.ring()?.indexes().ok()
    }

    /// Overwrites the indexes, as a hostile guest may; false once closed.
    pub fn set_indexes(&self, indexes: ConsoleIndexes) -> bool {
        self.ring().is_some_and(|r| r.set_indexes(indexes).is_ok())
    }

    /// Ends the backend's access to the page and closes the port. Fails with
    /// [`crate::platform::GrantError::InUse`] while the backend still maps
    /// the page; the console then stays usable and `close` can be retried.
    pub fn close(&self) -> Result<(), ConsoleError> {
        let mut closing = self.closing.lock().unwrap_or_else(|p| p.into_inner());
        if !closing.0 {
            self.gnttab
                .end_access(self.ring_ref)
                .map_err(ConsoleError::Grant)?;
            closing.0 = true;
            self.open.store(false, Ordering::Release);
            // Take the writer and reader locks so no copy is in flight when
            // the frame goes back to the pool.
            drop(self.writer.lock().unwrap_or_else(|p| p.into_inner()));
            drop(self.reader.lock().unwrap_or_else(|p| p.into_inner()));
            self.gnttab.free_page(self.frame);
        }
        if !closing.1 {
            self.evtchn
                .unbind(self.port)
                .map_err(ConsoleError::EventChannel)?;
            closing.1 = true;
        }
        Ok(())
    }
}

impl Drop for SimConsoleFrontend {
    fn drop(&mut self) {
        let _ = self.close();
    }
}
