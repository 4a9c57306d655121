//! Bad input, by property tests and over sockets: malformed frames and
//! payloads get an error reply with the right errno (or, for a frame that
//! cannot be delimited, that one connection is closed); the daemon never
//! panics and other clients keep working.

use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use xen_core::store::Store;
use xen_core::wire::{payload, Errno, FrameDecoder, Message, MsgType, PAYLOAD_MAX};
use xen_core::xenstored::{Config, Daemon};

fn arb_path() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"/".to_vec()),
        "(/[a-z]{1,3}){1,4}".prop_map(String::into_bytes),
        "[a-z]{1,3}(/[a-z]{1,3}){0,2}".prop_map(String::into_bytes),
        Just(b"@releaseDomain".to_vec()),
        Just(b"@introduceDomain".to_vec()),
        Just(b"/local/domain/5/data".to_vec()),
        Just(format!("/{}", "x".repeat(3100)).into_bytes()),
        Just(b"/a//b".to_vec()),
        Just(b"/a/".to_vec()),
        Just(b"/sp ace".to_vec()),
        prop::collection::vec(any::<u8>(), 0..24),
    ]
}

fn arb_payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        // One path, NUL-terminated or not.
        (arb_path(), any::<bool>()).prop_map(|(mut p, nul)| {
            if nul {
                p.push(0);
            }
            p
        }),
        // Several NUL-separated strings.
        prop::collection::vec(arb_path(), 0..4).prop_map(|v| payload::join(&v)),
        // Garbage.
        prop::collection::vec(any::<u8>(), 0..64),
    ]
}

fn arb_message() -> impl Strategy<Value = Message> {
    (
        prop_oneof![0u32..28, Just(0xffff), any::<u32>()],
        any::<u32>(),
        prop_oneof![Just(0u32), 1u32..4, any::<u32>()],
        arb_payload(),
    )
        .prop_map(|(ty, req_id, tx_id, payload)| Message {
            ty,
            req_id,
            tx_id,
            payload,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The decoder never panics, returns only messages within the limit, and
    /// reports an oversized length instead of waiting for it.
    #[test]
    fn decoder_survives_any_bytes(chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..80), 0..20)) {
        let mut d = FrameDecoder::new();
        'outer: for c in chunks {
            d.push(&c);
            loop {
                match d.next_message() {
                    Ok(Some(m)) => prop_assert!(m.payload.len() <= PAYLOAD_MAX),
                    Ok(None) => break,
                    Err(_) => break 'outer,
                }
            }
        }
    }

    /// Every request, however malformed, gets exactly one reply that echoes
    /// its ids and is either of its own type or an ERROR naming a known
    /// errno; the store stays consistent.
    #[test]
    fn engine_answers_every_request_once(msgs in prop::collection::vec((arb_message(), any::<bool>()), 1..40)) {
        let mut store = Store::new();
        let dom0 = store.connect(0);
        let guest = store.connect(5);
        for (msg, as_guest) in msgs {
            let conn = if as_guest { guest } else { dom0 };
            if !store.is_connected(conn) {
                continue; // released by a RELEASE in the sequence
            }
            let out = store.handle(conn, &msg);
            let replies: Vec<&Message> = out
                .for_conn(conn)
                .filter(|m| m.ty != MsgType::WatchEvent as u32)
                .collect();
            prop_assert_eq!(replies.len(), 1, "{:?} -> {:?}", msg, out);
            let r = replies[0];
            prop_assert_eq!((r.req_id, r.tx_id), (msg.req_id, msg.tx_id));
            prop_assert!(r.payload.len() <= PAYLOAD_MAX);
            match r.as_error() {
                Some(e) => prop_assert!(e.is_ok(), "unknown errno in {:?}", r),
                None => prop_assert_eq!(r.ty, msg.ty),
            }
            for d in &out.deliveries {
                prop_assert!(d.msg.fits());
            }
        }
        prop_assert_eq!(store.check(), Ok(()));
    }
}

