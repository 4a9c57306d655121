//! The simulated guest's netfront for JavaScript, on its driver thread:
//! packets sent are queued at once, packets received reach a callback in
//! batches (or are only counted, for benchmarks).

use std::sync::Arc;

use napi_derive::napi;

use super::net::{js_sink, to_packet, to_packets, NetPacket, PacketsCallback};
use super::platform::NativeSimHost;
use super::{coded_error, domid, Coded, CodedResult, Outcome, Result};
use crate::net::frontend::{NetFrontDriver, NetFrontError, NetFrontOptions, SimNetFront};
use crate::net::Packet;

fn front_error(e: NetFrontError) -> Coded {
    use NetFrontError as E;
    let code = match &e {
        E::BadArgument(_) => "EINVAL".to_owned(),
        E::NoGuestMemory => "ENOMEM".to_owned(),
        E::Grant(g) => g.code(),
        E::EventChannel(c) => c.code().to_owned(),
        E::Backend(_) => "EPROTO".to_owned(),
        E::Timeout => "ETIMEDOUT".to_owned(),
        E::Closed => "ESHUTDOWN".to_owned(),
    };
    coded_error(&code, e)
}

/// How a simulated netfront is set up.
#[napi(object)]
pub struct SimNetFrontOptions {
    /// Packets may span several slots (default true).
    pub sg: Option<bool>,
    /// GSO packets may be sent (default true).
    pub gso: Option<bool>,
    /// Separate ports for the two rings (default false).
    pub split_event_channels: Option<bool>,
    /// Receive buffers kept posted (default: as many as the ring has slots).
    pub rx_buffers: Option<u32>,
}

/// Counters of a simulated netfront.
#[napi(object)]
pub struct SimNetFrontStats {
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
    /// Packets received with an error status, dropped.
    pub rx_errors: f64,
}

/// The guest's end of a network device on the simulated hypervisor, run
/// on its own driver thread: packets sent are queued at once; packets
/// received reach `onPackets` in batches.
#[napi]
pub struct NativeSimNetFront {
    driver: Arc<NetFrontDriver>,
    refs: (u32, u32),
    ports: (u32, u32),
}

#[napi]
impl NativeSimNetFront {
    /// Sets up a network device of guest `domid` for `backendDomid`.
    /// Without `onPackets`, what it receives is only counted (`stats()`),
    /// never handed to JavaScript: a guest for benchmarks.
    #[napi(
        factory,
        ts_args_type = "host: NativeSimHost, domid: number, backendDomid: number, options: SimNetFrontOptions | undefined | null, onPackets: ((packets: NetPacket[]) => void) | null"
    )]
    pub fn create(
        host: &NativeSimHost,
        domid: u32,
        backend_domid: u32,
        options: Option<SimNetFrontOptions>,
        on_packets: Option<PacketsCallback>,
    ) -> Result<NativeSimNetFront> {
        let guest = self::domid(domid)?;
        let backend = self::domid(backend_domid)?;
        let defaults = NetFrontOptions::default();
        let o = options.unwrap_or(SimNetFrontOptions {
            sg: None,
            gso: None,
            split_event_channels: None,
            rx_buffers: None,
        });
        let options = NetFrontOptions {
            sg: o.sg.unwrap_or(defaults.sg),
            gso: o.gso.unwrap_or(defaults.gso),
            split_event_channels: o.split_event_channels.unwrap_or(false),
            rx_buffers: o.rx_buffers,
            timeout: defaults.timeout,
        };
        let sim = host.sim_host();
        let gnttab = sim.gnttab(guest).map_err(|e| coded_error(&e.code(), e))?;
        let evtchn = sim.evtchn(guest).map_err(|e| coded_error(e.code(), e))?;
        let front =
            SimNetFront::new(gnttab, Arc::new(evtchn), backend, options).map_err(front_error)?;
        let refs = (front.tx_ring_ref(), front.rx_ring_ref());
        let ports = (front.tx_port(), front.rx_port());
        let on_received: Box<dyn FnMut(Vec<Packet>) + Send> = match on_packets {
            Some(cb) => {
                let tx = js_sink(cb);
                Box::new(move |packets| {
                    let _ = tx.send(packets);
                })
            }
            None => Box::new(drop),
        };
        let driver = NetFrontDriver::spawn(front, on_received).map_err(super::io_error)?;
        Ok(NativeSimNetFront {
            driver: Arc::new(driver),
            refs,
            ports,
        })
    }

    /// `tx-ring-ref`.
    #[napi(getter)]
    pub fn tx_ring_ref(&self) -> u32 {
        self.refs.0
    }

    /// `rx-ring-ref`.
    #[napi(getter)]
    pub fn rx_ring_ref(&self) -> u32 {
        self.refs.1
    }

    /// `event-channel` (or `event-channel-tx`).
    #[napi(getter)]
    pub fn tx_port(&self) -> u32 {
        self.ports.0
    }

    /// `event-channel-rx` (the same as `txPort` unless split).
    #[napi(getter)]
    pub fn rx_port(&self) -> u32 {
        self.ports.1
    }

    /// Queues packets to send (refused at once if the features do not
    /// allow one: nothing of the batch is queued then).
    #[napi]
    pub fn send(&self, packets: Vec<NetPacket>) -> Result<()> {
        let packets = to_packets(packets)?;
        let d = &self.driver;
        d.send(packets).map_err(front_error)?;
        Ok(())
    }

    /// Sends `count` copies of `packet` (its sequence number, a u32 at
    /// byte 14, counting up), keeping at most `window` queued or in
    /// flight, from a worker thread: a traffic source for benchmarks that
    /// costs JavaScript nothing per packet. Resolves with the packets sent.
    #[napi(ts_return_type = "Promise<number>")]
    pub async fn blast(
        &self,
        packet: NetPacket,
        count: u32,
        window: u32,
    ) -> napi::Result<Outcome<f64>> {
        let r: CodedResult<f64> = async { self.blast_inner(packet, count, window).await }.await;
        Ok(r.into())
    }

    /// Packets queued or in flight, not answered yet.
    #[napi(getter)]
    pub fn pending(&self) -> u32 {
        self.driver.pending() as u32
    }
}

