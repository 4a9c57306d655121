//! The control socket: setup requests from other processes, answered with
//! descriptors passed by SCM_RIGHTS. Requests and replies are fixed 24-byte
//! records of little-endian u32s.

use std::collections::HashSet;
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use rustix::io::Errno as OsErrno;
use rustix::net::{
    recvmsg, sendmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags,
    SendAncillaryBuffer, SendAncillaryMessage, SendFlags,
};

use super::core::{Core, DomainConfig, DomainFds, Errno, HandleId};
use super::link::Link;
use crate::platform::{DomId, Port};

const RECORD: usize = 24;
const MAX_FDS: usize = 3;

const OP_OPEN_HANDLE: u32 = 1;
const OP_CLOSE_HANDLE: u32 = 2;
const OP_DOMAIN: u32 = 3;
const OP_ALLOC_UNBOUND: u32 = 4;
const OP_BIND: u32 = 5;
const OP_UNBIND: u32 = 6;
const OP_PEER: u32 = 7;

fn encode(words: [u32; 6]) -> [u8; RECORD] {
    let mut out = [0u8; RECORD];
    for (i, w) in words.iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
    }
    out
}

fn decode(bytes: &[u8; RECORD]) -> [u32; 6] {
    let mut words = [0u32; 6];
    for (i, w) in words.iter_mut().enumerate() {
        *w = u32::from_le_bytes(bytes[i * 4..i * 4 + 4].try_into().expect("4 bytes"));
    }
    words
}

/// Sends a record with descriptors attached.
fn send_record(
    sock: BorrowedFd<'_>,
    record: &[u8; RECORD],
    fds: &[BorrowedFd<'_>],
) -> io::Result<()> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if fds.len() > MAX_FDS
        || (!fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)))
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "too many descriptors",
        ));
    }
    let n = loop {
        match sendmsg(
            sock,
            &[IoSlice::new(record)],
            &mut control,
            SendFlags::NOSIGNAL,
        ) {
            Err(OsErrno::INTR) => continue,
            r => break r?,
        }
    };
    if n != RECORD {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "short control write",
        ));
    }
    Ok(())
}

/// Receives a record and the descriptors attached to it.
fn recv_record(sock: BorrowedFd<'_>) -> io::Result<Option<([u8; RECORD], Vec<OwnedFd>)>> {
    let mut record = [0u8; RECORD];
    let mut fds = Vec::new();
    let mut got = 0;
    while got < RECORD {
        // Room for one descriptor more than a record may carry, to tell
        // "too many" from "just enough".
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS + 1))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let msg = match recvmsg(
            sock,
            &mut [IoSliceMut::new(&mut record[got..])],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        ) {
            Ok(msg) => msg,
            Err(OsErrno::INTR) => continue,
            Err(e) => return Err(e.into()),
        };
        // Each received descriptor is new and ours (closed when dropped).
        for message in control.drain() {
            if let RecvAncillaryMessage::ScmRights(received) = message {
                fds.extend(received);
            }
        }
        if msg.flags.contains(ReturnFlags::CTRUNC) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "too many descriptors",
            ));
        }
        if msg.bytes == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(io::Error::from(io::ErrorKind::UnexpectedEof))
            };
        }
        got += msg.bytes;
    }
    if fds.len() > MAX_FDS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "too many descriptors",
        ));
    }
    Ok(Some((record, fds)))
}

