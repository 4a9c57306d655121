//! The daemon's persistence: what a full disk, a failing sync, a second
//! daemon and compaction do to acknowledged changes.

use std::sync::atomic::Ordering::Relaxed;

use tokio::runtime::Handle;

use super::journal::segment_path;
use super::*;
use crate::testutil::RawClient;
use crate::wire::{Errno, MsgType};

struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        Setup {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn config(&self) -> Config {
        let mut c = Config::new(self.dir.path().join("xs.sock"));
        c.state_file = Some(self.state());
        c.log = Arc::new(|_| {});
        c
    }

    fn start(&self) -> Daemon {
        Daemon::start(self.config(), &Handle::current()).unwrap()
    }
}

fn stop(d: Daemon) {
    tokio::task::block_in_place(|| d.stop());
}

async fn write_errno(c: &mut RawClient, path: &str, value: &str) -> Option<Errno> {
    let mut p = path.as_bytes().to_vec();
    p.push(0);
    p.extend_from_slice(value.as_bytes());
    let r = c.call(MsgType::Write, 0, &p).await;
    r.as_error().map(|e| e.expect("a known errno"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_the_write_and_keeps_every_acknowledged_one() {
    let s = Setup::new();
    let d = s.start();
    let faults = d.faults.clone().unwrap();
    let mut c = RawClient::connect(d.socket()).await;
    let mut watcher = RawClient::connect(d.socket()).await;
    let r = watcher.call_strs(MsgType::Watch, &["/disk", "t"]).await;
    assert_eq!(r.as_error(), None);
    watcher.recv().await.unwrap();
    c.write("/disk/before", "1").await;
    assert_eq!(watcher.recv().await.unwrap().payload, b"/disk/before\0t\0");

    faults.full.store(true, Relaxed);
    assert_eq!(
        write_errno(&mut c, "/disk/lost", "x").await,
        Some(Errno::ENOSPC)
    );
    assert_eq!(
        write_errno(&mut c, "/disk/before", "2").await,
        Some(Errno::ENOSPC)
    );
    // A transaction's commit fails whole.
    let tx = c.call_strs(MsgType::TransactionStart, &[""]).await;
    let tx: u32 = std::str::from_utf8(&tx.payload[..tx.payload.len() - 1])
        .unwrap()
        .parse()
        .unwrap();
    for name in ["a", "b"] {
        let r = c
            .call(MsgType::Write, tx, format!("/disk/tx/{name}\0v").as_bytes())
            .await;
        assert_eq!(r.as_error(), None);
    }
    let r = c.call(MsgType::TransactionEnd, tx, b"T\0").await;
    assert_eq!(r.as_error(), Some(Ok(Errno::ENOSPC)));
    // Nothing of it happened, and nobody heard of it.
    assert_eq!(c.read("/disk/lost").await, Err("ENOENT".into()));
    assert_eq!(c.read("/disk/before").await, Ok("1".into()));
    assert_eq!(c.read("/disk/tx/a").await, Err("ENOENT".into()));
    assert_eq!(d.stats().unsaved.load(Relaxed), 3);

    // Space is back: service resumes by itself.
    faults.full.store(false, Relaxed);
    c.write("/disk/after", "3").await;
    // The next event the watcher gets is this one, not one of the failed.
    assert_eq!(watcher.recv().await.unwrap().payload, b"/disk/after\0t\0");
    drop((c, watcher));
    stop(d);

    let d = s.start();
    let mut c = RawClient::connect(d.socket()).await;
    assert_eq!(c.read("/disk/before").await, Ok("1".into()));
    assert_eq!(c.read("/disk/after").await, Ok("3".into()));
    assert_eq!(c.read("/disk/lost").await, Err("ENOENT".into()));
    assert_eq!(c.read("/disk/tx").await, Err("ENOENT".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_sync_undoes_its_changes_and_the_next_group_commits() {
    let s = Setup::new();
    let d = s.start();
    let faults = d.faults.clone().unwrap();
    let mut c = RawClient::connect(d.socket()).await;
    c.write("/s/kept", "1").await;
    faults.sync_fails.store(true, Relaxed);
    assert_eq!(write_errno(&mut c, "/s/kept", "2").await, Some(Errno::EIO));
    assert_eq!(write_errno(&mut c, "/s/new", "2").await, Some(Errno::EIO));
    // Requests that change nothing are served meanwhile.
    assert_eq!(c.read("/s/kept").await, Ok("1".into()));
    assert_eq!(c.read("/s/new").await, Err("ENOENT".into()));
    faults.sync_fails.store(false, Relaxed);
    c.write("/s/later", "3").await;
    drop(c);
    stop(d);

    let store = load_state(&s.state()).unwrap();
    assert_eq!(store.node("/s/kept").unwrap().value, b"1");
    assert!(store.node("/s/new").is_none());
    assert_eq!(store.node("/s/later").unwrap().value, b"3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_domain_death_on_a_full_disk_is_applied_once_space_is_back() {
    let s = Setup::new();
    let d = s.start();
    let faults = d.faults.clone().unwrap();
    let mut dom0 = RawClient::connect(d.socket()).await;
    dom0.write("/local/domain/4/x", "").await;
    let r = dom0
        .call_strs(MsgType::SetPerms, &["/local/domain/4/x", "n4"])
        .await;
    assert_eq!(r.as_error(), None);
    let r = dom0.call_strs(MsgType::Introduce, &["4", "1", "1"]).await;
    assert_eq!(r.as_error(), None);
    let mut watcher = RawClient::connect(d.socket()).await;
    let r = watcher
        .call_strs(MsgType::Watch, &["@releaseDomain", "rel"])
        .await;
    assert_eq!(r.as_error(), None);
    watcher.recv().await.unwrap();

    faults.full.store(true, Relaxed);
    d.domain_died(4);
    // Requests are handled in order after the report: still introduced.
    let r = dom0.call_strs(MsgType::IsDomainIntroduced, &["4"]).await;
    assert_eq!(r.payload, b"T\0");
    faults.full.store(false, Relaxed);
    // Any request makes the engine try again.
    dom0.write("/poke", "").await;
    let ev = watcher.recv().await.unwrap();
    assert_eq!(ev.ty, MsgType::WatchEvent as u32);
    assert_eq!(ev.payload, b"@releaseDomain\0rel\0");
    let r = dom0.call_strs(MsgType::IsDomainIntroduced, &["4"]).await;
    assert_eq!(r.payload, b"F\0");
    drop((dom0, watcher));
    stop(d);
    let store = load_state(&s.state()).unwrap();
    assert!(store.node("/local/domain/4/x").is_none());
    assert!(store.introduced_domains().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_daemon_on_the_state_file_is_refused_and_names_the_first() {
    let s = Setup::new();
    let d = s.start();
    let mut other = s.config();
    other.socket = s.dir.path().join("other.sock");
    let err = Daemon::start(other.clone(), &Handle::current())
        .err()
        .unwrap();
    let msg = err.to_string();
    assert!(msg.contains("is locked by another daemon"), "{msg}");
    assert!(
        msg.contains(&format!("pid {}", std::process::id())),
        "{msg}"
    );
    assert!(!other.socket.exists(), "the refused daemon bound nothing");
    let mut c = RawClient::connect(d.socket()).await;
    c.write("/first", "1").await;
    drop(c);
    stop(d);
    let d = Daemon::start(other, &Handle::current()).unwrap();
    let mut c = RawClient::connect(d.socket()).await;
    assert_eq!(c.read("/first").await, Ok("1".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_file_in_a_missing_directory_is_refused() {
    let s = Setup::new();
    let mut c = s.config();
    c.state_file = Some(s.dir.path().join("missing/state"));
    let err = Daemon::start(c, &Handle::current()).err().unwrap();
    assert_eq!(err.kind(), io::ErrorKind::NotFound);
    let msg = err.to_string();
    assert!(
        msg.contains("does not exist") && msg.contains("missing"),
        "{msg}"
    );
    assert!(!s.dir.path().join("missing").exists());
    assert!(!s.dir.path().join("xs.sock").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_folds_the_journal_into_the_snapshot_while_serving() {
    let s = Setup::new();
    let mut config = s.config();
    config.compact_floor = 4096;
    let d = Daemon::start(config.clone(), &Handle::current()).unwrap();
    let mut c = RawClient::connect(d.socket()).await;
    for i in 0..400 {
        c.write(&format!("/c/{}", i % 50), &format!("value {i}"))
            .await;
    }
    drop(c);
    stop(d);
    // Stopping waited for the compaction under way; older segments are
    // gone and what is left replays to the same store.
    let snapshot = state_file::read_snapshot(&s.state()).unwrap();
    assert!(snapshot.epoch > 0, "at least one compaction ran");
    assert!(!segment_path(&s.state(), snapshot.epoch - 1).exists());
    assert!(segment_path(&s.state(), snapshot.epoch).exists());
    let store = load_state(&s.state()).unwrap();
    for k in 0..50 {
        let last = (0..400).rev().find(|i| i % 50 == k).unwrap();
        assert_eq!(
            store.node(&format!("/c/{k}")).unwrap().value,
            format!("value {last}").as_bytes()
        );
    }
    let d = Daemon::start(config, &Handle::current()).unwrap();
    let mut c = RawClient::connect(d.socket()).await;
    assert_eq!(c.read("/c/49").await, Ok("value 399".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_last_record_is_dropped_and_earlier_ones_kept() {
    let s = Setup::new();
    let d = s.start();
    let mut c = RawClient::connect(d.socket()).await;
    c.write("/t/1", "one").await;
    c.write("/t/2", "two").await;
    drop(c);
    stop(d);
    let seg = segment_path(&s.state(), 0);
    let len = std::fs::metadata(&seg).unwrap().len();
    // A crash in the middle of the last append.
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(len - 3).unwrap();
    drop(f);
    let d = s.start();
    let mut c = RawClient::connect(d.socket()).await;
    assert_eq!(c.read("/t/1").await, Ok("one".into()));
    assert_eq!(c.read("/t/2").await, Err("ENOENT".into()));
    // The torn bytes were cut off: new records follow whole ones.
    c.write("/t/3", "three").await;
    drop(c);
    stop(d);
    let store = load_state(&s.state()).unwrap();
    assert_eq!(store.node("/t/3").unwrap().value, b"three");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_closed_segment_refuses_to_start() {
    let s = Setup::new();
    let mut config = s.config();
    config.compact_floor = 1;
    // Segment 0 is closed once a second one exists; keep both by making
    // the compactor's snapshot impossible (a directory in its way).
    std::fs::create_dir(s.state().with_file_name("state.tmp")).unwrap();
    let d = Daemon::start(config.clone(), &Handle::current()).unwrap();
    let mut c = RawClient::connect(d.socket()).await;
    c.write("/d/1", "one").await;
    c.write("/d/2", "two").await;
    drop(c);
    stop(d);
    let seg0 = segment_path(&s.state(), 0);
    assert!(segment_path(&s.state(), 1).exists());
    let mut bytes = std::fs::read(&seg0).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&seg0, bytes).unwrap();
    let err = Daemon::start(config, &Handle::current()).err().unwrap();
    assert!(err.to_string().contains("damaged"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_fsync_an_acknowledged_write_is_in_the_journal_before_its_reply() {
    let s = Setup::new();
    let mut config = s.config();
    config.fsync = false;
    let d = Daemon::start(config, &Handle::current()).unwrap();
    let mut c = RawClient::connect(d.socket()).await;
    for i in 0..20 {
        c.write(&format!("/nofsync/{i}"), "v").await;
        // As if the daemon were killed right after the reply.
        let store = load_state(&s.state()).unwrap();
        assert!(store.node(&format!("/nofsync/{i}")).is_some(), "write {i}");
    }
    assert_eq!(d.stats().persists.load(Relaxed), 20);
}
