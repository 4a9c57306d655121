//! Engine behaviour, request by request, as C xenstored and QEMU's XenStore
//! tests define it.

use super::*;
use crate::wire::perms::DOMID_ANY;

struct H {
    s: Store,
}

type Reply = Result<Vec<u8>, Errno>;

impl H {
    fn new() -> H {
        H { s: Store::new() }
    }

    fn send(&mut self, conn: ConnId, ty: MsgType, tx: u32, payload: &[u8]) -> (Reply, Outcome) {
        let msg = Message::new(ty, 77, tx, payload.to_vec());
        let out = self.s.handle(conn, &msg);
        let replies: Vec<&Message> = out
            .for_conn(conn)
            .filter(|m| m.ty != MsgType::WatchEvent as u32)
            .collect();
        assert_eq!(replies.len(), 1, "exactly one reply expected: {out:?}");
        let r = replies[0];
        assert_eq!((r.req_id, r.tx_id), (77, tx), "reply ids echo the request");
        let reply = match r.as_error() {
            Some(Ok(e)) => Err(e),
            Some(Err(name)) => panic!("unknown error {name}"),
            None => {
                assert_eq!(r.ty, ty as u32);
                Ok(r.payload.clone())
            }
        };
        (reply, out)
    }

    fn req(&mut self, conn: ConnId, ty: MsgType, tx: u32, parts: &[&str]) -> Reply {
        self.send(conn, ty, tx, &payload::join(parts)).0
    }

    fn write(&mut self, conn: ConnId, path: &str, value: &str) -> Result<(), Errno> {
        self.write_tx(conn, 0, path, value)
    }

    fn write_tx(&mut self, conn: ConnId, tx: u32, path: &str, value: &str) -> Result<(), Errno> {
        let mut p = path.as_bytes().to_vec();
        p.push(0);
        p.extend_from_slice(value.as_bytes());
        self.send(conn, MsgType::Write, tx, &p).0.map(|_| ())
    }

    fn read(&mut self, conn: ConnId, path: &str) -> Result<String, Errno> {
        self.read_tx(conn, 0, path)
    }

    fn read_tx(&mut self, conn: ConnId, tx: u32, path: &str) -> Result<String, Errno> {
        self.req(conn, MsgType::Read, tx, &[path])
            .map(|v| String::from_utf8(v).unwrap())
    }

    fn ls(&mut self, conn: ConnId, path: &str) -> Result<Vec<String>, Errno> {
        self.req(conn, MsgType::Directory, 0, &[path]).map(|v| {
            payload::strings(&v)
                .unwrap()
                .into_iter()
                .map(String::from)
                .collect()
        })
    }

    fn perms(&mut self, conn: ConnId, path: &str, perms: &[&str]) -> Result<(), Errno> {
        let mut parts = vec![path];
        parts.extend_from_slice(perms);
        self.req(conn, MsgType::SetPerms, 0, &parts).map(|_| ())
    }

    fn get_perms(&mut self, conn: ConnId, path: &str) -> Result<Vec<String>, Errno> {
        self.req(conn, MsgType::GetPerms, 0, &[path]).map(|v| {
            payload::strings(&v)
                .unwrap()
                .into_iter()
                .map(String::from)
                .collect()
        })
    }

    fn watch(&mut self, conn: ConnId, path: &str, token: &str) -> Vec<(ConnId, String, String)> {
        let (r, out) = self.send(conn, MsgType::Watch, 0, &payload::join(&[path, token]));
        assert_eq!(r, Ok(b"OK\0".to_vec()));
        // The reply comes first, then the initial event.
        let own: Vec<&Message> = out.for_conn(conn).collect();
        assert_eq!(own[0].ty, MsgType::Watch as u32);
        events(&out)
    }

    fn start(&mut self, conn: ConnId) -> u32 {
        let v = self.req(conn, MsgType::TransactionStart, 0, &[""]).unwrap();
        String::from_utf8(v)
            .unwrap()
            .trim_end_matches('\0')
            .parse()
            .unwrap()
    }

