//! The network backend for JavaScript: vif queues whose packets go to an
//! in-process switch (never crossing into JavaScript), to JavaScript in
//! batches, or to a TAP device (`net_tap`), and packets from JavaScript
//! into a guest; the simulated guest's netfront is in `net_frontend`. The
//! xenbus handshake is TypeScript's (`ts/backends/net.ts`,
//! `ts/simhost/net-frontend.ts`).

use std::sync::{Arc, Mutex};

use napi::bindgen_prelude::Buffer;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::Status;
use napi_derive::napi;

use super::net_tap::NativeTapLink;
use super::platform_handle::NativePlatform;
use super::{coded_error, domid, Coded, CodedResult, Result};
use crate::net::switch::{PacketSink, Switch, SwitchPort};
use crate::net::{
    Gso, GsoKind, NetError, NetStats, Offload, Packet, Uplink, VifConfig, VifEvent, VifFeatures,
    VifQueue, VifReceiver, VifRestart, DEFAULT_RX_QUEUE,
};

/// Batches handed to JavaScript together, at most this many packets per
/// call.
const JS_BATCH: usize = 512;

fn net_error(e: NetError) -> Coded {
    let code = match &e {
        NetError::MapRing(g) => g.code(),
        NetError::Bind(c) => c.code().to_owned(),
        NetError::Ring(_) => "EPROTO".to_owned(),
        NetError::EventLoop(_) => "ESHUTDOWN".to_owned(),
        NetError::Journal(_) => "ESTALE".to_owned(),
    };
    coded_error(&code, e)
}

/// A packet: an Ethernet frame and what travels with it.
#[napi(object)]
pub struct NetPacket {
    /// The frame (no FCS).
    pub data: Buffer,
    /// The TCP/UDP checksum is left blank, to be filled by whoever needs it.
    pub csum_blank: Option<bool>,
    /// The data was checked already.
    pub data_validated: Option<bool>,
    /// A segmentation-offload packet: its MSS...
    pub gso_size: Option<u32>,
    /// ...and what it segments.
    #[napi(ts_type = "'tcpv4' | 'tcpv6'")]
    pub gso_type: Option<String>,
}

pub(super) fn to_packet(p: NetPacket) -> CodedResult<Packet> {
    let gso = match (p.gso_size, p.gso_type.as_deref()) {
        (None, None) => None,
        (Some(size), Some(kind)) => {
            let kind = match kind {
                "tcpv4" => GsoKind::TcpV4,
                "tcpv6" => GsoKind::TcpV6,
                other => {
                    return Err(coded_error(
                        "EINVAL",
                        format!("unknown gsoType {other:?} (tcpv4 or tcpv6)"),
                    ))
                }
            };
            let size = u16::try_from(size)
                .ok()
                .filter(|s| *s > 0)
                .ok_or_else(|| coded_error("EINVAL", format!("gsoSize {size} not 1 to 65535")))?;
            Some(Gso { size, kind })
        }
        _ => return Err(coded_error("EINVAL", "gsoSize and gsoType go together")),
    };
    Ok(Packet {
        data: p.data.to_vec(),
        offload: Offload {
            csum_blank: p.csum_blank.unwrap_or(false),
            data_validated: p.data_validated.unwrap_or(false),
            gso,
        },
    })
}

pub(super) fn to_packets(packets: Vec<NetPacket>) -> CodedResult<Vec<Packet>> {
    packets.into_iter().map(to_packet).collect()
}

pub(super) fn from_packet(p: Packet) -> NetPacket {
    NetPacket {
        data: p.data.into(),
        csum_blank: p.offload.csum_blank.then_some(true),
        data_validated: p.offload.data_validated.then_some(true),
        gso_size: p.offload.gso.map(|g| u32::from(g.size)),
        gso_type: p.offload.gso.map(|g| {
            match g.kind {
                GsoKind::TcpV4 => "tcpv4",
                GsoKind::TcpV6 => "tcpv6",
            }
            .to_owned()
        }),
    }
}

pub(super) type PacketsCallback =
    ThreadsafeFunction<Vec<NetPacket>, (), Vec<NetPacket>, Status, false, true>;
pub(super) type NoticeCallback = ThreadsafeFunction<String, (), String, Status, false, true>;

