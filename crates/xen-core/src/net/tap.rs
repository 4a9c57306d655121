//! A vif as a Linux TAP device, named as Xen names its backend interfaces
//! (`vif<domid>.<devid>`), so that the usual dom0 setup (a Linux bridge,
//! Open vSwitch, routing) sees the guest as it sees one of netback's.
//!
//! - [`TapDevice`]: the device itself, made with `/dev/net/tun` and set up
//!   as netback's interfaces are (Xen's backend MAC address, an MTU, up).
//! - [`TapLink`]: the device on the platform's event loop, between a vif
//!   queue and the kernel: frames the kernel sends on the device go into
//!   the guest's receive path, the guest's packets are written to it.
//!
//! Both directions keep their offloads: the device is opened with a
//! virtio-net header in front of every frame (`IFF_VNET_HDR`), which
//! carries a blank checksum (`VIRTIO_NET_HDR_F_NEEDS_CSUM`) and TCP
//! segmentation (`gso_type`, `gso_size`) as Xen's netif carries them, so a
//! 64 KiB TCP packet crosses in one piece and no checksum is computed on
//! the way unless someone has to (see `tap/vnet.rs`).

#[cfg(test)]
mod frames;
mod link;
#[cfg(test)]
mod tests;
mod vnet;
#[cfg(test)]
mod vnet_tests;

use std::fmt;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use rustix::ioctl::{ioctl, IntegerSetter, Opcode, Setter, Updater};
use rustix::net::{AddressFamily, SocketFlags, SocketType};

use super::vif::VifFeatures;

pub use link::{TapLink, TapStats};

/// The longest interface name Linux takes (`IFNAMSIZ` less the NUL).
pub const TAP_NAME_MAX: usize = libc::IFNAMSIZ - 1;

/// The MAC address Xen gives the backend end of every vif. A Linux bridge
/// takes the lowest address among its ports as its own; this one is
/// never the lowest, so the bridge never takes a vif's (which would change
/// the bridge's address whenever a guest comes or goes). Frames are not
/// addressed to it: the guest has its own address.
pub const XEN_BACKEND_MAC: [u8; 6] = [0xfe, 0xff, 0xff, 0xff, 0xff, 0xff];

/// How a TAP device is set up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TapOptions {
    /// The device's MAC address; `None` keeps the random one the kernel
    /// gave it.
    pub mac: Option<[u8; 6]>,
    /// The MTU; `None` keeps the kernel's (1500).
    pub mtu: Option<u32>,
    /// Brings the link up (else whoever attaches it to a bridge does).
    pub up: bool,
}

impl Default for TapOptions {
    /// As Xen's hotplug scripts leave a vif: its MAC address Xen's, an MTU
    /// of 1500, up.
    fn default() -> TapOptions {
        TapOptions {
            mac: Some(XEN_BACKEND_MAC),
            mtu: Some(1500),
            up: true,
        }
    }
}

/// Why a TAP device could not be made or served.
#[derive(Debug)]
pub enum TapError {
    /// `/dev/net/tun` is missing: no tun driver, or a container without
    /// the device.
    NoTunDevice,
    /// A name Linux does not take for an interface.
    BadName {
        /// The name asked for.
        name: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// Not allowed (it takes `CAP_NET_ADMIN`).
    PermissionDenied {
        /// The device.
        name: String,
    },
    /// A device of that name exists and cannot be taken: a TAP someone
    /// else has open, or another kind of device.
    NameInUse {
        /// The device.
        name: String,
    },
    /// A step of the setup failed.
    Io {
        /// The device.
        name: String,
        /// The step.
        what: &'static str,
        /// The error.
        error: io::Error,
    },
}

impl fmt::Display for TapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TapError::NoTunDevice => write!(
                f,
                "TAP devices need /dev/net/tun, which is missing \
                 (load the tun module, or give the container the device)"
            ),
            TapError::BadName { name, why } => write!(f, "bad TAP device name {name:?}: {why}"),
            TapError::PermissionDenied { name } => write!(
                f,
                "not allowed to create TAP device {name}: it needs CAP_NET_ADMIN"
            ),
            TapError::NameInUse { name } => write!(
                f,
                "cannot create TAP device {name}: a network device of that name exists \
                 and is in use"
            ),
            TapError::Io { name, what, error } => write!(f, "TAP device {name}: {what}: {error}"),
        }
    }
}

