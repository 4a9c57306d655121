//! Watch and transaction quotas count per domain, over every connection the
//! domain has open, as in C xenstored.

use super::*;

/// Registers a watch; the error if the quota refuses it.
fn add_watch(h: &mut H, conn: ConnId, token: &str) -> Result<(), Errno> {
    h.req(conn, MsgType::Watch, 0, &["/w", token]).map(|_| ())
}

fn start_tx(h: &mut H, conn: ConnId) -> Reply {
    h.req(conn, MsgType::TransactionStart, 0, &[""])
}

#[test]
fn watches_count_over_all_connections_of_a_domain() {
    let mut h = H::new();
    let d0 = h.s.connect(0);
    let guest: Vec<ConnId> = (0..3).map(|_| h.s.connect(5)).collect();
    for i in 0..128 {
        add_watch(&mut h, guest[i % 3], &format!("t{i}")).unwrap();
    }
    // The 129th is refused whichever connection asks, a new one included.
    for &g in &guest {
        assert_eq!(add_watch(&mut h, g, "one-more"), Err(Errno::ENOSPC));
    }
    let late = h.s.connect(5);
    assert_eq!(add_watch(&mut h, late, "one-more"), Err(Errno::ENOSPC));
    // One unwatch makes room for exactly one more, on any connection.
    h.req(guest[0], MsgType::Unwatch, 0, &["/w", "t0"]).unwrap();
    add_watch(&mut h, guest[2], "one-more").unwrap();
    assert_eq!(add_watch(&mut h, guest[1], "two-more"), Err(Errno::ENOSPC));
    // A closed connection's watches no longer count.
    h.s.disconnect(guest[1]);
    add_watch(&mut h, late, "after-close").unwrap();

    // Another guest has its own 128.
    let other: Vec<ConnId> = (0..2).map(|_| h.s.connect(6)).collect();
    for i in 0..128 {
        add_watch(&mut h, other[i % 2], &format!("t{i}")).unwrap();
    }
    assert_eq!(add_watch(&mut h, other[0], "one-more"), Err(Errno::ENOSPC));
    // dom0 is exempt, over one connection or several.
    let d0b = h.s.connect(0);
    for i in 0..200 {
        add_watch(&mut h, if i % 2 == 0 { d0 } else { d0b }, &format!("t{i}")).unwrap();
    }
}

#[test]
fn a_domains_watch_quota_override_applies_to_all_its_connections() {
    let mut h = H::new();
    let d0 = h.s.connect(0);
    h.req(d0, MsgType::SetQuota, 0, &["5", "watches", "4"])
        .unwrap();
    let a = h.s.connect(5);
    let b = h.s.connect(5);
    for i in 0..4 {
        add_watch(&mut h, if i < 2 { a } else { b }, &format!("t{i}")).unwrap();
    }
    assert_eq!(add_watch(&mut h, a, "t4"), Err(Errno::ENOSPC));
    assert_eq!(add_watch(&mut h, b, "t4"), Err(Errno::ENOSPC));
}

#[test]
fn transactions_count_over_all_connections_of_a_domain() {
    let mut h = H::new();
    let d0 = h.s.connect(0);
    let guest: Vec<ConnId> = (0..3).map(|_| h.s.connect(5)).collect();
    let mut open = Vec::new();
    for i in 0..10 {
        let g = guest[i % 3];
        open.push((g, h.start(g)));
    }
    for &g in &guest {
        assert_eq!(start_tx(&mut h, g), Err(Errno::ENOSPC));
    }
    // Ending one, committed or not, makes room for one more.
    let (g, t) = open.remove(0);
    assert_eq!(h.end(g, t, false).0, Ok(()));
    let t = h.start(guest[1]);
    open.push((guest[1], t));
    assert_eq!(start_tx(&mut h, guest[2]), Err(Errno::ENOSPC));
    // RESET_WATCHES on one connection frees that connection's transactions.
    let on_first = open.iter().filter(|(c, _)| *c == guest[0]).count();
    assert!(on_first > 0);
    h.req(guest[0], MsgType::ResetWatches, 0, &[""]).unwrap();
    for _ in 0..on_first {
        h.start(guest[2]);
    }
    assert_eq!(start_tx(&mut h, guest[1]), Err(Errno::ENOSPC));

    // Another guest is not affected.
    let other = h.s.connect(6);
    for _ in 0..10 {
        h.start(other);
    }
    assert_eq!(start_tx(&mut h, other), Err(Errno::ENOSPC));
    // dom0 is exempt.
    let d0b = h.s.connect(0);
    for i in 0..30 {
        h.start(if i % 2 == 0 { d0 } else { d0b });
    }
}
