//! A packet between vifs: an Ethernet frame and what the guest said about
//! its checksum and segmentation, as netback keeps them in an skb.

/// An Ethernet header's length: the least a frame's first slot must hold.
pub const ETH_HLEN: usize = 14;

/// The largest frame a packet may be: a 64 KiB GSO packet plus its
/// Ethernet header (`XEN_NETIF_MAX_TX_SIZE` is 0xFFFF).
pub const MAX_PACKET: usize = 0xFFFF;

/// Which segmentation a GSO packet asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GsoKind {
    /// TCP over IPv4 (`XEN_NETIF_GSO_TYPE_TCPV4`).
    TcpV4,
    /// TCP over IPv6 (`XEN_NETIF_GSO_TYPE_TCPV6`).
    TcpV6,
}

/// A packet larger than the link carries, to be cut into segments of
/// `size` payload bytes by whoever needs it cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gso {
    /// The MSS.
    pub size: u16,
    /// What is segmented.
    pub kind: GsoKind,
}

/// What travels with a frame.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offload {
    /// The TCP/UDP checksum field is blank (`NETTXF_csum_blank`): it must
    /// be filled before the frame leaves for a receiver that checks it.
    pub csum_blank: bool,
    /// The data was checked already (`NETTXF_data_validated`).
    pub data_validated: bool,
    /// Segmentation offload.
    pub gso: Option<Gso>,
}

/// A frame and its offload metadata.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Packet {
    /// The Ethernet frame (no FCS).
    pub data: Vec<u8>,
    /// Checksum and segmentation state.
    pub offload: Offload,
}

impl Packet {
    /// A plain frame, checksums complete.
    pub fn new(data: Vec<u8>) -> Packet {
        Packet {
            data,
            offload: Offload::default(),
        }
    }

    /// The destination MAC address (a frame shorter than a header has
    /// none).
    pub fn destination(&self) -> Option<[u8; 6]> {
        self.data.get(..6).map(|d| d.try_into().expect("6 bytes"))
    }

    /// The source MAC address.
    pub fn source(&self) -> Option<[u8; 6]> {
        self.data.get(6..12).map(|s| s.try_into().expect("6 bytes"))
    }
}

/// Whether a MAC address is a group (broadcast or multicast) address.
pub fn is_group(mac: &[u8; 6]) -> bool {
    mac[0] & 1 != 0
}
