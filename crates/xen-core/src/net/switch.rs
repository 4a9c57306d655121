//! A learning switch between the vifs of one process: the pure-Rust path
//! packets take from one guest to another, with no copy beyond the two
//! grant copies and no crossing into JavaScript. It is also the reference
//! the TypeScript packet streams are measured against.
//!
//! As a Linux bridge: each frame's source address is learnt on the port
//! it came in on; a frame to a learnt unicast address goes to that port
//! alone (or nowhere, if that is the port it came from), anything else
//! (broadcast, multicast, unknown) to every other port. Addresses are
//! never aged out (a bridge forgets after five minutes), but a port that
//! is removed takes its addresses with it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::packet::{is_group, Packet};
use super::vif::{Uplink, VifReceiver};

/// Where a switch port's packets go out: a vif's receive path, or
/// anything else that takes packets.
pub trait PacketSink: Send + Sync {
    /// Takes a batch of packets (from the switch's caller's thread).
    fn deliver(&self, packets: Vec<Packet>);
}

impl PacketSink for VifReceiver {
    fn deliver(&self, packets: Vec<Packet>) {
        VifReceiver::deliver(self, packets);
    }
}

type PortId = u64;

#[derive(Default)]
struct State {
    ports: HashMap<PortId, Option<Arc<dyn PacketSink>>>,
    macs: HashMap<[u8; 6], PortId>,
    next: PortId,
}

/// A learning switch. Cheap to clone (one switch, shared).
#[derive(Clone, Default)]
pub struct Switch {
    state: Arc<Mutex<State>>,
}

impl Switch {
    /// An empty switch.
    pub fn new() -> Switch {
        Switch::default()
    }

    /// A new port: give it to a vif as its uplink, then
    /// [`SwitchPort::connect`] it to the vif's receiver.
    pub fn add_port(&self) -> SwitchPort {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let id = s.next;
        s.next += 1;
        s.ports.insert(id, None);
        SwitchPort {
            state: self.state.clone(),
            id,
            batches: HashMap::new(),
        }
    }

    /// The port a MAC address was learnt on, if it was (for tests and
    /// diagnostics: the ports' ids are their order of creation).
    pub fn port_of(&self, mac: [u8; 6]) -> Option<u64> {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .macs
            .get(&mac)
            .copied()
    }

    /// Ports attached.
    pub fn ports(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .ports
            .len()
    }
}

/// One port of a [`Switch`]: an [`Uplink`] for a vif.
pub struct SwitchPort {
    state: Arc<Mutex<State>>,
    id: PortId,
    /// Packets per destination, built under the lock and delivered after.
    batches: HashMap<PortId, Vec<Packet>>,
}

impl SwitchPort {
    /// This port's id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Where the packets the switch sends out of this port go.
    pub fn connect(&self, sink: Arc<dyn PacketSink>) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = s.ports.get_mut(&self.id) {
            *slot = Some(sink);
        }
    }

    /// A handle on the same port (to connect it once its vif started,
    /// while the vif owns the port as its uplink).
    pub fn handle(&self) -> SwitchPort {
        SwitchPort {
            state: self.state.clone(),
            id: self.id,
            batches: HashMap::new(),
        }
    }

    /// Takes the port off the switch, with the addresses learnt on it.
    pub fn remove(&self) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.ports.remove(&self.id);
        let id = self.id;
        s.macs.retain(|_, p| *p != id);
    }

    /// Switches a batch of packets that came in on this port.
    pub fn switch(&mut self, packets: &mut Vec<Packet>) {
        let mut out: Vec<(Arc<dyn PacketSink>, Vec<Packet>)> = Vec::new();
        {
            let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            if !s.ports.contains_key(&self.id) {
                packets.clear();
                return;
            }
            for p in packets.drain(..) {
                let (Some(src), Some(dst)) = (p.source(), p.destination()) else {
                    continue;
                };
                if !is_group(&src) {
                    s.macs.insert(src, self.id);
                }
                match (!is_group(&dst))
                    .then(|| s.macs.get(&dst).copied())
                    .flatten()
                {
                    Some(port) if port == self.id => {}
                    Some(port) => self.batches.entry(port).or_default().push(p),
                    None => {
                        let others: Vec<PortId> = s
                            .ports
                            .keys()
                            .copied()
                            .filter(|id| *id != self.id)
                            .collect();
                        if let Some((last, rest)) = others.split_last() {
                            for id in rest {
                                self.batches.entry(*id).or_default().push(p.clone());
                            }
                            self.batches.entry(*last).or_default().push(p);
                        }
                    }
                }
            }
            for (port, batch) in self.batches.drain() {
                if let Some(Some(sink)) = s.ports.get(&port) {
                    out.push((sink.clone(), batch));
                }
            }
        }
        // Delivered outside the lock: a sink may take its time.
        for (sink, batch) in out {
            sink.deliver(batch);
        }
    }
}

