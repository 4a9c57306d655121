//! Helpers shared by the crate's tests: a raw protocol client that sends
//! exactly the bytes it is given.

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::wire::{payload, FrameDecoder, Message, MsgType};

/// A XenStore connection that speaks raw frames.
pub struct RawClient {
    stream: UnixStream,
    decoder: FrameDecoder,
    next_id: u32,
}

impl RawClient {
    /// Connects to a socket.
    pub async fn connect(path: &Path) -> RawClient {
        RawClient {
            stream: UnixStream::connect(path).await.expect("connect"),
            decoder: FrameDecoder::new(),
            next_id: 100,
        }
    }

    /// Sends raw bytes.
    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// The next message, or `None` once the daemon closed the connection
    /// (or after 5 s of silence).
    pub async fn recv(&mut self) -> Option<Message> {
        let mut buf = [0u8; 8192];
        loop {
            if let Some(m) = self.decoder.next_message().expect("daemon framing") {
                return Some(m);
            }
            let read = tokio::time::timeout(Duration::from_secs(5), self.stream.read(&mut buf));
            match read.await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return None,
                Ok(Ok(n)) => self.decoder.push(&buf[..n]),
            }
        }
    }

    /// Sends a request and returns its reply, skipping watch events.
    pub async fn call(&mut self, ty: MsgType, tx: u32, payload: &[u8]) -> Message {
        self.next_id += 1;
        let id = self.next_id;
        let req = Message::new(ty, id, tx, payload.to_vec());
        self.send_bytes(&req.encode()).await;
        loop {
            let m = self.recv().await.expect("reply");
            if m.ty != MsgType::WatchEvent as u32 {
                assert_eq!(m.req_id, id);
                return m;
            }
        }
    }

    /// Sends a request of NUL-terminated strings.
    pub async fn call_strs(&mut self, ty: MsgType, parts: &[&str]) -> Message {
        self.call(ty, 0, &payload::join(parts)).await
    }

    /// WRITE; panics on error.
    pub async fn write(&mut self, path: &str, value: &str) {
        let mut p = path.as_bytes().to_vec();
        p.push(0);
        p.extend_from_slice(value.as_bytes());
        let r = self.call(MsgType::Write, 0, &p).await;
        assert_eq!(r.as_error(), None, "write {path}");
    }

    /// READ: the value or the error name.
    pub async fn read(&mut self, path: &str) -> Result<String, String> {
        let r = self.call_strs(MsgType::Read, &[path]).await;
        match r.as_error() {
            Some(e) => Err(e.map(|e| e.as_str().to_owned()).unwrap_or_else(|n| n)),
            None => Ok(String::from_utf8_lossy(&r.payload).into_owned()),
        }
    }
}

/// A simulated hypervisor with these domains, and its host-side client.
pub fn sim_host(
    domids: &[crate::platform::DomId],
) -> (
    crate::platform::sim::SimHypervisor,
    crate::platform::sim::SimHost,
) {
    let hv = crate::platform::sim::SimHypervisor::new();
    for d in domids {
        hv.create_domain(crate::platform::sim::DomainConfig::new(*d))
            .unwrap();
    }
    let host = hv.host();
    (hv, host)
}