    fn end(&mut self, conn: ConnId, tx: u32, commit: bool) -> (Result<(), Errno>, Outcome) {
        let (r, out) = self.send(
            conn,
            MsgType::TransactionEnd,
            tx,
            if commit { b"T\0" } else { b"F\0" },
        );
        (r.map(|_| ()), out)
    }

    fn introduce(&mut self, dom0: ConnId, domid: u32) -> Outcome {
        let d = domid.to_string();
        let (r, out) = self.send(
            dom0,
            MsgType::Introduce,
            0,
            &payload::join(&[&d, "1234", "5"]),
        );
        assert_eq!(r, Ok(b"OK\0".to_vec()));
        out
    }

    fn write_events(
        &mut self,
        conn: ConnId,
        path: &str,
        value: &str,
    ) -> Vec<(ConnId, String, String)> {
        let mut p = path.as_bytes().to_vec();
        p.push(0);
        p.extend_from_slice(value.as_bytes());
        let (r, out) = self.send(conn, MsgType::Write, 0, &p);
        assert!(r.is_ok(), "{path}: {r:?}");
        events(&out)
    }

    fn rm_events(&mut self, conn: ConnId, path: &str) -> Vec<(ConnId, String, String)> {
        let (r, out) = self.send(conn, MsgType::Rm, 0, &payload::join(&[path]));
        assert!(r.is_ok(), "{path}: {r:?}");
        events(&out)
    }
}

fn events(out: &Outcome) -> Vec<(ConnId, String, String)> {
    out.deliveries
        .iter()
        .filter(|d| d.msg.ty == MsgType::WatchEvent as u32)
        .map(|d| {
            assert_eq!((d.msg.req_id, d.msg.tx_id), (0, 0));
            let parts = payload::strings(&d.msg.payload).unwrap();
            (d.conn, parts[0].to_owned(), parts[1].to_owned())
        })
        .collect()
}

fn ev(conn: ConnId, path: &str, token: &str) -> (ConnId, String, String) {
    (conn, path.to_owned(), token.to_owned())
}

/// dom0 creates a guest home directory as libxl does: owned by dom0,
/// readable by the guest, with a guest-owned `data` directory.
fn guest_home(h: &mut H, dom0: ConnId, domid: u32) {
    let home = format!("/local/domain/{domid}");
    h.write(dom0, &home, "").unwrap();
    h.perms(dom0, &home, &["n0", &format!("r{domid}")]).unwrap();
    h.write(dom0, &format!("{home}/data"), "").unwrap();
    h.perms(dom0, &format!("{home}/data"), &[&format!("n{domid}")])
        .unwrap();
}

#[test]
fn initial_tree() {
    let mut h = H::new();
    let d0 = h.s.connect(0);
    assert_eq!(h.ls(d0, "/").unwrap(), ["tool"]);
    assert_eq!(h.ls(d0, "/tool").unwrap(), ["xenstored"]);
    assert_eq!(h.read(d0, "/tool/xenstored").unwrap(), "");
    assert_eq!(h.get_perms(d0, "/").unwrap(), ["n0"]);
    assert_eq!(h.s.check(), Ok(()));
}

#[test]
fn write_creates_missing_parents_with_empty_values() {
    let mut h = H::new();
    let d0 = h.s.connect(0);
    h.write(d0, "/a/b/c", "v").unwrap();
    assert_eq!(h.read(d0, "/a/b/c").unwrap(), "v");
    assert_eq!(h.read(d0, "/a/b").unwrap(), "");
    assert_eq!(h.read(d0, "/a").unwrap(), "");
    assert_eq!(h.ls(d0, "/a").unwrap(), ["b"]);
    // Overwriting keeps the node count.
    let before = h.s.node_count();
    h.write(d0, "/a/b/c", "w").unwrap();
    assert_eq!(h.s.node_count(), before);
    assert_eq!(h.s.check(), Ok(()));
}

