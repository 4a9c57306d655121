//! The daemon over real sockets.

use std::time::Duration;

use tokio::runtime::Handle;

use super::*;
use crate::testutil::RawClient;
use crate::wire::{payload, Errno, MsgType};

fn quiet(config: &mut Config) {
    config.log = Arc::new(|_| {});
}

fn start(dir: &Path) -> Daemon {
    let mut c = Config::new(dir.join("xs.sock"));
    quiet(&mut c);
    Daemon::start(c, &Handle::current()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_requests_over_the_privileged_socket() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path());
    let mut c = RawClient::connect(d.socket()).await;
    c.write("/a", "1").await;
    assert_eq!(c.read("/a").await, Ok("1".into()));
    assert_eq!(c.read("/missing").await, Err("ENOENT".into()));
    let mode = std::fs::metadata(d.socket()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_in_a_missing_directory_is_an_error_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Config::new(dir.path().join("no/such/dir/xs.sock"));
    quiet(&mut c);
    let err = Daemon::start(c, &Handle::current()).err().unwrap();
    assert_eq!(err.kind(), io::ErrorKind::NotFound);
    assert!(err.to_string().contains("no/such/dir"), "{err}");
    assert!(!dir.path().join("no").exists(), "no directory was made");

    let mut c = Config::new(dir.path().join("xs.sock"));
    c.domain_socket_dir = Some(dir.path().join("missing/domains"));
    quiet(&mut c);
    let err = Daemon::start(c, &Handle::current()).err().unwrap();
    assert!(err.to_string().contains("missing/domains"), "{err}");
    assert!(!dir.path().join("missing").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_frame_closes_only_that_connection() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path());
    let mut good = RawClient::connect(d.socket()).await;
    let mut bad = RawClient::connect(d.socket()).await;
    let mut header = Message::new(MsgType::Write, 1, 0, Vec::new()).encode();
    header[12..16].copy_from_slice(&5000u32.to_le_bytes());
    bad.send_bytes(&header).await;
    assert_eq!(bad.recv().await, None, "connection closed without a reply");
    good.write("/still", "works").await;
    assert_eq!(good.read("/still").await, Ok("works".into()));
    assert_eq!(d.stats().killed.load(Ordering::Relaxed), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_domain_socket_acts_as_that_domain() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path());
    let mut dom0 = RawClient::connect(d.socket()).await;
    dom0.write("/private", "p").await;
    dom0.write("/local/domain/7/data", "").await;
    let r = dom0
        .call_strs(MsgType::SetPerms, &["/local/domain/7/data", "n7"])
        .await;
    assert_eq!(r.as_error(), None);
    assert!(!d.domain_socket(7).exists());
    let r = dom0.call_strs(MsgType::Introduce, &["7", "100", "3"]).await;
    assert_eq!(r.as_error(), None);
    // The socket exists by the time the reply arrives.
    assert!(d.domain_socket(7).exists());
    let mut guest = RawClient::connect(&d.domain_socket(7)).await;
    assert_eq!(guest.read("/private").await, Err("EACCES".into()));
    guest.write("data/x", "from-guest").await;
    assert_eq!(
        dom0.read("/local/domain/7/data/x").await,
        Ok("from-guest".into())
    );
    let r = guest.call_strs(MsgType::Introduce, &["8", "1", "1"]).await;
    assert_eq!(r.as_error(), Some(Ok(Errno::EACCES)));

    // Release closes the guest's connection and removes its socket.
    let r = dom0.call_strs(MsgType::Release, &["7"]).await;
    assert_eq!(r.as_error(), None);
    assert_eq!(guest.recv().await, None);
    for _ in 0..100 {
        if !d.domain_socket(7).exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!d.domain_socket(7).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_events_reach_other_connections() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path());
    let mut watcher = RawClient::connect(d.socket()).await;
    let mut writer = RawClient::connect(d.socket()).await;
    let r = watcher.call_strs(MsgType::Watch, &["/w", "tok"]).await;
    assert_eq!(r.as_error(), None);
    let first = watcher.recv().await.unwrap();
    assert_eq!(first.payload, payload::join(&["/w", "tok"]));
    writer.write("/w/x", "1").await;
    let ev = watcher.recv().await.unwrap();
    assert_eq!(ev.ty, MsgType::WatchEvent as u32);
    assert_eq!(ev.payload, payload::join(&["/w/x", "tok"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_nodes_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let config = || {
        let mut c = Config::new(dir.path().join("xs.sock"));
        c.state_file = Some(state.clone());
        quiet(&mut c);
        c
    };
    let d = Daemon::start(config(), &Handle::current()).unwrap();
    let mut c = RawClient::connect(d.socket()).await;
    for i in 0..50 {
        c.write(&format!("/keep/{i}"), &i.to_string()).await;
    }
    let r = c.call_strs(MsgType::Introduce, &["9", "1", "1"]).await;
    assert_eq!(r.as_error(), None);
    // The reply came after the state was written: kill without a clean stop.
    let snapshot = std::fs::read(&state).unwrap();
    let restored = Store::restore(&snapshot).unwrap();
    assert_eq!(restored.node("/keep/49").unwrap().value, b"49");
    drop(c);
    tokio::task::block_in_place(|| d.stop());

    let d = Daemon::start(config(), &Handle::current()).unwrap();
    let mut c = RawClient::connect(d.socket()).await;
    assert_eq!(c.read("/keep/17").await, Ok("17".into()));
    // Introduced domains get their sockets back.
    assert!(d.domain_socket(9).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_state_file_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::write(&state, b"XENRXST1 broken").unwrap();
    let mut c = Config::new(dir.path().join("xs.sock"));
    c.state_file = Some(state.clone());
    quiet(&mut c);
    let err = Daemon::start(c, &Handle::current()).err().unwrap();
    assert!(err.to_string().contains("state"), "{err}");
    // The file is left as it was for inspection.
    assert_eq!(std::fs::read(&state).unwrap(), b"XENRXST1 broken");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_daemon_cannot_take_a_live_socket() {
    let dir = tempfile::tempdir().unwrap();
    let _d = start(dir.path());
    let mut c = Config::new(dir.path().join("xs.sock"));
    quiet(&mut c);
    let err = Daemon::start(c, &Handle::current()).err().unwrap();
    assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_read_stalls_only_itself() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path());
    let mut dom0 = RawClient::connect(d.socket()).await;
    let r = dom0.call_strs(MsgType::Introduce, &["3", "1", "1"]).await;
    assert_eq!(r.as_error(), None);
    for _ in 0..100 {
        if d.domain_socket(3).exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A guest sends 100k requests and never reads a reply.
    let mut flood = RawClient::connect(&d.domain_socket(3)).await;
    let mut bytes = Vec::new();
    for i in 0..2000u32 {
        Message::new(MsgType::Read, i, 0, b"/local\0".to_vec()).encode_into(&mut bytes);
    }
    let sender = tokio::spawn(async move {
        for _ in 0..50 {
            if tokio::time::timeout(Duration::from_millis(200), flood.send_bytes(&bytes))
                .await
                .is_err()
            {
                return (flood, true);
            }
        }
        (flood, false)
    });
    let (flood, blocked) = sender.await.unwrap();
    assert!(
        blocked,
        "the daemon kept reading a client that reads nothing"
    );
    // Meanwhile dom0 is served.
    dom0.write("/alive", "yes").await;
    assert_eq!(dom0.read("/alive").await, Ok("yes".into()));
    let handled = d.stats().requests.load(Ordering::Relaxed);
    assert!(handled < 100_000, "{handled} requests handled");
    drop(flood);
}
