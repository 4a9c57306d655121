//! The event hot path: a Rust thread per backend waits on an event-channel
//! handle, drains every pending port in one pass, runs the data path for
//! them, sends the notifications the pass produced (one per port, however
//! many requests asked for it), and only then unmasks the ports, so a port
//! that fires during the work is seen again on the next pass.

use std::collections::BTreeSet;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::sim::EventDoorbell;
use super::{EventChannels, EvtchnError, Port};

/// Notifications requested during a pass, sent once per port at its end.
#[derive(Default)]
pub struct Notifier {
    ports: BTreeSet<Port>,
}

impl Notifier {
    /// Asks for `port` to be notified at the end of the pass.
    pub fn notify(&mut self, port: Port) {
        self.ports.insert(port);
    }

    /// Sends the coalesced notifications; returns how many were sent.
    pub fn flush(&mut self, channels: &dyn EventChannels) -> Result<usize, EvtchnError> {
        let n = self.ports.len();
        for port in std::mem::take(&mut self.ports) {
            channels.notify(port)?;
        }
        Ok(n)
    }
}

/// What a pass of the event loop hands to the data path.
pub trait PortHandler: Send + 'static {
    /// Handles the ports that fired; asks for notifications through `notifier`.
    fn handle(&mut self, ports: &[Port], notifier: &mut Notifier);
    /// Reports an event-channel failure; the loop stops after it.
    fn failed(&mut self, error: EvtchnError) {
        let _ = error;
    }
}

impl<F: FnMut(&[Port], &mut Notifier) + Send + 'static> PortHandler for F {
    fn handle(&mut self, ports: &[Port], notifier: &mut Notifier) {
        self(ports, notifier)
    }
}

/// A running event loop; dropping it stops the thread.
pub struct EventLoop {
    stop: Arc<EventDoorbell>,
    thread: Option<JoinHandle<()>>,
}

impl EventLoop {
    /// Starts polling `channels` on a new thread named `name`.
    pub fn spawn(
        name: &str,
        channels: Arc<dyn EventChannels>,
        mut handler: impl PortHandler,
    ) -> io::Result<EventLoop> {
        let stop = Arc::new(EventDoorbell::new()?);
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let mut ports = Vec::new();
                let mut notifier = Notifier::default();
                loop {
                    let mut fds = [
                        libc::pollfd {
                            fd: channels.fd().as_raw_fd(),
                            events: libc::POLLIN,
                            revents: 0,
                        },
                        libc::pollfd {
                            fd: stopped.as_fd().as_raw_fd(),
                            events: libc::POLLIN,
                            revents: 0,
                        },
                    ];
                    // SAFETY: two valid pollfd entries, as counted.
                    let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
                    if n < 0 {
                        if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                            continue;
                        }
                        handler.failed(EvtchnError::from(io::Error::last_os_error()));
                        return;
                    }
                    if fds[1].revents != 0 {
                        return;
                    }
                    ports.clear();
                    if let Err(e) = channels.pending(&mut ports) {
                        handler.failed(e);
                        return;
                    }
                    if ports.is_empty() {
                        continue;
                    }
                    ports.sort_unstable();
                    ports.dedup();
                    handler.handle(&ports, &mut notifier);
                    if let Err(e) = notifier.flush(channels.as_ref()) {
                        handler.failed(e);
                        return;
                    }
                    for p in &ports {
                        if let Err(e) = channels.unmask(*p) {
                            handler.failed(e);
                            return;
                        }
                    }
                }
            })?;
        Ok(EventLoop {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the loop and waits for its thread.
    pub fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        if let Some(t) = self.thread.take() {
            let _ = self.stop.signal();
            let _ = t.join();
        }
    }
}

impl Drop for EventLoop {
    fn drop(&mut self) {
        self.stop_inner();
    }
}