/// Hands packets to a JavaScript callback: the data path's thread sends
/// them over a channel, and a task batches what piled up while JavaScript
/// was busy into one call.
pub(super) fn js_sink(
    callback: PacketsCallback,
) -> tokio::sync::mpsc::UnboundedSender<Vec<Packet>> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Vec<Packet>>();
    napi::bindgen_prelude::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut batch: Vec<NetPacket> = first.into_iter().map(from_packet).collect();
            while batch.len() < JS_BATCH {
                match rx.try_recv() {
                    Ok(more) => batch.extend(more.into_iter().map(from_packet)),
                    Err(_) => break,
                }
            }
            callback.call(batch, ThreadsafeFunctionCallMode::NonBlocking);
        }
    });
    tx
}

/// An in-process learning switch: vifs attached to it exchange packets
/// without JavaScript.
#[napi]
pub struct NativeSwitch {
    switch: Switch,
}

#[napi]
impl NativeSwitch {
    /// An empty switch.
    #[napi(constructor)]
    #[allow(clippy::new_without_default)]
    pub fn new() -> NativeSwitch {
        NativeSwitch {
            switch: Switch::new(),
        }
    }

    /// A new port, for one vif (all its queues).
    #[napi]
    pub fn add_port(&self) -> NativeSwitchPort {
        NativeSwitchPort {
            port: Mutex::new(self.switch.add_port()),
        }
    }

    /// The port a MAC address (6 bytes) was learnt on.
    #[napi]
    pub fn port_of(&self, mac: Buffer) -> Option<f64> {
        let mac: [u8; 6] = mac.as_ref().try_into().ok()?;
        self.switch.port_of(mac).map(|p| p as f64)
    }

    /// Ports attached.
    #[napi(getter)]
    pub fn ports(&self) -> u32 {
        self.switch.ports() as u32
    }
}

/// Spreads packets over a vif's queues by flow, as a multi-queue NIC's
/// receive hash does: a flow stays on one queue, so stays in order.
pub(super) struct Queues(pub(super) Vec<VifReceiver>);

impl PacketSink for Queues {
    fn deliver(&self, packets: Vec<Packet>) {
        match self.0.as_slice() {
            [] => {}
            [one] => {
                one.deliver(packets);
            }
            many => {
                let mut per: Vec<Vec<Packet>> = vec![Vec::new(); many.len()];
                for p in packets {
                    per[flow_hash(&p.data) % many.len()].push(p);
                }
                for (q, batch) in many.iter().zip(per) {
                    if !batch.is_empty() {
                        q.deliver(batch);
                    }
                }
            }
        }
    }
}

/// A hash of a frame's addresses (Ethernet, and IPv4/IPv6 when present):
/// enough to keep a flow on one queue.
fn flow_hash(frame: &[u8]) -> usize {
    let key: &[u8] = match frame.get(12..14) {
        Some([0x08, 0x00]) => frame.get(26..34).unwrap_or(frame),
        Some([0x86, 0xdd]) => frame.get(22..54).unwrap_or(frame),
        _ => frame.get(..12).unwrap_or(frame),
    };
    // FNV-1a: cheap and spreads well enough for a handful of queues.
    key.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    }) as usize
}

/// One port of a [`NativeSwitch`].
#[napi]
pub struct NativeSwitchPort {
    port: Mutex<SwitchPort>,
}

#[napi]
impl NativeSwitchPort {
    /// Where the switch sends this port's packets: the vif's queues.
    #[napi]
    pub fn connect(&self, queues: Vec<&NativeVifQueue>) {
        let receivers = queues.iter().map(|q| q.queue.receiver()).collect();
        let port = self.port.lock().unwrap_or_else(|p| p.into_inner());
        port.connect(Arc::new(Queues(receivers)));
    }

    /// Takes the port off the switch, with the addresses learnt on it.
    #[napi]
    pub fn remove(&self) {
        self.port.lock().unwrap_or_else(|p| p.into_inner()).remove();
    }

    /// The port's id (its order of creation).
    #[napi(getter)]
    pub fn id(&self) -> f64 {
        self.port.lock().unwrap_or_else(|p| p.into_inner()).id() as f64
    }
}