impl std::error::Error for TapError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TapError::Io { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// A TAP device, open. Dropping it closes the descriptor, and the kernel
/// removes the device (it is not made persistent).
pub struct TapDevice {
    fd: OwnedFd,
    name: String,
}

impl fmt::Debug for TapDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TapDevice")
            .field("name", &self.name)
            .finish()
    }
}

impl TapDevice {
    /// Creates the TAP device `name` (in the calling thread's network
    /// namespace), with a virtio-net header on every frame and checksum
    /// and TCP segmentation offloads (until [`TapLink::connect`] says
    /// what the guest takes), and sets it up as `options` says.
    ///
    /// A persistent TAP of that name that nobody has open is taken over,
    /// as QEMU's `-netdev tap` does; one in use fails with
    /// [`TapError::NameInUse`].
    pub fn create(name: &str, options: TapOptions) -> Result<TapDevice, TapError> {
        check_name(name)?;
        let flags = OFlags::RDWR | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let fd = rustix::fs::open("/dev/net/tun", flags, Mode::empty()).map_err(|e| match e {
            Errno::NOENT | Errno::NODEV | Errno::NXIO => TapError::NoTunDevice,
            Errno::ACCESS | Errno::PERM => TapError::PermissionDenied { name: name.into() },
            e => failed(name, "opening /dev/net/tun")(e),
        })?;
        let mut req = IfReq::new(name);
        let tap_flags = libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR;
        req.set_short(tap_flags as i16);
        // SAFETY: TUNSETIFF reads and writes back a `struct ifreq`, which
        // `IfReq` is laid out as (same size; the kernel reads the name and
        // the flags, and writes the name).
        let set = unsafe { ioctl(&fd, Updater::<TUNSETIFF, IfReq>::new(&mut req)) };
        if let Err(e) = set {
            return Err(match e {
                Errno::PERM | Errno::ACCESS => TapError::PermissionDenied { name: name.into() },
                Errno::BUSY => TapError::NameInUse { name: name.into() },
                // A device of the name that is not a TAP (or a TAP of
                // other flags) is refused as invalid.
                Errno::INVAL if exists(name) => TapError::NameInUse { name: name.into() },
                e => failed(name, "TUNSETIFF")(e),
            });
        }
        // The kernel's name: the same, unless `name` was a template.
        let name = req.name();
        let hdr_len = vnet::VNET_HDR_LEN as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads an `int` through its pointer.
        unsafe { ioctl(&fd, Setter::<TUNSETVNETHDRSZ, libc::c_int>::new(hdr_len)) }
            .map_err(failed(&name, "TUNSETVNETHDRSZ"))?;
        set_offloads(fd.as_fd(), &VifFeatures::default())
            .map_err(failed(&name, "TUNSETOFFLOAD"))?;
        let tap = TapDevice { fd, name };
        tap.configure(&options)
            .map_err(|(what, e)| failed(&tap.name, what)(e))?;
        Ok(tap)
    }

