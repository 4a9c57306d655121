//! The embedded XenStore daemon: the [`Store`] engine on its own thread,
//! Unix sockets around it, and optional persistence.
//!
//! One privileged socket serves dom0. Each introduced domain gets a socket of
//! its own in the domain-socket directory (`<socket>.d/<domid>` by default);
//! a connection there acts as that domain, so guest permissions and quotas
//! are enforced exactly as over a guest's ring.
//!
//! The engine thread takes requests in batches, persists the store once per
//! batch when a state file is configured (replies wait for that, so no
//! acknowledged change is lost to a restart), then hands replies and events
//! to the connections' outboxes.

mod conn;
mod outbox;
mod state_file;

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::net::UnixListener;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot, watch};

use self::conn::ConnShared;
pub use self::state_file::{load as load_state, write_atomic};
use crate::store::quota::QuotaKind;
use crate::store::{ConnId, Effect, Store};
use crate::wire::Message;

/// Where log lines go.
pub type Logger = Arc<dyn Fn(&str) + Send + Sync>;

/// How to run the daemon.
#[derive(Clone)]
pub struct Config {
    /// The privileged (dom0) socket.
    pub socket: PathBuf,
    /// Directory of the per-domain sockets; `<socket>.d` if `None`.
    pub domain_socket_dir: Option<PathBuf>,
    /// Persist the store here (atomic writes); in memory only if `None`.
    pub state_file: Option<PathBuf>,
    /// Requests a dom0 connection may have in flight before the daemon stops
    /// reading from it. Guests get their `outstanding` quota.
    pub dom0_outstanding: usize,
    /// Unsent watch events kept per connection before new ones are dropped.
    pub max_queued_events: usize,
    /// Log sink.
    pub log: Logger,
}

impl Config {
    /// Defaults for a daemon on `socket`, logging to stderr.
    pub fn new(socket: impl Into<PathBuf>) -> Config {
        Config {
            socket: socket.into(),
            domain_socket_dir: None,
            state_file: None,
            dom0_outstanding: 1024,
            max_queued_events: 4096,
            log: Arc::new(|line| eprintln!("xenstored: {line}")),
        }
    }

    /// The directory of per-domain sockets.
    pub fn domain_dir(&self) -> PathBuf {
        self.domain_socket_dir.clone().unwrap_or_else(|| {
            let mut name = self.socket.as_os_str().to_owned();
            name.push(".d");
            PathBuf::from(name)
        })
    }
}

/// Counters of a running daemon.
#[derive(Debug, Default)]
pub struct Stats {
    /// Requests handled.
    pub requests: AtomicU64,
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Connections closed for a protocol violation.
    pub killed: AtomicU64,
    /// State-file writes.
    pub persists: AtomicU64,
}

type Inspector = Box<dyn FnOnce(&mut Store) + Send>;

enum EngineMsg {
    Connect {
        domid: u32,
        conn: Arc<ConnShared>,
        reply: oneshot::Sender<(ConnId, usize)>,
    },
    Request {
        conn: ConnId,
        msg: Message,
    },
    Disconnect {
        conn: ConnId,
    },
    DomainDied(u32),
    DomainShutdown(u32),
    Inspect(Inspector),
    Stop(oneshot::Sender<()>),
}

/// A running daemon. Dropping it stops it.
pub struct Daemon {
    tx: mpsc::UnboundedSender<EngineMsg>,
    engine: Option<JoinHandle<()>>,
    shared: Arc<Shared>,
}

struct Shared {
    config: Config,
    rt: Handle,
    stats: Stats,
    stop: watch::Sender<bool>,
}

