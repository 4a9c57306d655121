//! Framing: a 16-byte header `{type, req_id, tx_id, len}` in host byte order
//! (little-endian on every Xen architecture we build for), then `len` bytes.

use std::fmt;

use super::{Errno, MsgType};

/// Size of the message header.
pub const HEADER_LEN: usize = 16;
/// Largest payload either side may send (`XENSTORE_PAYLOAD_MAX`).
pub const PAYLOAD_MAX: usize = 4096;

/// One XenStore message. `ty` stays a raw number so that a daemon can answer
/// an unknown type instead of failing to decode it.
#[derive(Clone, PartialEq, Eq)]
pub struct Message {
    /// Message type (see [`MsgType`]).
    pub ty: u32,
    /// Request id, echoed in the reply.
    pub req_id: u32,
    /// Transaction id, 0 outside a transaction.
    pub tx_id: u32,
    /// Payload, at most [`PAYLOAD_MAX`] bytes.
    pub payload: Vec<u8>,
}

impl Message {
    /// A message of a known type.
    pub fn new(ty: MsgType, req_id: u32, tx_id: u32, payload: Vec<u8>) -> Message {
        Message {
            ty: ty as u32,
            req_id,
            tx_id,
            payload,
        }
    }

    /// The message's type, if it is one the protocol defines.
    pub fn msg_type(&self) -> Option<MsgType> {
        MsgType::from_u32(self.ty)
    }

    /// A reply to `self` with the same type, request and transaction ids.
    pub fn reply(&self, payload: Vec<u8>) -> Message {
        Message {
            ty: self.ty,
            req_id: self.req_id,
            tx_id: self.tx_id,
            payload,
        }
    }

    /// The `OK\0` reply most requests get.
    pub fn ack(&self) -> Message {
        self.reply(b"OK\0".to_vec())
    }

    /// An ERROR reply to `self`.
    pub fn error(&self, errno: Errno) -> Message {
        let mut payload = errno.as_str().as_bytes().to_vec();
        payload.push(0);
        Message {
            ty: MsgType::Error as u32,
            req_id: self.req_id,
            tx_id: self.tx_id,
            payload,
        }
    }

    /// A WATCH_EVENT: `path\0token\0`, req_id and tx_id 0.
    pub fn watch_event(path: &str, token: &[u8]) -> Message {
        let mut payload = Vec::with_capacity(path.len() + token.len() + 2);
        payload.extend_from_slice(path.as_bytes());
        payload.push(0);
        payload.extend_from_slice(token);
        payload.push(0);
        Message::new(MsgType::WatchEvent, 0, 0, payload)
    }

    /// If this is an ERROR reply, the error it names.
    pub fn as_error(&self) -> Option<Result<Errno, String>> {
        if self.ty != MsgType::Error as u32 {
            return None;
        }
        let name = self.payload.strip_suffix(b"\0").unwrap_or(&self.payload);
        let name = String::from_utf8_lossy(name).into_owned();
        Some(Errno::from_name(&name).ok_or(name))
    }

    /// Appends the encoded message to `out`.
    ///
    /// Panics if the payload exceeds [`PAYLOAD_MAX`]: callers build payloads
    /// and check their size first ([`Message::fits`]), since a peer kills a
    /// connection that sends an oversized one.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        assert!(
            self.fits(),
            "XenStore payload of {} bytes exceeds {PAYLOAD_MAX}",
            self.payload.len()
        );
        out.reserve(HEADER_LEN + self.payload.len());
        out.extend_from_slice(&self.ty.to_le_bytes());
        out.extend_from_slice(&self.req_id.to_le_bytes());
        out.extend_from_slice(&self.tx_id.to_le_bytes());
        out.extend_from_slice(&(self.payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.payload);
    }

    /// The encoded message.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    /// Whether the payload is within the protocol's limit.
    pub fn fits(&self) -> bool {
        self.payload.len() <= PAYLOAD_MAX
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ty = self.msg_type().map(MsgType::name).unwrap_or("?");
        write!(
            f,
            "Message({ty}/{} req={} tx={} {:?})",
            self.ty,
            self.req_id,
            self.tx_id,
            String::from_utf8_lossy(&self.payload)
        )
    }
}

/// A framing error: the stream cannot continue, the connection must close.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The header announces a payload larger than [`PAYLOAD_MAX`].
    Oversized(u32),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Oversized(len) => {
                write!(
                    f,
                    "message payload of {len} bytes exceeds the {PAYLOAD_MAX}-byte limit"
                )
            }
        }
    }
}