    /// The device's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sets the MAC address and the MTU, then brings the link up: through
    /// an ordinary socket, as `ip link` does with the old ioctls.
    fn configure(&self, options: &TapOptions) -> Result<(), (&'static str, Errno)> {
        let sock = control_socket().map_err(|e| ("opening a socket", e))?;
        if let Some(mac) = options.mac {
            let mut req = IfReq::new(&self.name);
            // A `struct sockaddr` of the link layer: family, then address.
            req.data[..2].copy_from_slice(&libc::ARPHRD_ETHER.to_ne_bytes());
            req.data[2..8].copy_from_slice(&mac);
            // SAFETY: SIOCSIFHWADDR reads a `struct ifreq` (`IfReq`).
            unsafe { ioctl(&sock, Setter::<SIOCSIFHWADDR, IfReq>::new(req)) }
                .map_err(|e| ("setting the MAC address", e))?;
        }
        if let Some(mtu) = options.mtu {
            let mut req = IfReq::new(&self.name);
            let mtu = i32::try_from(mtu).map_err(|_| ("setting the MTU", Errno::INVAL))?;
            req.data[..4].copy_from_slice(&mtu.to_ne_bytes());
            // SAFETY: SIOCSIFMTU reads a `struct ifreq` (`IfReq`).
            unsafe { ioctl(&sock, Setter::<SIOCSIFMTU, IfReq>::new(req)) }
                .map_err(|e| ("setting the MTU", e))?;
        }
        if options.up {
            let mut req = IfReq::new(&self.name);
            // SAFETY: SIOCGIFFLAGS reads the name and writes the flags of
            // a `struct ifreq` (`IfReq`).
            unsafe { ioctl(&sock, Updater::<SIOCGIFFLAGS, IfReq>::new(&mut req)) }
                .map_err(|e| ("reading the link flags", e))?;
            req.set_short(req.short() | libc::IFF_UP as i16);
            // SAFETY: SIOCSIFFLAGS reads a `struct ifreq` (`IfReq`).
            unsafe { ioctl(&sock, Setter::<SIOCSIFFLAGS, IfReq>::new(req)) }
                .map_err(|e| ("bringing the link up", e))?;
        }
        Ok(())
    }

    /// Adds the device to the Linux bridge `bridge` (see [`join_bridge`]).
    pub fn join_bridge(&self, bridge: &str) -> Result<(), TapError> {
        join_bridge(&self.name, bridge)
    }

    fn into_parts(self) -> (OwnedFd, String) {
        (self.fd, self.name)
    }
}

impl AsFd for TapDevice {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

const TUNSETIFF: Opcode = libc::TUNSETIFF as Opcode;
const TUNSETVNETHDRSZ: Opcode = libc::TUNSETVNETHDRSZ as Opcode;
const TUNSETOFFLOAD: Opcode = libc::TUNSETOFFLOAD as Opcode;
const SIOCSIFHWADDR: Opcode = libc::SIOCSIFHWADDR as Opcode;
const SIOCSIFMTU: Opcode = libc::SIOCSIFMTU as Opcode;
const SIOCGIFFLAGS: Opcode = libc::SIOCGIFFLAGS as Opcode;
const SIOCSIFFLAGS: Opcode = libc::SIOCSIFFLAGS as Opcode;
/// `linux/sockios.h`; not in libc.
const SIOCBRADDIF: Opcode = 0x89a2;

/// Tells the kernel which offloads the reader takes (`TUNSETOFFLOAD`): a
/// partial checksum, TCP segmentation, as far as the guest negotiated
/// them. What it does not take the kernel does first (completes the
/// checksum, cuts the segments), as it does for netback's vif, whose
/// features follow its frontend's.
fn set_offloads(fd: BorrowedFd<'_>, f: &VifFeatures) -> Result<(), Errno> {
    let mut offloads = 0;
    if f.csum_offload {
        offloads |= libc::TUN_F_CSUM;
        // Segmentation needs the checksum left partial.
        if f.gso_tcpv4 {
            offloads |= libc::TUN_F_TSO4;
        }
        if f.gso_tcpv6 {
            offloads |= libc::TUN_F_TSO6;
        }
    }
    // SAFETY: TUNSETOFFLOAD takes its flags as the integer argument
    // itself, not through a pointer.
    unsafe {
        ioctl(
            fd,
            IntegerSetter::<TUNSETOFFLOAD>::new_usize(offloads as usize),
        )
    }
}

/// Adds the network device `device` to the Linux bridge `bridge`, as
/// Xen's `vif-bridge` hotplug script does with the vif of a guest whose
/// `bridge` names one (`SIOCBRADDIF`, what `ip link set master` and
/// `brctl addif` do), in the calling thread's network namespace. A
/// bridge that does not exist fails with `ENODEV`.
pub fn join_bridge(device: &str, bridge: &str) -> Result<(), TapError> {
    check_name(bridge)?;
    let sock = control_socket().map_err(failed(device, "opening a socket"))?;
    let index = rustix::net::netdevice::name_to_index(&sock, device)
        .map_err(failed(device, "reading its index"))?;
    let mut req = IfReq::new(bridge);
    req.data[..4].copy_from_slice(&(index as i32).to_ne_bytes());
    // SAFETY: SIOCBRADDIF reads a `struct ifreq` (`IfReq`): the bridge's
    // name and, in the union, the index of the port to add.
    unsafe { ioctl(&sock, Setter::<SIOCBRADDIF, IfReq>::new(req)) }
        .map_err(failed(device, "adding it to the bridge"))
}

/// A step's failure as a [`TapError::Io`].
fn failed(name: &str, what: &'static str) -> impl FnOnce(Errno) -> TapError {
    let name = name.to_string();
    move |e| TapError::Io {
        name,
        what,
        error: e.into(),
    }
}

/// A `struct ifreq` as bytes: the name, then the union, of which these
/// calls use the flags (a short), the MTU (an int) or a `sockaddr`. Plain
/// bytes need no `unsafe` to build or read, unlike `libc::ifreq`'s union.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    data: [u8; IFREQ_DATA],
}