impl Daemon {
    /// Loads the state file (if any), binds the sockets and starts serving
    /// on the runtime `rt`.
    pub fn start(config: Config, rt: &Handle) -> io::Result<Daemon> {
        let store = match &config.state_file {
            Some(path) => state_file::load(path)?,
            None => Store::new(),
        };
        require_socket_dir(&config.socket)?;
        // The daemon's own directory of per-domain sockets, next to the
        // socket by default; its parent must exist like the socket's.
        match std::fs::create_dir(config.domain_dir()) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                return Err(io::Error::new(
                    e.kind(),
                    format!(
                        "cannot make the domain socket directory {}: {e}",
                        config.domain_dir().display()
                    ),
                ))
            }
            _ => {}
        }
        let listener = bind(&config.socket, rt)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let (stop, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            config,
            rt: rt.clone(),
            stats: Stats::default(),
            stop,
        });
        spawn_acceptor(&shared, listener, 0, tx.clone(), shared.stop.subscribe());
        let engine = {
            let shared = shared.clone();
            let tx = tx.clone();
            std::thread::Builder::new()
                .name("xenstored-engine".into())
                .spawn(move || Engine::new(store, shared, tx).run(rx))?
        };
        Ok(Daemon {
            tx,
            engine: Some(engine),
            shared,
        })
    }

    /// The privileged socket's path.
    pub fn socket(&self) -> &Path {
        &self.shared.config.socket
    }

    /// Path of the socket of an introduced domain.
    pub fn domain_socket(&self, domid: u32) -> PathBuf {
        self.shared.config.domain_dir().join(domid.to_string())
    }

    /// A connection acting as `domid` without a socket (for in-process
    /// clients). The domain need not be introduced.
    pub fn connect_local(&self, domid: u32) -> tokio::io::DuplexStream {
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        let shared = self.shared.clone();
        let tx = self.tx.clone();
        self.shared.rt.spawn(conn::serve(theirs, domid, tx, shared));
        ours
    }

    /// The hypervisor reports a domain dead: release it.
    pub fn domain_died(&self, domid: u32) {
        let _ = self.tx.send(EngineMsg::DomainDied(domid));
    }

    /// The hypervisor reports a domain shut down: fire `@releaseDomain`.
    pub fn domain_shutdown(&self, domid: u32) {
        let _ = self.tx.send(EngineMsg::DomainShutdown(domid));
    }

    /// Runs `f` on the engine's store, between requests, and returns its
    /// result. Blocks; use [`Daemon::inspect_async`] from async code.
    pub fn inspect<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Store) -> R + Send + 'static,
    ) -> R {
        let (reply, rx) = std::sync::mpsc::channel();
        let _ = self.tx.send(EngineMsg::Inspect(Box::new(move |s| {
            let _ = reply.send(f(s));
        })));
        rx.recv().expect("engine thread alive")
    }

    /// Async form of [`Daemon::inspect`].
    pub async fn inspect_async<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Store) -> R + Send + 'static,
    ) -> R {
        let (reply, rx) = oneshot::channel();
        let _ = self.tx.send(EngineMsg::Inspect(Box::new(move |s| {
            let _ = reply.send(f(s));
        })));
        rx.await.expect("engine thread alive")
    }

    /// The daemon's counters.
    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    /// Stops serving: persists, closes every connection, removes the sockets.
    pub fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        if let Some(engine) = self.engine.take() {
            let _ = self.shared.stop.send(true);
            let (done, _rx) = oneshot::channel();
            let _ = self.tx.send(EngineMsg::Stop(done));
            let _ = engine.join();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

/// The socket's directory is the operator's to make: a typo in it is an
/// error, not a new directory tree nobody looks in.
fn require_socket_dir(path: &Path) -> io::Result<()> {
    match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) if !dir.is_dir() => Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "the directory of socket {} does not exist: {}",
                path.display(),
                dir.display()
            ),
        )),
        _ => Ok(()),
    }
}

/// Binds a Unix socket, replacing a stale socket file but refusing one a
/// live daemon still listens on. The socket is for its owner only.
fn bind(path: &Path, rt: &Handle) -> io::Result<UnixListener> {
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("{} is in use by a running daemon", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let std_listener = std::os::unix::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    std_listener.set_nonblocking(true)?;
    let _guard = rt.enter();
    UnixListener::from_std(std_listener)
}

fn spawn_acceptor(
    shared: &Arc<Shared>,
    listener: UnixListener,
    domid: u32,
    tx: mpsc::UnboundedSender<EngineMsg>,
    mut stop: watch::Receiver<bool>,
) {
    let shared = shared.clone();
    let rt = shared.rt.clone();
    rt.spawn(async move {
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        shared.stats.connections.fetch_add(1, Ordering::Relaxed);
                        tokio::spawn(conn::serve(stream, domid, tx.clone(), shared.clone()));
                    }
                    Err(e) => (shared.config.log)(&format!("accept on domain {domid} socket: {e}")),
                },
                _ = stop.changed() => break,
            }
        }
    });
}

struct Engine {
    store: Store,
    shared: Arc<Shared>,
    tx: mpsc::UnboundedSender<EngineMsg>,
    conns: HashMap<ConnId, (u32, Arc<ConnShared>)>,
    domain_listeners: HashMap<u32, watch::Sender<bool>>,
}

impl Engine {
    fn new(store: Store, shared: Arc<Shared>, tx: mpsc::UnboundedSender<EngineMsg>) -> Engine {
        Engine {
            store,
            shared,
            tx,
            conns: HashMap::new(),
            domain_listeners: HashMap::new(),
        }
    }

    fn log(&self, line: &str) {
        (self.shared.config.log)(line);
    }