impl NativeSimNetFront {
    async fn blast_inner(&self, packet: NetPacket, count: u32, window: u32) -> CodedResult<f64> {
        let template = to_packet(packet)?;
        let driver = self.driver.clone();
        let window = window.max(1) as usize;
        let sent = tokio::task::spawn_blocking(move || -> CodedResult<u64> {
            const BATCH: usize = 64;
            let mut sent = 0u64;
            while sent < u64::from(count) {
                let d = &driver;
                let pending = d.wait_pending_below(window, std::time::Duration::from_secs(30));
                if pending >= window {
                    return Err(coded_error(
                        "ETIMEDOUT",
                        "the backend took nothing for 30 s",
                    ));
                }
                let room = (window - pending).min(BATCH);
                let n = room.min((u64::from(count) - sent) as usize);
                let batch: Vec<Packet> = (0..n)
                    .map(|i| {
                        let mut p = template.clone();
                        if p.data.len() >= 18 {
                            let seq = (sent + i as u64) as u32;
                            p.data[14..18].copy_from_slice(&seq.to_be_bytes());
                        }
                        p
                    })
                    .collect();
                d.send(batch).map_err(front_error)?;
                sent += n as u64;
            }
            Ok(sent)
        })
        .await
        .map_err(|e| coded_error("EIO", e))??;
        Ok(sent as f64)
    }
}

#[napi]
impl NativeSimNetFront {
    /// What stopped the guest's driver (the backend broke the protocol).
    #[napi(getter)]
    pub fn fault(&self) -> Option<String> {
        self.driver.fault()
    }

    /// The counters.
    #[napi]
    pub fn stats(&self) -> SimNetFrontStats {
        let s = self.driver.stats();
        SimNetFrontStats {
            tx_packets: s.tx_packets as f64,
            tx_bytes: s.tx_bytes as f64,
            tx_errors: s.tx_errors as f64,
            rx_packets: s.rx_packets as f64,
            rx_bytes: s.rx_bytes as f64,
            rx_errors: s.rx_errors as f64,
        }
    }

    /// Stops the driver and releases the rings, ports and pages (those the
    /// backend still maps stay granted: close the backend first).
    #[napi]
    pub fn close(&self) -> Result<()> {
        let d = &self.driver;
        d.close().map_err(front_error)?;
        Ok(())
    }
}