const IFREQ_DATA: usize = std::mem::size_of::<libc::ifreq>() - libc::IFNAMSIZ;

impl IfReq {
    /// A request for `name` (checked: shorter than `IFNAMSIZ`), zeroed.
    fn new(name: &str) -> IfReq {
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            data: [0; IFREQ_DATA],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        req
    }

    fn name(&self) -> String {
        let len = self
            .name
            .iter()
            .position(|b| *b == 0)
            .unwrap_or(TAP_NAME_MAX);
        String::from_utf8_lossy(&self.name[..len]).into_owned()
    }

    fn short(&self) -> i16 {
        i16::from_ne_bytes([self.data[0], self.data[1]])
    }

    fn set_short(&mut self, v: i16) {
        self.data[..2].copy_from_slice(&v.to_ne_bytes());
    }
}

/// Whether `name` is one Linux takes for an interface (as its
/// `dev_valid_name`), so that a bad one fails with a reason rather than
/// the kernel's bare `EINVAL`.
fn check_name(name: &str) -> Result<(), TapError> {
    let bad = |why| TapError::BadName {
        name: name.into(),
        why,
    };
    if name.is_empty() {
        return Err(bad("it is empty"));
    }
    if name.len() > TAP_NAME_MAX {
        return Err(bad("longer than 15 bytes (Linux's IFNAMSIZ)"));
    }
    if name == "." || name == ".." {
        return Err(bad("'.' and '..' are not interface names"));
    }
    let invalid = |c: char| c == '/' || c == ':' || c == '\0' || c.is_whitespace();
    if name.contains(invalid) {
        return Err(bad("it holds '/', ':', a NUL or white space"));
    }
    Ok(())
}

/// An `AF_INET` datagram socket: what the interface ioctls are made on
/// (of the calling thread's network namespace).
fn control_socket() -> Result<OwnedFd, Errno> {
    rustix::net::socket_with(
        AddressFamily::INET,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC,
        None,
    )
}

/// Whether a network device of that name exists.
fn exists(name: &str) -> bool {
    control_socket()
        .and_then(|s| rustix::net::netdevice::name_to_index(&s, name))
        .is_ok()
}