#[test]
fn values_are_binary() {
    let mut h = H::new();
    let d0 = h.s.connect(0);
    let (r, _) = h.send(d0, MsgType::Write, 0, b"/bin\0\x00\xff\x00z");
    assert!(r.is_ok());
    assert_eq!(
        h.req(d0, MsgType::Read, 0, &["/bin"]).unwrap(),
        b"\x00\xff\x00z"
    );
    // A 4096-byte READ reply fits exactly; the request carrying it could not,
    // so the daemon's limit is on what the client can send.
    let (r, _) = h.send(
        d0,
        MsgType::Write,
        0,
        &[b"/big\0".as_slice(), &[b'x'; 4091]].concat(),
    );
    assert!(r.is_ok());
    assert_eq!(h.req(d0, MsgType::Read, 0, &["/big"]).unwrap().len(), 4091);
}

#[test]
fn relative_paths_resolve_under_the_domain_home() {
    let mut h = H::new();
    let d0 = h.s.connect(0);
    h.write(d0, "name", "Domain-0").unwrap();
    assert_eq!(h.read(d0, "/local/domain/0/name").unwrap(), "Domain-0");
    guest_home(&mut h, d0, 3);
    let g = h.s.connect(3);
    h.write(g, "data/x", "1").unwrap();
    assert_eq!(h.read(d0, "/local/domain/3/data/x").unwrap(), "1");
    assert_eq!(
        h.req(d0, MsgType::GetDomainPath, 0, &["3"]).unwrap(),
        b"/local/domain/3\0"
    );
    assert_eq!(
        h.req(d0, MsgType::GetDomainPath, 0, &["x"]),
        Err(Errno::EINVAL)
    );
}

#[test]
fn mkdir_of_an_existing_node_changes_nothing() {
    let mut h = H::new();
    let d0 = h.s.connect(0);
    h.write(d0, "/m", "keep").unwrap();
    let w = h.watch(d0, "/m", "t");
    assert_eq!(w, [ev(d0, "/m", "t")]);
    let (r, out) = h.send(d0, MsgType::Mkdir, 0, b"/m\0");
    assert!(r.is_ok());
    assert!(events(&out).is_empty());
    assert_eq!(h.read(d0, "/m").unwrap(), "keep");
    let (r, out) = h.send(d0, MsgType::Mkdir, 0, b"/m/n\0");
    assert!(r.is_ok());
    assert_eq!(events(&out), [ev(d0, "/m/n", "t")]);
}

#[test]
fn rm_rules() {
    let mut h = H::new();
    let d0 = h.s.connect(0);
    h.write(d0, "/r/a/b", "1").unwrap();
    h.write(d0, "/r/a/c", "2").unwrap();
    // Missing node with an existing parent: OK (C xenstored).
    assert!(h.req(d0, MsgType::Rm, 0, &["/r/zzz"]).is_ok());
    // Missing parent too: ENOENT.
    assert_eq!(h.req(d0, MsgType::Rm, 0, &["/nope/x"]), Err(Errno::ENOENT));
    assert_eq!(h.req(d0, MsgType::Rm, 0, &["/"]), Err(Errno::EINVAL));
    let before = h.s.node_count();
    h.req(d0, MsgType::Rm, 0, &["/r/a"]).unwrap();
    assert_eq!(h.s.node_count(), before - 3);
    assert_eq!(h.read(d0, "/r/a/b"), Err(Errno::ENOENT));
    assert_eq!(h.ls(d0, "/r").unwrap(), Vec::<String>::new());
    assert_eq!(h.s.check(), Ok(()));
}

