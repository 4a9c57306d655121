//! A simulated netfront run as a guest's driver runs: on a thread of its
//! own, woken by its event channel (the guest's interrupt) or by packets
//! to send, so that sending never waits for receiving and a caller (the
//! TypeScript API, the demo) is never blocked. Received packets are handed
//! to a callback in batches, on the driver's thread.

use std::collections::VecDeque;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustix::event::{eventfd, poll, EventfdFlags, PollFd, PollFlags};

use super::{NetFrontError, NetFrontStats, SimNetFront};
use crate::net::packet::Packet;

/// Packets handed to the callback at once, at most.
const RX_BATCH: usize = 256;

#[derive(Default)]
struct Shared {
    /// Packets to send, in order.
    to_send: VecDeque<Packet>,
    closing: bool,
    /// What stopped the driver, if something did.
    fault: Option<String>,
    stats: NetFrontStats,
    /// Packets sent and not answered, as of the last turn.
    in_flight: usize,
    /// Packets the driver took from `to_send` for the turn running now.
    in_turn: usize,
}

struct Inner {
    shared: Mutex<Shared>,
    /// Signalled after each turn of the driver (for `wait_pending_below`).
    turned: Condvar,
    /// Rung when there is something to send, or to stop.
    doorbell: OwnedFd,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn ring(&self) {
        let _ = rustix::io::write(&self.doorbell, &1u64.to_ne_bytes());
    }
}

/// A [`SimNetFront`] on its own thread.
pub struct NetFrontDriver {
    inner: Arc<Inner>,
    thread: Mutex<Option<JoinHandle<SimNetFront>>>,
    /// To judge packets before they are queued (the features only).
    options: super::NetFrontOptions,
}

impl NetFrontDriver {
    /// Runs `front` on a new thread; `on_packets` gets what it receives.
    pub fn spawn(
        front: SimNetFront,
        on_packets: Box<dyn FnMut(Vec<Packet>) + Send>,
    ) -> std::io::Result<NetFrontDriver> {
        let doorbell = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
        let inner = Arc::new(Inner {
            shared: Mutex::new(Shared::default()),
            turned: Condvar::new(),
            doorbell,
        });
        let options = front.options().clone();
        let runner = inner.clone();
        let thread = std::thread::Builder::new()
            .name("xenrx-netfront".into())
            .spawn(move || run(front, &runner, on_packets))?;
        Ok(NetFrontDriver {
            inner,
            thread: Mutex::new(Some(thread)),
            options,
        })
    }

    /// Queues packets to send; a packet the features do not allow is
    /// refused, with none of the batch queued.
    pub fn send(&self, packets: Vec<Packet>) -> Result<(), NetFrontError> {
        for p in &packets {
            super::tx::packet_allowed(&self.options, p)?;
        }
        {
            let mut s = self.inner.lock();
            if s.closing {
                return Err(NetFrontError::Closed);
            }
            if let Some(why) = &s.fault {
                return Err(NetFrontError::Backend(why.clone()));
            }
            s.to_send.extend(packets);
        }
        self.inner.ring();
        Ok(())
    }

    /// The counters as of the driver's last turn.
    pub fn stats(&self) -> NetFrontStats {
        self.inner.lock().stats
    }

    /// Packets queued or sent and not yet answered.
    pub fn pending(&self) -> usize {
        let s = self.inner.lock();
        s.to_send.len() + s.in_turn + s.in_flight
    }

    /// Waits until fewer than `n` packets are queued or in flight (a
    /// sender's window), the driver stopped, or `timeout` passed; returns
    /// how many are pending then.
    pub fn wait_pending_below(&self, n: usize, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        let mut s = self.inner.lock();
        loop {
            let pending = s.to_send.len() + s.in_turn + s.in_flight;
            let left = deadline.saturating_duration_since(Instant::now());
            if pending < n || s.fault.is_some() || s.closing || left.is_zero() {
                return pending;
            }
            s = self
                .inner
                .turned
                .wait_timeout(s, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// What stopped the driver (the backend broke the protocol), if
    /// anything did.
    pub fn fault(&self) -> Option<String> {
        self.inner.lock().fault.clone()
    }

    /// Stops the thread and closes the frontend (its ports closed, its
    /// grants ended where the backend let them go).
    pub fn close(&self) -> Result<(), NetFrontError> {
        self.inner.lock().closing = true;
        self.inner.ring();
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        match thread {
            Some(t) => {
                let mut front = t.join().map_err(|_| NetFrontError::Closed)?;
                front.close()
            }
            None => Ok(()),
        }
    }
}

impl Drop for NetFrontDriver {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

/// The driver's loop: send what is queued and fits, take the responses,
/// hand on what was received, and sleep on the event channel and the
/// doorbell once nothing is left to do (after arming both rings).
fn run(
    mut front: SimNetFront,
    inner: &Inner,
    mut on_packets: Box<dyn FnMut(Vec<Packet>) + Send>,
) -> SimNetFront {
    let mut queue: VecDeque<Packet> = VecDeque::new();
    loop {
        {
            let mut s = inner.lock();
            if s.closing {
                break;
            }
            queue.append(&mut s.to_send);
            // Still pending while this turn sends them: counted until the
            // turn says how many are in flight.
            s.in_turn = queue.len();
        }
        let turn = (|| -> Result<bool, NetFrontError> {
            front.take_events()?;
            front.poll()?;
            let mut batch = Vec::new();
            while let Some(p) = front.try_recv() {
                batch.push(p);
                if batch.len() == RX_BATCH {
                    on_packets(std::mem::take(&mut batch));
                }
            }
            if !batch.is_empty() {
                on_packets(batch);
            }
            front.send_some(&mut queue)?;
            front.arm()
        })();
        {
            let mut s = inner.lock();
            s.stats = front.stats();
            s.in_flight = front.tx_in_flight();
            s.in_turn = 0;
            // What could not be sent yet goes back to the head of the line.
            while let Some(p) = queue.pop_back() {
                s.to_send.push_front(p);
            }
            inner.turned.notify_all();
            match &turn {
                Err(e) => {
                    s.fault = Some(e.to_string());
                    return front;
                }
                Ok(true) => continue,
                Ok(false) => {}
            }
        }
        let (events, doorbell) = (front.event_fd(), inner.doorbell.as_fd());
        let mut fds = [
            PollFd::new(&events, PollFlags::IN),
            PollFd::new(&doorbell, PollFlags::IN),
        ];
        let _ = poll(&mut fds, None);
        let mut buf = [0u8; 8];
        let _ = rustix::io::read(&inner.doorbell, &mut buf);
    }
    front
}
