//! XenStore for JavaScript: the embedded daemon and the async client.

use std::path::PathBuf;
use std::sync::Arc;

use napi::bindgen_prelude::{Buffer, Either};
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::Status;
use napi_derive::napi;

use super::{coded_error, io_error, Coded, CodedResult, Outcome, Result};
use crate::wire::perms::{self, Perm};
use crate::xenstored::{Config, Daemon};
use crate::xsclient::endpoint::Connector;
use crate::xsclient::{Endpoint, Options, Tx, XsClient, XsError};

fn xs_error(e: XsError) -> Coded {
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
    /// Sync each group of changes to disk before replying (default true).
    pub fsync: Option<bool>,
    /// Connections one domain may have open on its socket (default 8; 0:
    /// unlimited).
    pub max_domain_connections: Option<u32>,
    /// Bytes of output one domain's connections may leave unread before
    /// their oldest watch events are dropped (0: unlimited).
    pub max_domain_output: Option<u32>,
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
    /// Groups of changes made durable (one journal sync each).
    pub persists: f64,
    /// Changes undone because they could not be saved (their requests
    /// failed with ENOSPC or EIO).
    pub unsaved: f64,
    /// Connections refused by the per-domain connection limit.
    pub refused: f64,
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
    pub fn start(options: XenstoredOptions) -> Result<NativeXenstored> {
        let mut config = Config::new(&options.socket);
        config.domain_socket_dir = options.domain_socket_dir.map(PathBuf::from);
        config.state_file = options.state_file.map(PathBuf::from);
        if let Some(fsync) = options.fsync {
            config.fsync = fsync;
        }
        if let Some(n) = options.max_domain_connections {
            config.max_domain_connections = n as usize;
        }
        if let Some(n) = options.max_domain_output {
            config.max_domain_output = n as usize;
        }
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

    fn daemon(&self) -> Result<&Arc<Daemon>> {
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
    pub fn domain_socket(&self, domid: u32) -> Result<String> {
        Ok(self
            .daemon()?
            .domain_socket(domid)
            .to_string_lossy()
            .into_owned())
    }

    /// The hypervisor reports a domain dead: release it.
    #[napi]
    pub fn domain_died(&self, domid: u32) -> Result<()> {
        self.daemon()?.domain_died(domid);
        Ok(())
    }

    /// The hypervisor reports a domain shut down: fire `@releaseDomain`.
    #[napi]
    pub fn domain_shutdown(&self, domid: u32) -> Result<()> {
        self.daemon()?.domain_shutdown(domid);
        Ok(())
    }

    /// The daemon's counters.
    #[napi]
    pub fn stats(&self) -> Result<XenstoredStats> {
        use std::sync::atomic::Ordering::Relaxed;
        let s = self.daemon()?.stats();
        Ok(XenstoredStats {
            requests: s.requests.load(Relaxed) as f64,
            connections: s.connections.load(Relaxed) as f64,
            killed: s.killed.load(Relaxed) as f64,
            persists: s.persists.load(Relaxed) as f64,
            unsaved: s.unsaved.load(Relaxed) as f64,
            refused: s.refused.load(Relaxed) as f64,
        })
    }

    /// Stops the daemon: closes every connection (in-process ones too),
    /// removes its sockets and lets go of its state file.
    #[napi]
    pub fn stop(&mut self) {
        if let Some(d) = self.daemon.take() {
            d.shutdown();
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
    #[napi(ts_return_type = "Promise<NativeXsClient>")]
    pub async fn connect(options: XsConnectOptions) -> napi::Result<Outcome<NativeXsClient>> {
        let r: CodedResult<NativeXsClient> = async {
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
        .await;
        Ok(r.into())
    }

    /// Connects in-process to an embedded daemon, acting as `domid`.
    #[napi(ts_return_type = "Promise<NativeXsClient>")]
    pub async fn connect_local(
        daemon: &NativeXenstored,
        domid: u32,
    ) -> napi::Result<Outcome<NativeXsClient>> {
        let r: CodedResult<NativeXsClient> = async {
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
        .await;
        Ok(r.into())
    }

    /// Delivers watch events, in batches, to `callback`. The callback does
    /// not keep the process alive. Call once.
    #[napi(ts_args_type = "callback: (events: XsWatchEvent[]) => void")]
    pub fn on_watch_events(&self, callback: EventCallback) -> Result<()> {
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
    #[napi(ts_return_type = "Promise<Buffer>")]
    pub async fn read(&self, path: String, tx: Option<f64>) -> napi::Result<Outcome<Buffer>> {
        let r: CodedResult<Buffer> = async {
            let v = self.client.read(tx_of(tx), &path).await.map_err(xs_error)?;
            Ok(v.into())
        }
        .await;
        Ok(r.into())
    }

    /// WRITE.
    #[napi(ts_return_type = "Promise<void>")]
    pub async fn write(
        &self,
        path: String,
        value: Either<String, Buffer>,
        tx: Option<f64>,
    ) -> napi::Result<Outcome<()>> {
        let r: CodedResult<()> = async {
            self.client
                .write(tx_of(tx), &path, &bytes(value))
                .await
                .map_err(xs_error)
        }
        .await;
        Ok(r.into())
    }

    /// MKDIR.
    #[napi(ts_return_type = "Promise<void>")]
    pub async fn mkdir(&self, path: String, tx: Option<f64>) -> napi::Result<Outcome<()>> {
        let r: CodedResult<()> =
            async { self.client.mkdir(tx_of(tx), &path).await.map_err(xs_error) }.await;
        Ok(r.into())
    }

    /// RM.
    #[napi(ts_return_type = "Promise<void>")]
    pub async fn rm(&self, path: String, tx: Option<f64>) -> napi::Result<Outcome<()>> {
        let r: CodedResult<()> =
            async { self.client.rm(tx_of(tx), &path).await.map_err(xs_error) }.await;
        Ok(r.into())
    }

    /// DIRECTORY (with DIRECTORY_PART for long lists).
    #[napi(ts_return_type = "Promise<Array<string>>")]
    pub async fn directory(
        &self,
        path: String,
        tx: Option<f64>,
    ) -> napi::Result<Outcome<Vec<String>>> {
        let r: CodedResult<Vec<String>> = async {
            self.client
                .directory(tx_of(tx), &path)
                .await
                .map_err(xs_error)
        }
        .await;
        Ok(r.into())
    }

    /// GET_PERMS, as permission strings (`n0`, `r5`).
    #[napi(ts_return_type = "Promise<Array<string>>")]
    pub async fn get_perms(
        &self,
        path: String,
        tx: Option<f64>,
    ) -> napi::Result<Outcome<Vec<String>>> {
        let r: CodedResult<Vec<String>> = async {
            let list = self
                .client
                .get_perms(tx_of(tx), &path)
                .await
                .map_err(xs_error)?;
            Ok(list.iter().map(Perm::to_string).collect())
        }
        .await;
        Ok(r.into())
    }

    /// SET_PERMS from permission strings.
    #[napi(ts_return_type = "Promise<void>")]
    pub async fn set_perms(
        &self,
        path: String,
        perms: Vec<String>,
        tx: Option<f64>,
    ) -> napi::Result<Outcome<()>> {
        let r: CodedResult<()> = async {
            let refs: Vec<&str> = perms.iter().map(String::as_str).collect();
            let list = perms::parse_list(&refs)
                .map_err(|e| coded_error(e.as_str(), "bad permission list"))?;
            self.client
                .set_perms(tx_of(tx), &path, &list)
                .await
                .map_err(xs_error)
        }
        .await;
        Ok(r.into())
    }

    /// WATCH.
    #[napi(ts_return_type = "Promise<void>")]
    pub async fn watch(&self, path: String, token: String) -> napi::Result<Outcome<()>> {
        let r: CodedResult<()> =
            async { self.client.watch(&path, &token).await.map_err(xs_error) }.await;
        Ok(r.into())
    }

    /// UNWATCH.
    #[napi(ts_return_type = "Promise<void>")]
    pub async fn unwatch(&self, path: String, token: String) -> napi::Result<Outcome<()>> {
        let r: CodedResult<()> =
            async { self.client.unwatch(&path, &token).await.map_err(xs_error) }.await;
        Ok(r.into())
    }

    /// TRANSACTION_START; the handle identifies the transaction and the
    /// connection it belongs to.
    #[napi(ts_return_type = "Promise<number>")]
    pub async fn transaction_start(&self) -> napi::Result<Outcome<f64>> {
        let r: CodedResult<f64> = async {
            let tx = self.client.transaction_start().await.map_err(xs_error)?;
            Ok(((u64::from(tx.generation) << 32) | u64::from(tx.id)) as f64)
        }
        .await;
        Ok(r.into())
    }

    /// TRANSACTION_END.
    #[napi(ts_return_type = "Promise<void>")]
    pub async fn transaction_end(&self, tx: f64, commit: bool) -> napi::Result<Outcome<()>> {
        let r: CodedResult<()> = async {
            let tx = tx_of(Some(tx)).expect("handle given");
            self.client
                .transaction_end(tx, commit)
                .await
                .map_err(xs_error)
        }
        .await;
        Ok(r.into())
    }

    /// GET_DOMAIN_PATH.
    #[napi(ts_return_type = "Promise<string>")]
    pub async fn get_domain_path(&self, domid: u32) -> napi::Result<Outcome<String>> {
        let r: CodedResult<String> =
            async { self.client.get_domain_path(domid).await.map_err(xs_error) }.await;
        Ok(r.into())
    }

    /// INTRODUCE.
    #[napi(ts_return_type = "Promise<void>")]
    pub async fn introduce(&self, domid: u32, gfn: f64, evtchn: u32) -> napi::Result<Outcome<()>> {
        let r: CodedResult<()> = async {
            self.client
                .introduce(domid, gfn as u64, evtchn)
                .await
                .map_err(xs_error)
        }
        .await;
        Ok(r.into())
    }

    /// RELEASE.
    #[napi(ts_return_type = "Promise<void>")]
    pub async fn release(&self, domid: u32) -> napi::Result<Outcome<()>> {
        let r: CodedResult<()> = async { self.client.release(domid).await.map_err(xs_error) }.await;
        Ok(r.into())
    }

    /// IS_DOMAIN_INTRODUCED.
    #[napi(ts_return_type = "Promise<boolean>")]
    pub async fn is_domain_introduced(&self, domid: u32) -> napi::Result<Outcome<bool>> {
        let r: CodedResult<bool> = async {
            self.client
                .is_domain_introduced(domid)
                .await
                .map_err(xs_error)
        }
        .await;
        Ok(r.into())
    }

    /// SET_TARGET.
    #[napi(ts_return_type = "Promise<void>")]
    pub async fn set_target(&self, domid: u32, target: u32) -> napi::Result<Outcome<()>> {
        let r: CodedResult<()> = async {
            self.client
                .set_target(domid, target)
                .await
                .map_err(xs_error)
        }
        .await;
        Ok(r.into())
    }

    /// RESET_WATCHES.
    #[napi(ts_return_type = "Promise<void>")]
    pub async fn reset_watches(&self) -> napi::Result<Outcome<()>> {
        let r: CodedResult<()> =
            async { self.client.reset_watches().await.map_err(xs_error) }.await;
        Ok(r.into())
    }

    /// CONTROL.
    #[napi(ts_return_type = "Promise<string>")]
    pub async fn control(&self, args: Vec<String>) -> napi::Result<Outcome<String>> {
        let r: CodedResult<String> = async {
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            self.client.control(&refs).await.map_err(xs_error)
        }
        .await;
        Ok(r.into())
    }

    /// Closes the connection.
    #[napi]
    pub fn close(&self) {
        self.client.close();
    }
}
