//! With the `xen` feature (which needs Xen's development headers): every
//! size, offset, ring size and constant of `shared`, `blkif` and `netif`
//! checked against the installed `xen/io/{ring,blkif,netif,protocols}.h`.
//!
//! The test writes a C file of `_Static_assert`s from our values and has
//! the C compiler check it, for `-m64` (the `x86_64-abi`) and `-m32` (the
//! `x86_32-abi`, as a 32-bit guest's compiler lays the structures out).
//! `-ffreestanding -fsyntax-only` needs no 32-bit C library: only the
//! compiler and the headers. `CC` picks the compiler (default `cc`),
//! `XEN_INCLUDE_DIR` an include directory other than the system one.

use std::fmt::Write as _;
use std::io::Write as _;
use std::process::{Command, Stdio};

use crate::ring::blkif::LAYOUT_X86_64;
use crate::ring::blkif::{self, BlkifLayout, BlkifX86_32, BlkifX86_64, LAYOUT_X86_32};
use crate::ring::netif::{self, offsets as n, NetifRx, NetifTx};
use crate::ring::shared::{self as s, ring_size, RingProtocol};

fn compiler() -> String {
    std::env::var("CC").unwrap_or_else(|_| "cc".into())
}

fn include_args() -> Vec<String> {
    std::env::var("XEN_INCLUDE_DIR")
        .map(|d| vec![format!("-I{d}")])
        .unwrap_or_default()
}

