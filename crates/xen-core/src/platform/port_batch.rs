//! Ports whose data path is elsewhere (in TypeScript): the event loop takes
//! their events, holds each port masked, and queues it; a listener is told
//! once per batch (not once per event), takes the queue, handles each port
//! and unmasks it when done. Everything that fired while the listener was
//! busy arrives as one batch.

use std::sync::{Arc, Mutex};

use super::event_loop::{Control, SourceHandle, Wake};
use super::{DomId, EvtchnError, Platform, Port};

/// Told that ports are waiting (on the event loop's thread: it must not
/// block, only schedule the work).
pub type Listener = Arc<dyn Fn() + Send + Sync>;

#[derive(Default)]
struct Queue {
    ports: Vec<Port>,
    /// The listener was told and has not taken the queue since.
    told: bool,
}

/// The queue of fired ports, and who to tell.
#[derive(Default)]
pub struct PortBatch {
    queue: Mutex<Queue>,
    listener: Mutex<Option<Listener>>,
}

/// Why a port could not be bound for the batch.
#[derive(Debug)]
pub enum BindError {
    /// The event channel refused.
    EventChannel(EvtchnError),
    /// The event loop has ended.
    EventLoop(std::io::Error),
}

impl std::fmt::Display for BindError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BindError::EventChannel(e) => e.fmt(f),
            BindError::EventLoop(e) => write!(f, "event loop: {e}"),
        }
    }
}

impl std::error::Error for BindError {}

impl PortBatch {
    /// An empty batch with no listener.
    pub fn new() -> Arc<PortBatch> {
        Arc::new(PortBatch::default())
    }

    /// Sets (or clears) the listener; it is told at once if ports wait.
    pub fn listen(&self, listener: Option<Listener>) {
        *self.listener.lock().unwrap_or_else(|p| p.into_inner()) = listener;
        let waiting = {
            let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            q.told = false;
            !q.ports.is_empty()
        };
        if waiting {
            self.tell();
        }
    }

    /// Queues a port that fired, telling the listener unless it was told
    /// and has not taken the queue yet.
    fn fire(&self, port: Port) {
        {
            let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            q.ports.push(port);
            if q.told {
                return;
            }
        }
        self.tell();
    }

    fn tell(&self) {
        let listener = self
            .listener
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(listener) = listener {
            self.queue.lock().unwrap_or_else(|p| p.into_inner()).told = true;
            listener();
        }
    }

    /// The ports that fired since the last call, once per event. Each stays
    /// masked until unmasked through the platform's event channels.
    pub fn take(&self) -> Vec<Port> {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        q.told = false;
        std::mem::take(&mut q.ports)
    }

    /// Binds a port to `remote_port` of `remote` on `platform` whose events
    /// come through this batch. Dropping (or removing) the handle takes it
    /// off the loop; the port is then the caller's to unbind.
    pub fn bind(
        self: &Arc<Self>,
        platform: &Platform,
        remote: DomId,
        remote_port: Port,
    ) -> Result<(Port, SourceHandle), BindError> {
        let evtchn = platform.evtchn();
        let port = evtchn
            .bind_interdomain(remote, remote_port)
            .map_err(BindError::EventChannel)?;
        let batch = self.clone();
        let source = move |why: Wake, cx: &mut Control<'_>| {
            if why.port {
                // Unmasked by whoever handles it, once done.
                cx.hold_port();
                batch.fire(port);
            }
        };
        match platform
            .event_loop()
            .add(Some(port), Box::new(source), false)
        {
            Ok(handle) => Ok((port, handle)),
            Err(e) => {
                let _ = evtchn.unbind(port);
                Err(BindError::EventLoop(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::platform::sim::{DomainConfig, SimHypervisor};
    use crate::platform::EventChannels;

    #[test]
    fn many_ports_fired_before_the_listener_runs_come_as_one_batch() {
        let hv = SimHypervisor::new();
        hv.create_domain(DomainConfig::new(0)).unwrap();
        hv.create_domain(DomainConfig::new(3)).unwrap();
        let host = hv.host();
        let platform = Platform::simulated(&host, 0).unwrap();
        let guest = host.evtchn(3).unwrap();
        let batch = PortBatch::new();
        let mut bound = Vec::new();
        for _ in 0..50 {
            let remote = guest.alloc_unbound(0).unwrap();
            let (port, handle) = batch.bind(&platform, 3, remote).unwrap();
            bound.push((remote, port, handle));
        }
        // Nobody listens yet: the events wait in the queue.
        for (remote, _, _) in &bound {
            guest.notify(*remote).unwrap();
        }
        let end = Instant::now() + Duration::from_secs(30);
        while batch.queue.lock().unwrap().ports.len() < 50 && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(1));
        }
        let tells = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = mpsc::channel();
        let counted = tells.clone();
        batch.listen(Some(Arc::new(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            tx.send(()).unwrap();
        })));
        rx.recv_timeout(Duration::from_secs(30)).unwrap();
        let mut ports = batch.take();
        ports.sort_unstable();
        let mut want: Vec<Port> = bound.iter().map(|b| b.1).collect();
        want.sort_unstable();
        assert_eq!(ports, want, "every port once, in one batch");
        assert_eq!(tells.load(Ordering::SeqCst), 1);
        // Each stays masked until unmasked: more events are not delivered.
        guest.notify(bound[0].0).unwrap();
        assert!(rx.recv_timeout(Duration::from_millis(50)).is_err());
        platform.evtchn().unmask(bound[0].1).unwrap();
        rx.recv_timeout(Duration::from_secs(30)).unwrap();
        assert_eq!(batch.take(), [bound[0].1]);
    }
}
