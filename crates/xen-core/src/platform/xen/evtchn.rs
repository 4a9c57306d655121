//! Event channels through `/dev/xen/evtchn`.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;

use super::abi::*;
use super::ops::DeviceOps;
use crate::platform::{DomId, EventChannels, EvtchnError, Port};

/// The evtchn device.
pub const EVTCHN_DEVICE: &str = "/dev/xen/evtchn";

/// An open `/dev/xen/evtchn` handle.
pub struct XenEvtchn<O: DeviceOps> {
    ops: Arc<O>,
    fd: OwnedFd,
}

impl<O: DeviceOps> XenEvtchn<O> {
    /// Opens the device (non-blocking: reads never wait).
    pub fn open(ops: Arc<O>, path: &Path) -> Result<XenEvtchn<O>, EvtchnError> {
        let fd = ops.open(path, true).map_err(|e| {
            EvtchnError::new(
                e.raw_os_error().unwrap_or(libc::ENODEV),
                format!("open {}", path.display()),
            )
        })?;
        Ok(XenEvtchn { ops, fd })
    }

    fn ioctl<T>(
        &self,
        request: u64,
        arg: &mut T,
        what: impl FnOnce() -> String,
    ) -> Result<i32, EvtchnError> {
        // SAFETY: every caller passes the argument struct its request takes.
        unsafe {
            self.ops
                .ioctl(self.fd.as_fd(), request, (arg as *mut T).cast())
        }
        .map_err(|e| EvtchnError::new(e.raw_os_error().unwrap_or(libc::EIO), what()))
    }
}

impl<O: DeviceOps> EventChannels for XenEvtchn<O> {
    fn bind_interdomain(&self, remote: DomId, remote_port: Port) -> Result<Port, EvtchnError> {
        let mut arg = EvtchnBindInterdomain {
            remote_domain: u32::from(remote),
            remote_port,
        };
        let port = self.ioctl(IOCTL_EVTCHN_BIND_INTERDOMAIN, &mut arg, || {
            format!("bind to port {remote_port} of domain {remote}")
        })?;
        Ok(port as Port)
    }

    fn alloc_unbound(&self, remote: DomId) -> Result<Port, EvtchnError> {
        let mut arg = EvtchnBindUnboundPort {
            remote_domain: u32::from(remote),
        };
        let port = self.ioctl(IOCTL_EVTCHN_BIND_UNBOUND_PORT, &mut arg, || {
            format!("allocate a port for domain {remote}")
        })?;
        Ok(port as Port)
    }

    fn unbind(&self, port: Port) -> Result<(), EvtchnError> {
        let mut arg = EvtchnPort { port };
        self.ioctl(IOCTL_EVTCHN_UNBIND, &mut arg, || {
            format!("unbind port {port}")
        })
        .map(drop)
    }

    fn notify(&self, port: Port) -> Result<(), EvtchnError> {
        let mut arg = EvtchnPort { port };
        self.ioctl(IOCTL_EVTCHN_NOTIFY, &mut arg, || {
            format!("notify port {port}")
        })
        .map(drop)
    }

    fn pending(&self, out: &mut Vec<Port>) -> Result<(), EvtchnError> {
        // The device hands out pending ports as u32s, a buffer at a time.
        let mut buf = [0u8; 4 * 256];
        loop {
            let n = match self.ops.read(self.fd.as_fd(), &mut buf) {
                Ok(n) => n,
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => return Ok(()),
                Err(e) => {
                    return Err(EvtchnError::new(
                        e.raw_os_error().unwrap_or(libc::EIO),
                        "read pending ports",
                    ))
                }
            };
            out.extend(
                buf[..n - n % 4]
                    .chunks_exact(4)
                    .map(|c| u32::from_ne_bytes([c[0], c[1], c[2], c[3]])),
            );
            if n < buf.len() {
                return Ok(());
            }
        }
    }

    fn unmask(&self, port: Port) -> Result<(), EvtchnError> {
        // Writing a port number back unmasks it.
        self.ops
            .write(self.fd.as_fd(), &port.to_ne_bytes())
            .map(drop)
            .map_err(|e| {
                EvtchnError::new(
                    e.raw_os_error().unwrap_or(libc::EIO),
                    format!("unmask port {port}"),
                )
            })
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    fn device(&self) -> Option<BorrowedFd<'_>> {
        self.ops.real_devices().then(|| self.fd.as_fd())
    }
}
