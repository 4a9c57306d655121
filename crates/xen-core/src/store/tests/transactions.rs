//! Transactions and the quotas that bind guests.

use super::*;

#[test]
fn transactions_isolate_until_commit() {
    let mut h = H::new();
    let d0 = h.s.connect(0);
    let other = h.s.connect(0);
    h.watch(other, "/tx", "w");
    let t = h.start(d0);
    assert_eq!(t, 1);
    let (r, out) = h.send(d0, MsgType::Write, t, b"/tx/a\0inside");
    assert!(r.is_ok());
    assert!(events(&out).is_empty(), "no event before commit");
    assert_eq!(h.read_tx(d0, t, "/tx/a").unwrap(), "inside");
    assert_eq!(h.read(d0, "/tx/a"), Err(Errno::ENOENT));
    let (r, out) = h.end(d0, t, true);
    assert_eq!(r, Ok(()));
    assert_eq!(events(&out), [ev(other, "/tx/a", "w")]);
    assert_eq!(h.read(d0, "/tx/a").unwrap(), "inside");
    // Ids keep counting.
    assert_eq!(h.start(d0), 2);
}

#[test]
fn transaction_reads_are_stable_and_conflicts_are_eagain() {
    let mut h = H::new();
    let d0 = h.s.connect(0);
    let outside = h.s.connect(0);
    h.write(d0, "/c/k", "1").unwrap();
    let t = h.start(d0);
    assert_eq!(h.read_tx(d0, t, "/c/k").unwrap(), "1");
    h.write(outside, "/c/k", "2").unwrap();
    assert_eq!(h.read_tx(d0, t, "/c/k").unwrap(), "1");
    h.write_tx(d0, t, "/c/other", "x").unwrap();
    let (r, out) = h.end(d0, t, true);
    assert_eq!(r, Err(Errno::EAGAIN));
    assert!(events(&out).is_empty());
    assert_eq!(h.read(d0, "/c/other"), Err(Errno::ENOENT));
    // The transaction is gone after EAGAIN.
    assert_eq!(h.end(d0, t, true).0, Err(Errno::ENOENT));
    // A transaction that read nothing another changed commits.
    let t = h.start(d0);
    h.write_tx(d0, t, "/c/k", "3").unwrap();
    h.write(outside, "/unrelated", "z").unwrap();
    assert_eq!(h.end(d0, t, true).0, Ok(()));
    assert_eq!(h.read(d0, "/c/k").unwrap(), "3");
}

#[test]
fn deleting_a_node_read_in_a_transaction_conflicts() {
    let mut h = H::new();
    let d0 = h.s.connect(0);
    let outside = h.s.connect(0);
    h.write(d0, "/del/k", "1").unwrap();
    let t = h.start(d0);
    h.read_tx(d0, t, "/del/k").unwrap();
    h.req(outside, MsgType::Rm, 0, &["/del/k"]).unwrap();
    assert_eq!(h.end(d0, t, true).0, Err(Errno::EAGAIN));
}

#[test]
fn rm_and_recreate_inside_a_transaction() {
    let mut h = H::new();
    let d0 = h.s.connect(0);
    let w = h.s.connect(0);
    h.write(d0, "/rr/a/b", "old").unwrap();
    h.watch(w, "/rr", "w");
    let t = h.start(d0);
    h.send(d0, MsgType::Rm, t, b"/rr/a\0").0.unwrap();
    // The live tree is untouched until commit.
    assert_eq!(h.read(d0, "/rr/a/b").unwrap(), "old");
    assert_eq!(h.read_tx(d0, t, "/rr/a/b"), Err(Errno::ENOENT));
    h.write_tx(d0, t, "/rr/a/c", "new").unwrap();
    let (r, out) = h.end(d0, t, true);
    assert_eq!(r, Ok(()));
    let got: Vec<String> = events(&out).into_iter().map(|e| e.1).collect();
    assert_eq!(got, ["/rr/a", "/rr/a/c"]);
    assert_eq!(h.read(d0, "/rr/a/b"), Err(Errno::ENOENT));
    assert_eq!(h.read(d0, "/rr/a/c").unwrap(), "new");
    assert_eq!(h.s.check(), Ok(()));
}