/// Where a vif queue's rings are and what was negotiated.
#[napi(object)]
pub struct VifQueueOptions {
    /// The guest.
    pub frontend_domid: u32,
    /// `tx-ring-ref`.
    pub tx_ring_ref: u32,
    /// `rx-ring-ref`.
    pub rx_ring_ref: u32,
    /// `event-channel`, or `event-channel-tx`.
    pub tx_port: u32,
    /// `event-channel-rx`, with split event channels.
    pub rx_port: Option<u32>,
    /// The frontend's `feature-sg` (default true).
    pub sg: Option<bool>,
    /// The frontend's `feature-gso-tcpv4` (default false).
    pub gso_tcpv4: Option<bool>,
    /// The frontend's `feature-gso-tcpv6` (default false).
    pub gso_tcpv6: Option<bool>,
    /// Not the frontend's `feature-no-csum-offload` (default true).
    pub csum_offload: Option<bool>,
    /// We offered GSO to the frontend (default true).
    pub gso_offered: Option<bool>,
    /// Packets held for the guest while it posts no buffers (default 1000).
    pub rx_queue: Option<u32>,
    /// The transmit ring's journal file (with `rxJournal`): what a backend
    /// started after this one dies needs to take the rings over (removed
    /// when the queue stops).
    pub tx_journal: Option<String>,
    /// The receive ring's journal file (with `txJournal`).
    pub rx_journal: Option<String>,
    /// Take over rings a backend that died was serving, from its journals
    /// (default false: rings the frontend just set up).
    pub resume: Option<bool>,
}

/// Counters of a vif queue ("tx": the guest sending).
#[napi(object)]
pub struct VifQueueStats {
    /// Packets the guest sent.
    pub tx_packets: f64,
    /// Their bytes.
    pub tx_bytes: f64,
    /// Packets of the guest answered with an error.
    pub tx_errors: f64,
    /// Packets put into the guest's buffers.
    pub rx_packets: f64,
    /// Their bytes.
    pub rx_bytes: f64,
    /// Packets for the guest dropped.
    pub rx_dropped: f64,
    /// Blank checksums filled for a guest without checksum offload.
    pub csum_filled: f64,
    /// GSO packets cut into segments for a guest that takes no GSO.
    pub gso_segmented: f64,
    /// Times the guest was notified.
    pub notifications: f64,
    /// Passes that stopped at their budget with work left.
    pub budget_yields: f64,
}

impl From<NetStats> for VifQueueStats {
    fn from(s: NetStats) -> VifQueueStats {
        VifQueueStats {
            tx_packets: s.tx_packets as f64,
            tx_bytes: s.tx_bytes as f64,
            tx_errors: s.tx_errors as f64,
            rx_packets: s.rx_packets as f64,
            rx_bytes: s.rx_bytes as f64,
            rx_dropped: s.rx_dropped as f64,
            csum_filled: s.csum_filled as f64,
            gso_segmented: s.gso_segmented as f64,
            notifications: s.notifications as f64,
            budget_yields: s.budget_yields as f64,
        }
    }
}

/// Packets sent to JavaScript, by channel.
struct ToJs(tokio::sync::mpsc::UnboundedSender<Vec<Packet>>);

impl Uplink for ToJs {
    fn transmit(&mut self, packets: &mut Vec<Packet>) {
        let _ = self.0.send(std::mem::take(packets));
    }
}

/// One queue of a vif.
#[napi]
pub struct NativeVifQueue {
    pub(super) queue: VifQueue,
    failure: Arc<Mutex<Option<String>>>,
}

