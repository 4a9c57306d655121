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
mod engine;
mod journal;
mod outbox;
mod state_file;
mod state_lock;

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
use self::engine::Engine;
pub use self::journal::read_state as load_state;
use self::journal::{Journal, JournalOptions};
use crate::store::{ConnId, Store};
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
    /// Persist the store here: a snapshot plus a journal of changes beside
    /// it (`<file>.journal.<n>`), locked against a second daemon. In memory
    /// only if `None`.
    pub state_file: Option<PathBuf>,
    /// With a state file: sync each group of changes to disk before
    /// replying (the default). Without it, an acknowledged change survives
    /// the daemon's death but not the machine's (C xenstored keeps its
    /// store in memory only).
    pub fsync: bool,
    /// Journal bytes below which no compaction starts (it also waits for
    /// the journal to outgrow the snapshot).
    pub compact_floor: u64,
    /// Requests a dom0 connection may have in flight before the daemon stops
    /// reading from it. Guests get their `outstanding` quota.
    pub dom0_outstanding: usize,
    /// Unsent watch events kept per connection before new ones are dropped.
    pub max_queued_events: usize,
    /// Connections a domain may hold open on its socket at once (0: no
    /// limit); more are closed as soon as they are accepted. A guest needs a
    /// handful (the one its ring stands for, plus tools), and each costs the
    /// daemon memory (buffers, two tasks) however little it is used.
    /// dom0's socket and in-process connections are not limited.
    pub max_domain_connections: usize,
    /// Bytes of output all the connections of a guest together may leave
    /// unread in the daemon (0: no limit; dom0 has none). Past it, a
    /// connection's oldest watch events are dropped for newer ones; replies
    /// are kept, and a connection whose unread replies alone exceed it is
    /// closed. Guards the daemon's memory against a guest that stops
    /// reading, however many connections it opens (XSA-326).
    pub max_domain_output: usize,
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
            fsync: true,
            compact_floor: journal::DEFAULT_COMPACT_FLOOR,
            dom0_outstanding: 1024,
            max_queued_events: 4096,
            max_domain_connections: 8,
            // Room for every reply a guest can have outstanding (quota 20
            // per connection, at most 4 KiB each, on up to 8 connections:
            // about 660 KiB) plus a burst of a few thousand events. A guest
            // that stops reading then costs at most this queued plus one
            // batch already taken per connection's writer: about 9 MiB,
            // against hundreds of MiB before there was a budget.
            max_domain_output: 1024 * 1024,
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
    /// Connections refused on a domain's socket because the domain had
    /// `max_domain_connections` open (not counted in `connections`).
    pub refused: AtomicU64,
    /// Groups of changes made durable (one journal sync each).
    pub persists: AtomicU64,
    /// Changes undone because they could not be made durable (their
    /// requests failed with ENOSPC or EIO).
    pub unsaved: AtomicU64,
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
    engine: std::sync::Mutex<Option<JoinHandle<()>>>,
    shared: Arc<Shared>,
    #[cfg(test)]
    faults: Option<Arc<journal::Faults>>,
}

struct Shared {
    config: Config,
    rt: Handle,
    stats: Stats,
    stop: watch::Sender<bool>,
    /// Per-domain connection counts and output budgets.
    domains: conn::Domains,
}

impl Daemon {
    /// Loads the state file (if any), binds the sockets and starts serving
    /// on the runtime `rt`.
    pub fn start(config: Config, rt: &Handle) -> io::Result<Daemon> {
        let (store, journal) = match &config.state_file {
            Some(path) => {
                let options = JournalOptions {
                    fsync: config.fsync,
                    compact_floor: config.compact_floor,
                };
                let (store, journal) = Journal::open(path, options, config.log.clone())?;
                (store, Some(journal))
            }
            None => (Store::new(), None),
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
        #[cfg(test)]
        let faults = journal.as_ref().map(|j| j.faults.clone());
        let listener = bind(&config.socket, rt)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let (stop, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            config,
            rt: rt.clone(),
            stats: Stats::default(),
            stop,
            domains: conn::Domains::default(),
        });
        spawn_acceptor(&shared, listener, 0, tx.clone(), shared.stop.subscribe());
        let engine = {
            let shared = shared.clone();
            let tx = tx.clone();
            std::thread::Builder::new()
                .name("xenstored-engine".into())
                .spawn(move || Engine::new(store, journal, shared, tx).run(rx))?
        };
        Ok(Daemon {
            tx,
            engine: std::sync::Mutex::new(Some(engine)),
            shared,
            #[cfg(test)]
            faults,
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
    pub fn stop(self) {
        self.shutdown();
    }

    /// [`Daemon::stop`] for a daemon shared with others (in-process
    /// clients hold it to reconnect): they get a closed connection, and the
    /// state file is let go. Does nothing the second time.
    pub fn shutdown(&self) {
        let engine = self.engine.lock().expect("engine handle").take();
        if let Some(engine) = engine {
            let _ = self.shared.stop.send(true);
            let (done, _rx) = oneshot::channel();
            let _ = self.tx.send(EngineMsg::Stop(done));
            let _ = engine.join();
        }
    }

    /// Bytes of output queued in the daemon for `domid`'s connections and
    /// not yet taken by their writers (within `max_domain_output` for a
    /// guest, but for replies, which are bounded by its request quota).
    pub fn pending_output(&self, domid: u32) -> usize {
        self.shared.domains.pending_output(domid)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.shutdown();
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
                    // A refused stream is dropped here, which closes it
                    // before anything is read.
                    Ok((stream, _)) => if let Some(slot) = conn::admit(&shared, domid) {
                        shared.stats.connections.fetch_add(1, Ordering::Relaxed);
                        tokio::spawn(conn::serve_admitted(stream, slot, tx.clone(), shared.clone()));
                    },
                    Err(e) => (shared.config.log)(&format!("accept on domain {domid} socket: {e}")),
                },
                _ = stop.changed() => break,
            }
        }
    });
}

#[cfg(test)]
mod durability_tests;
#[cfg(test)]
mod tests;
