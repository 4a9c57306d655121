//! The control socket: setup requests from other processes, answered with
//! descriptors passed by SCM_RIGHTS. Requests and replies are fixed 24-byte
//! records of little-endian u32s.

use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

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
fn send_record(sock: RawFd, record: &[u8; RECORD], fds: &[RawFd]) -> io::Result<()> {
    let mut iov = libc::iovec {
        iov_base: record.as_ptr() as *mut libc::c_void,
        iov_len: RECORD,
    };
    let mut control = [0u8; 64];
    // SAFETY: an all-zero msghdr is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        let payload = std::mem::size_of_val(fds) as u32;
        // SAFETY: CMSG_SPACE is a pure size computation.
        let space = unsafe { libc::CMSG_SPACE(payload) } as usize;
        debug_assert!(space <= control.len());
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space;
        // SAFETY: msg_control points to `space` bytes we own, enough for one
        // header carrying `fds`; CMSG_FIRSTHDR/CMSG_DATA stay inside it.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(payload) as usize;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr(),
                libc::CMSG_DATA(cmsg).cast::<RawFd>(),
                fds.len(),
            );
        }
    }
    // SAFETY: msg and everything it points to live across the call.
    let n = unsafe { libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if n as usize != RECORD {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "short control write",
        ));
    }
    Ok(())
}

/// Receives a record and the descriptors attached to it.
fn recv_record(sock: RawFd) -> io::Result<Option<([u8; RECORD], Vec<OwnedFd>)>> {
    let mut record = [0u8; RECORD];
    let mut fds = Vec::new();
    let mut got = 0;
    while got < RECORD {
        let mut iov = libc::iovec {
            iov_base: record[got..].as_mut_ptr().cast(),
            iov_len: RECORD - got,
        };
        let mut control = [0u8; 64];
        // SAFETY: an all-zero msghdr is a valid empty header.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = control.len();
        // SAFETY: msg points to buffers we own for the duration of the call.
        let n = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(io::Error::from(io::ErrorKind::UnexpectedEof))
            };
        }
        // SAFETY: the kernel filled msg_control; we walk its headers with the
        // CMSG macros, which stay within msg_controllen.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                    let data_len = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                    let count = data_len / std::mem::size_of::<RawFd>();
                    let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                    for i in 0..count {
                        // Each received descriptor is new and ours.
                        fds.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))));
                    }
                }
                cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
            }
        }
        got += n as usize;
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
    let sock = stream.as_raw_fd();
    while let Ok(Some((record, _))) = recv_record(sock) {
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
        let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
        let out = encode([
            status,
            values[0],
            values[1],
            values[2],
            values[3],
            raw.len() as u32,
        ]);
        if send_record(sock, &out, &raw).is_err() {
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
        let sock = stream.as_raw_fd();
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