    fn run(mut self, mut rx: mpsc::UnboundedReceiver<EngineMsg>) {
        for domid in self.store.introduced_domains() {
            self.open_domain_socket(domid);
        }
        while let Some(first) = rx.blocking_recv() {
            let mut batch = vec![first];
            while batch.len() < 512 {
                match rx.try_recv() {
                    Ok(m) => batch.push(m),
                    Err(_) => break,
                }
            }
            let mut deliveries = Vec::new();
            let mut effects = Vec::new();
            let mut stop = None;
            for m in batch {
                match m {
                    EngineMsg::Connect { domid, conn, reply } => {
                        let id = self.store.connect(domid);
                        let limit = if domid == 0 {
                            self.shared.config.dom0_outstanding
                        } else {
                            match self.store_quota(domid, QuotaKind::Outstanding) {
                                0 => self.shared.config.dom0_outstanding,
                                n => n as usize,
                            }
                        };
                        self.conns.insert(id, (domid, conn));
                        let _ = reply.send((id, limit));
                    }
                    EngineMsg::Request { conn, msg } => {
                        self.shared.stats.requests.fetch_add(1, Ordering::Relaxed);
                        let out = self.store.handle(conn, &msg);
                        deliveries.extend(out.deliveries);
                        effects.extend(out.effects);
                    }
                    EngineMsg::Disconnect { conn } => {
                        self.store.disconnect(conn);
                        self.conns.remove(&conn);
                    }
                    EngineMsg::DomainDied(domid) => {
                        let out = self.store.release_domain(domid);
                        deliveries.extend(out.deliveries);
                        effects.extend(out.effects);
                    }
                    EngineMsg::DomainShutdown(domid) => {
                        deliveries.extend(self.store.domain_shutdown(domid).deliveries);
                    }
                    EngineMsg::Inspect(f) => f(&mut self.store),
                    EngineMsg::Stop(done) => stop = Some(done),
                }
            }
            self.persist_if_dirty();
            // Effects first: when INTRODUCE's reply arrives, the domain's
            // socket already exists.
            for e in effects {
                self.apply(e);
            }
            for d in deliveries {
                if let Some((_, c)) = self.conns.get(&d.conn) {
                    c.outbox.push(d.msg);
                }
            }
            if let Some(done) = stop {
                self.shutdown();
                let _ = done.send(());
                return;
            }
        }
    }

    fn store_quota(&self, domid: u32, kind: QuotaKind) -> u32 {
        self.store.quota(domid, kind)
    }

    fn persist_if_dirty(&mut self) {
        if !self.store.take_dirty() {
            return;
        }
        if let Some(path) = &self.shared.config.state_file {
            match state_file::write_atomic(path, &self.store.snapshot()) {
                Ok(()) => {
                    self.shared.stats.persists.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => self.log(&format!("cannot write state file {}: {e}", path.display())),
            }
        }
    }

    fn apply(&mut self, effect: Effect) {
        match effect {
            Effect::DomainIntroduced(domid) => self.open_domain_socket(domid),
            Effect::DomainReleased(domid) => {
                if let Some(stop) = self.domain_listeners.remove(&domid) {
                    let _ = stop.send(true);
                }
                let path = self.shared.config.domain_dir().join(domid.to_string());
                let _ = std::fs::remove_file(path);
                let gone: Vec<ConnId> = self
                    .conns
                    .iter()
                    .filter(|(_, (d, _))| *d == domid)
                    .map(|(id, _)| *id)
                    .collect();
                for id in gone {
                    if let Some((_, c)) = self.conns.remove(&id) {
                        c.close();
                    }
                }
            }
            Effect::Log(line) => self.log(&line),
        }
    }

    fn open_domain_socket(&mut self, domid: u32) {
        let path = self.shared.config.domain_dir().join(domid.to_string());
        match bind(&path, &self.shared.rt) {
            Ok(listener) => {
                let (stop, stop_rx) = watch::channel(false);
                spawn_acceptor(&self.shared, listener, domid, self.tx.clone(), stop_rx);
                self.domain_listeners.insert(domid, stop);
            }
            Err(e) => self.log(&format!("cannot open socket for domain {domid}: {e}")),
        }
    }

    fn shutdown(&mut self) {
        self.persist_if_dirty();
        for (_, (_, c)) in self.conns.drain() {
            c.close();
        }
        for (domid, stop) in self.domain_listeners.drain() {
            let _ = stop.send(true);
            let _ = std::fs::remove_file(self.shared.config.domain_dir().join(domid.to_string()));
        }
        let _ = std::fs::remove_file(&self.shared.config.socket);
        let _ = std::fs::remove_dir(self.shared.config.domain_dir());
    }
}

#[cfg(test)]
mod tests;
