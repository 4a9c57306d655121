//! Attaching a block queue to a frontend's ring: map the ring pages, bind
//! the event channel, and put the queue's data path on the platform's event
//! loop. The handle stops it again.

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::journal::QueueJournal;
use super::queue::{QueueEvent, QueueSource};
use super::request::Offer;
use super::stats::{BlkStats, Counters};
use super::storage::Storage;
use crate::platform::event_loop::{Source, SourceHandle};
use crate::platform::{DomId, EvtchnError, GrantError, GrantRef, Platform, Port};
use crate::ring::blkif::{BlkifAbi, BlkifProtocol, BlkifX86_32, BlkifX86_64};
use crate::ring::shared::{BackRing, RingProtocol, SharedRingError, SlotBytes};

/// The most ring pages a queue takes (`max-ring-page-order` 4, as blkback).
pub const MAX_RING_PAGE_ORDER: u32 = 4;

/// Where a queue's ring is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RingConfig {
    /// The guest.
    pub frontend: DomId,
    /// Its ring pages (`ring-ref` or `ring-ref0..N`), 2^order of them.
    pub ring_refs: Vec<GrantRef>,
    /// Its port for this queue (`event-channel`).
    pub remote_port: Port,
    /// The slot layout (`protocol`).
    pub protocol: BlkifProtocol,
    /// Persistent grants were negotiated (`feature-persistent` 1 on both
    /// ends): the frontend's data pages are mapped once and kept.
    pub persistent: bool,
}

/// What a queue keeps so that a backend started after this one died can
/// take its ring over without the guest reconnecting.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Restart {
    /// The queue's journal file ([`super::journal`]), created when the
    /// queue starts and removed when it stops in order.
    pub journal: Option<PathBuf>,
    /// Take over a ring that a backend which died was serving: the
    /// journal it left says which requests it had taken; those it did not
    /// answer are served again, first.
    pub resume: bool,
}

/// Why a queue could not start.
#[derive(Debug)]
pub enum BlkError {
    /// Not 1, 2, 4, 8 or 16 ring pages.
    RingPages(usize),
    /// The ring pages could not be mapped.
    MapRing(GrantError),
    /// The ring is unusable (too small, bogus indexes already).
    Ring(SharedRingError),
    /// The event channel could not be bound.
    Bind(EvtchnError),
    /// The event loop is gone.
    EventLoop(std::io::Error),
    /// The journal could not be made, or a ring cannot be taken over with
    /// the one found.
    Journal(std::io::Error),
}

impl fmt::Display for BlkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlkError::RingPages(n) => write!(f, "{n} ring pages (need a power of two up to 16)"),
            BlkError::MapRing(e) => write!(f, "cannot map the ring: {e}"),
            BlkError::Ring(e) => write!(f, "unusable ring: {e}"),
            BlkError::Bind(e) => write!(f, "cannot bind the event channel: {e}"),
            BlkError::EventLoop(e) => write!(f, "event loop: {e}"),
            BlkError::Journal(e) => write!(f, "journal: {e}"),
        }
    }
}

impl std::error::Error for BlkError {}

/// A block queue being served. Stopping it (or dropping it) takes it off
/// the event loop, unbinds its port and unmaps its ring, after which the
/// guest can end its grants.
pub struct BlkQueue {
    journal: Option<PathBuf>,
    /// Stopped by [`BlkQueue::hand_over`]: the journal stays.
    handed_over: std::sync::atomic::AtomicBool,
    counters: Arc<Counters>,
    capacity: Arc<AtomicU64>,
    source: Mutex<Option<SourceHandle>>,
    evtchn: Arc<dyn crate::platform::EventChannels>,
    port: Port,
    _platform: Arc<Platform>,
}

