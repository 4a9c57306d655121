//! A TAP device between a vif queue and the kernel, on the platform's
//! event loop: one source reads the frames the kernel sends on the
//! device (when its descriptor is readable, at most [`BUDGET`] a pass)
//! and hands them to the guest's receive path; the vif's uplink writes
//! the guest's packets to the device, on the vif's own pass. Both run on
//! the loop's thread and share the descriptor; neither ever waits.
//!
//! The order of use, since a vif takes its uplink when it starts and
//! gives its receiver after:
//!
//! ```text
//! let tap = TapDevice::create("vif5.0", TapOptions::default())?;
//! let link = TapLink::start(&platform, tap)?;
//! let vif = VifQueue::start(&platform, &config, link.uplink(), sink)?;
//! link.connect(Arc::new(vif.receiver()), &config.features)?;
//! ```
//!
//! Frames read while no receiver is connected are dropped and counted:
//! the device is drained all the same, so that nothing stale waits in the
//! kernel's queue for a guest that connects later.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use rustix::io::{Errno, IoSlice};

use super::vnet::{self, VnetHdr, VNET_HDR_LEN};
use super::{TapDevice, TapError};
use crate::net::packet::{Packet, ETH_HLEN, MAX_PACKET};
use crate::net::queue::BUDGET;
use crate::net::switch::PacketSink;
use crate::net::vif::{Uplink, VifFeatures};
use crate::platform::event_loop::{Control, Source, SourceHandle, Wake};
use crate::platform::Platform;

/// What a link has done. As in a vif's counters, "tx" is the guest
/// transmitting (frames written to the device), "rx" the guest receiving
/// (frames read from it): the opposite of the device's own counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TapStats {
    /// Frames read from the device and handed to the vif (which may
    /// still drop them, counted in its `rx_dropped`).
    pub rx_frames: u64,
    /// Their bytes (without the virtio-net header).
    pub rx_bytes: u64,
    /// The guest's packets written to the device.
    pub tx_frames: u64,
    /// Their bytes.
    pub tx_bytes: u64,
    /// Frames lost on the way, both ways: read with no vif connected, too
    /// large for a guest, or with an offload no guest can take; the
    /// guest's packets whose offload the kernel cannot take, or that the
    /// device refused (a full queue, the link down, the device gone).
    pub dropped: u64,
}

#[derive(Default)]
struct Counters {
    rx_frames: AtomicU64,
    rx_bytes: AtomicU64,
    tx_frames: AtomicU64,
    tx_bytes: AtomicU64,
    dropped: AtomicU64,
}

/// Adds to a counter (one writer, the loop's thread: relaxed is enough).
fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What the link, its source and its uplinks share.
#[derive(Default)]
struct Shared {
    receiver: Mutex<Option<Arc<dyn PacketSink>>>,
    counters: Counters,
    /// The device was removed under the link (`ip link del`, its network
    /// namespace gone): nothing is read or written any more.
    gone: AtomicBool,
    /// The source's handle, kept here so that the source can take itself
    /// off the loop once the device is gone: its descriptor then polls as
    /// an error for good, and would run the source on every turn.
    handle: Mutex<Option<SourceHandle>>,
}

/// A TAP device served on the platform's event loop. Stopping (or
/// dropping) it takes it off the loop and closes the device, which the
/// kernel then removes.
pub struct TapLink {
    name: String,
    shared: Arc<Shared>,
    /// The device, shared with the source; uplinks hold it weakly, so that
    /// stopping the link closes it even while a vif keeps its uplink.
    fd: Mutex<Option<Arc<OwnedFd>>>,
}

impl TapLink {
    /// Serves `tap` on `platform`'s loop. Frames read are dropped until a
    /// receiver is [connected](TapLink::connect).
    pub fn start(platform: &Arc<Platform>, tap: TapDevice) -> Result<TapLink, TapError> {
        let (fd, name) = tap.into_parts();
        let fd = Arc::new(fd);
        let shared = Arc::new(Shared::default());
        let source = TapSource {
            fd: fd.clone(),
            shared: shared.clone(),
            // One byte more than the largest frame taken: a read that
            // fills it is a frame too large (the kernel cuts it short).
            buf: vec![0; VNET_HDR_LEN + MAX_PACKET + 1].into_boxed_slice(),
            batch: Vec::with_capacity(BUDGET),
        };
        let handle = platform
            .event_loop()
            .add(None, Box::new(source), true)
            .map_err(|error| TapError::Io {
                name: name.clone(),
                what: "adding it to the event loop",
                error,
            })?;
        *lock(&shared.handle) = Some(handle);
        Ok(TapLink {
            name,
            shared,
            fd: Mutex::new(Some(fd)),
        })
    }

