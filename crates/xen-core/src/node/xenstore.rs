//! XenStore for JavaScript: the embedded daemon and the async client.

use std::path::PathBuf;
use std::sync::Arc;

use napi::bindgen_prelude::{Buffer, Either};
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::Status;
use napi_derive::napi;

use super::{coded_error, io_error};
use crate::wire::perms::{self, Perm};
use crate::xenstored::{Config, Daemon};
use crate::xsclient::endpoint::Connector;
use crate::xsclient::{Endpoint, Options, Tx, XsClient, XsError};

fn xs_error(e: XsError) -> napi::Error {
    coded_error(e.code(), e)
}

/// Options of the embedded daemon.
#[napi(object)]
pub struct XenstoredOptions {
    /// Path of the privileged (dom0) socket.
    pub socket: String,
    /// Directory of per-domain sockets (default: `<socket>.d`).
    pub domain_socket_dir: Option<String>,
    /// State file for persistence (default: none, in memory).
    pub state_file: Option<String>,
    /// Log to stderr (default true).
    pub log: Option<bool>,
}

/// Counters of a running daemon.
#[napi(object)]
pub struct XenstoredStats {
    /// Requests handled.
    pub requests: f64,
    /// Connections accepted on sockets.
    pub connections: f64,
    /// Connections closed for a protocol violation.
    pub killed: f64,
    /// State-file writes.
    pub persists: f64,
}

/// The embedded XenStore daemon.
#[napi]
pub struct NativeXenstored {
    daemon: Option<Arc<Daemon>>,
    socket: String,
}

#[napi]
impl NativeXenstored {
    /// Starts a daemon (binds its socket, loads its state file).
    #[napi(factory)]
    pub fn start(options: XenstoredOptions) -> napi::Result<NativeXenstored> {
        let mut config = Config::new(&options.socket);
        config.domain_socket_dir = options.domain_socket_dir.map(PathBuf::from);
        config.state_file = options.state_file.map(PathBuf::from);
        if options.log == Some(false) {
            config.log = Arc::new(|_| {});
        }
        let daemon = napi::bindgen_prelude::within_runtime_if_available(|| {
            Daemon::start(config, &tokio::runtime::Handle::current())
        })
        .map_err(io_error)?;
        Ok(NativeXenstored {
            daemon: Some(Arc::new(daemon)),
            socket: options.socket,
        })
    }

    fn daemon(&self) -> napi::Result<&Arc<Daemon>> {
        self.daemon
            .as_ref()
            .ok_or_else(|| coded_error("ESHUTDOWN", "the daemon was stopped"))
    }

    /// The privileged socket's path.
    #[napi(getter)]
    pub fn socket(&self) -> String {
        self.socket.clone()
    }

    /// The socket of an introduced domain.
    #[napi]
    pub fn domain_socket(&self, domid: u32) -> napi::Result<String> {
        Ok(self
            .daemon()?
            .domain_socket(domid)
            .to_string_lossy()
            .into_owned())
    }

    /// The hypervisor reports a domain dead: release it.
    #[napi]
    pub fn domain_died(&self, domid: u32) -> napi::Result<()> {
        self.daemon()?.domain_died(domid);
        Ok(())
    }

    /// The hypervisor reports a domain shut down: fire `@releaseDomain`.
    #[napi]
    pub fn domain_shutdown(&self, domid: u32) -> napi::Result<()> {
        self.daemon()?.domain_shutdown(domid);
        Ok(())
    }

    /// The daemon's counters.
    #[napi]
    pub fn stats(&self) -> napi::Result<XenstoredStats> {
        use std::sync::atomic::Ordering::Relaxed;
        let s = self.daemon()?.stats();
        Ok(XenstoredStats {
            requests: s.requests.load(Relaxed) as f64,
            connections: s.connections.load(Relaxed) as f64,
            killed: s.killed.load(Relaxed) as f64,
            persists: s.persists.load(Relaxed) as f64,
        })
    }

    /// Stops the daemon: persists, closes connections, removes sockets.
    /// Clients connected in-process keep it alive until they close.
    #[napi]
    pub fn stop(&mut self) {
        if let Some(d) = self.daemon.take() {
            if let Ok(d) = Arc::try_unwrap(d) {
                d.stop();
            }
        }
    }
}

