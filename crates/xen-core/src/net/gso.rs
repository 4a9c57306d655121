//! Cutting a TCP segmentation-offload packet into the segments it stands
//! for, for a receiver that takes no GSO (a guest without
//! `feature-gso-tcpv4`/`-tcpv6`), as Linux's `skb_gso_segment` does
//! before such a device: each segment gets the headers, at most `size`
//! bytes of payload, its own sequence number, IP length (and, for IPv4,
//! identification and header checksum) and a complete TCP checksum; FIN
//! and PSH stay on the last segment only, CWR on the first.

use super::checksum::{self, ChecksumError};
use super::packet::{Gso, GsoKind, Offload, Packet};

const ETH: usize = 14;
const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_CWR: u8 = 0x80;

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Where the headers end: the IP header's offset and length, and the TCP
/// header's.
fn headers(frame: &[u8], kind: GsoKind) -> Result<(usize, usize), ChecksumError> {
    const BAD: ChecksumError = ChecksumError::Unsupported("not the TCP packet its GSO type says");
    let (l4, proto) = checksum::l4_offsets(frame)?;
    let ethertype = be16(frame, 12);
    let ok = match kind {
        GsoKind::TcpV4 => ethertype == 0x0800,
        GsoKind::TcpV6 => ethertype == 0x86dd,
    };
    if !ok || proto != 6 || frame.len() < l4 + 20 {
        return Err(BAD);
    }
    let tcp_len = usize::from(frame[l4 + 12] >> 4) * 4;
    if tcp_len < 20 || frame.len() < l4 + tcp_len {
        return Err(BAD);
    }
    Ok((l4, tcp_len))
}

/// The segments `packet` stands for (the packet itself, checksummed, if
/// its payload fits in one).
pub fn segment(packet: &Packet, gso: Gso) -> Result<Vec<Packet>, ChecksumError> {
    let frame = &packet.data;
    let (l4, tcp_len) = headers(frame, gso.kind)?;
    let head = l4 + tcp_len;
    // What IP says the packet holds (the frame may be padded beyond it).
    let end = match gso.kind {
        GsoKind::TcpV4 => ETH + usize::from(be16(frame, ETH + 2)),
        GsoKind::TcpV6 => ETH + 40 + usize::from(be16(frame, ETH + 4)),
    }
    .min(frame.len());
    let payload = frame.get(head..end).unwrap_or(&[]);
    let mss = usize::from(gso.size).max(1);
    let chunks: Vec<&[u8]> = if payload.is_empty() {
        vec![&[]]
    } else {
        payload.chunks(mss).collect()
    };
    let seq = u32::from_be_bytes(frame[l4 + 4..l4 + 8].try_into().expect("4 bytes"));
    let flags = frame[l4 + 13];
    let last = chunks.len() - 1;
    let mut out = Vec::with_capacity(chunks.len());
    let mut offset = 0usize;
    for (i, chunk) in chunks.into_iter().enumerate() {
        let mut s = Vec::with_capacity(head + chunk.len());
        s.extend_from_slice(&frame[..head]);
        s.extend_from_slice(chunk);
        match gso.kind {
            GsoKind::TcpV4 => {
                let ihl = l4 - ETH;
                s[ETH + 2..ETH + 4]
                    .copy_from_slice(&((ihl + tcp_len + chunk.len()) as u16).to_be_bytes());
                let id = be16(frame, ETH + 4).wrapping_add(i as u16);
                s[ETH + 4..ETH + 6].copy_from_slice(&id.to_be_bytes());
                s[ETH + 10..ETH + 12].fill(0);
                let c = !checksum::fold(checksum::add(0, &s[ETH..l4]));
                s[ETH + 10..ETH + 12].copy_from_slice(&c.to_be_bytes());
            }
            GsoKind::TcpV6 => {
                let len = (l4 - ETH - 40 + tcp_len + chunk.len()) as u16;
                s[ETH + 4..ETH + 6].copy_from_slice(&len.to_be_bytes());
            }
        }
        s[l4 + 4..l4 + 8].copy_from_slice(&seq.wrapping_add(offset as u32).to_be_bytes());
        let mut f = flags;
        if i != last {
            f &= !(TCP_FIN | TCP_PSH);
        }
        if i != 0 {
            f &= !TCP_CWR;
        }
        s[l4 + 13] = f;
        checksum::fill(&mut s)?;
        offset += chunk.len();
        out.push(Packet {
            data: s,
            offload: Offload {
                csum_blank: false,
                data_validated: true,
                gso: None,
            },
        });
    }
    Ok(out)
}