#[test]
fn deep_trees_are_removed_without_recursion() {
    let mut h = H::new();
    let d0 = h.s.connect(0);
    let mut path = String::new();
    for _ in 0..1000 {
        path.push_str("/d");
    }
    h.write(d0, &path, "deep").unwrap();
    h.req(d0, MsgType::Rm, 0, &["/d"]).unwrap();
    assert_eq!(h.s.node_count(), 3);
}

#[test]
fn directory_lists_in_creation_order_and_parts_reassemble() {
    let mut h = H::new();
    let d0 = h.s.connect(0);
    for name in ["zeta", "alpha", "mid"] {
        h.write(d0, &format!("/o/{name}"), "").unwrap();
    }
    assert_eq!(h.ls(d0, "/o").unwrap(), ["zeta", "alpha", "mid"]);

    // 400 names of 20 bytes: 8400 bytes, too much for DIRECTORY.
    let names: Vec<String> = (0..400).map(|i| format!("child-{i:014}")).collect();
    for n in &names {
        h.write(d0, &format!("/big/{n}"), "").unwrap();
    }
    assert_eq!(h.ls(d0, "/big"), Err(Errno::E2BIG));
    let mut offset = 0usize;
    let mut got = Vec::new();
    let mut generation = None;
    loop {
        let part = h
            .req(
                d0,
                MsgType::DirectoryPart,
                0,
                &["/big", &offset.to_string()],
            )
            .unwrap();
        assert!(part.len() <= PAYLOAD_MAX);
        let nul = part.iter().position(|b| *b == 0).unwrap();
        let gen = String::from_utf8(part[..nul].to_vec()).unwrap();
        assert_eq!(*generation.get_or_insert(gen.clone()), gen);
        let chunk = &part[nul + 1..];
        let done = chunk.ends_with(b"\0\0") || chunk == b"\0";
        let body = if done {
            &chunk[..chunk.len() - 1]
        } else {
            chunk
        };
        offset += body.len();
        got.extend(
            payload::strings(body)
                .unwrap()
                .into_iter()
                .map(String::from),
        );
        if done {
            break;
        }
    }
    assert_eq!(got, names);
    let past = h
        .req(d0, MsgType::DirectoryPart, 0, &["/big", "999999"])
        .unwrap();
    assert!(past.ends_with(b"\0\0"));
    assert_eq!(
        h.req(d0, MsgType::DirectoryPart, 0, &["/big"]),
        Err(Errno::EINVAL)
    );
}

#[test]
fn guests_only_reach_what_permissions_grant() {
    let mut h = H::new();
    let d0 = h.s.connect(0);
    guest_home(&mut h, d0, 5);
    h.write(d0, "/secret/key", "s").unwrap();
    let g = h.s.connect(5);
    assert_eq!(h.read(g, "/secret/key"), Err(Errno::EACCES));
    assert_eq!(h.write(g, "/secret/key", "x"), Err(Errno::EACCES));
    // Existence does not leak: missing under an unreadable parent is EACCES.
    assert_eq!(h.read(g, "/secret/missing"), Err(Errno::EACCES));
    assert_eq!(h.read(g, "/local/domain/5/missing"), Err(Errno::ENOENT));
    // QEMU's case: a guest cannot create outside what it may write.
    assert_eq!(
        h.write(g, "/local/domain/badplace", "x"),
        Err(Errno::EACCES)
    );
    // The home directory is readable, not writable.
    assert_eq!(h.read(g, "/local/domain/5").unwrap(), "");
    assert_eq!(h.write(g, "/local/domain/5/x", "1"), Err(Errno::EACCES));
    // In its data directory it creates nodes it owns.
    h.write(g, "data/mine", "1").unwrap();
    assert_eq!(
        h.get_perms(d0, "/local/domain/5/data/mine").unwrap(),
        ["n5"]
    );
    assert_eq!(h.s.usage(5).nodes, 2);
    // Nodes another guest cannot see.
    let other = h.s.connect(6);
    assert_eq!(
        h.read(other, "/local/domain/5/data/mine"),
        Err(Errno::EACCES)
    );
    assert_eq!(h.read(other, "/local/domain/5"), Err(Errno::EACCES));
}