fn err_of(store: &mut Store, conn: u64, ty: u32, tx: u32, p: &[u8]) -> Option<Errno> {
    let out = store.handle(
        conn,
        &Message {
            ty,
            req_id: 9,
            tx_id: tx,
            payload: p.to_vec(),
        },
    );
    out.deliveries[0].msg.as_error().map(|e| e.unwrap())
}

#[test]
fn each_kind_of_malformed_request_gets_its_errno() {
    let mut s = Store::new();
    let c = s.connect(0);
    let long = format!("/{}\0", "a".repeat(3072));
    let cases: [(u32, u32, &[u8], Errno); 9] = [
        (9999, 0, b"/\0", Errno::ENOSYS),
        (MsgType::WatchEvent as u32, 0, b"/\0t\0", Errno::ENOSYS),
        (MsgType::Restrict as u32, 0, b"1\0", Errno::ENOSYS),
        (MsgType::Read as u32, 0, b"/tool", Errno::EINVAL),
        (MsgType::Directory as u32, 0, b"/tool", Errno::EINVAL),
        (MsgType::Read as u32, 42, b"/tool\0", Errno::ENOENT),
        (MsgType::Read as u32, 0, long.as_bytes(), Errno::EINVAL),
        (MsgType::Write as u32, 0, b"/bad*char\0v", Errno::EINVAL),
        (MsgType::TransactionEnd as u32, 0, b"T\0", Errno::ENOENT),
    ];
    for (ty, tx, p, want) in cases {
        assert_eq!(err_of(&mut s, c, ty, tx, p), Some(want), "type {ty} {p:?}");
    }
    // C xenstored's robustness gap: DIRECTORY without its NUL after a good
    // request. Here it is EINVAL and the connection goes on.
    assert_eq!(err_of(&mut s, c, MsgType::Read as u32, 0, b"/tool\0"), None);
    assert_eq!(
        err_of(&mut s, c, MsgType::Directory as u32, 0, b"/tool"),
        Some(Errno::EINVAL)
    );
    assert_eq!(
        err_of(&mut s, c, MsgType::Directory as u32, 0, b"/tool\0"),
        None
    );
}

