//! The client against the embedded daemon.

use std::time::Duration;

use tokio::runtime::Handle;

use super::*;
use crate::wire::perms::Access;
use crate::xenstored::{Config, Daemon};

fn daemon(dir: &std::path::Path) -> Daemon {
    let mut c = Config::new(dir.join("xs.sock"));
    c.log = Arc::new(|_| {});
    Daemon::start(c, &Handle::current()).unwrap()
}

async fn client(d: &Daemon) -> XsClient {
    XsClient::connect(Endpoint::Unix(d.socket().to_owned()), Options::default())
        .await
        .unwrap()
}

async fn next_event(rx: &mut mpsc::UnboundedReceiver<WatchEvent>) -> WatchEvent {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("event in time")
        .expect("event stream open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_writes_lists_and_removes() {
    let dir = tempfile::tempdir().unwrap();
    let d = daemon(dir.path());
    let c = client(&d).await;
    c.write(None, "/c/a", b"1").await.unwrap();
    c.write(None, "/c/b", b"\x00\xff").await.unwrap();
    assert_eq!(c.read(None, "/c/b").await.unwrap(), b"\x00\xff");
    assert_eq!(c.directory(None, "/c").await.unwrap(), ["a", "b"]);
    c.rm(None, "/c/a").await.unwrap();
    let e = c.read(None, "/c/a").await.unwrap_err();
    assert_eq!(e.errno(), Some(Errno::ENOENT));
    assert_eq!(e.code(), "ENOENT");
    c.mkdir(None, "/c/d").await.unwrap();
    c.set_perms(
        None,
        "/c/d",
        &[Perm::new(0, Access::None), Perm::new(3, Access::Read)],
    )
    .await
    .unwrap();
    assert_eq!(
        c.get_perms(None, "/c/d").await.unwrap(),
        [Perm::new(0, Access::None), Perm::new(3, Access::Read)]
    );
    assert_eq!(c.get_domain_path(4).await.unwrap(), "/local/domain/4");
    assert_eq!(c.control(&["check"]).await.unwrap(), "OK");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_requests_are_matched_by_id() {
    let dir = tempfile::tempdir().unwrap();
    let d = daemon(dir.path());
    let c = client(&d).await;
    let mut tasks = Vec::new();
    for i in 0..200 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let path = format!("/con/{i}");
            c.write(None, &path, i.to_string().as_bytes())
                .await
                .unwrap();
            c.read(None, &path).await.unwrap()
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        assert_eq!(t.await.unwrap(), i.to_string().into_bytes());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_directories_come_in_parts() {
    let dir = tempfile::tempdir().unwrap();
    let d = daemon(dir.path());
    let c = client(&d).await;
    let names: Vec<String> = (0..600).map(|i| format!("entry-number-{i:05}")).collect();
    let tx = c.transaction_start().await.unwrap();
    for n in &names {
        c.write(Some(tx), &format!("/long/{n}"), b"").await.unwrap();
    }
    c.transaction_end(tx, true).await.unwrap();
    assert_eq!(c.directory(None, "/long").await.unwrap(), names);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_events_are_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let d = daemon(dir.path());
    let c = client(&d).await;
    let mut events = c.take_events().unwrap();
    assert!(c.take_events().is_none());
    c.watch("/ev", "t1").await.unwrap();
    assert_eq!(
        next_event(&mut events).await,
        WatchEvent {
            path: "/ev".into(),
            token: "t1".into()
        }
    );
    c.write(None, "/ev/x", b"").await.unwrap();
    assert_eq!(next_event(&mut events).await.path, "/ev/x");
    c.unwatch("/ev", "t1").await.unwrap();
    c.write(None, "/ev/y", b"").await.unwrap();
    c.watch("/other", "t2").await.unwrap();
    assert_eq!(next_event(&mut events).await.token, "t2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_commit_or_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let d = daemon(dir.path());
    let c = client(&d).await;
    let other = client(&d).await;
    c.write(None, "/t/k", b"0").await.unwrap();
    let tx = c.transaction_start().await.unwrap();
    assert_eq!(c.read(Some(tx), "/t/k").await.unwrap(), b"0");
    c.write(Some(tx), "/t/k", b"1").await.unwrap();
    other.write(None, "/t/k", b"2").await.unwrap();
    let e = c.transaction_end(tx, true).await.unwrap_err();
    assert_eq!(e.errno(), Some(Errno::EAGAIN));
    assert_eq!(c.read(None, "/t/k").await.unwrap(), b"2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_requests_are_refused_locally() {
    let dir = tempfile::tempdir().unwrap();
    let d = daemon(dir.path());
    let c = client(&d).await;
    let e = c.write(None, "/big", &[b'x'; 5000]).await.unwrap_err();
    assert_eq!(e.errno(), Some(Errno::E2BIG));
    // The connection is still good.
    c.write(None, "/small", b"ok").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_after_a_restart_and_keeps_its_watches() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new(dir.path().join("xs.sock"));
    config.log = Arc::new(|_| {});
    config.state_file = Some(dir.path().join("state"));
    let d = Daemon::start(config.clone(), &Handle::current()).unwrap();
    let c = client(&d).await;
    let mut events = c.take_events().unwrap();
    let mut state = c.state();
    c.watch("/rw", "keep").await.unwrap();
    next_event(&mut events).await;
    c.write(None, "/rw/before", b"1").await.unwrap();
    next_event(&mut events).await;
    let tx = c.transaction_start().await.unwrap();

    tokio::task::block_in_place(|| d.stop());
    let d = Daemon::start(config, &Handle::current()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), async {
        while !matches!(*state.borrow_and_update(), State::Connected(2)) {
            state.changed().await.unwrap();
        }
    })
    .await
    .expect("reconnected");
    // The watch was registered again and fired once.
    assert_eq!(
        next_event(&mut events).await,
        WatchEvent {
            path: "/rw".into(),
            token: "keep".into()
        }
    );
    assert_eq!(c.read(None, "/rw/before").await.unwrap(), b"1");
    // The old transaction is gone: EAGAIN, so a retry loop starts over.
    let e = c.write(Some(tx), "/rw/in-tx", b"").await.unwrap_err();
    assert_eq!(e.errno(), Some(Errno::EAGAIN));
    c.write(None, "/rw/after", b"2").await.unwrap();
    assert_eq!(next_event(&mut events).await.path, "/rw/after");
    drop(d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_reconnect_requests_fail_once_the_daemon_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let d = daemon(dir.path());
    let c = XsClient::connect(
        Endpoint::Unix(d.socket().to_owned()),
        Options {
            reconnect: false,
            ..Options::default()
        },
    )
    .await
    .unwrap();
    c.write(None, "/x", b"").await.unwrap();
    tokio::task::block_in_place(|| d.stop());
    let mut state = c.state();
    tokio::time::timeout(Duration::from_secs(5), async {
        while *state.borrow_and_update() != State::Closed {
            state.changed().await.unwrap();
        }
    })
    .await
    .unwrap();
    let e = c.read(None, "/x").await.unwrap_err();
    assert_eq!(e.code(), "ESHUTDOWN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_to_nothing_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let e = XsClient::connect(Endpoint::Unix(dir.path().join("none")), Options::default())
        .await
        .err()
        .unwrap();
    assert_eq!(e.code(), "ECONNREFUSED");
    assert!(e.to_string().contains("none"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_connections_act_as_their_domain() {
    let dir = tempfile::tempdir().unwrap();
    let d = Arc::new(daemon(dir.path()));
    let admin = client(&d).await;
    admin.write(None, "/secret", b"s").await.unwrap();
    let daemon = d.clone();
    let connector: endpoint::Connector = Arc::new(move || {
        let (r, w) = tokio::io::split(daemon.connect_local(5));
        Ok((Box::pin(r), Box::pin(w)))
    });
    let guest = XsClient::connect(Endpoint::Local(connector), Options::default())
        .await
        .unwrap();
    let e = guest.read(None, "/secret").await.unwrap_err();
    assert_eq!(e.errno(), Some(Errno::EACCES));
}