impl BlkQueue {
    /// Serves the ring `ring` with `storage`, judging requests against
    /// `offer` (what the backend advertised). `sink` gets refusals and a
    /// failure of the ring, on the loop's thread: it must not block.
    pub fn start(
        platform: &Arc<Platform>,
        ring: &RingConfig,
        offer: Offer,
        storage: Box<dyn Storage>,
        sink: Box<dyn FnMut(QueueEvent) + Send>,
    ) -> Result<BlkQueue, BlkError> {
        BlkQueue::start_with(platform, ring, offer, storage, sink, &Restart::default())
    }

    /// [`BlkQueue::start`], keeping a journal, or taking over the ring of
    /// a backend that died, as `restart` says.
    pub fn start_with(
        platform: &Arc<Platform>,
        ring: &RingConfig,
        offer: Offer,
        storage: Box<dyn Storage>,
        sink: Box<dyn FnMut(QueueEvent) + Send>,
        restart: &Restart,
    ) -> Result<BlkQueue, BlkError> {
        let pages = ring.ring_refs.len();
        if !pages.is_power_of_two() || pages > 1 << MAX_RING_PAGE_ORDER {
            return Err(BlkError::RingPages(pages));
        }
        let map = platform
            .gntdev()
            .map(ring.frontend, &ring.ring_refs, true)
            .map_err(BlkError::MapRing)?;
        let counters = Arc::new(Counters::default());
        let evtchn = platform.evtchn().clone();
        let port = evtchn
            .bind_interdomain(ring.frontend, ring.remote_port)
            .map_err(BlkError::Bind)?;
        let capacity = Arc::new(AtomicU64::new(offer.geometry.sectors));
        let parts = Parts {
            platform,
            ring,
            port,
            offer,
            storage,
            counters: &counters,
            capacity: &capacity,
            sink,
            restart,
        };
        let source = match ring.protocol {
            BlkifProtocol::X86_64 => source::<BlkifX86_64>(map, parts),
            BlkifProtocol::X86_32 => source::<BlkifX86_32>(map, parts),
        };
        let source = match source {
            Ok(s) => s,
            Err(e) => {
                let _ = evtchn.unbind(port);
                return Err(e);
            }
        };
        // Requests the guest pushed before the port was bound are seen at
        // once: a new source runs right away.
        match platform.event_loop().add(Some(port), source, false) {
            Ok(handle) => Ok(BlkQueue {
                journal: restart.journal.clone(),
                handed_over: std::sync::atomic::AtomicBool::new(false),
                counters,
                capacity,
                source: Mutex::new(Some(handle)),
                evtchn,
                port,
                _platform: platform.clone(),
            }),
            Err(e) => {
                let _ = evtchn.unbind(port);
                Err(BlkError::EventLoop(e))
            }
        }
    }

    /// The counters.
    pub fn stats(&self) -> BlkStats {
        self.counters.snapshot()
    }

    /// Switches the latency histograms on (the default) or off, from the
    /// next request taken; the other counters are always kept.
    pub fn set_timing(&self, on: bool) {
        self.counters.set_timing(on);
    }

    /// Polls the ring for `window` after the queue takes requests, rather
    /// than sleeping until the frontend's next event (zero, the default:
    /// no polling). While it polls, the ring asks the frontend for no
    /// event, so a request costs the guest no notification and the backend
    /// no wake-up; the event loop's thread stays busy for the window.
    /// Takes effect from the queue's next run.
    pub fn set_poll(&self, window: Duration) {
        if !window.is_zero() {
            crate::platform::event_loop::calibrate_poll_clock();
        }
        self.counters.set_poll(window);
    }

    /// The disk now has `sectors` 512-byte sectors: requests the queue
    /// takes from its next run on are judged against that, and storage is
    /// told (telling the frontend, through XenStore, is the caller's).
    pub fn resize(&self, sectors: u64) {
        self.capacity.store(sectors, Ordering::Relaxed);
    }

    /// Our end of the event channel.
    pub fn local_port(&self) -> Port {
        self.port
    }