/// Options of a client connection.
#[napi(object)]
pub struct XsConnectOptions {
    /// Socket or xenbus device; found like libxenstore does when absent
    /// (`XENSTORED_PATH`, `/run/xenstored/socket`, `/dev/xen/xenbus`).
    pub path: Option<String>,
    /// Reconnect after the daemon restarts (default true).
    pub reconnect: Option<bool>,
}

/// A watch event as JavaScript sees it.
#[napi(object)]
pub struct XsWatchEvent {
    /// Changed path, as the watch named it.
    pub path: String,
    /// The watch's token.
    pub token: String,
}

type EventCallback =
    ThreadsafeFunction<Vec<XsWatchEvent>, (), Vec<XsWatchEvent>, Status, false, true>;

fn tx_of(handle: Option<f64>) -> Option<Tx> {
    handle.map(|h| {
        let h = h as u64;
        Tx {
            id: h as u32,
            generation: (h >> 32) as u32,
        }
    })
}

fn bytes(value: Either<String, Buffer>) -> Vec<u8> {
    match value {
        Either::A(s) => s.into_bytes(),
        Either::B(b) => b.to_vec(),
    }
}

/// An async XenStore client.
#[napi]
pub struct NativeXsClient {
    client: XsClient,
}

#[napi]
impl NativeXsClient {
    /// Connects to a daemon's socket or the xenbus device.
    #[napi(factory)]
    pub async fn connect(options: XsConnectOptions) -> napi::Result<NativeXsClient> {
        let endpoint = match options.path {
            Some(p) => Endpoint::for_path(p),
            None => Endpoint::discover().map_err(io_error)?,
        };
        let opts = Options {
            reconnect: options.reconnect.unwrap_or(true),
            ..Options::default()
        };
        let client = XsClient::connect(endpoint, opts).await.map_err(xs_error)?;
        Ok(NativeXsClient { client })
    }

    /// Connects in-process to an embedded daemon, acting as `domid`.
    #[napi(factory)]
    pub async fn connect_local(
        daemon: &NativeXenstored,
        domid: u32,
    ) -> napi::Result<NativeXsClient> {
        let daemon = daemon.daemon()?.clone();
        let connector: Connector = Arc::new(move || {
            let (r, w) = tokio::io::split(daemon.connect_local(domid));
            Ok((Box::pin(r), Box::pin(w)))
        });
        let client = XsClient::connect(Endpoint::Local(connector), Options::default())
            .await
            .map_err(xs_error)?;
        Ok(NativeXsClient { client })
    }