#[test]
fn set_perms_rules() {
    let mut h = H::new();
    let d0 = h.s.connect(0);
    guest_home(&mut h, d0, 5);
    let g = h.s.connect(5);
    h.write(g, "data/n", "").unwrap();
    // The owner may grant access but not give the node away.
    h.perms(g, "data/n", &["b5", "r7"]).unwrap();
    assert_eq!(h.get_perms(g, "data/n").unwrap(), ["b5", "r7"]);
    assert_eq!(h.perms(g, "data/n", &["b7"]), Err(Errno::EPERM));
    // Too many entries for a guest; dom0 is not limited.
    let six = ["b5", "r1", "r2", "r3", "r4", "r6"];
    assert_eq!(h.perms(g, "data/n", &six), Err(Errno::ENOSPC));
    h.perms(d0, "/local/domain/5/data/n", &six).unwrap();
    // A non-owner with write access may not change permissions.
    h.write(d0, "/shared", "").unwrap();
    h.perms(d0, "/shared", &["n0", "b5"]).unwrap();
    assert_eq!(
        h.perms(g, "/shared", &["n0", "b5", "r6"]),
        Err(Errno::EACCES)
    );
    // Malformed lists.
    assert_eq!(h.perms(d0, "/shared", &["x0"]), Err(Errno::EINVAL));
    assert_eq!(h.perms(d0, "/shared", &[]), Err(Errno::EINVAL));
    // dom0 may change the owner, which moves the node's accounting.
    h.perms(d0, "/shared", &["r5"]).unwrap();
    assert_eq!(h.s.usage(5).nodes, 3, "data, data/n and now /shared");
    assert_eq!(h.s.check(), Ok(()));
}

#[test]
fn domid_any_entries_match_every_domain() {
    let mut h = H::new();
    let d0 = h.s.connect(0);
    h.write(d0, "/pub", "p").unwrap();
    h.perms(d0, "/pub", &["n0", &format!("r{DOMID_ANY}")])
        .unwrap();
    let g = h.s.connect(9);
    assert_eq!(h.read(g, "/pub").unwrap(), "p");
    assert_eq!(h.write(g, "/pub", "x"), Err(Errno::EACCES));
}

#[test]
fn set_target_gives_a_domain_the_rights_of_its_target() {
    let mut h = H::new();
    let d0 = h.s.connect(0);
    guest_home(&mut h, d0, 3);
    h.introduce(d0, 2);
    h.introduce(d0, 3);
    let stub = h.s.connect(2);
    assert_eq!(h.read(stub, "/local/domain/3"), Err(Errno::EACCES));
    h.req(d0, MsgType::SetTarget, 0, &["2", "3"]).unwrap();
    let stub = h.s.connect(2);
    // Inherits the read access granted to 3, and owns what 3 owns.
    assert_eq!(h.read(stub, "/local/domain/3").unwrap(), "");
    h.write(stub, "/local/domain/3/data/by-stub", "1").unwrap();
    assert_eq!(
        h.req(stub, MsgType::SetTarget, 0, &["2", "3"]),
        Err(Errno::EACCES)
    );
    assert_eq!(
        h.req(d0, MsgType::SetTarget, 0, &["44", "3"]),
        Err(Errno::ENOENT)
    );
}

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

