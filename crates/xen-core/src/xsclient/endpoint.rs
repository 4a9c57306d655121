//! Where a client finds XenStore, and how it opens a byte stream to it.

use std::fmt;
use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};

/// A duplex byte stream to a XenStore daemon.
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

/// The two halves of a connection.
pub type Halves = (
    Pin<Box<dyn AsyncRead + Send>>,
    Pin<Box<dyn AsyncWrite + Send>>,
);

/// Opens in-process connections (to an embedded daemon).
pub type Connector = Arc<dyn Fn() -> io::Result<Halves> + Send + Sync>;

/// The default socket of C xenstored.
pub const XENSTORED_SOCKET: &str = "/run/xenstored/socket";
/// The kernel's XenStore device in a Xen domain.
pub const XENBUS_DEVICE: &str = "/dev/xen/xenbus";

/// Where to connect.
#[derive(Clone)]
pub enum Endpoint {
    /// A daemon's Unix socket.
    Unix(PathBuf),
    /// The xenbus character device (`/dev/xen/xenbus`).
    Device(PathBuf),
    /// An in-process daemon.
    Local(Connector),
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "unix:{}", p.display()),
            Endpoint::Device(p) => write!(f, "device:{}", p.display()),
            Endpoint::Local(_) => f.write_str("local"),
        }
    }
}

impl Endpoint {
    /// The endpoint a path names: a character device is the xenbus device,
    /// anything else a socket.
    pub fn for_path(path: impl Into<PathBuf>) -> Endpoint {
        let path = path.into();
        match std::fs::metadata(&path) {
            Ok(m) if m.file_type().is_char_device() => Endpoint::Device(path),
            _ => Endpoint::Unix(path),
        }
    }

    /// Finds XenStore as Xen's own library does: `$XENSTORED_PATH`, then the
    /// daemon's socket, then the xenbus device. An empty `XENSTORED_PATH`
    /// counts as unset (a shell's `XENSTORED_PATH= cmd` means "no override").
    pub fn discover() -> io::Result<Endpoint> {
        Self::discover_from(
            std::env::var_os("XENSTORED_PATH").map(PathBuf::from),
            Path::new(XENSTORED_SOCKET),
            Path::new(XENBUS_DEVICE),
        )
    }

    fn discover_from(env: Option<PathBuf>, socket: &Path, device: &Path) -> io::Result<Endpoint> {
        if let Some(p) = env.filter(|p| !p.as_os_str().is_empty()) {
            return Ok(Endpoint::for_path(p));
        }
        if socket.exists() {
            return Ok(Endpoint::Unix(socket.to_owned()));
        }
        if device.exists() {
            return Ok(Endpoint::Device(device.to_owned()));
        }
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "no XenStore found: neither {} nor {} exists; set XENSTORED_PATH or start `xenrx xenstored`",
                socket.display(),
                device.display()
            ),
        ))
    }

    /// Opens a connection.
    pub async fn open(&self) -> io::Result<Halves> {
        match self {
            Endpoint::Unix(path) => {
                let s = tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
                let (r, w) = s.into_split();
                Ok((Box::pin(r), Box::pin(w)))
            }
            Endpoint::Device(path) => {
                let f = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(path)
                    .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
                // One descriptor each way: a tokio file runs one operation at
                // a time, and a read waits until the daemon answers.
                let w = f.try_clone()?;
                Ok((
                    Box::pin(tokio::fs::File::from_std(f)),
                    Box::pin(tokio::fs::File::from_std(w)),
                ))
            }
            Endpoint::Local(connect) => connect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_order() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("socket");
        let dev = dir.path().join("xenbus");
        let env = dir.path().join("from-env");
        let e = Endpoint::discover_from(Some(env.clone()), &sock, &dev).unwrap();
        assert!(matches!(e, Endpoint::Unix(p) if p == env));
        let err = Endpoint::discover_from(None, &sock, &dev).unwrap_err();
        assert!(err.to_string().contains("set XENSTORED_PATH"));
        let err = Endpoint::discover_from(Some(PathBuf::new()), &sock, &dev).unwrap_err();
        assert!(
            err.to_string().contains("set XENSTORED_PATH"),
            "empty is unset"
        );
        std::fs::write(&dev, b"").unwrap();
        assert!(matches!(
            Endpoint::discover_from(None, &sock, &dev).unwrap(),
            Endpoint::Device(_)
        ));
        std::fs::write(&sock, b"").unwrap();
        assert!(matches!(
            Endpoint::discover_from(None, &sock, &dev).unwrap(),
            Endpoint::Unix(_)
        ));
        assert!(matches!(
            Endpoint::for_path("/dev/null"),
            Endpoint::Device(_)
        ));
    }
}
