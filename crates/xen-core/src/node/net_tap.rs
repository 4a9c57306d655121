//! A vif's TAP device for JavaScript: made, joined to a bridge, served on
//! the event loop, and connected to the vif's queues.

use std::sync::Arc;

use napi::bindgen_prelude::Buffer;
use napi_derive::napi;

use super::net::{features, NativeVifQueue, Queues, VifQueueOptions};
use super::platform_handle::NativePlatform;
use super::{coded_error, Coded, Result};
use crate::net::{TapDevice, TapError, TapLink, TapOptions};

fn tap_error(e: TapError) -> Coded {
    let code = match &e {
        TapError::NoTunDevice => "ENOENT",
        TapError::BadName { .. } => "EINVAL",
        TapError::PermissionDenied { .. } => "EPERM",
        TapError::NameInUse { .. } => "EEXIST",
        TapError::Io { error, .. } => crate::platform::io_error_name(error),
    };
    coded_error(code, e)
}

/// How a TAP device is made.
#[napi(object)]
pub struct TapLinkOptions {
    /// The device's MAC address (6 bytes; default fe:ff:ff:ff:ff:ff, as
    /// Xen gives backend vifs).
    pub mac: Option<Buffer>,
    /// Its MTU (default 1500).
    pub mtu: Option<u32>,
}

/// Counters of a TAP link ("tx": the guest sending, written to the device).
#[napi(object)]
pub struct TapLinkStats {
    /// Frames read from the device and handed to the vif.
    pub rx_frames: f64,
    /// Their bytes.
    pub rx_bytes: f64,
    /// The guest's packets written to the device.
    pub tx_frames: f64,
    /// Their bytes.
    pub tx_bytes: f64,
    /// Frames lost on the way, both ways.
    pub dropped: f64,
}

/// A TAP device served on the platform's event loop, for one vif.
#[napi]
pub struct NativeTapLink {
    link: TapLink,
}

impl NativeTapLink {
    /// What a vif queue on this device gets as its uplink.
    pub(super) fn uplink(&self) -> Box<dyn crate::net::Uplink> {
        self.link.uplink()
    }
}

#[napi]
impl NativeTapLink {
    /// Makes the TAP device `name` (up) and serves it on `platform`'s loop.
    #[napi(factory)]
    pub fn start(
        platform: &NativePlatform,
        name: String,
        options: Option<TapLinkOptions>,
    ) -> Result<NativeTapLink> {
        let o = options.unwrap_or(TapLinkOptions {
            mac: None,
            mtu: None,
        });
        let mut tap_options = TapOptions::default();
        if let Some(mac) = &o.mac {
            let mac: [u8; 6] = mac.as_ref().try_into().map_err(|_| {
                coded_error(
                    "EINVAL",
                    format!("a MAC address is 6 bytes, not {}", mac.len()),
                )
            })?;
            tap_options.mac = Some(mac);
        }
        if let Some(mtu) = o.mtu {
            tap_options.mtu = Some(mtu);
        }
        let tap = TapDevice::create(&name, tap_options).map_err(tap_error)?;
        let link = TapLink::start(platform.platform(), tap).map_err(tap_error)?;
        Ok(NativeTapLink { link })
    }

    /// Frames the kernel sends on the device go to these queues (spread by
    /// flow), with the offloads their guest negotiated.
    #[napi]
    pub fn connect(&self, queues: Vec<&NativeVifQueue>, options: VifQueueOptions) -> Result<()> {
        let receivers = queues.iter().map(|q| q.queue.receiver()).collect();
        self.link
            .connect(Arc::new(Queues(receivers)), &features(&options))
            .map_err(tap_error)?;
        Ok(())
    }

    /// Adds the device to the Linux bridge `bridge`, as `vif-bridge` does
    /// (`ENODEV` if there is no such bridge).
    #[napi]
    pub fn join_bridge(&self, bridge: String) -> Result<()> {
        self.link.join_bridge(&bridge).map_err(tap_error)?;
        Ok(())
    }

    /// The device's name.
    #[napi(getter)]
    pub fn name(&self) -> String {
        self.link.name().to_owned()
    }

    /// Whether the device was removed under the link.
    #[napi(getter)]
    pub fn gone(&self) -> bool {
        self.link.is_gone()
    }

    /// The counters.
    #[napi]
    pub fn stats(&self) -> TapLinkStats {
        let s = self.link.stats();
        TapLinkStats {
            rx_frames: s.rx_frames as f64,
            rx_bytes: s.rx_bytes as f64,
            tx_frames: s.tx_frames as f64,
            tx_bytes: s.tx_bytes as f64,
            dropped: s.dropped as f64,
        }
    }

    /// Takes the device off the loop and closes it (the kernel removes it).
    #[napi]
    pub fn stop(&self) {
        self.link.stop();
    }
}
