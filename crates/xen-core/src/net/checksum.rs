//! Filling a blank TCP or UDP checksum (`NETTXF_csum_blank`), for a
//! receiver that does not take frames with the checksum left to do: a
//! frontend without checksum offload (`feature-no-csum-offload`), a TAP
//! device, or a TypeScript sink that asked for complete frames.
//!
//! The checksum is computed whole (pseudo-header, then the segment with
//! its checksum field zeroed), whatever the guest left in the field:
//! Linux leaves the pseudo-header sum there, other guests nothing, and
//! netback recomputes it for the same reason.

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;

/// Why a blank checksum could not be filled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChecksumError {
    /// Not IPv4 or IPv6 carrying TCP or UDP (a VLAN tag, IPv6 extension
    /// headers, another protocol), or a header cut short.
    Unsupported(&'static str),
}

impl std::fmt::Display for ChecksumError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChecksumError::Unsupported(why) => write!(f, "cannot fill the checksum: {why}"),
        }
    }
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// The ones'-complement sum of `data` (an odd last byte padded with zero)
/// added to `sum`, not yet folded.
pub(crate) fn add(mut sum: u64, data: &[u8]) -> u64 {
    let mut words = data.chunks_exact(2);
    for w in &mut words {
        sum += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        sum += u64::from(*last) << 8;
    }
    sum
}

/// A sum from [`add`] folded to 16 bits.
pub(crate) fn fold(mut sum: u64) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// Where a frame's transport segment is, its protocol, and the
/// pseudo-header's sum.
fn transport(frame: &[u8]) -> Result<(usize, u8, u64), ChecksumError> {
    const SHORT: ChecksumError = ChecksumError::Unsupported("a header cut short");
    if frame.len() < 14 {
        return Err(SHORT);
    }
    match be16(frame, 12) {
        ETHERTYPE_IPV4 => {
            let ip = &frame[14..];
            if ip.len() < 20 || ip[0] >> 4 != 4 {
                return Err(SHORT);
            }
            let ihl = usize::from(ip[0] & 0xf) * 4;
            let total = usize::from(be16(ip, 2));
            if ihl < 20 || total < ihl || total > ip.len() {
                return Err(SHORT);
            }
            let proto = ip[9];
            let len = total - ihl;
            let sum = add(0, &ip[12..20]) + u64::from(proto) + len as u64;
            Ok((14 + ihl, proto, sum))
        }
        ETHERTYPE_IPV6 => {
            let ip = &frame[14..];
            if ip.len() < 40 {
                return Err(SHORT);
            }
            let len = usize::from(be16(ip, 4));
            if 40 + len > ip.len() {
                return Err(SHORT);
            }
            let proto = ip[6];
            let sum = add(0, &ip[8..40]) + u64::from(proto) + len as u64;
            Ok((54, proto, sum))
        }
        _ => Err(ChecksumError::Unsupported("neither IPv4 nor IPv6")),
    }
}

/// Where a frame's transport header starts and its IP protocol, on the
/// same parsing as [`fill`]: what a TAP's virtio-net header needs to leave
/// the checksum to the kernel (`csum_start`).
pub(crate) fn l4_offsets(frame: &[u8]) -> Result<(usize, u8), ChecksumError> {
    let (start, proto, _) = transport(frame)?;
    Ok((start, proto))
}

/// The segment's end: IPv4's total length or IPv6's payload length says
/// where the frame's padding starts.
fn segment_end(frame: &[u8]) -> usize {
    match be16(frame, 12) {
        ETHERTYPE_IPV4 => 14 + usize::from(be16(frame, 16)),
        _ => 54 + usize::from(be16(frame, 18)),
    }
}

/// Fills the TCP or UDP checksum of an Ethernet frame in place.
pub fn fill(frame: &mut [u8]) -> Result<(), ChecksumError> {
    let (start, proto, pseudo) = transport(frame)?;
    let field = match proto {
        PROTO_TCP => start + 16,
        PROTO_UDP => start + 6,
        _ => return Err(ChecksumError::Unsupported("neither TCP nor UDP")),
    };
    let end = segment_end(frame);
    if field + 2 > end {
        return Err(ChecksumError::Unsupported("a header cut short"));
    }
    frame[field..field + 2].fill(0);
    let mut sum = !fold(add(pseudo, &frame[start..end]));
    // UDP sends a computed zero as all ones (zero means "none").
    if proto == PROTO_UDP && sum == 0 {
        sum = 0xffff;
    }
    frame[field..field + 2].copy_from_slice(&sum.to_be_bytes());
    Ok(())
}

/// Whether a frame's TCP or UDP checksum is right (for tests and for
/// receivers that verify).
pub fn verify(frame: &[u8]) -> Result<bool, ChecksumError> {
    let (start, proto, pseudo) = transport(frame)?;
    if proto != PROTO_TCP && proto != PROTO_UDP {
        return Err(ChecksumError::Unsupported("neither TCP nor UDP"));
    }
    Ok(fold(add(pseudo, &frame[start..segment_end(frame)])) == 0xffff)
}

#[cfg(test)]
/// An Ethernet + IPv4 + UDP frame with `payload`, its checksum zero (for tests).
pub(crate) fn udp4_frame(payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 20 + 8];
    f[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    let total = (20 + 8 + payload.len()) as u16;
    f[14] = 0x45;
    f[16..18].copy_from_slice(&total.to_be_bytes());
    f[22] = 64;
    f[23] = PROTO_UDP;
    f[26..30].copy_from_slice(&[10, 0, 0, 1]);
    f[30..34].copy_from_slice(&[10, 0, 0, 2]);
    f[34..36].copy_from_slice(&1234u16.to_be_bytes());
    f[36..38].copy_from_slice(&5678u16.to_be_bytes());
    f[38..40].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filled_udp_checksum_matches_one_computed_by_hand() {
        let mut f = udp4_frame(b"hello");
        fill(&mut f).unwrap();
        // By hand: pseudo-header 10.0.0.1 + 10.0.0.2 + 17 + 13, then the
        // UDP header (checksum 0) and "hello" padded.
        let words: [u32; 13] = [
            0x0a00, 0x0001, 0x0a00, 0x0002, 17, 13, 1234, 5678, 13, 0x6865, 0x6c6c, 0x6f00, 0,
        ];
        let mut s: u32 = words.iter().sum();
        while s >> 16 != 0 {
            s = (s & 0xffff) + (s >> 16);
        }
        assert_eq!(be16(&f, 40), !(s as u16));
        assert!(verify(&f).unwrap());
        f[44] ^= 1;
        assert!(!verify(&f).unwrap());
    }

    #[test]
    fn whatever_the_field_held_the_result_is_the_same_and_padding_is_ignored() {
        let mut a = udp4_frame(b"some payload");
        let mut b = a.clone();
        b[40..42].copy_from_slice(&[0xab, 0xcd]);
        b.extend_from_slice(&[0xee; 10]);
        fill(&mut a).unwrap();
        fill(&mut b).unwrap();
        assert_eq!(a[40..42], b[40..42]);
    }

    #[test]
    fn frames_it_cannot_handle_are_refused_not_corrupted() {
        let mut arp = vec![0u8; 60];
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        let before = arp.clone();
        assert!(fill(&mut arp).is_err());
        assert_eq!(arp, before);
        let mut cut = udp4_frame(b"x");
        cut.truncate(30);
        assert!(fill(&mut cut).is_err());
        assert!(fill(&mut [0u8; 5]).is_err());
    }
}