    /// The device's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Adds the device to the Linux bridge `bridge` (see
    /// [`super::join_bridge`]).
    pub fn join_bridge(&self, bridge: &str) -> Result<(), TapError> {
        super::join_bridge(&self.name, bridge)
    }

    /// What a vif queue gets as its uplink: writes the guest's packets to
    /// the device. Any number may be made; after [`TapLink::stop`] they
    /// drop what they are given.
    pub fn uplink(&self) -> Box<dyn Uplink> {
        let fd = lock(&self.fd).as_ref().map(Arc::downgrade);
        Box::new(TapUplink {
            fd: fd.unwrap_or_default(),
            shared: self.shared.clone(),
        })
    }

    /// Frames read from now on go to `receiver` (a vif's receiver, or a
    /// sink spreading them over its queues; in place of any before),
    /// with the offloads the guest negotiated (`features`, as in the vif's
    /// [`VifConfig`](crate::net::VifConfig)) and no others: the kernel
    /// completes the checksums of a guest without checksum offload, and
    /// cuts the TCP segments of one without GSO (which the vif would
    /// otherwise drop). Fails if the device refuses (it is gone); nothing
    /// is connected then.
    pub fn connect(
        &self,
        receiver: Arc<dyn PacketSink>,
        features: &VifFeatures,
    ) -> Result<(), TapError> {
        if let Some(fd) = lock(&self.fd).as_ref() {
            super::set_offloads(fd.as_fd(), features).map_err(|e| TapError::Io {
                name: self.name.clone(),
                what: "TUNSETOFFLOAD",
                error: e.into(),
            })?;
        }
        *lock(&self.shared.receiver) = Some(receiver);
        Ok(())
    }

    /// Frames read from now on are dropped (the vif stopped).
    pub fn disconnect(&self) {
        lock(&self.shared.receiver).take();
    }

    /// The counters.
    pub fn stats(&self) -> TapStats {
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        TapStats {
            rx_frames: get(&c.rx_frames),
            rx_bytes: get(&c.rx_bytes),
            tx_frames: get(&c.tx_frames),
            tx_bytes: get(&c.tx_bytes),
            dropped: get(&c.dropped),
        }
    }

    /// Whether the device was removed under the link (by `ip link del`,
    /// or with its network namespace): it is served no more.
    pub fn is_gone(&self) -> bool {
        self.shared.gone.load(Ordering::Relaxed)
    }

    /// Takes the link off the loop (waiting until the loop no longer runs
    /// it, unless called on the loop's thread) and closes the device.
    /// Idempotent. The kernel removes the device when its last descriptor
    /// closes: at once, unless a child process of ours is being spawned
    /// at that moment (until it execs, it holds a copy of every
    /// descriptor, close-on-exec or not).
    pub fn stop(&self) {
        let handle = lock(&self.shared.handle).take();
        if let Some(h) = handle {
            drop(h.remove());
        }
        self.disconnect();
        // The last strong reference, but for an uplink's in the middle of
        // a batch on the loop's thread: the device closes after it.
        lock(&self.fd).take();
    }
}