    /// Delivers watch events, in batches, to `callback`. The callback does
    /// not keep the process alive. Call once.
    #[napi(ts_args_type = "callback: (events: XsWatchEvent[]) => void")]
    pub fn on_watch_events(&self, callback: EventCallback) -> napi::Result<()> {
        let mut rx = self
            .client
            .take_events()
            .ok_or_else(|| coded_error("EBUSY", "watch events are already delivered elsewhere"))?;
        napi::bindgen_prelude::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut batch = vec![XsWatchEvent {
                    path: first.path,
                    token: first.token,
                }];
                while let Ok(e) = rx.try_recv() {
                    batch.push(XsWatchEvent {
                        path: e.path,
                        token: e.token,
                    });
                    if batch.len() >= 256 {
                        break;
                    }
                }
                callback.call(batch, ThreadsafeFunctionCallMode::NonBlocking);
            }
        });
        Ok(())
    }

    /// READ.
    #[napi]
    pub async fn read(&self, path: String, tx: Option<f64>) -> napi::Result<Buffer> {
        let v = self.client.read(tx_of(tx), &path).await.map_err(xs_error)?;
        Ok(v.into())
    }

    /// WRITE.
    #[napi]
    pub async fn write(
        &self,
        path: String,
        value: Either<String, Buffer>,
        tx: Option<f64>,
    ) -> napi::Result<()> {
        self.client
            .write(tx_of(tx), &path, &bytes(value))
            .await
            .map_err(xs_error)
    }

    /// MKDIR.
    #[napi]
    pub async fn mkdir(&self, path: String, tx: Option<f64>) -> napi::Result<()> {
        self.client.mkdir(tx_of(tx), &path).await.map_err(xs_error)
    }

    /// RM.
    #[napi]
    pub async fn rm(&self, path: String, tx: Option<f64>) -> napi::Result<()> {
        self.client.rm(tx_of(tx), &path).await.map_err(xs_error)
    }

    /// DIRECTORY (with DIRECTORY_PART for long lists).
    #[napi]
    pub async fn directory(&self, path: String, tx: Option<f64>) -> napi::Result<Vec<String>> {
        self.client
            .directory(tx_of(tx), &path)
            .await
            .map_err(xs_error)
    }

    /// GET_PERMS, as permission strings (`n0`, `r5`).
    #[napi]
    pub async fn get_perms(&self, path: String, tx: Option<f64>) -> napi::Result<Vec<String>> {
        let list = self
            .client
            .get_perms(tx_of(tx), &path)
            .await
            .map_err(xs_error)?;
        Ok(list.iter().map(Perm::to_string).collect())
    }

    /// SET_PERMS from permission strings.
    #[napi]
    pub async fn set_perms(
        &self,
        path: String,
        perms: Vec<String>,
        tx: Option<f64>,
    ) -> napi::Result<()> {
        let refs: Vec<&str> = perms.iter().map(String::as_str).collect();
        let list =
            perms::parse_list(&refs).map_err(|e| coded_error(e.as_str(), "bad permission list"))?;
        self.client
            .set_perms(tx_of(tx), &path, &list)
            .await
            .map_err(xs_error)
    }

    /// WATCH.
    #[napi]
    pub async fn watch(&self, path: String, token: String) -> napi::Result<()> {
        self.client.watch(&path, &token).await.map_err(xs_error)
    }

    /// UNWATCH.
    #[napi]
    pub async fn unwatch(&self, path: String, token: String) -> napi::Result<()> {
        self.client.unwatch(&path, &token).await.map_err(xs_error)
    }

    /// TRANSACTION_START; the handle identifies the transaction and the
    /// connection it belongs to.
    #[napi]
    pub async fn transaction_start(&self) -> napi::Result<f64> {
        let tx = self.client.transaction_start().await.map_err(xs_error)?;
        Ok(((u64::from(tx.generation) << 32) | u64::from(tx.id)) as f64)
    }

    /// TRANSACTION_END.
    #[napi]
    pub async fn transaction_end(&self, tx: f64, commit: bool) -> napi::Result<()> {
        let tx = tx_of(Some(tx)).expect("handle given");
        self.client
            .transaction_end(tx, commit)
            .await
            .map_err(xs_error)
    }

    /// GET_DOMAIN_PATH.
    #[napi]
    pub async fn get_domain_path(&self, domid: u32) -> napi::Result<String> {
        self.client.get_domain_path(domid).await.map_err(xs_error)
    }

    /// INTRODUCE.
    #[napi]
    pub async fn introduce(&self, domid: u32, gfn: f64, evtchn: u32) -> napi::Result<()> {
        self.client
            .introduce(domid, gfn as u64, evtchn)
            .await
            .map_err(xs_error)
    }

    /// RELEASE.
    #[napi]
    pub async fn release(&self, domid: u32) -> napi::Result<()> {
        self.client.release(domid).await.map_err(xs_error)
    }

    /// IS_DOMAIN_INTRODUCED.
    #[napi]
    pub async fn is_domain_introduced(&self, domid: u32) -> napi::Result<bool> {
        self.client
            .is_domain_introduced(domid)
            .await
            .map_err(xs_error)
    }

    /// SET_TARGET.
    #[napi]
    pub async fn set_target(&self, domid: u32, target: u32) -> napi::Result<()> {
        self.client
            .set_target(domid, target)
            .await
            .map_err(xs_error)
    }

    /// RESET_WATCHES.
    #[napi]
    pub async fn reset_watches(&self) -> napi::Result<()> {
        self.client.reset_watches().await.map_err(xs_error)
    }

    /// CONTROL.
    #[napi]
    pub async fn control(&self, args: Vec<String>) -> napi::Result<String> {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        self.client.control(&refs).await.map_err(xs_error)
    }

    /// Closes the connection.
    #[napi]
    pub fn close(&self) {
        self.client.close();
    }
}
