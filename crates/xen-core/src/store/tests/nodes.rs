//! Nodes and permissions: reads, writes, removal, listings, who may do what.

use super::*;

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