#[test]
fn privileged_and_unknown_requests() {
    let mut h = H::new();
    let d0 = h.s.connect(0);
    let g = h.s.connect(5);
    for ty in [
        MsgType::Introduce,
        MsgType::Release,
        MsgType::IsDomainIntroduced,
        MsgType::Resume,
        MsgType::SetTarget,
        MsgType::Control,
        MsgType::SetQuota,
        MsgType::GetQuota,
        MsgType::SetFeature,
    ] {
        assert_eq!(
            h.req(g, ty, 0, &["1", "2", "3"]),
            Err(Errno::EACCES),
            "{ty:?}"
        );
    }
    for raw in [15u32, 16, 20, 27, 0xffff, 0xdead_beef] {
        let msg = Message {
            ty: raw,
            req_id: 1,
            tx_id: 0,
            payload: b"/\0".to_vec(),
        };
        let out = h.s.handle(d0, &msg);
        assert_eq!(out.deliveries.len(), 1);
        assert_eq!(
            out.deliveries[0].msg.as_error(),
            Some(Ok(Errno::ENOSYS)),
            "{raw}"
        );
    }
}

#[test]
fn malformed_payloads_are_einval() {
    let mut h = H::new();
    let d0 = h.s.connect(0);
    h.write(d0, "/ok", "").unwrap();
    for (ty, p) in [
        (MsgType::Read, &b"/ok"[..]),
        (MsgType::Read, b"/ok\0extra\0"),
        (MsgType::Directory, b"/ok"),
        (MsgType::Mkdir, b""),
        (MsgType::Rm, b"/ok"),
        (MsgType::GetPerms, b"/ok"),
        (MsgType::Write, b"/no-nul"),
        (MsgType::Watch, b"/ok\0"),
        (MsgType::Watch, b"/ok\0t"),
        (MsgType::Read, b"/a b\0"),
        (MsgType::Read, b"/trailing/\0"),
        (MsgType::Read, b"@releaseDomain\0"),
        (MsgType::Write, b"@releaseDomain\0v"),
        (MsgType::Read, b"/\xff\0"),
        (MsgType::Introduce, b"5\0"),
        (MsgType::Introduce, b"0\0" as &[u8]),
    ] {
        assert_eq!(h.send(d0, ty, 0, p).0, Err(Errno::EINVAL), "{ty:?} {p:?}");
    }
    // After all that, the connection still works.
    assert_eq!(h.read(d0, "/ok").unwrap(), "");
}

#[test]
fn introduce_and_release_a_domain() {
    let mut h = H::new();
    let d0 = h.s.connect(0);
    let w = h.s.connect(0);
    h.watch(w, INTRODUCE_DOMAIN, "intro");
    h.watch(w, RELEASE_DOMAIN, "rel");
    h.req(w, MsgType::Watch, 0, &[RELEASE_DOMAIN, "rel-depth", "1"])
        .unwrap();
    h.req(w, MsgType::Watch, 0, &["@releaseDomain/8", "rel-8"])
        .unwrap();
    assert_eq!(
        h.req(d0, MsgType::IsDomainIntroduced, 0, &["8"]).unwrap(),
        b"F\0"
    );
    let out = h.introduce(d0, 8);
    assert_eq!(events(&out), [ev(w, INTRODUCE_DOMAIN, "intro")]);
    assert_eq!(out.effects, [Effect::DomainIntroduced(8)]);
    assert_eq!(
        h.req(d0, MsgType::IsDomainIntroduced, 0, &["8"]).unwrap(),
        b"T\0"
    );
    assert_eq!(
        h.req(d0, MsgType::IsDomainIntroduced, 0, &["0"]).unwrap(),
        b"T\0"
    );
    // Introducing again: no second event.
    assert!(events(&h.introduce(d0, 8)).is_empty());

    guest_home(&mut h, d0, 8);
    let g = h.s.connect(8);
    h.write(g, "data/x", "1").unwrap();
    h.req(g, MsgType::Watch, 0, &["data", "gw"]).unwrap();
    h.write(d0, "/shared", "").unwrap();
    h.perms(d0, "/shared", &["n0", "r8", "b9"]).unwrap();
    h.watch(w, "/local/domain/8/data", "dataw");

    let (r, out) = h.send(d0, MsgType::Release, 0, b"8\0");
    assert!(r.is_ok());
    assert_eq!(out.effects, [Effect::DomainReleased(8)]);
    let mut got = events(&out);
    got.sort();
    let mut want = vec![
        ev(w, "/local/domain/8/data", "dataw"),
        ev(w, RELEASE_DOMAIN, "rel"),
        ev(w, "@releaseDomain/8", "rel-depth"),
        ev(w, "@releaseDomain/8", "rel-8"),
    ];
    want.sort();
    assert_eq!(got, want);
    // The guest's connection is gone, with its watch.
    assert!(!h.s.is_connected(g));
    // Its nodes are removed, and its permission entries purged.
    assert_eq!(h.read(d0, "/local/domain/8/data"), Err(Errno::ENOENT));
    assert_eq!(h.get_perms(d0, "/shared").unwrap(), ["n0", "b9"]);
    assert_eq!(h.get_perms(d0, "/local/domain/8").unwrap(), ["n0"]);
    assert_eq!(h.s.usage(8), Usage::default());
    assert_eq!(
        h.req(d0, MsgType::IsDomainIntroduced, 0, &["8"]).unwrap(),
        b"F\0"
    );
    assert_eq!(h.req(d0, MsgType::Release, 0, &["8"]), Err(Errno::ENOENT));
    assert_eq!(h.s.check(), Ok(()));
}