    /// Stops serving (waiting until the loop no longer runs the queue),
    /// closes the port and unmaps the ring. Requests still at storage are
    /// dropped unanswered, as when blkback disconnects. Idempotent.
    pub fn stop(&self) {
        let source = self.source.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(source) = source {
            // Off the loop first (the ring mapping goes with the source),
            // then the port.
            drop(source.remove());
            let _ = self.evtchn.unbind(self.port);
            // Stopped in order: nothing is left to take over.
            if let Some(path) = &self.journal {
                if !self.handed_over.load(Ordering::Relaxed) {
                    let _ = std::fs::remove_file(path);
                }
            }
        }
    }

    /// Hands the ring over to another process, which takes it over from
    /// the journal ([`Restart::resume`]): off the loop, the port closed and
    /// the ring unmapped, nothing said to the frontend; requests taken and
    /// not answered stay so (the next backend serves them again), and the
    /// journal stays. What a crash leaves, on purpose.
    pub fn hand_over(&self) {
        self.handed_over.store(true, Ordering::Relaxed);
        self.stop();
    }
}

impl Drop for BlkQueue {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What [`source`] builds a queue from.
struct Parts<'a> {
    platform: &'a Arc<Platform>,
    ring: &'a RingConfig,
    port: Port,
    offer: Offer,
    storage: Box<dyn Storage>,
    counters: &'a Arc<Counters>,
    capacity: &'a Arc<AtomicU64>,
    sink: Box<dyn FnMut(QueueEvent) + Send>,
    restart: &'a Restart,
}

fn source<P: BlkifAbi + Send + 'static>(
    map: crate::platform::GrantMapping,
    p: Parts<'_>,
) -> Result<Box<dyn Source>, BlkError> {
    let mut back = BackRing::<P>::attach(map.mem()).map_err(BlkError::Ring)?;
    let slot_size = <P as RingProtocol>::Request::LEN;
    let mut replay = Vec::new();
    let journal = match (&p.restart.journal, p.restart.resume) {
        (None, false) => None,
        (None, true) => {
            return Err(BlkError::Journal(std::io::Error::other(
                "taking a ring over needs the journal of the backend that served it",
            )))
        }
        (Some(path), false) => Some(
            QueueJournal::create(path, p.ring, back.size(), slot_size, back.req_cons())
                .map_err(BlkError::Journal)?,
        ),
        (Some(path), true) => {
            let journal = QueueJournal::open(path, p.ring, back.size(), slot_size)
                .map_err(BlkError::Journal)?;
            // Requests from the published responses on, taken by the
            // backend that died: their slots may hold its unpublished
            // responses, so they come from the journal.
            let answered = back.rsp_prod_pvt();
            let taken = journal.taken().wrapping_sub(answered);
            let on_ring = back.unconsumed_requests().map_err(BlkError::Ring)?;
            if taken > on_ring {
                return Err(BlkError::Journal(std::io::Error::other(format!(
                    "the journal has {taken} requests taken after the last answered, the ring only {on_ring}"
                ))));
            }
            replay = (0..taken)
                .map(|i| {
                    let mut request = <P as RingProtocol>::Request::zeroed();
                    journal.request(answered.wrapping_add(i), request.as_mut());
                    request
                })
                .collect();
            back.consume_requests(taken).map_err(BlkError::Ring)?;
            Some(journal)
        }
    };
    let state = back.state();
    let queue = QueueSource::<P>::new(
        map,
        state,
        p.platform.gntdev().clone(),
        p.ring.frontend,
        p.port,
        p.platform.evtchn().clone(),
        p.offer,
        p.ring.persistent,
        p.storage,
        p.counters.clone(),
        p.capacity.clone(),
        p.sink,
    );
    Ok(Box::new(match journal {
        Some(journal) if p.restart.resume => queue.with_journal(journal, replay).taking_over(),
        Some(journal) => queue.with_journal(journal, replay),
        None => queue,
    }))
}