impl Drop for TapLink {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The reading half, on the loop.
struct TapSource {
    fd: Arc<OwnedFd>,
    shared: Arc<Shared>,
    /// A frame as read, behind its virtio-net header; reused.
    buf: Box<[u8]>,
    /// The frames of a pass.
    batch: Vec<Packet>,
}

impl TapSource {
    /// The frame of a read of `n` bytes, as a packet; `None` to drop it.
    fn packet(&mut self, n: usize) -> Option<Packet> {
        // Larger than Xen's 64 KiB limit (a guest could not take it), or
        // shorter than a header.
        if n >= self.buf.len() || n < VNET_HDR_LEN + ETH_HLEN {
            return None;
        }
        let (hdr, frame) = self.buf[..n].split_at_mut(VNET_HDR_LEN);
        let hdr = VnetHdr::decode(&(*hdr).try_into().expect("split at its length"));
        let offload = vnet::offload_from_kernel(&hdr, frame)?;
        // A buffer from the vifs' pool: it goes back once the frame is in
        // the guest, so a warm path allocates nothing per frame.
        let mut data = Vec::with_capacity(1);
        crate::net::pool::take(std::iter::once(frame.len()), &mut data);
        let mut data = data.pop().expect("one buffer taken");
        data.copy_from_slice(frame);
        Some(Packet { data, offload })
    }

    /// The device is gone: the source goes too. Removing it from here is
    /// asynchronous (the loop drops it after this pass).
    fn gone(&mut self) {
        self.shared.gone.store(true, Ordering::Relaxed);
        let handle = lock(&self.shared.handle).take();
        if let Some(h) = handle {
            drop(h.remove());
        }
    }
}

impl Source for TapSource {
    fn wake(&mut self, _why: Wake, cx: &mut Control<'_>) {
        if self.shared.gone.load(Ordering::Relaxed) {
            return;
        }
        let mut read = 0;
        while read < BUDGET {
            let n = match rustix::io::read(self.fd.as_fd(), &mut self.buf[..]) {
                Ok(n) => n,
                Err(Errno::AGAIN) => break,
                Err(Errno::INTR) => continue,
                // EBADFD: the device was removed. Nothing else fails a
                // read of a TAP with a buffer this large.
                Err(_) => {
                    self.gone();
                    break;
                }
            };
            read += 1;
            match self.packet(n) {
                Some(p) => self.batch.push(p),
                None => add(&self.shared.counters.dropped, 1),
            }
        }
        if !self.batch.is_empty() {
            let counters = &self.shared.counters;
            let receiver = lock(&self.shared.receiver).clone();
            let frames = self.batch.len() as u64;
            match receiver {
                Some(r) => {
                    let bytes: usize = self.batch.iter().map(|p| p.data.len()).sum();
                    r.deliver(self.batch.drain(..).collect());
                    add(&counters.rx_frames, frames);
                    add(&counters.rx_bytes, bytes as u64);
                }
                None => {
                    self.batch.clear();
                    add(&counters.dropped, frames);
                }
            }
        }
        if read == BUDGET {
            // The rest on the next turn, after the other devices (the
            // descriptor, still readable, would bring us back too).
            cx.set_timer(Some(cx.now()));
        }
    }

    fn fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.fd.as_fd())
    }
}

/// The writing half: a vif's uplink.
struct TapUplink {
    fd: Weak<OwnedFd>,
    shared: Arc<Shared>,
}

impl Uplink for TapUplink {
    fn transmit(&mut self, packets: &mut Vec<Packet>) {
        let counters = &self.shared.counters;
        let fd = match self.fd.upgrade() {
            Some(fd) if !self.shared.gone.load(Ordering::Relaxed) => fd,
            _ => {
                add(&counters.dropped, packets.len() as u64);
                return;
            }
        };
        for p in packets.iter_mut() {
            let Some(hdr) = vnet::header_for_kernel(p) else {
                add(&counters.dropped, 1);
                continue;
            };
            let hdr = hdr.encode();
            let iov = [IoSlice::new(&hdr), IoSlice::new(&p.data)];
            let written = loop {
                match rustix::io::writev(fd.as_fd(), &iov) {
                    Err(Errno::INTR) => continue,
                    // AGAIN (the kernel's queue is full, as a NIC's ring
                    // can be: never waited for), EIO (the link is down),
                    // EINVAL (a frame it refuses), EBADFD (it is gone).
                    r => break r.is_ok(),
                }
            };
            if written {
                add(&counters.tx_frames, 1);
                add(&counters.tx_bytes, p.data.len() as u64);
            } else {
                add(&counters.dropped, 1);
            }
        }
        // Written (or dropped): the buffers go back to the vifs' pool.
        crate::net::pool::give(packets.drain(..).map(|p| p.data));
    }
}
