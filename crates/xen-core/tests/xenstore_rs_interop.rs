//! An independent client, the `xenstore-rs` crate, against our daemon: it
//! finds the daemon through XENSTORED_PATH as it would find C xenstored.
//!
//! xenstore-rs 0.8 declares a transaction trait but implements it for none
//! of its clients, so transactions are exercised here with raw frames built
//! by hand (no xen-core code on the client side), and with Xen's own C
//! library in the xenstore-utils test, whose tools write inside transactions.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use xen_core::xenstored::{Config, Daemon};
use xenstore_rs::tokio::XsTokio;
use xenstore_rs::unix::XsUnix;
use xenstore_rs::{AsyncWatch, AsyncXs, Xs};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xenstore_rs_reads_writes_lists_removes_transacts_and_watches() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new(dir.path().join("xenstored.sock"));
    config.log = Arc::new(|_| {});
    let daemon = Daemon::start(config, &tokio::runtime::Handle::current()).unwrap();
    // The only test in this binary: nothing else reads the environment.
    std::env::set_var("XENSTORED_PATH", daemon.socket());

    // Watches, with the crate's tokio client.
    let xs_async = XsTokio::new().await.unwrap();
    let mut events = xs_async.watch("/interop").await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&*first, "/interop");

    // Blocking client in a blocking thread.
    let done = tokio::task::spawn_blocking(|| {
        let xs = XsUnix::new().unwrap();
        xs.write("/interop/a", "1").unwrap();
        xs.write("/interop/b", "2").unwrap();
        assert_eq!(&*xs.read("/interop/a").unwrap(), "1");
        let mut names: Vec<String> = xs
            .directory("/interop")
            .unwrap()
            .iter()
            .map(|s| s.to_string())
            .collect();
        names.sort();
        assert_eq!(names, ["a", "b"]);
        xs.rm("/interop/b").unwrap();
        assert!(xs.read("/interop/b").is_err());

        transaction_by_hand(&std::env::var("XENSTORED_PATH").unwrap());
        assert_eq!(&*xs.read("/interop/tx").unwrap(), "committed");
    });
    done.await.unwrap();

    // The writes above reached the watcher.
    let mut seen = Vec::new();
    while !seen.iter().any(|p: &String| p == "/interop/tx") {
        let ev = tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .expect("watch event")
            .unwrap();
        seen.push(ev.to_string());
    }
    assert!(seen.contains(&"/interop/a".to_string()), "{seen:?}");
    assert!(seen.contains(&"/interop/b".to_string()), "{seen:?}");
    assert_eq!(&*xs_async.read("/interop/a").await.unwrap(), "1");
}

/// TRANSACTION_START, a WRITE in it, TRANSACTION_END, as bytes on a socket.
fn transaction_by_hand(socket: &str) {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(socket).unwrap();
    let mut call = |ty: u32, tx: u32, payload: &[u8]| -> (u32, Vec<u8>) {
        let mut frame = Vec::new();
        for word in [ty, 1, tx, payload.len() as u32] {
            frame.extend_from_slice(&word.to_le_bytes());
        }
        frame.extend_from_slice(payload);
        s.write_all(&frame).unwrap();
        let mut header = [0u8; 16];
        s.read_exact(&mut header).unwrap();
        let word = |i: usize| u32::from_le_bytes(header[i..i + 4].try_into().unwrap());
        let mut body = vec![0u8; word(12) as usize];
        s.read_exact(&mut body).unwrap();
        (word(0), body)
    };
    let (ty, id) = call(6, 0, b"\0");
    assert_eq!(ty, 6);
    let tx: u32 = std::str::from_utf8(&id[..id.len() - 1])
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        call(11, tx, b"/interop/tx\0committed"),
        (11, b"OK\0".to_vec())
    );
    assert_eq!(call(7, tx, b"T\0"), (7, b"OK\0".to_vec()));
}