impl Uplink for SwitchPort {
    fn transmit(&mut self, packets: &mut Vec<Packet>) {
        self.switch(packets);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Collect(Mutex<Vec<Packet>>);

    impl PacketSink for Collect {
        fn deliver(&self, packets: Vec<Packet>) {
            self.0.lock().unwrap().extend(packets);
        }
    }

    fn frame(dst: [u8; 6], src: [u8; 6], tag: u8) -> Packet {
        let mut d = dst.to_vec();
        d.extend_from_slice(&src);
        d.extend_from_slice(&[0x08, 0x00, tag]);
        Packet::new(d)
    }

    const A: [u8; 6] = [0x00, 0x16, 0x3e, 0, 0, 1];
    const B: [u8; 6] = [0x00, 0x16, 0x3e, 0, 0, 2];
    const C: [u8; 6] = [0x00, 0x16, 0x3e, 0, 0, 3];
    const BCAST: [u8; 6] = [0xff; 6];

    #[test]
    fn unknown_and_broadcast_frames_flood_learnt_ones_go_to_one_port() {
        let sw = Switch::new();
        let sinks: Vec<Arc<Collect>> = (0..3).map(|_| Arc::default()).collect();
        let mut ports: Vec<SwitchPort> = (0..3).map(|_| sw.add_port()).collect();
        for (p, s) in ports.iter().zip(&sinks) {
            p.connect(s.clone());
        }
        let taken = |i: usize| std::mem::take(&mut *sinks[i].0.lock().unwrap());
        // A, on port 0, asks for B: flooded.
        ports[0].switch(&mut vec![frame(BCAST, A, 1)]);
        assert_eq!((taken(0).len(), taken(1).len(), taken(2).len()), (0, 1, 1));
        // B answers A: learnt, so only port 0.
        ports[1].switch(&mut vec![frame(A, B, 2)]);
        assert_eq!(taken(0), vec![frame(A, B, 2)]);
        assert!(taken(1).is_empty() && taken(2).is_empty());
        assert_eq!((sw.port_of(A), sw.port_of(B)), (Some(0), Some(1)));
        // To C, unknown: every other port.
        ports[0].switch(&mut vec![frame(C, A, 3)]);
        assert_eq!((taken(0).len(), taken(1).len(), taken(2).len()), (0, 1, 1));
        // A frame to its own port goes nowhere.
        ports[0].switch(&mut vec![frame(A, A, 4)]);
        assert!(taken(0).is_empty() && taken(1).is_empty() && taken(2).is_empty());
        // A port removed forgets its addresses: to A floods again.
        ports[0].remove();
        assert_eq!(sw.port_of(A), None);
        ports[1].switch(&mut vec![frame(A, B, 5)]);
        assert_eq!((taken(0).len(), taken(2).len()), (0, 1));
        // A group source address is never learnt; a runt is dropped.
        ports[2].switch(&mut vec![frame(B, BCAST, 6), Packet::new(vec![1, 2, 3])]);
        assert_eq!(sw.port_of(BCAST), None);
        assert_eq!(taken(1), vec![frame(B, BCAST, 6)]);
    }
}
