//! Watches: when they fire, with which path, for whom.

use super::*;

#[test]
fn watches_fire_once_on_registration_then_on_changes_below() {
    let mut h = H::new();
    let d0 = h.s.connect(0);
    assert_eq!(h.watch(d0, "/w", "tok"), [ev(d0, "/w", "tok")]);
    assert_eq!(h.write_events(d0, "/w", "1"), [ev(d0, "/w", "tok")]);
    assert_eq!(h.write_events(d0, "/w/x/y", "1"), [ev(d0, "/w/x/y", "tok")]);
    assert!(h.write_events(d0, "/other", "1").is_empty());
    assert!(h.write_events(d0, "/wx", "1").is_empty());
    // Duplicate registration; unwatch twice.
    assert_eq!(
        h.req(d0, MsgType::Watch, 0, &["/w", "tok"]),
        Err(Errno::EEXIST)
    );
    h.req(d0, MsgType::Unwatch, 0, &["/w", "tok"]).unwrap();
    assert_eq!(
        h.req(d0, MsgType::Unwatch, 0, &["/w", "tok"]),
        Err(Errno::ENOENT)
    );
    assert!(h.write_events(d0, "/w", "2").is_empty());
}

#[test]
fn a_write_fires_for_the_written_node_only() {
    let mut h = H::new();
    let d0 = h.s.connect(0);
    h.watch(d0, "/", "root");
    h.watch(d0, "/n/a", "mid");
    let got = h.write_events(d0, "/n/a/b/c", "v");
    assert_eq!(got, [ev(d0, "/n/a/b/c", "mid"), ev(d0, "/n/a/b/c", "root")]);
}

#[test]
fn relative_watches_get_relative_paths() {
    let mut h = H::new();
    let d0 = h.s.connect(0);
    guest_home(&mut h, d0, 4);
    let g = h.s.connect(4);
    assert_eq!(h.watch(g, "data", "rel"), [ev(g, "data", "rel")]);
    let got = h.write_events(d0, "/local/domain/4/data/k", "v");
    assert_eq!(got, [ev(g, "data/k", "rel")]);
    // QEMU's case: a relative write creating two nodes fires guest and dom0
    // watches, each with its own form of the path.
    h.watch(d0, "/local/domain/4", "abs");
    let got = h.write_events(g, "data/p/q", "v");
    assert_eq!(
        got,
        [
            ev(g, "data/p/q", "rel"),
            ev(d0, "/local/domain/4/data/p/q", "abs")
        ]
    );
}

#[test]
fn removing_a_subtree_fires_each_watch_once_with_its_own_path() {
    let mut h = H::new();
    let d0 = h.s.connect(0);
    h.write(d0, "/t/a/b/c", "").unwrap();
    h.write(d0, "/t/a/x", "").unwrap();
    h.watch(d0, "/t/a/b/c", "deep");
    h.watch(d0, "/t/a", "self");
    h.watch(d0, "/t", "above");
    h.watch(d0, "/t/a/b/c/none", "missing");
    let mut got = h.rm_events(d0, "/t/a");
    got.sort();
    let mut want = vec![
        ev(d0, "/t/a/b/c", "deep"),
        ev(d0, "/t/a", "self"),
        ev(d0, "/t/a", "above"),
    ];
    want.sort();
    assert_eq!(got, want);
}

#[test]
fn watch_events_respect_permissions() {
    let mut h = H::new();
    let d0 = h.s.connect(0);
    guest_home(&mut h, d0, 5);
    let g = h.s.connect(5);
    h.watch(g, "/", "all");
    // dom0's private node under an unreadable root: the guest hears nothing.
    assert!(h.write_events(d0, "/private", "x").is_empty());
    // A node the guest can read.
    let got = h.write_events(d0, "/local/domain/5/data/n", "v");
    assert_eq!(got, [ev(g, "/local/domain/5/data/n", "all")]);
    // A node the guest cannot read but whose parent it can: told (C rule).
    h.write(d0, "/local/domain/5/hidden", "").unwrap();
    h.perms(d0, "/local/domain/5/hidden", &["n0"]).unwrap();
    let got = h.write_events(d0, "/local/domain/5/hidden", "v");
    assert_eq!(got, [ev(g, "/local/domain/5/hidden", "all")]);
    // Below that, neither node nor parent is readable: nothing.
    assert!(h
        .write_events(d0, "/local/domain/5/hidden/deeper", "v")
        .is_empty());
}

#[test]
fn a_permission_change_is_seen_under_the_old_permissions() {
    let mut h = H::new();
    let d0 = h.s.connect(0);
    h.write(d0, "/p1/p2", "").unwrap();
    h.perms(d0, "/p1/p2", &["n0", "r5"]).unwrap();
    let g = h.s.connect(5);
    h.watch(g, "/p1/p2", "w");
    let (r, out) = h.send(d0, MsgType::SetPerms, 0, &payload::join(&["/p1/p2", "n0"]));
    assert!(r.is_ok());
    assert_eq!(events(&out), [ev(g, "/p1/p2", "w")]);
    assert!(h.write_events(d0, "/p1/p2", "v").is_empty());
}

#[test]
fn watch_quota_and_depth() {
    let mut h = H::new();
    let d0 = h.s.connect(0);
    guest_home(&mut h, d0, 5);
    let g = h.s.connect(5);
    for i in 0..128 {
        h.req(g, MsgType::Watch, 0, &["data", &format!("t{i}")])
            .unwrap();
    }
    assert_eq!(
        h.req(g, MsgType::Watch, 0, &["data", "one-more"]),
        Err(Errno::ENOSPC)
    );
    // dom0 is exempt.
    for i in 0..200 {
        h.req(d0, MsgType::Watch, 0, &["/x", &format!("t{i}")])
            .unwrap();
    }
    // Depth: 0 is the node only, 1 its children.
    let d = h.s.connect(0);
    h.req(d, MsgType::Watch, 0, &["/dp", "d1", "1"]).unwrap();
    let on = |h: &mut H, p: &str| {
        h.write_events(d0, p, "")
            .into_iter()
            .filter(|e| e.0 == d)
            .count()
    };
    assert_eq!(on(&mut h, "/dp"), 1);
    assert_eq!(on(&mut h, "/dp/a"), 1);
    assert_eq!(on(&mut h, "/dp/a/b"), 0);
    assert_eq!(
        h.req(d, MsgType::Watch, 0, &["/dp", "bad", "-1"]),
        Err(Errno::EINVAL)
    );
}

#[test]
fn disconnect_drops_watches_and_transactions() {
    let mut h = H::new();
    let d0 = h.s.connect(0);
    let c = h.s.connect(0);
    h.watch(c, "/z", "t");
    let t = h.start(c);
    h.write_tx(c, t, "/z/in-tx", "").unwrap();
    h.s.disconnect(c);
    assert_eq!(h.s.watch_count(), 0);
    assert!(h.write_events(d0, "/z", "1").is_empty());
    assert_eq!(h.read(d0, "/z/in-tx"), Err(Errno::ENOENT));
}