impl std::error::Error for FrameError {}

/// Incremental decoder: feed it bytes as they arrive, take whole messages out.
/// Never buffers more than one header plus one maximal payload beyond what
/// it was given, and rejects an oversized length as soon as the header is in.
#[derive(Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    start: usize,
}

impl FrameDecoder {
    /// An empty decoder.
    pub fn new() -> FrameDecoder {
        FrameDecoder::default()
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received but not yet returned as a message.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The next complete message, `None` if more bytes are needed.
    pub fn next_message(&mut self) -> Result<Option<Message>, FrameError> {
        let avail = &self.buf[self.start..];
        if avail.len() < HEADER_LEN {
            self.compact();
            return Ok(None);
        }
        let word =
            |i: usize| u32::from_le_bytes([avail[i], avail[i + 1], avail[i + 2], avail[i + 3]]);
        let len = word(12);
        if len as usize > PAYLOAD_MAX {
            return Err(FrameError::Oversized(len));
        }
        let total = HEADER_LEN + len as usize;
        if avail.len() < total {
            self.compact();
            return Ok(None);
        }
        let msg = Message {
            ty: word(0),
            req_id: word(4),
            tx_id: word(8),
            payload: avail[HEADER_LEN..total].to_vec(),
        };
        self.start += total;
        Ok(Some(msg))
    }

    /// Drops consumed bytes once they dominate the buffer, so a long-lived
    /// connection's buffer stays bounded.
    fn compact(&mut self) {
        if self.start > 0 && self.start >= self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_read_vector() {
        // READ "/a/b/c", req_id 0x0e, tx 6 (ocaml-xenstore's test vector).
        let m = Message::new(MsgType::Read, 0x0e, 6, b"/a/b/c\0".to_vec());
        let expected: Vec<u8> = [
            &[2, 0, 0, 0, 0x0e, 0, 0, 0, 6, 0, 0, 0, 7, 0, 0, 0][..],
            b"/a/b/c\0",
        ]
        .concat();
        assert_eq!(m.encode(), expected);
        let mut d = FrameDecoder::new();
        d.push(&expected);
        assert_eq!(d.next_message().unwrap(), Some(m));
        assert_eq!(d.next_message().unwrap(), None);
    }

    #[test]
    fn decodes_byte_by_byte_and_back_to_back() {
        let a = Message::new(MsgType::Write, 1, 0, b"/x\0v".to_vec());
        let b = Message::new(MsgType::Directory, 2, 3, b"/\0".to_vec());
        let bytes = [a.encode(), b.encode()].concat();
        let mut d = FrameDecoder::new();
        let mut got = Vec::new();
        for byte in bytes {
            d.push(&[byte]);
            while let Some(m) = d.next_message().unwrap() {
                got.push(m);
            }
        }
        assert_eq!(got, vec![a, b]);
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn oversized_length_is_rejected_from_the_header_alone() {
        let mut header = vec![2, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0];
        header.extend_from_slice(&4097u32.to_le_bytes());
        let mut d = FrameDecoder::new();
        d.push(&header);
        assert_eq!(d.next_message(), Err(FrameError::Oversized(4097)));
    }

    #[test]
    fn maximal_payload_is_accepted() {
        let m = Message::new(MsgType::Write, 1, 0, vec![b'a'; PAYLOAD_MAX]);
        let mut d = FrameDecoder::new();
        d.push(&m.encode());
        assert_eq!(d.next_message().unwrap(), Some(m));
    }

    #[test]
    fn error_replies_carry_the_name() {
        let req = Message::new(MsgType::Read, 7, 2, b"/nope\0".to_vec());
        let e = req.error(Errno::ENOENT);
        assert_eq!(e.ty, MsgType::Error as u32);
        assert_eq!((e.req_id, e.tx_id), (7, 2));
        assert_eq!(e.payload, b"ENOENT\0");
        assert_eq!(e.as_error(), Some(Ok(Errno::ENOENT)));
        assert_eq!(req.as_error(), None);
    }

    #[test]
    #[should_panic(expected = "exceeds 4096")]
    fn encoding_an_oversized_payload_is_a_bug() {
        Message::new(MsgType::Write, 1, 0, vec![0; PAYLOAD_MAX + 1]).encode();
    }
}