/// An Ethernet + IPv4 + TCP frame (flags PSH|ACK|FIN) with `payload`
/// (for tests).
#[cfg(test)]
pub(crate) fn tcp4_frame(payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; ETH + 20 + 20];
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    f[ETH] = 0x45;
    f[ETH + 2..ETH + 4].copy_from_slice(&((40 + payload.len()) as u16).to_be_bytes());
    f[ETH + 4..ETH + 6].copy_from_slice(&1000u16.to_be_bytes());
    f[ETH + 8] = 64;
    f[ETH + 9] = 6;
    f[ETH + 12..ETH + 16].copy_from_slice(&[10, 0, 0, 1]);
    f[ETH + 16..ETH + 20].copy_from_slice(&[10, 0, 0, 2]);
    let t = ETH + 20;
    f[t..t + 2].copy_from_slice(&40000u16.to_be_bytes());
    f[t + 2..t + 4].copy_from_slice(&80u16.to_be_bytes());
    f[t + 4..t + 8].copy_from_slice(&0xffff_fff0u32.to_be_bytes());
    f[t + 12] = 5 << 4;
    f[t + 13] = TCP_PSH | TCP_FIN | 0x10;
    f.extend_from_slice(payload);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gso_packet_becomes_segments_that_add_up_and_check() {
        let payload: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
        let p = Packet::new(tcp4_frame(&payload));
        let gso = Gso {
            size: 1448,
            kind: GsoKind::TcpV4,
        };
        let segs = segment(&p, gso).unwrap();
        assert_eq!(segs.len(), 3);
        let mut joined = Vec::new();
        for (i, s) in segs.iter().enumerate() {
            let d = &s.data;
            let t = ETH + 20;
            assert!(checksum::verify(d).unwrap(), "TCP checksum of segment {i}");
            assert_eq!(
                checksum::fold(checksum::add(0, &d[ETH..t])),
                0xffff,
                "IP header checksum"
            );
            assert_eq!(usize::from(be16(d, ETH + 2)), d.len() - ETH);
            assert_eq!(be16(d, ETH + 4), 1000 + i as u16);
            let seq = u32::from_be_bytes(d[t + 4..t + 8].try_into().unwrap());
            assert_eq!(seq, 0xffff_fff0u32.wrapping_add(joined.len() as u32));
            let last = i == segs.len() - 1;
            assert_eq!(d[t + 13] & (TCP_FIN | TCP_PSH) != 0, last);
            assert!(d.len() - t - 20 <= 1448);
            assert!(s.offload.gso.is_none() && !s.offload.csum_blank);
            joined.extend_from_slice(&d[t + 20..]);
        }
        assert_eq!(joined, payload);
    }

    #[test]
    fn a_packet_that_is_not_what_its_gso_type_says_is_refused() {
        let p = Packet::new(tcp4_frame(b"x"));
        let v6 = Gso {
            size: 1448,
            kind: GsoKind::TcpV6,
        };
        assert!(segment(&p, v6).is_err());
        let mut udp = tcp4_frame(b"hello");
        udp[ETH + 9] = 17;
        let v4 = Gso {
            size: 1448,
            kind: GsoKind::TcpV4,
        };
        assert!(segment(&Packet::new(udp), v4).is_err());
        assert!(segment(&Packet::new(vec![0; 20]), v4).is_err());
    }
}
