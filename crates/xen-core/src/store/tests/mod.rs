//! Engine behaviour, request by request, as C xenstored and QEMU's XenStore
//! tests define it.

use super::*;
use crate::wire::perms::DOMID_ANY;

pub(super) struct H {
    pub(super) s: Store,
}

pub(super) type Reply = Result<Vec<u8>, Errno>;

impl H {
    pub(super) fn new() -> H {
        H { s: Store::new() }
    }

    pub(super) fn send(
        &mut self,
        conn: ConnId,
        ty: MsgType,
        tx: u32,
        payload: &[u8],
    ) -> (Reply, Outcome) {
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

    pub(super) fn req(&mut self, conn: ConnId, ty: MsgType, tx: u32, parts: &[&str]) -> Reply {
        self.send(conn, ty, tx, &payload::join(parts)).0
    }

    pub(super) fn write(&mut self, conn: ConnId, path: &str, value: &str) -> Result<(), Errno> {
        self.write_tx(conn, 0, path, value)
    }

    pub(super) fn write_tx(
        &mut self,
        conn: ConnId,
        tx: u32,
        path: &str,
        value: &str,
    ) -> Result<(), Errno> {
        let mut p = path.as_bytes().to_vec();
        p.push(0);
        p.extend_from_slice(value.as_bytes());
        self.send(conn, MsgType::Write, tx, &p).0.map(|_| ())
    }

    pub(super) fn read(&mut self, conn: ConnId, path: &str) -> Result<String, Errno> {
        self.read_tx(conn, 0, path)
    }

    pub(super) fn read_tx(&mut self, conn: ConnId, tx: u32, path: &str) -> Result<String, Errno> {
        self.req(conn, MsgType::Read, tx, &[path])
            .map(|v| String::from_utf8(v).unwrap())
    }

    pub(super) fn ls(&mut self, conn: ConnId, path: &str) -> Result<Vec<String>, Errno> {
        self.req(conn, MsgType::Directory, 0, &[path]).map(|v| {
            payload::strings(&v)
                .unwrap()
                .into_iter()
                .map(String::from)
                .collect()
        })
    }

    pub(super) fn perms(&mut self, conn: ConnId, path: &str, perms: &[&str]) -> Result<(), Errno> {
        let mut parts = vec![path];
        parts.extend_from_slice(perms);
        self.req(conn, MsgType::SetPerms, 0, &parts).map(|_| ())
    }

    pub(super) fn get_perms(&mut self, conn: ConnId, path: &str) -> Result<Vec<String>, Errno> {
        self.req(conn, MsgType::GetPerms, 0, &[path]).map(|v| {
            payload::strings(&v)
                .unwrap()
                .into_iter()
                .map(String::from)
                .collect()
        })
    }

    pub(super) fn watch(
        &mut self,
        conn: ConnId,
        path: &str,
        token: &str,
    ) -> Vec<(ConnId, String, String)> {
        let (r, out) = self.send(conn, MsgType::Watch, 0, &payload::join(&[path, token]));
        assert_eq!(r, Ok(b"OK\0".to_vec()));
        // The reply comes first, then the initial event.
        let own: Vec<&Message> = out.for_conn(conn).collect();
        assert_eq!(own[0].ty, MsgType::Watch as u32);
        events(&out)
    }

    pub(super) fn start(&mut self, conn: ConnId) -> u32 {
        let v = self.req(conn, MsgType::TransactionStart, 0, &[""]).unwrap();
        String::from_utf8(v)
            .unwrap()
            .trim_end_matches('\0')
            .parse()
            .unwrap()
    }

    pub(super) fn end(
        &mut self,
        conn: ConnId,
        tx: u32,
        commit: bool,
    ) -> (Result<(), Errno>, Outcome) {
        let (r, out) = self.send(
            conn,
            MsgType::TransactionEnd,
            tx,
            if commit { b"T\0" } else { b"F\0" },
        );
        (r.map(|_| ()), out)
    }

    pub(super) fn introduce(&mut self, dom0: ConnId, domid: u32) -> Outcome {
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

    pub(super) fn write_events(
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

    pub(super) fn rm_events(&mut self, conn: ConnId, path: &str) -> Vec<(ConnId, String, String)> {
        let (r, out) = self.send(conn, MsgType::Rm, 0, &payload::join(&[path]));
        assert!(r.is_ok(), "{path}: {r:?}");
        events(&out)
    }
}

pub(super) fn events(out: &Outcome) -> Vec<(ConnId, String, String)> {
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

pub(super) fn ev(conn: ConnId, path: &str, token: &str) -> (ConnId, String, String) {
    (conn, path.to_owned(), token.to_owned())
}

/// dom0 creates a guest home directory as libxl does: owned by dom0,
/// readable by the guest, with a guest-owned `data` directory.
pub(super) fn guest_home(h: &mut H, dom0: ConnId, domid: u32) {
    let home = format!("/local/domain/{domid}");
    h.write(dom0, &home, "").unwrap();
    h.perms(dom0, &home, &["n0", &format!("r{domid}")]).unwrap();
    h.write(dom0, &format!("{home}/data"), "").unwrap();
    h.perms(dom0, &format!("{home}/data"), &[&format!("n{domid}")])
        .unwrap();
}

mod domain_limits;
mod journal;
mod nodes;
mod requests;
mod transactions;
mod watches;