#[test]
fn special_watches_need_permission() {
    let mut h = H::new();
    let d0 = h.s.connect(0);
    let g = h.s.connect(5);
    h.watch(g, RELEASE_DOMAIN, "g");
    h.introduce(d0, 7);
    let (_, out) = h.send(d0, MsgType::Release, 0, b"7\0");
    assert!(
        events(&out).iter().all(|e| e.0 != g),
        "unprivileged guest saw @releaseDomain"
    );
    // Granted by SET_PERMS on the special node (as for a driver domain).
    h.perms(d0, RELEASE_DOMAIN, &["n0", "r5"]).unwrap();
    assert_eq!(h.get_perms(d0, RELEASE_DOMAIN).unwrap(), ["n0", "r5"]);
    h.introduce(d0, 7);
    let (_, out) = h.send(d0, MsgType::Release, 0, b"7\0");
    assert_eq!(events(&out), [ev(g, RELEASE_DOMAIN, "g")]);
    assert_eq!(h.perms(g, RELEASE_DOMAIN, &["b5"]), Err(Errno::EACCES));
}

#[test]
fn shutdown_reports_once_until_resume() {
    let mut h = H::new();
    let d0 = h.s.connect(0);
    h.watch(d0, RELEASE_DOMAIN, "r");
    h.introduce(d0, 3);
    assert_eq!(events(&h.s.domain_shutdown(3)).len(), 1);
    assert!(events(&h.s.domain_shutdown(3)).is_empty());
    h.req(d0, MsgType::Resume, 0, &["3"]).unwrap();
    assert_eq!(events(&h.s.domain_shutdown(3)).len(), 1);
    assert_eq!(h.req(d0, MsgType::Resume, 0, &["4"]), Err(Errno::ENOENT));
}