/// Serves the control socket. Stops (and removes the socket) when dropped.
pub struct ControlServer {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ControlServer {
    pub(super) fn start(core: Arc<Mutex<Core>>, path: &Path) -> io::Result<ControlServer> {
        if path.exists() {
            if UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("{} is in use", path.display()),
                ));
            }
            std::fs::remove_file(path)?;
        }
        let listener = UnixListener::bind(path)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("xen-sim-control".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    if stopping.load(Ordering::Acquire) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let core = core.clone();
                    let _ = std::thread::Builder::new()
                        .name("xen-sim-client".into())
                        .spawn(move || serve_client(core, stream));
                }
            })?;
        Ok(ControlServer {
            path: path.to_owned(),
            stop,
            thread: Some(thread),
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wake the accept loop so it sees the flag.
        let _ = UnixStream::connect(&self.path);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn serve_client(core: Arc<Mutex<Core>>, mut stream: UnixStream) {
    let mut handles: HashSet<HandleId> = HashSet::new();
    while let Ok(Some((record, _))) = recv_record(stream.as_fd()) {
        let [op, handle, domid, a, b, _] = decode(&record);
        let domid = domid as DomId;
        let mut core = core.lock().unwrap_or_else(|p| p.into_inner());
        let reply: Result<([u32; 4], Vec<OwnedFd>), Errno> = match op {
            OP_OPEN_HANDLE => {
                let h = core.open_handle();
                handles.insert(h);
                Ok(([h, 0, 0, 0], vec![]))
            }
            OP_CLOSE_HANDLE if handles.remove(&handle) => {
                core.close_handle(handle);
                Ok(([0; 4], vec![]))
            }
            OP_DOMAIN => core
                .domain_fds(domid)
                .map(|f| {
                    let c = f.config;
                    (
                        [c.pages, c.grant_frames, c.max_ports, 0],
                        vec![f.memory, f.active, f.portgen],
                    )
                })
                .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO)),
            OP_ALLOC_UNBOUND if handles.contains(&handle) => core
                .alloc_unbound(handle, domid, a as DomId)
                .and_then(|(p, fd)| {
                    Ok(([p, 0, 0, 0], vec![fd.try_clone().map_err(|_| libc::EIO)?]))
                }),
            OP_BIND if handles.contains(&handle) => core
                .bind_interdomain(handle, domid, a as DomId, b)
                .and_then(|(p, fd)| {
                    Ok(([p, 0, 0, 0], vec![fd.try_clone().map_err(|_| libc::EIO)?]))
                }),
            OP_UNBIND if handles.contains(&handle) => {
                core.unbind(handle, domid, a).map(|()| ([0; 4], vec![]))
            }
            OP_PEER => core.peer(domid, a).and_then(|peer| match peer {
                Some((g, fd)) => Ok(([1, g, 0, 0], vec![fd.try_clone().map_err(|_| libc::EIO)?])),
                None => Ok(([0; 4], vec![])),
            }),
            // Unknown requests, or handles this connection did not open.
            _ => Err(libc::EINVAL),
        };
        drop(core);
        let (status, values, fds) = match reply {
            Ok((v, fds)) => (0, v, fds),
            Err(e) => (e as u32, [0; 4], vec![]),
        };
        let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(AsFd::as_fd).collect();
        let out = encode([
            status,
            values[0],
            values[1],
            values[2],
            values[3],
            borrowed.len() as u32,
        ]);
        if send_record(stream.as_fd(), &out, &borrowed).is_err() {
            break;
        }
    }
    // The client went away: its event channels close, as when a process
    // holding /dev/xen/evtchn exits.
    let mut core = core.lock().unwrap_or_else(|p| p.into_inner());
    for h in handles {
        core.close_handle(h);
    }
    let _ = stream.flush();
    let _ = stream.read(&mut []);
}

/// The hypervisor in another process, through its control socket.
pub struct RemoteLink {
    stream: Mutex<UnixStream>,
}

impl RemoteLink {
    pub(super) fn connect(path: &Path) -> io::Result<RemoteLink> {
        let stream = UnixStream::connect(path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        Ok(RemoteLink {
            stream: Mutex::new(stream),
        })
    }

    fn call(
        &self,
        op: u32,
        handle: HandleId,
        domid: DomId,
        a: u32,
        b: u32,
    ) -> Result<([u32; 4], Vec<OwnedFd>), Errno> {
        let stream = self.stream.lock().unwrap_or_else(|p| p.into_inner());
        let sock = stream.as_fd();
        send_record(sock, &encode([op, handle, u32::from(domid), a, b, 0]), &[])
            .map_err(|_| libc::EIO)?;
        let (record, fds) = recv_record(sock).map_err(|_| libc::EIO)?.ok_or(libc::EIO)?;
        let [status, v0, v1, v2, v3, _] = decode(&record);
        if status != 0 {
            return Err(status as Errno);
        }
        Ok(([v0, v1, v2, v3], fds))
    }
}

fn one_fd(mut fds: Vec<OwnedFd>) -> Result<OwnedFd, Errno> {
    fds.pop().ok_or(libc::EIO)
}

impl Link for RemoteLink {
    fn open_handle(&self) -> io::Result<HandleId> {
        self.call(OP_OPEN_HANDLE, 0, 0, 0, 0)
            .map(|(v, _)| v[0])
            .map_err(io::Error::from_raw_os_error)
    }

    fn close_handle(&self, handle: HandleId) {
        let _ = self.call(OP_CLOSE_HANDLE, handle, 0, 0, 0);
    }

