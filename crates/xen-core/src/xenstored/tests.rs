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
    // The reply came after the state was written: as if killed now.
    let restored = load_state(&state).unwrap();
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

/// Log lines, kept for the test to read.
fn capture_log(config: &mut Config) -> Arc<std::sync::Mutex<Vec<String>>> {
    let lines = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = lines.clone();
    config.log = Arc::new(move |line| sink.lock().unwrap().push(line.to_owned()));
    lines
}

async fn introduce(dom0: &mut RawClient, d: &Daemon, domid: u32) {
    let r = dom0
        .call_strs(MsgType::Introduce, &[&domid.to_string(), "1", "1"])
        .await;
    assert_eq!(r.as_error(), None);
    assert!(d.domain_socket(domid).exists());
}

/// Sends a READ and waits for its reply: false if the daemon closes the
/// connection instead (a refused connection may be closed before the
/// request is even written, so a failed write is no error here).
async fn answered<S>(stream: &mut S) -> bool
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let req = Message::new(MsgType::Read, 42, 0, b"/\0".to_vec());
    let _ = stream.write_all(&req.encode()).await;
    let mut decoder = crate::wire::FrameDecoder::new();
    let mut buf = [0u8; 4096];
    loop {
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf));
        match read.await.expect("neither a reply nor a close") {
            Ok(0) | Err(_) => return false,
            Ok(n) => decoder.push(&buf[..n]),
        }
        if let Some(m) = decoder.next_message().unwrap() {
            assert_eq!(m.req_id, 42);
            return true;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_domain_socket_serves_a_bounded_number_of_connections() {
    use tokio::net::UnixStream;
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new(dir.path().join("xs.sock"));
    let log = capture_log(&mut config);
    assert_eq!(config.max_domain_connections, 8);
    let d = Daemon::start(config, &Handle::current()).unwrap();
    let mut dom0 = RawClient::connect(d.socket()).await;
    introduce(&mut dom0, &d, 5).await;
    introduce(&mut dom0, &d, 6).await;

    let mut opened = Vec::new();
    for _ in 0..20 {
        opened.push(UnixStream::connect(d.domain_socket(5)).await.unwrap());
    }
    let mut served = Vec::new();
    for mut c in opened {
        if answered(&mut c).await {
            served.push(c);
        }
    }
    assert_eq!(served.len(), 8);
    assert_eq!(d.stats().refused.load(Ordering::Relaxed), 12);
    let refusals = log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| *l == "domain 5: connection refused, 8 connections open (limit 8)")
        .count();
    assert_eq!(refusals, 12);
    // Those served keep being served; another domain and in-process
    // connections are not affected.
    for c in &mut served {
        assert!(answered(c).await);
    }
    let mut other = UnixStream::connect(d.domain_socket(6)).await.unwrap();
    assert!(answered(&mut other).await);
    let mut local = d.connect_local(5);
    assert!(answered(&mut local).await);

    // Closing three makes room for three more, and no more. The places come
    // back once the daemon has seen the connections end.
    served.truncate(5);
    let mut readmitted = 0;
    for _ in 0..1000 {
        if readmitted == 3 {
            break;
        }
        let mut c = UnixStream::connect(d.domain_socket(5)).await.unwrap();
        if answered(&mut c).await {
            served.push(c);
            readmitted += 1;
        } else {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    assert_eq!(readmitted, 3);
    let mut ninth = UnixStream::connect(d.domain_socket(5)).await.unwrap();
    assert!(!answered(&mut ninth).await);

    // dom0's socket has no such limit.
    let mut privileged = Vec::new();
    for _ in 0..20 {
        let mut c = UnixStream::connect(d.socket()).await.unwrap();
        assert!(answered(&mut c).await);
        privileged.push(c);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_that_stops_reading_holds_no_more_than_its_output_budget() {
    const BUDGET: usize = 32 * 1024;
    const WRITES: usize = 2000;
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new(dir.path().join("xs.sock"));
    quiet(&mut config);
    config.max_domain_output = BUDGET;
    // Only the budget drops events here.
    config.max_queued_events = usize::MAX;
    let d = Daemon::start(config, &Handle::current()).unwrap();
    let mut dom0 = RawClient::connect(d.socket()).await;
    dom0.write("/local/domain/5/data", "").await;
    let r = dom0
        .call_strs(MsgType::SetPerms, &["/local/domain/5/data", "n5"])
        .await;
    assert_eq!(r.as_error(), None);
    introduce(&mut dom0, &d, 5).await;

    // Three connections of the guest watch its data, with long tokens so
    // that a few dozen events fill the budget.
    let mut guests = Vec::new();
    for i in 0..3 {
        let mut g = RawClient::connect(&d.domain_socket(5)).await;
        let token = format!("{i}{}", "t".repeat(1000));
        let r = g.call_strs(MsgType::Watch, &["data", &token]).await;
        assert_eq!(r.as_error(), None);
        guests.push((g, token));
    }

    // dom0 fires WRITES events at each connection; the guest reads nothing.
    // Megabytes of events, far more than the sockets' buffers hold.
    let mut peak = 0;
    for batch in 0..WRITES / 100 {
        let mut bytes = Vec::new();
        for n in batch * 100..(batch + 1) * 100 {
            let p = format!("/local/domain/5/data/n{n:05}\0v").into_bytes();
            Message::new(MsgType::Write, n as u32, 0, p).encode_into(&mut bytes);
        }
        dom0.send_bytes(&bytes).await;
        for _ in 0..100 {
            let r = dom0.recv().await.expect("dom0 is served");
            assert_eq!(r.as_error(), None);
        }
        let pending = d.pending_output(5);
        assert!(pending <= BUDGET, "{pending} bytes pending for domain 5");
        peak = peak.max(pending);
    }
    assert!(peak > BUDGET / 2, "the budget was never filled: {peak}");

    // Requests while over the budget: their replies are kept.
    for (g, _) in &mut guests {
        let mut bytes = Vec::new();
        for id in 9000..9003 {
            Message::new(MsgType::Read, id, 0, b"data\0".to_vec()).encode_into(&mut bytes);
        }
        g.send_bytes(&bytes).await;
    }

    // The guest reads at last: in order, the newest events and every reply.
    let mut newest_seen = false;
    let mut received = 0;
    for (g, token) in &mut guests {
        let mut events = Vec::new();
        let mut replies = Vec::new();
        while replies.len() < 3 {
            let m = g.recv().await.expect("the connection stays open");
            if m.ty == MsgType::WatchEvent as u32 {
                let parts = payload::strings(&m.payload).unwrap();
                assert_eq!(parts[1], token.as_str());
                if let Some(n) = parts[0].strip_prefix("data/n") {
                    events.push(n.parse::<usize>().unwrap());
                }
            } else {
                assert_eq!(m.as_error(), None);
                replies.push(m.req_id);
            }
        }
        assert_eq!(replies, [9000, 9001, 9002]);
        assert!(events.windows(2).all(|w| w[0] < w[1]), "{events:?}");
        received += events.len();
        newest_seen |= events.last() == Some(&(WRITES - 1));
    }
    assert!(newest_seen, "the newest event was dropped");
    assert!(
        received < WRITES,
        "{received} of {} events delivered",
        3 * WRITES
    );
    // Everything queued was taken.
    assert_eq!(d.pending_output(5), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_whose_unread_replies_outgrow_the_budget_is_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const BUDGET: usize = 16 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new(dir.path().join("xs.sock"));
    let log = capture_log(&mut config);
    config.max_domain_output = BUDGET;
    let d = Daemon::start(config, &Handle::current()).unwrap();
    let mut dom0 = RawClient::connect(d.socket()).await;
    dom0.write("/local/domain/5/data", &"x".repeat(4000)).await;
    let r = dom0
        .call_strs(MsgType::SetPerms, &["/local/domain/5/data", "n5"])
        .await;
    assert_eq!(r.as_error(), None);
    introduce(&mut dom0, &d, 5).await;
    // A quota of outstanding requests larger than the budget is what lets
    // replies alone outgrow it.
    let r = dom0
        .call_strs(MsgType::SetQuota, &["5", "outstanding", "1000"])
        .await;
    assert_eq!(r.as_error(), None);
    let mut bystander = RawClient::connect(&d.domain_socket(5)).await;
    let mut flood = tokio::net::UnixStream::connect(d.domain_socket(5))
        .await
        .unwrap();
    // 500 reads of 4 KB each, and no reading.
    let mut bytes = Vec::new();
    for id in 0..500 {
        Message::new(MsgType::Read, id, 0, b"data\0".to_vec()).encode_into(&mut bytes);
    }
    let _ = flood.write_all(&bytes).await;
    let killed = || {
        log.lock().unwrap().iter().any(|l| {
            l.starts_with("closing connection of domain 5: ") && l.contains("unread replies")
        })
    };
    for _ in 0..1000 {
        if killed() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(killed(), "{:?}", log.lock().unwrap());
    // What reached the socket before can be read, then the connection ends.
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0;
    loop {
        let read = tokio::time::timeout(Duration::from_secs(10), flood.read(&mut buf));
        match read.await.expect("the connection was closed") {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    assert!(got < 500 * 4016, "{got} bytes of replies");
    // The killed connection's output went with it; the domain's other
    // connection is served.
    assert_eq!(d.pending_output(5), 0);
    assert_eq!(bystander.read("data").await.map(|v| v.len()), Ok(4000));
}