#[napi]
impl NativeVifQueue {
    /// Serves a vif queue on `platform`'s event loop. The guest's packets
    /// go to `port` (a switch port) if given, else to `onPackets` in
    /// batches; `onNotice` hears about refused packets and a ring the
    /// guest broke (the queue then serves it no more).
    #[napi(
        factory,
        ts_args_type = "platform: NativePlatform, options: VifQueueOptions, port: NativeSwitchPort | null, onPackets: ((packets: NetPacket[]) => void) | null, onNotice?: (message: string) => void"
    )]
    pub fn start(
        platform: &NativePlatform,
        options: VifQueueOptions,
        port: Option<&NativeSwitchPort>,
        on_packets: Option<PacketsCallback>,
        on_notice: Option<NoticeCallback>,
    ) -> Result<NativeVifQueue> {
        let uplink: Box<dyn Uplink> = match (port, on_packets) {
            (Some(p), _) => Box::new(p.port.lock().unwrap_or_else(|e| e.into_inner()).handle()),
            (None, Some(cb)) => Box::new(ToJs(js_sink(cb))),
            (None, None) => {
                return Err(coded_error(
                    "EINVAL",
                    "a vif queue needs a switch port or an onPackets callback",
                ))
            }
        };
        start_queue(platform, options, uplink, on_notice)
    }

    /// Serves a vif queue whose packets go to a TAP device (and the
    /// kernel's network stack, a bridge...); see `start`.
    #[napi(
        factory,
        ts_args_type = "platform: NativePlatform, options: VifQueueOptions, tap: NativeTapLink, onNotice?: (message: string) => void"
    )]
    pub fn start_on_tap(
        platform: &NativePlatform,
        options: VifQueueOptions,
        tap: &NativeTapLink,
        on_notice: Option<NoticeCallback>,
    ) -> Result<NativeVifQueue> {
        start_queue(platform, options, tap.uplink(), on_notice)
    }

    /// Puts packets into the guest's receive path; returns how many were
    /// taken (the rest found its queue full, or the vif stopped).
    #[napi]
    pub fn deliver(&self, packets: Vec<NetPacket>) -> Result<u32> {
        let packets = to_packets(packets)?;
        Ok(self.queue.receiver().deliver(packets) as u32)
    }

    /// The counters.
    #[napi]
    pub fn stats(&self) -> VifQueueStats {
        self.queue.stats().into()
    }

    /// Why the queue stopped serving on its own (a ring the guest broke).
    #[napi(getter)]
    pub fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Stops serving: off the loop, ports closed, rings unmapped.
    #[napi]
    pub fn stop(&self) {
        self.queue.stop();
    }

    /// Hands the rings over to the process taking this one's place: the
    /// queue stops without a word to the guest and keeps its journals.
    #[napi]
    pub fn hand_over(&self) {
        self.queue.hand_over();
    }
}

/// What a vif queue's options say the frontend negotiated.
pub(super) fn features(options: &VifQueueOptions) -> VifFeatures {
    let defaults = VifFeatures::default();
    VifFeatures {
        sg: options.sg.unwrap_or(defaults.sg),
        gso_tcpv4: options.gso_tcpv4.unwrap_or(false),
        gso_tcpv6: options.gso_tcpv6.unwrap_or(false),
        csum_offload: options.csum_offload.unwrap_or(defaults.csum_offload),
        gso_offered: options.gso_offered.unwrap_or(defaults.gso_offered),
    }
}

pub(super) fn start_queue(
    platform: &NativePlatform,
    options: VifQueueOptions,
    uplink: Box<dyn Uplink>,
    on_notice: Option<NoticeCallback>,
) -> CodedResult<NativeVifQueue> {
    let config = VifConfig {
        frontend: domid(options.frontend_domid)?,
        tx_ring_ref: options.tx_ring_ref,
        rx_ring_ref: options.rx_ring_ref,
        tx_port: options.tx_port,
        rx_port: options.rx_port,
        features: features(&options),
        rx_queue: options.rx_queue.map_or(DEFAULT_RX_QUEUE, |n| n as usize),
    };
    let failure = Arc::new(Mutex::new(None));
    let failed = failure.clone();
    let sink = Box::new(move |e: VifEvent| {
        let text = match &e {
            VifEvent::Refused(why) => format!("packet refused: {why}"),
            VifEvent::Failed(why) => {
                *failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(why.clone());
                format!("the guest broke its rings; the vif is stopped: {why}")
            }
        };
        if let Some(n) = &on_notice {
            n.call(text, ThreadsafeFunctionCallMode::NonBlocking);
        }
    });
    let journals = match (options.tx_journal, options.rx_journal) {
        (Some(tx), Some(rx)) => Some((tx.into(), rx.into())),
        (None, None) => None,
        _ => return Err(coded_error("EINVAL", "txJournal and rxJournal go together")),
    };
    let restart = VifRestart {
        journals,
        resume: options.resume.unwrap_or(false),
    };
    let queue = VifQueue::start_with(platform.platform(), &config, uplink, sink, &restart)
        .map_err(net_error)?;
    Ok(NativeVifQueue { queue, failure })
}
