//! Attaching a vif queue to a frontend's rings: map the transmit and
//! receive ring pages, bind the event channel (or the two of split
//! channels), and put the queue's data path on the platform's event loop.
//! Packets the guest sends go to an [`Uplink`]; packets for the guest go
//! in through a [`VifReceiver`], from any thread.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex};

use super::packet::Packet;
use super::queue::VifSource;
use super::restart::VifRestart;
use super::stats::{add, Counters, NetStats};
use crate::platform::event_loop::SourceHandle;
use crate::platform::{DomId, EvtchnError, GrantError, GrantRef, Platform, Port};
use crate::ring::netif::{NetifRx, NetifTx};
use crate::ring::shared::{BackRing, SharedRingError};

/// Packets held for a guest that has posted no buffers, by default (as
/// Linux's default transmit queue length of a vif).
pub const DEFAULT_RX_QUEUE: usize = 1000;

/// What the frontend negotiated, read from its XenStore directory by the
/// caller, and what we offered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VifFeatures {
    /// `feature-sg`: a packet for the guest may span several of its
    /// buffers (else packets over one page are dropped).
    pub sg: bool,
    /// `feature-gso-tcpv4`: the guest takes TCPv4 GSO packets.
    pub gso_tcpv4: bool,
    /// `feature-gso-tcpv6`: the guest takes TCPv6 GSO packets.
    pub gso_tcpv6: bool,
    /// Not `feature-no-csum-offload`: the guest takes packets whose
    /// checksum is left blank (else it is filled first).
    pub csum_offload: bool,
    /// We offered GSO for the guest's own packets (`feature-gso-tcpv4` /
    /// `-tcpv6` in our directory): without it, a GSO packet from the
    /// guest is refused.
    pub gso_offered: bool,
}

impl Default for VifFeatures {
    /// What Linux netfront negotiates with netback.
    fn default() -> VifFeatures {
        VifFeatures {
            sg: true,
            gso_tcpv4: true,
            gso_tcpv6: true,
            csum_offload: true,
            gso_offered: true,
        }
    }
}

/// Where a vif queue's rings are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VifConfig {
    /// The guest.
    pub frontend: DomId,
    /// `tx-ring-ref`.
    pub tx_ring_ref: GrantRef,
    /// `rx-ring-ref`.
    pub rx_ring_ref: GrantRef,
    /// `event-channel`, or `event-channel-tx` with split channels.
    pub tx_port: Port,
    /// `event-channel-rx` with split channels.
    pub rx_port: Option<Port>,
    /// What was negotiated.
    pub features: VifFeatures,
    /// Packets held for the guest while it posts no buffers; more are
    /// dropped (counted in `rx_dropped`).
    pub rx_queue: usize,
}

/// Something the queue reports (on the loop's thread; it must not block).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VifEvent {
    /// A packet of the guest was answered with an error; why.
    Refused(String),
    /// The frontend broke the ring protocol: the vif serves it no more
    /// (netback's `fatal_tx_err`).
    Failed(String),
}

/// Why a vif queue could not start.
#[derive(Debug)]
pub enum NetError {
    /// A ring page could not be mapped.
    MapRing(GrantError),
    /// A ring is unusable (bogus indexes already).
    Ring(SharedRingError),
    /// An event channel could not be bound.
    Bind(EvtchnError),
    /// The event loop is gone.
    EventLoop(std::io::Error),
    /// The journals could not be made, or the rings cannot be taken over
    /// with those found.
    Journal(std::io::Error),
}

impl fmt::Display for NetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetError::MapRing(e) => write!(f, "cannot map a ring: {e}"),
            NetError::Ring(e) => write!(f, "unusable ring: {e}"),
            NetError::Bind(e) => write!(f, "cannot bind the event channel: {e}"),
            NetError::EventLoop(e) => write!(f, "event loop: {e}"),
            NetError::Journal(e) => write!(f, "journal: {e}"),
        }
    }
}

impl std::error::Error for NetError {}

/// Where the packets a guest sends go: called on the loop's thread with
/// each batch taken off its transmit ring; it takes what it keeps (the
/// vector is cleared after). It must not block.
pub trait Uplink: Send {
    /// Hands on a batch of the guest's packets.
    fn transmit(&mut self, packets: &mut Vec<Packet>);
}

impl<F: FnMut(&mut Vec<Packet>) + Send> Uplink for F {
    fn transmit(&mut self, packets: &mut Vec<Packet>) {
        self(packets)
    }
}

