//! Simulated event channels behind a device that behaves as Linux's
//! `/dev/xen/evtchn`, so that the loop's io_uring way is tested without
//! Xen: a thread moves the handle's pending ports into one end of a
//! socket pair, whose other end the loop reads, and unmasks the ports the
//! loop writes back into it.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::thread::JoinHandle;

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::net::{socketpair, AddressFamily, SocketFlags, SocketType};

use crate::platform::sim::SimEvtchn;
use crate::platform::{DomId, EventChannels, EvtchnError, Port};

pub(super) struct DeviceEvtchn {
    sim: Arc<SimEvtchn>,
    /// The loop's end; `None` once dropping (which ends the thread).
    end: Option<OwnedFd>,
    thread: Option<JoinHandle<()>>,
}

impl DeviceEvtchn {
    pub fn new(sim: Arc<SimEvtchn>) -> DeviceEvtchn {
        let (end, device) = socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .unwrap();
        rustix::io::ioctl_fionbio(&end, true).unwrap();
        let moved = sim.clone();
        let thread = std::thread::spawn(move || serve(&moved, &device));
        DeviceEvtchn {
            sim,
            end: Some(end),
            thread: Some(thread),
        }
    }

    fn end(&self) -> BorrowedFd<'_> {
        self.end.as_ref().expect("open until dropped").as_fd()
    }
}

/// The device's side: until the loop's end closes.
fn serve(sim: &SimEvtchn, device: &OwnedFd) {
    let mut ports = Vec::new();
    let mut buf = [0u8; 4 * 256];
    let tick = Timespec {
        tv_sec: 0,
        tv_nsec: 10_000_000,
    };
    let sim_fd = sim.fd();
    loop {
        let mut fds = [
            PollFd::new(&sim_fd, PollFlags::IN),
            PollFd::new(device, PollFlags::IN),
        ];
        if poll(&mut fds, Some(&tick)).is_err() {
            continue;
        }
        let (fired, written) = (!fds[0].revents().is_empty(), fds[1].revents());
        if fired {
            ports.clear();
            sim.pending(&mut ports).unwrap();
            // The device hands out at most what a read asks for, and keeps
            // the rest: a message per 256 ports (a read's worth).
            for chunk in ports.chunks(256) {
                let bytes: Vec<u8> = chunk.iter().flat_map(|p| p.to_ne_bytes()).collect();
                if rustix::io::write(device, &bytes).is_err() {
                    return;
                }
            }
        }
        if !written.is_empty() {
            match rustix::io::read(device, &mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    for c in buf[..n].chunks_exact(4) {
                        let _ = sim.unmask(u32::from_ne_bytes([c[0], c[1], c[2], c[3]]));
                    }
                }
            }
        }
    }
}

impl EventChannels for DeviceEvtchn {
    fn bind_interdomain(&self, remote: DomId, remote_port: Port) -> Result<Port, EvtchnError> {
        self.sim.bind_interdomain(remote, remote_port)
    }

    fn alloc_unbound(&self, remote: DomId) -> Result<Port, EvtchnError> {
        self.sim.alloc_unbound(remote)
    }

    fn unbind(&self, port: Port) -> Result<(), EvtchnError> {
        self.sim.unbind(port)
    }

    fn notify(&self, port: Port) -> Result<(), EvtchnError> {
        self.sim.notify(port)
    }

    fn pending(&self, out: &mut Vec<Port>) -> Result<(), EvtchnError> {
        let mut buf = [0u8; 4 * 256];
        match rustix::io::read(self.end(), &mut buf) {
            Ok(n) => {
                out.extend(
                    buf[..n]
                        .chunks_exact(4)
                        .map(|c| u32::from_ne_bytes([c[0], c[1], c[2], c[3]])),
                );
                Ok(())
            }
            Err(rustix::io::Errno::AGAIN) => Ok(()),
            Err(e) => Err(EvtchnError::from(std::io::Error::from(e))),
        }
    }

    fn unmask(&self, port: Port) -> Result<(), EvtchnError> {
        rustix::io::write(self.end(), &port.to_ne_bytes())
            .map(drop)
            .map_err(|e| EvtchnError::from(std::io::Error::from(e)))
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.end()
    }

    fn device(&self) -> Option<BorrowedFd<'_>> {
        Some(self.end())
    }
}

impl Drop for DeviceEvtchn {
    fn drop(&mut self) {
        self.end.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