#[test]
fn transaction_protocol_errors() {
    let mut h = H::new();
    let d0 = h.s.connect(0);
    let t = h.start(d0);
    // START inside a transaction.
    assert_eq!(
        h.send(d0, MsgType::TransactionStart, t, b"\0").0,
        Err(Errno::EBUSY)
    );
    assert_eq!(h.end(d0, 0, true).0, Err(Errno::ENOENT));
    assert_eq!(h.end(d0, 999, true).0, Err(Errno::ENOENT));
    assert_eq!(
        h.send(d0, MsgType::TransactionEnd, t, b"X\0").0,
        Err(Errno::EINVAL)
    );
    assert_eq!(h.read_tx(d0, 999, "/"), Err(Errno::ENOENT));
    // Another connection's transaction id means nothing here.
    let other = h.s.connect(0);
    assert_eq!(h.read_tx(other, t, "/"), Err(Errno::ENOENT));
    // WATCH ignores tx_id.
    assert!(h.send(d0, MsgType::Watch, 555, b"/x\0t\0").0.is_ok());
    assert_eq!(h.end(d0, t, false).0, Ok(()));
}

#[test]
fn transaction_quota() {
    let mut h = H::new();
    let d0 = h.s.connect(0);
    let g = h.s.connect(5);
    for _ in 0..10 {
        h.start(g);
    }
    assert_eq!(
        h.req(g, MsgType::TransactionStart, 0, &[""]),
        Err(Errno::ENOSPC)
    );
    for _ in 0..20 {
        h.start(d0);
    }
    // RESET_WATCHES drops the caller's transactions and watches.
    h.req(g, MsgType::Watch, 0, &["/x", "t"]).unwrap();
    h.req(g, MsgType::ResetWatches, 0, &[""]).unwrap();
    assert_eq!(h.s.watches.count(g), 0);
    h.start(g);
}

#[test]
fn node_quota_fails_whole_requests() {
    let mut h = H::new();
    let d0 = h.s.connect(0);
    guest_home(&mut h, d0, 5);
    h.req(d0, MsgType::SetQuota, 0, &["5", "nodes", "4"])
        .unwrap();
    let g = h.s.connect(5);
    h.write(g, "data/a", "").unwrap();
    let before = h.s.node_count();
    // Needs three new nodes, only two remain: nothing is created.
    assert_eq!(h.write(g, "data/b/c/d", "x"), Err(Errno::ENOSPC));
    assert_eq!(h.s.node_count(), before);
    assert_eq!(h.read(d0, "/local/domain/5/data/b"), Err(Errno::ENOENT));
    h.write(g, "data/b/c", "x").unwrap();
    assert_eq!(h.s.usage(5).nodes, 4);
    // Also inside a transaction, and the transaction stays usable.
    let t = h.start(g);
    assert_eq!(h.write_tx(g, t, "data/z", "x"), Err(Errno::ENOSPC));
    assert_eq!(h.end(g, t, true).0, Ok(()));
    // dom0 can still write into the guest's area (owner stays the guest, not charged to dom0's checks).
    h.write(d0, "/local/domain/5/data/from-dom0", "x").unwrap();
    assert_eq!(h.s.check(), Ok(()));
}

#[test]
fn node_size_quota() {
    let mut h = H::new();
    let d0 = h.s.connect(0);
    guest_home(&mut h, d0, 5);
    let g = h.s.connect(5);
    assert_eq!(
        h.write(g, "data/big", &"x".repeat(2100)),
        Err(Errno::ENOSPC)
    );
    h.write(g, "data/ok", &"x".repeat(1000)).unwrap();
    h.write(d0, "/local/domain/5/data/dom0big", &"x".repeat(4000))
        .unwrap();
}

#[test]
fn transaction_node_quota() {
    let mut h = H::new();
    let d0 = h.s.connect(0);
    guest_home(&mut h, d0, 5);
    h.req(d0, MsgType::SetQuota, 0, &["5", "transaction-nodes", "5"])
        .unwrap();
    let g = h.s.connect(5);
    let t = h.start(g);
    let mut results = Vec::new();
    for i in 0..6 {
        results.push(h.write_tx(g, t, &format!("data/n{i}"), ""));
    }
    assert!(results.contains(&Err(Errno::ENOSPC)), "{results:?}");
}