/// Packets waiting for the guest's buffers, shared by the queue and its
/// receivers.
pub(super) struct Inbox {
    pub(super) packets: Mutex<InboxState>,
    pub(super) limit: usize,
    pub(super) counters: Arc<Counters>,
    /// Runs the queue when packets arrive (set once the queue is on the loop).
    pub(super) kick: std::sync::OnceLock<crate::platform::event_loop::Kicker>,
}

#[derive(Default)]
pub(super) struct InboxState {
    pub(super) queue: VecDeque<Packet>,
    pub(super) closed: bool,
}

/// Puts packets into a guest's receive path, from any thread. Cheap to
/// clone.
#[derive(Clone)]
pub struct VifReceiver {
    inbox: Arc<Inbox>,
}

impl VifReceiver {
    /// Queues packets for the guest; returns how many were taken (the rest
    /// found the queue full, or the vif stopped, and were dropped).
    pub fn deliver(&self, packets: impl IntoIterator<Item = Packet>) -> usize {
        let mut taken = 0;
        let mut offered = 0;
        {
            let mut state = self.inbox.packets.lock().unwrap_or_else(|p| p.into_inner());
            for p in packets {
                offered += 1;
                if !state.closed && state.queue.len() < self.inbox.limit {
                    state.queue.push_back(p);
                    taken += 1;
                }
            }
        }
        if offered > taken {
            add(&self.inbox.counters.rx_dropped, (offered - taken) as u64);
        }
        if taken > 0 {
            if let Some(k) = self.inbox.kick.get() {
                k.kick();
            }
        }
        taken
    }

    /// Whether the vif stopped (packets are dropped from now on).
    pub fn is_closed(&self) -> bool {
        self.inbox
            .packets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .closed
    }
}

/// A vif queue being served. Stopping it (or dropping it) takes it off
/// the event loop, unbinds its ports and unmaps its rings.
pub struct VifQueue {
    journals: Option<(std::path::PathBuf, std::path::PathBuf)>,
    /// Stopped by [`VifQueue::hand_over`]: the journals stay.
    handed_over: std::sync::atomic::AtomicBool,
    counters: Arc<Counters>,
    inbox: Arc<Inbox>,
    sources: Mutex<Vec<SourceHandle>>,
    evtchn: Arc<dyn crate::platform::EventChannels>,
    ports: Vec<Port>,
    _platform: Arc<Platform>,
    /// Where the tests make the data path die.
    #[cfg(test)]
    pub(super) crash: Arc<super::queue::crash::Point>,
}

impl VifQueue {
    /// Serves the rings `config` names; the guest's packets go to
    /// `uplink`, reports to `sink`.
    pub fn start(
        platform: &Arc<Platform>,
        config: &VifConfig,
        uplink: Box<dyn Uplink>,
        sink: Box<dyn FnMut(VifEvent) + Send>,
    ) -> Result<VifQueue, NetError> {
        VifQueue::start_with(platform, config, uplink, sink, &VifRestart::default())
    }