/// Runs the C compiler on `source` with `args`, returning stdout; fails the
/// test with the compiler's messages (each names the fact that differs).
fn cc(args: &[&str], source: &str) -> String {
    let mut child = Command::new(compiler())
        .args(args)
        .args(include_args())
        .args(["-x", "c", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run the C compiler `{}`: {e}", compiler()));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(source.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "Xen headers disagree with ours ({args:?}):\n{}\n--- source ---\n{source}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

struct Checks(String);

impl Checks {
    fn new() -> Checks {
        Checks(
            "#include <stdint.h>\n#include <stddef.h>\n\
             #include <xen/io/blkif.h>\n#include <xen/io/netif.h>\n"
                .to_string(),
        )
    }

    fn eq(&mut self, c: &str, ours: impl std::fmt::Display) {
        writeln!(
            self.0,
            "_Static_assert(({c}) == ({ours}), \"{} == {ours}\");",
            c.replace('"', "'")
        )
        .unwrap();
    }

    fn blkif(&mut self, l: &BlkifLayout, slot_size: usize) {
        let req = "struct blkif_request";
        let dis = "struct blkif_request_discard";
        let ind = "struct blkif_request_indirect";
        let rsp = "struct blkif_response";
        self.eq(&format!("sizeof({req})"), l.request_size);
        self.eq(&format!("offsetof({req}, operation)"), l.request_operation);
        self.eq(
            &format!("offsetof({req}, nr_segments)"),
            l.request_nr_segments,
        );
        self.eq(&format!("offsetof({req}, handle)"), l.request_handle);
        self.eq(&format!("offsetof({req}, id)"), l.request_id);
        self.eq(
            &format!("offsetof({req}, sector_number)"),
            l.request_sector_number,
        );
        self.eq(&format!("offsetof({req}, seg)"), l.request_seg);
        self.eq(&format!("sizeof({dis})"), l.discard_size);
        self.eq(&format!("offsetof({dis}, flag)"), l.discard_flag);
        self.eq(&format!("offsetof({dis}, handle)"), l.discard_handle);
        self.eq(&format!("offsetof({dis}, id)"), l.discard_id);
        self.eq(
            &format!("offsetof({dis}, sector_number)"),
            l.discard_sector_number,
        );
        self.eq(
            &format!("offsetof({dis}, nr_sectors)"),
            l.discard_nr_sectors,
        );
        self.eq(&format!("sizeof({ind})"), l.indirect_size);
        self.eq(&format!("offsetof({ind}, indirect_op)"), l.indirect_op);
        self.eq(
            &format!("offsetof({ind}, nr_segments)"),
            l.indirect_nr_segments,
        );
        self.eq(&format!("offsetof({ind}, id)"), l.indirect_id);
        self.eq(
            &format!("offsetof({ind}, sector_number)"),
            l.indirect_sector_number,
        );
        self.eq(&format!("offsetof({ind}, handle)"), l.indirect_handle);
        self.eq(
            &format!("offsetof({ind}, indirect_grefs)"),
            l.indirect_grefs,
        );
        self.eq(&format!("sizeof({rsp})"), l.response_size);
        self.eq(&format!("offsetof({rsp}, id)"), l.response_id);
        self.eq(&format!("offsetof({rsp}, operation)"), l.response_operation);
        self.eq(&format!("offsetof({rsp}, status)"), l.response_status);
        self.eq("sizeof(union blkif_sring_entry)", l.slot_size);
        self.eq("sizeof(union blkif_sring_entry)", slot_size);
        self.eq("sizeof(struct blkif_request_segment)", blkif::SEGMENT_SIZE);
        self.eq("offsetof(struct blkif_request_segment, gref)", 0);
        self.eq("offsetof(struct blkif_request_segment, first_sect)", 4);
        self.eq("offsetof(struct blkif_request_segment, last_sect)", 5);
        self.ring("blkif", slot_size);
    }

    /// The header offsets and `__CONST_RING_SIZE` for 1 to 16 pages.
    fn ring(&mut self, tag: &str, slot_size: usize) {
        for (field, ours) in [
            ("req_prod", s::REQ_PROD),
            ("req_event", s::REQ_EVENT),
            ("rsp_prod", s::RSP_PROD),
            ("rsp_event", s::RSP_EVENT),
            ("pvt", s::PVT),
            ("__pad", s::PAD),
            ("ring", s::HEADER_SIZE),
        ] {
            self.eq(&format!("offsetof(struct {tag}_sring, {field})"), ours);
        }
        for pages in [1, 2, 4, 8, 16] {
            self.eq(
                &format!("__CONST_RING_SIZE({tag}, {pages} * 4096)"),
                ring_size(pages * 4096, slot_size),
            );
        }
    }

    fn netif(&mut self) {
        let sizes = [
            ("struct netif_tx_request", netif::TX_REQUEST_SIZE),
            ("struct netif_tx_response", netif::TX_RESPONSE_SIZE),
            ("struct netif_rx_request", netif::RX_REQUEST_SIZE),
            ("struct netif_rx_response", netif::RX_RESPONSE_SIZE),
            ("struct netif_extra_info", netif::EXTRA_INFO_SIZE),
            ("union netif_tx_sring_entry", netif::TX_SLOT_SIZE),
            ("union netif_rx_sring_entry", netif::RX_SLOT_SIZE),
            ("union netif_tx_sring_entry", NetifTx::SLOT_SIZE),
            ("union netif_rx_sring_entry", NetifRx::SLOT_SIZE),
        ];
        for (ty, ours) in sizes {
            self.eq(&format!("sizeof({ty})"), ours);
        }
        let offsets = [
            ("struct netif_tx_request, gref", n::TX_REQ_GREF),
            ("struct netif_tx_request, offset", n::TX_REQ_OFFSET),
            ("struct netif_tx_request, flags", n::TX_REQ_FLAGS),
            ("struct netif_tx_request, id", n::TX_REQ_ID),
            ("struct netif_tx_request, size", n::TX_REQ_SIZE),
            ("struct netif_tx_response, id", n::TX_RSP_ID),
            ("struct netif_tx_response, status", n::TX_RSP_STATUS),
            ("struct netif_rx_request, id", n::RX_REQ_ID),
            ("struct netif_rx_request, gref", n::RX_REQ_GREF),
            ("struct netif_rx_response, id", n::RX_RSP_ID),
            ("struct netif_rx_response, offset", n::RX_RSP_OFFSET),
            ("struct netif_rx_response, flags", n::RX_RSP_FLAGS),
            ("struct netif_rx_response, status", n::RX_RSP_STATUS),
            ("struct netif_extra_info, type", n::EXTRA_TYPE),
            ("struct netif_extra_info, flags", n::EXTRA_FLAGS),
            ("struct netif_extra_info, u", n::EXTRA_U),
            ("struct netif_extra_info, u.gso.size", n::EXTRA_GSO_SIZE),
            ("struct netif_extra_info, u.gso.type", n::EXTRA_GSO_TYPE),
            (
                "struct netif_extra_info, u.gso.features",
                n::EXTRA_GSO_FEATURES,
            ),
            ("struct netif_extra_info, u.mcast.addr", n::EXTRA_MCAST_ADDR),
            ("struct netif_extra_info, u.hash.type", n::EXTRA_HASH_TYPE),
            (
                "struct netif_extra_info, u.hash.algorithm",
                n::EXTRA_HASH_ALGORITHM,
            ),
            ("struct netif_extra_info, u.hash.value", n::EXTRA_HASH_VALUE),
        ];
        for (field, ours) in offsets {
            self.eq(&format!("offsetof({field})"), ours);
        }
        self.ring("netif_tx", NetifTx::SLOT_SIZE);
        self.ring("netif_rx", NetifRx::SLOT_SIZE);
    }

    fn constants(&mut self) {
        let ints: [(&str, i64); 46] = [
            ("BLKIF_OP_READ", blkif::BLKIF_OP_READ.into()),
            ("BLKIF_OP_WRITE", blkif::BLKIF_OP_WRITE.into()),
            (
                "BLKIF_OP_WRITE_BARRIER",
                blkif::BLKIF_OP_WRITE_BARRIER.into(),
            ),
            (
                "BLKIF_OP_FLUSH_DISKCACHE",
                blkif::BLKIF_OP_FLUSH_DISKCACHE.into(),
            ),
            ("BLKIF_OP_RESERVED_1", blkif::BLKIF_OP_RESERVED_1.into()),
            ("BLKIF_OP_DISCARD", blkif::BLKIF_OP_DISCARD.into()),
            ("BLKIF_OP_INDIRECT", blkif::BLKIF_OP_INDIRECT.into()),
            (
                "BLKIF_MAX_SEGMENTS_PER_REQUEST",
                blkif::BLKIF_MAX_SEGMENTS_PER_REQUEST as i64,
            ),
            (
                "BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST",
                blkif::BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST as i64,
            ),
            (
                "4096 / sizeof(struct blkif_request_segment)",
                blkif::SEGMENTS_PER_INDIRECT_PAGE as i64,
            ),
            ("BLKIF_DISCARD_SECURE", blkif::BLKIF_DISCARD_SECURE.into()),
            ("BLKIF_RSP_OKAY", blkif::BLKIF_RSP_OKAY.into()),
            ("BLKIF_RSP_ERROR", blkif::BLKIF_RSP_ERROR.into()),
            ("BLKIF_RSP_EOPNOTSUPP", blkif::BLKIF_RSP_EOPNOTSUPP.into()),
            ("VDISK_CDROM", blkif::VDISK_CDROM.into()),
            ("VDISK_REMOVABLE", blkif::VDISK_REMOVABLE.into()),
            ("VDISK_READONLY", blkif::VDISK_READONLY.into()),
            ("NETTXF_csum_blank", netif::NETTXF_CSUM_BLANK.into()),
            ("NETTXF_data_validated", netif::NETTXF_DATA_VALIDATED.into()),
            ("NETTXF_more_data", netif::NETTXF_MORE_DATA.into()),
            ("NETTXF_extra_info", netif::NETTXF_EXTRA_INFO.into()),
            ("NETRXF_data_validated", netif::NETRXF_DATA_VALIDATED.into()),
            ("NETRXF_csum_blank", netif::NETRXF_CSUM_BLANK.into()),
            ("NETRXF_more_data", netif::NETRXF_MORE_DATA.into()),
            ("NETRXF_extra_info", netif::NETRXF_EXTRA_INFO.into()),
            ("NETRXF_gso_prefix", netif::NETRXF_GSO_PREFIX.into()),
            (
                "XEN_NETIF_EXTRA_TYPE_NONE",
                netif::XEN_NETIF_EXTRA_TYPE_NONE.into(),
            ),
            (
                "XEN_NETIF_EXTRA_TYPE_GSO",
                netif::XEN_NETIF_EXTRA_TYPE_GSO.into(),
            ),
            (
                "XEN_NETIF_EXTRA_TYPE_MCAST_ADD",
                netif::XEN_NETIF_EXTRA_TYPE_MCAST_ADD.into(),
            ),
            (
                "XEN_NETIF_EXTRA_TYPE_MCAST_DEL",
                netif::XEN_NETIF_EXTRA_TYPE_MCAST_DEL.into(),
            ),
            (
                "XEN_NETIF_EXTRA_TYPE_HASH",
                netif::XEN_NETIF_EXTRA_TYPE_HASH.into(),
            ),
            (
                "XEN_NETIF_EXTRA_TYPE_MAX",
                netif::XEN_NETIF_EXTRA_TYPE_MAX.into(),
            ),
            (
                "XEN_NETIF_EXTRA_FLAG_MORE",
                netif::XEN_NETIF_EXTRA_FLAG_MORE.into(),
            ),
            (
                "XEN_NETIF_GSO_TYPE_NONE",
                netif::XEN_NETIF_GSO_TYPE_NONE.into(),
            ),
            (
                "XEN_NETIF_GSO_TYPE_TCPV4",
                netif::XEN_NETIF_GSO_TYPE_TCPV4.into(),
            ),
            (
                "XEN_NETIF_GSO_TYPE_TCPV6",
                netif::XEN_NETIF_GSO_TYPE_TCPV6.into(),
            ),
            ("NETIF_RSP_DROPPED", netif::NETIF_RSP_DROPPED.into()),
            ("NETIF_RSP_ERROR", netif::NETIF_RSP_ERROR.into()),
            ("NETIF_RSP_OKAY", netif::NETIF_RSP_OKAY.into()),
            ("NETIF_RSP_NULL", netif::NETIF_RSP_NULL.into()),
            (
                "XEN_NETIF_NR_SLOTS_MIN",
                netif::XEN_NETIF_NR_SLOTS_MIN as i64,
            ),
            ("XEN_NETIF_MAX_TX_SIZE", netif::XEN_NETIF_MAX_TX_SIZE.into()),
            ("sizeof(RING_IDX)", 4),
            (
                "sizeof(((struct blkif_sring *)0)->pvt)",
                (s::PAD - s::PVT) as i64,
            ),
            (
                "sizeof(((struct blkif_sring *)0)->__pad)",
                (s::HEADER_SIZE - s::PAD) as i64,
            ),
            ("sizeof(grant_ref_t)", 4),
        ];
        for (c, ours) in ints {
            // Compared as signed values so negative statuses match.
            self.eq(&format!("(long long)({c})"), format!("{ours}LL"));
        }
    }
}

#[test]
fn x86_64_abi_layouts_match_the_installed_xen_headers() {
    let mut c = Checks::new();
    c.blkif(&LAYOUT_X86_64, BlkifX86_64::SLOT_SIZE);
    c.netif();
    c.constants();
    cc(&["-m64", "-ffreestanding", "-fsyntax-only"], &c.0);
}

#[test]
fn x86_32_abi_layouts_match_the_installed_xen_headers() {
    // Compiled as i386: the layout a 32-bit guest's blkfront uses.
    let mut c = Checks::new();
    c.blkif(&LAYOUT_X86_32, BlkifX86_32::SLOT_SIZE);
    // netif has no 8-byte fields: the same layout on both ABIs.
    c.netif();
    c.constants();
    cc(&["-m32", "-ffreestanding", "-fsyntax-only"], &c.0);
}

#[test]
fn protocol_names_match_protocols_h() {
    let out = cc(
        &["-E", "-P"],
        "#include <xen/io/protocols.h>\n\
         XEN_IO_PROTO_ABI_X86_32 XEN_IO_PROTO_ABI_X86_64 XEN_IO_PROTO_ABI_NATIVE\n",
    );
    let words: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(
        words,
        [
            format!("\"{}\"", blkif::PROTOCOL_X86_32),
            format!("\"{}\"", blkif::PROTOCOL_X86_64),
            format!("\"{}\"", blkif::BlkifProtocol::native().layout().protocol),
        ]
    );
}

#[test]
fn a_wrong_value_is_caught() {
    // The harness itself: a deliberately wrong fact must fail to compile.
    let mut c = Checks::new();
    c.eq("sizeof(struct blkif_request)", 111);
    let out = Command::new(compiler())
        .args(["-m64", "-ffreestanding", "-fsyntax-only"])
        .args(include_args())
        .args(["-x", "c", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            child.stdin.take().unwrap().write_all(c.0.as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("sizeof(struct blkif_request) == 111"));
}
