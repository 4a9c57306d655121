//! Protocol and domain requests: privileges, malformed input, INTRODUCE/RELEASE, features, quotas, CONTROL, persistence.

use super::*;

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