async fn read_frame(s: &mut UnixStream, d: &mut FrameDecoder) -> Option<Message> {
    let mut buf = [0u8; 4096];
    loop {
        if let Some(m) = d.next_message().unwrap() {
            return Some(m);
        }
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => d.push(&buf[..n]),
            _ => return None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_survives_garbage_on_many_connections() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new(dir.path().join("xs.sock"));
    config.log = Arc::new(|_| {});
    let daemon = Daemon::start(config, &tokio::runtime::Handle::current()).unwrap();
    let socket = daemon.socket().to_owned();

    let mut good = UnixStream::connect(&socket).await.unwrap();
    let mut good_dec = FrameDecoder::new();
    let mut rng = proptest::test_runner::TestRunner::deterministic();
    for round in 0..40u32 {
        // A bad client: a valid prefix, then random bytes, then maybe an
        // oversized header.
        let mut bad = UnixStream::connect(&socket).await.unwrap();
        let mut bytes = Message::new(MsgType::Write, 1, 0, b"/junk\0x".to_vec()).encode();
        let noise = prop::collection::vec(any::<u8>(), 0..300)
            .new_tree(&mut rng)
            .unwrap()
            .current();
        bytes.extend_from_slice(&noise);
        if round % 3 == 0 {
            let mut h = Message::new(MsgType::Read, 2, 0, Vec::new()).encode();
            h[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
            bytes.extend_from_slice(&h);
        }
        let _ = bad.write_all(&bytes).await;
        let _ = bad.shutdown().await;

        // Meanwhile the good client is served.
        let path = format!("/good/{round}");
        let mut p = path.as_bytes().to_vec();
        p.push(0);
        p.extend_from_slice(b"ok");
        good.write_all(&Message::new(MsgType::Write, round, 0, p).encode())
            .await
            .unwrap();
        let reply = read_frame(&mut good, &mut good_dec)
            .await
            .expect("good client served");
        assert_eq!((reply.ty, reply.req_id), (MsgType::Write as u32, round));
    }
    let nodes = daemon
        .inspect_async(|s| {
            s.check().unwrap();
            s.node_count()
        })
        .await;
    assert!(nodes > 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_guest_hits_its_quotas_and_nobody_else_does() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new(dir.path().join("xs.sock"));
    config.log = Arc::new(|_| {});
    let daemon = Daemon::start(config, &tokio::runtime::Handle::current()).unwrap();
    let mut dom0 = xen_core_test_client(daemon.socket()).await;
    for d in [5, 6] {
        dom0.ok(
            MsgType::Write,
            &[format!("/local/domain/{d}/data").as_str()],
            b"",
        )
        .await;
        dom0.ok(
            MsgType::SetPerms,
            &[&format!("/local/domain/{d}/data"), &format!("n{d}")],
            b"",
        )
        .await;
        dom0.ok(MsgType::Introduce, &[&d.to_string(), "1", "1"], b"")
            .await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut flood = xen_core_test_client(&daemon.domain_socket(5)).await;
    let mut other = xen_core_test_client(&daemon.domain_socket(6)).await;

    let mut enospc = [0u32; 3];
    for i in 0..1100 {
        // Spread over 40 directories: one long children list would hit the
        // node-size quota of its parent first.
        let path = format!("data/g{}/n{}", i % 40, i / 40);
        if flood.call(MsgType::Write, &[&path], b"v").await == Some(Errno::ENOSPC) {
            enospc[0] += 1;
        }
    }
    for i in 0..150 {
        if flood
            .call(MsgType::Watch, &["data", &format!("t{i}")], b"")
            .await
            == Some(Errno::ENOSPC)
        {
            enospc[1] += 1;
        }
    }
    for _ in 0..15 {
        if flood.call(MsgType::TransactionStart, &[""], b"").await == Some(Errno::ENOSPC) {
            enospc[2] += 1;
        }
    }
    // 1000 nodes per domain: `data`, then 40 writes of two nodes each, then
    // 919 of one; the remaining 141 fail. 128 watches; 10 transactions.
    assert_eq!(enospc, [141, 22, 5]);
    // Another domain and dom0 are unaffected.
    assert_eq!(other.call(MsgType::Write, &["data/mine"], b"1").await, None);
    assert_eq!(other.call(MsgType::Watch, &["data", "w"], b"").await, None);
    assert_eq!(
        dom0.call(MsgType::Write, &["/dom0/after"], b"1").await,
        None
    );
    let used = daemon.inspect_async(|s| s.usage(5)).await;
    assert_eq!(used.nodes, 1000);
    assert!(used.memory < 2_621_440);
}

struct TestClient {
    s: UnixStream,
    d: FrameDecoder,
    id: u32,
}

async fn xen_core_test_client(path: &std::path::Path) -> TestClient {
    TestClient {
        s: UnixStream::connect(path).await.unwrap(),
        d: FrameDecoder::new(),
        id: 0,
    }
}

impl TestClient {
    /// Sends strings (and, for WRITE, a value after the path) and returns the
    /// error, if any.
    async fn call(&mut self, ty: MsgType, parts: &[&str], value: &[u8]) -> Option<Errno> {
        self.id += 1;
        let p = if ty == MsgType::Write {
            [parts[0].as_bytes(), b"\0", value].concat()
        } else {
            payload::join(parts)
        };
        self.s
            .write_all(&Message::new(ty, self.id, 0, p).encode())
            .await
            .unwrap();
        loop {
            let m = read_frame(&mut self.s, &mut self.d).await.expect("reply");
            if m.ty == MsgType::WatchEvent as u32 {
                continue;
            }
            assert_eq!(m.req_id, self.id);
            return m.as_error().map(|e| e.unwrap());
        }
    }

    async fn ok(&mut self, ty: MsgType, parts: &[&str], value: &[u8]) {
        assert_eq!(self.call(ty, parts, value).await, None, "{ty:?} {parts:?}");
    }
}