#[test]
fn features_and_quotas() {
    let mut h = H::new();
    let d0 = h.s.connect(0);
    let all = format!("{SUPPORTED_FEATURES}\0").into_bytes();
    assert_eq!(h.req(d0, MsgType::GetFeature, 0, &[""]).unwrap(), all);
    // Without the watch-depth feature a domain cannot give a depth.
    h.req(d0, MsgType::SetFeature, 0, &["6", "0"]).unwrap();
    assert_eq!(h.req(d0, MsgType::GetFeature, 0, &["6"]).unwrap(), b"0\0");
    let g = h.s.connect(6);
    assert_eq!(
        h.req(g, MsgType::Watch, 0, &["/x", "t", "1"]),
        Err(Errno::EINVAL)
    );
    assert_eq!(h.req(g, MsgType::GetFeature, 0, &[""]).unwrap(), b"0\0");
    assert_eq!(h.req(g, MsgType::GetFeature, 0, &["6"]), Err(Errno::EACCES));
    assert_eq!(
        h.req(d0, MsgType::SetFeature, 0, &["6", "64"]),
        Err(Errno::EINVAL)
    );
    h.introduce(d0, 6);
    assert_eq!(
        h.req(d0, MsgType::SetFeature, 0, &["6", "4"]),
        Err(Errno::EBUSY)
    );

    let names = h.req(d0, MsgType::GetQuota, 0, &[""]).unwrap();
    assert!(String::from_utf8(names)
        .unwrap()
        .starts_with("nodes watches transactions node-size permissions"));
    assert_eq!(
        h.req(d0, MsgType::GetQuota, 0, &["nodes"]).unwrap(),
        b"1000\0"
    );
    h.req(d0, MsgType::SetQuota, 0, &["watches", "3"]).unwrap();
    assert_eq!(
        h.req(d0, MsgType::GetQuota, 0, &["9", "watches"]).unwrap(),
        b"3\0"
    );
    h.req(d0, MsgType::SetQuota, 0, &["9", "watches", "0"])
        .unwrap();
    let g9 = h.s.connect(9);
    for i in 0..10 {
        h.req(g9, MsgType::Watch, 0, &["/x", &format!("t{i}")])
            .unwrap();
    }
    assert_eq!(
        h.req(d0, MsgType::GetQuota, 0, &["bogus"]),
        Err(Errno::EINVAL)
    );
}

#[test]
fn control_commands() {
    let mut h = H::new();
    let d0 = h.s.connect(0);
    assert_eq!(h.req(d0, MsgType::Control, 0, &["check"]).unwrap(), b"OK\0");
    let (r, out) = h.send(d0, MsgType::Control, 0, &payload::join(&["print", "hello"]));
    assert!(r.is_ok());
    assert_eq!(out.effects, [Effect::Log("hello".into())]);
    assert_eq!(
        h.req(d0, MsgType::Control, 0, &["nonsense"]),
        Err(Errno::EINVAL)
    );
}

#[test]
fn snapshot_round_trips_and_detects_damage() {
    let mut h = H::new();
    let d0 = h.s.connect(0);
    guest_home(&mut h, d0, 5);
    h.introduce(d0, 5);
    h.req(d0, MsgType::SetQuota, 0, &["5", "nodes", "77"])
        .unwrap();
    h.perms(d0, RELEASE_DOMAIN, &["n0", "r5"]).unwrap();
    let (r, _) = h.send(d0, MsgType::Write, 0, b"/bin\0\x00\x01\xff");
    assert!(r.is_ok());
    let bytes = h.s.snapshot();
    let mut restored = H {
        s: Store::restore(&bytes).unwrap(),
    };
    let c = restored.s.connect(0);
    assert_eq!(
        restored.req(c, MsgType::Read, 0, &["/bin"]).unwrap(),
        b"\x00\x01\xff"
    );
    assert_eq!(
        restored.get_perms(c, "/local/domain/5").unwrap(),
        ["n0", "r5"]
    );
    assert_eq!(restored.s.introduced_domains(), [5]);
    assert_eq!(
        restored
            .req(c, MsgType::GetQuota, 0, &["5", "nodes"])
            .unwrap(),
        b"77\0"
    );
    assert_eq!(restored.get_perms(c, RELEASE_DOMAIN).unwrap(), ["n0", "r5"]);
    assert_eq!(restored.s.snapshot(), bytes);
    // Damage anywhere is refused.
    for i in [0, 9, bytes.len() / 2, bytes.len() - 1] {
        let mut bad = bytes.clone();
        bad[i] ^= 0x55;
        assert!(Store::restore(&bad).is_err(), "byte {i}");
    }
    assert!(Store::restore(&bytes[..bytes.len() - 3]).is_err());
    assert!(Store::restore(b"").is_err());
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