    /// [`VifQueue::start`], keeping journals, or taking over the rings of
    /// a backend that died, as `restart` says ([`super::restart`]).
    pub fn start_with(
        platform: &Arc<Platform>,
        config: &VifConfig,
        uplink: Box<dyn Uplink>,
        sink: Box<dyn FnMut(VifEvent) + Send>,
        restart: &VifRestart,
    ) -> Result<VifQueue, NetError> {
        let gntdev = platform.gntdev();
        let tx_map = gntdev
            .map(config.frontend, &[config.tx_ring_ref], true)
            .map_err(NetError::MapRing)?;
        let rx_map = gntdev
            .map(config.frontend, &[config.rx_ring_ref], true)
            .map_err(NetError::MapRing)?;
        let mut tx_ring = BackRing::<NetifTx>::attach(tx_map.mem()).map_err(NetError::Ring)?;
        let mut rx_ring = BackRing::<NetifRx>::attach(rx_map.mem()).map_err(NetError::Ring)?;
        // Journals, and what a backend that died left unanswered answered
        // (published on the first run).
        let journals = super::restart::open(config, restart, &mut tx_ring, &mut rx_ring)
            .map_err(NetError::Journal)?;
        let (tx, rx) = (tx_ring.state(), rx_ring.state());
        let evtchn = platform.evtchn().clone();
        let tx_port = evtchn
            .bind_interdomain(config.frontend, config.tx_port)
            .map_err(NetError::Bind)?;
        let mut ports = vec![tx_port];
        let rx_port = match config.rx_port {
            None => tx_port,
            Some(remote) => match evtchn.bind_interdomain(config.frontend, remote) {
                Ok(p) => {
                    ports.push(p);
                    p
                }
                Err(e) => {
                    let _ = evtchn.unbind(tx_port);
                    return Err(NetError::Bind(e));
                }
            },
        };
        let counters = Arc::new(Counters::default());
        let inbox = Arc::new(Inbox {
            packets: Mutex::new(InboxState::default()),
            limit: config.rx_queue.max(1),
            counters: counters.clone(),
            kick: std::sync::OnceLock::new(),
        });
        let source = VifSource::new(
            tx_map,
            tx,
            rx_map,
            rx,
            gntdev.clone(),
            config.frontend,
            (tx_port, rx_port),
            config.features,
            uplink,
            inbox.clone(),
            counters.clone(),
            sink,
        )
        .with_journals(journals, restart.resume);
        #[cfg(test)]
        let crash = source.crash.clone();
        let queue = VifQueue {
            #[cfg(test)]
            crash,
            journals: restart.journals.clone(),
            handed_over: std::sync::atomic::AtomicBool::new(false),
            counters,
            inbox: inbox.clone(),
            sources: Mutex::new(Vec::new()),
            evtchn: evtchn.clone(),
            ports,
            _platform: platform.clone(),
        };
        let event_loop = platform.event_loop();
        // Packets the guest pushed before the port was bound are seen at
        // once: a new source runs right away.
        let main = event_loop
            .add(Some(tx_port), Box::new(source), false)
            .map_err(NetError::EventLoop)?;
        let kicker = main.kicker();
        let _ = inbox.kick.set(kicker.clone());
        queue
            .sources
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(main);
        if rx_port != tx_port {
            // The receive ring's own port only runs the queue: one data
            // path serves both rings.
            let rx = event_loop
                .add(Some(rx_port), Box::new(KickOnEvent(kicker)), false)
                .map_err(NetError::EventLoop)?;
            queue
                .sources
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(rx);
        }
        Ok(queue)
    }

    /// Puts packets into this guest's receive path.
    pub fn receiver(&self) -> VifReceiver {
        VifReceiver {
            inbox: self.inbox.clone(),
        }
    }

    /// The counters.
    pub fn stats(&self) -> NetStats {
        self.counters.snapshot()
    }

    /// Our end of the event channel(s): tx, then rx when split.
    pub fn local_ports(&self) -> &[Port] {
        &self.ports
    }

    /// Stops serving (waiting until the loop no longer runs the queue),
    /// drops the packets waiting for the guest, closes the ports and
    /// unmaps the rings. Idempotent.
    pub fn stop(&self) {
        let sources: Vec<SourceHandle> =
            std::mem::take(&mut *self.sources.lock().unwrap_or_else(|p| p.into_inner()));
        if sources.is_empty() {
            return;
        }
        // Off the loop first (the ring mappings go with the source), then
        // the ports.
        for s in sources {
            drop(s.remove());
        }
        {
            let mut state = self.inbox.packets.lock().unwrap_or_else(|p| p.into_inner());
            state.closed = true;
            state.queue.clear();
        }
        for p in &self.ports {
            let _ = self.evtchn.unbind(*p);
        }
        // Stopped in order: nothing is left to take over.
        if let Some((tx, rx)) = &self.journals {
            if !self.handed_over.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = std::fs::remove_file(tx);
                let _ = std::fs::remove_file(rx);
            }
        }
    }

    /// Hands the rings over to another process, which takes them over
    /// from the journals ([`VifRestart::resume`]): off the loop, ports
    /// closed, rings unmapped, nothing said to the frontend, the journals
    /// kept. What a crash leaves, on purpose.
    pub fn hand_over(&self) {
        self.handed_over
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.stop();
    }
}

/// The source of a split receive port: runs the queue's own source.
struct KickOnEvent(crate::platform::event_loop::Kicker);

impl crate::platform::event_loop::Source for KickOnEvent {
    fn wake(
        &mut self,
        _why: crate::platform::event_loop::Wake,
        _cx: &mut crate::platform::event_loop::Control<'_>,
    ) {
        self.0.kick();
    }
}

impl Drop for VifQueue {
    fn drop(&mut self) {
        self.stop();
    }
}