    fn domain_fds(&self, domid: DomId) -> io::Result<DomainFds> {
        let (v, fds) = self
            .call(OP_DOMAIN, 0, domid, 0, 0)
            .map_err(io::Error::from_raw_os_error)?;
        let [memory, active, portgen]: [OwnedFd; 3] = fds.try_into().map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "domain reply without its descriptors",
            )
        })?;
        Ok(DomainFds {
            config: DomainConfig {
                domid,
                pages: v[0],
                grant_frames: v[1],
                max_ports: v[2],
            },
            memory,
            active,
            portgen,
        })
    }

    fn alloc_unbound(
        &self,
        handle: HandleId,
        domid: DomId,
        remote: DomId,
    ) -> Result<(Port, OwnedFd), Errno> {
        let (v, fds) = self.call(OP_ALLOC_UNBOUND, handle, domid, u32::from(remote), 0)?;
        Ok((v[0], one_fd(fds)?))
    }

    fn bind_interdomain(
        &self,
        handle: HandleId,
        domid: DomId,
        remote: DomId,
        remote_port: Port,
    ) -> Result<(Port, OwnedFd), Errno> {
        let (v, fds) = self.call(OP_BIND, handle, domid, u32::from(remote), remote_port)?;
        Ok((v[0], one_fd(fds)?))
    }

    fn unbind(&self, handle: HandleId, domid: DomId, port: Port) -> Result<(), Errno> {
        self.call(OP_UNBIND, handle, domid, port, 0).map(drop)
    }

    fn peer(&self, domid: DomId, port: Port) -> Result<Option<(u32, OwnedFd)>, Errno> {
        let (v, fds) = self.call(OP_PEER, 0, domid, port, 0)?;
        if v[0] == 0 {
            return Ok(None);
        }
        Ok(Some((v[1], one_fd(fds)?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_carry_descriptors_both_ways() {
        let (a, b) = UnixStream::pair().unwrap();
        let fds: Vec<OwnedFd> = (0..MAX_FDS)
            .map(|i| super::super::os::memfd(&format!("rpc-{i}"), 4096 * (i as u64 + 1)).unwrap())
            .collect();
        let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(AsFd::as_fd).collect();
        let record = encode([1, 2, 3, 4, 5, 6]);
        send_record(a.as_fd(), &record, &borrowed).unwrap();
        send_record(a.as_fd(), &encode([7; 6]), &[]).unwrap();
        let (got, received) = recv_record(b.as_fd()).unwrap().unwrap();
        assert_eq!(decode(&got), [1, 2, 3, 4, 5, 6]);
        let sizes: Vec<i64> = received
            .iter()
            .map(|fd| rustix::fs::fstat(fd).unwrap().st_size)
            .collect();
        assert_eq!(sizes, [4096, 8192, 12288], "the same files, in order");
        for fd in &received {
            let flags = rustix::io::fcntl_getfd(fd).unwrap();
            assert!(flags.contains(rustix::io::FdFlags::CLOEXEC));
        }
        let (got, received) = recv_record(b.as_fd()).unwrap().unwrap();
        assert_eq!(decode(&got), [7; 6]);
        assert!(received.is_empty());
        drop(a);
        assert!(recv_record(b.as_fd()).unwrap().is_none(), "closed");
    }

    #[test]
    fn a_record_carries_at_most_three_descriptors() {
        let (a, _b) = UnixStream::pair().unwrap();
        let fds: Vec<OwnedFd> = (0..=MAX_FDS)
            .map(|_| super::super::os::memfd("rpc", 0).unwrap())
            .collect();
        let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(AsFd::as_fd).collect();
        let err = send_record(a.as_fd(), &encode([0; 6]), &borrowed).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);

        // A peer that sends more anyway is refused, in one message or with
        // the record split over two.
        for split in [RECORD, 8] {
            let (a, b) = UnixStream::pair().unwrap();
            let record = encode([0; 6]);
            let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(8))];
            let mut control = SendAncillaryBuffer::new(&mut space);
            assert!(control.push(SendAncillaryMessage::ScmRights(&borrowed)));
            sendmsg(
                a.as_fd(),
                &[IoSlice::new(&record[..split])],
                &mut control,
                SendFlags::empty(),
            )
            .unwrap();
            rustix::io::write(&a, &record[split..]).unwrap();
            let err = recv_record(b.as_fd()).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "split at {split}");
        }
    }
}
