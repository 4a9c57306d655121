//! The XenStore wire codec on arbitrary bytes: decoding never panics, each
//! decoded message re-encodes to exactly the bytes it came from and decodes
//! back to itself, feeding the same bytes in pieces gives the same result,
//! and the payload parsers round-trip whatever they accept.

#![no_main]

use libfuzzer_sys::fuzz_target;

use xen_core::wire::{payload, perms, FrameDecoder, FrameError, Message, HEADER_LEN, PAYLOAD_MAX};

fuzz_target!(|data: &[u8]| {
    let (whole, error) = decode(data, &[data.len()]);

    let mut at = 0;
    for m in &whole {
        let bytes = m.encode();
        assert_eq!(
            &data[at..at + bytes.len()],
            &bytes[..],
            "re-encoding differs"
        );
        at += bytes.len();
        let (again, e) = decode(&bytes, &[bytes.len()]);
        assert_eq!((again.as_slice(), e), (std::slice::from_ref(m), None));
        payloads(m);
    }
    let rest = &data[at..];
    match error {
        Some(FrameError::Oversized(len)) => {
            assert!(len as usize > PAYLOAD_MAX);
            assert_eq!(rest[12..16], len.to_le_bytes());
        }
        // What is left is an incomplete message.
        None => assert!(
            rest.len() < HEADER_LEN
                || rest.len()
                    < HEADER_LEN
                        + u32::from_le_bytes([rest[12], rest[13], rest[14], rest[15]]) as usize
        ),
    }

    // The same bytes in pieces, sized by the data itself.
    let seed = data
        .iter()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(*b)));
    let mut chunks = Vec::new();
    let (mut left, mut x) = (data.len(), seed | 1);
    while left > 0 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let n = (x as usize % 97 + 1).min(left);
        chunks.push(n);
        left -= n;
    }
    assert_eq!(decode(data, &chunks), (whole, error));
});

/// Decodes `data` fed in pieces of the given sizes, taking messages out
/// after each piece, until the end or the first error.
fn decode(data: &[u8], chunks: &[usize]) -> (Vec<Message>, Option<FrameError>) {
    let mut d = FrameDecoder::new();
    let mut out = Vec::new();
    let mut at = 0;
    for &n in chunks {
        d.push(&data[at..at + n]);
        at += n;
        loop {
            match d.next_message() {
                Ok(Some(m)) => out.push(m),
                Ok(None) => break,
                Err(e) => return (out, Some(e)),
            }
        }
    }
    (out, None)
}

/// Whatever the payload parsers accept, they give back unchanged.
fn payloads(m: &Message) {
    let _ = format!("{m:?}");
    let _ = m.msg_type();
    let _ = m.as_error();
    let p = &m.payload;
    if let Ok(parts) = payload::strings(p) {
        assert_eq!(&payload::join(&parts), p);
        for s in &parts {
            if let Some(v) = payload::parse_c_unsigned(s) {
                assert_eq!(payload::parse_c_unsigned(&v.to_string()), Some(v));
            }
            if let Ok(domid) = payload::parse_domid(s) {
                assert!(domid <= 0xffff);
                assert_eq!(payload::parse_domid(&domid.to_string()), Ok(domid));
            }
        }
        if let Ok(list) = perms::parse_list(&parts) {
            let encoded = perms::encode_list(&list);
            let reparsed = payload::strings(&encoded).unwrap();
            assert_eq!(perms::parse_list(&reparsed).unwrap(), list);
        }
    }
    if let Ok((path, value)) = payload::path_and_value(p) {
        let mut back = path.as_bytes().to_vec();
        back.push(0);
        back.extend_from_slice(value);
        assert_eq!(&back, p);
    }
}
