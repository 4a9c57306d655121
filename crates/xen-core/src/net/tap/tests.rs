//! TAP devices against the real kernel: guest ⇄ vif ⇄ TAP ⇄ the kernel's
//! own stack. Each test runs on a thread of its own in a network
//! namespace it makes (network namespaces are per thread), so the host is
//! untouched and names never clash; the `ip` commands it runs inherit the
//! namespace. Nothing sleeps: the guest blocks on its event channel and
//! sockets on their reads, with timeouts only as guards against hangs.
//! Where the kernel offers no TAP devices or no new namespace, a test says
//! so on stderr and does not run.

use std::io::Write;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::frames::*;
use super::*;
use crate::net::checksum;
use crate::net::frontend::{NetFrontOptions, SimNetFront};
use crate::net::{Packet, VifConfig, VifFeatures, VifQueue, DEFAULT_RX_QUEUE};
use crate::platform::sim::{SimHost, SimHypervisor};
use crate::platform::{DomId, Platform};

const BACK: DomId = 0;
const GUEST: DomId = 5;
const VIF: &str = "vif5.0";
/// A guard against a hang, far beyond what any step takes.
const WAIT: Duration = Duration::from_secs(30);

/// Runs `body` on a new thread in a new network namespace; says why on
/// stderr (past the test harness's capture) if that cannot be had.
fn in_netns(test: &'static str, body: impl FnOnce() + Send + 'static) {
    let skipped = move |why: &str| {
        let line = format!("SKIPPED net::tap::tests::{test}: {why}\n");
        let _ = std::io::stderr().write_all(line.as_bytes());
    };
    let thread = std::thread::Builder::new()
        .name(test.into())
        .spawn(move || {
            if !std::path::Path::new("/dev/net/tun").exists() {
                return skipped("TAP devices need /dev/net/tun, which does not exist here");
            }
            // SAFETY: unshare takes no pointer; with CLONE_NEWNET alone it
            // moves the calling thread only into a new network namespace,
            // and the process's other threads (other tests) keep theirs.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                let e = std::io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EPERM) => {
                        return skipped(
                            "unshare(CLONE_NEWNET) is not permitted here (it needs CAP_SYS_ADMIN)",
                        )
                    }
                    Some(libc::EINVAL) => return skipped("this kernel has no network namespaces"),
                    _ => panic!("unshare(CLONE_NEWNET): {e}"),
                }
            }
            // No IPv6 in the namespace: the kernel then sends nothing on
            // a device unasked (router solicitations, MLD reports).
            for conf in ["default", "all"] {
                let path = format!("/proc/sys/net/ipv6/conf/{conf}/disable_ipv6");
                let _ = std::fs::write(path, "1");
            }
            body();
        })
        .expect("a test thread");
    if let Err(panic) = thread.join() {
        std::panic::resume_unwind(panic);
    }
}

/// Runs `ip` with `args` in the calling thread's namespace; its output.
fn ip(args: &[&str]) -> String {
    let run = |program: &str| std::process::Command::new(program).args(args).output();
    let out = match run("ip") {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => run("/usr/sbin/ip"),
        other => other,
    };
    let out = out.unwrap_or_else(|e| panic!("ip {}: {e}", args.join(" ")));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ip {}: {err}", args.join(" "));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The guest, its vif and the TAP, in the order they go.
struct World {
    vif: VifQueue,
    front: SimNetFront,
    link: TapLink,
    platform: Arc<Platform>,
    _host: SimHost,
    _hv: SimHypervisor,
}

/// Guest 5, which negotiated `features`, behind `vif5.0`, whose address
/// is 10.9.0.1/24; the kernel knows the guest's address (a permanent
/// neighbour), so that it sends to it unasked. `connect`: the vif's
/// receiver is connected to the link.
fn world(features: VifFeatures, connect: bool) -> World {
    let (hv, host) = crate::testutil::sim_host(&[BACK, GUEST, 6]);
    let platform = Arc::new(Platform::simulated(&host, BACK).unwrap());
    let tap = TapDevice::create(VIF, TapOptions::default()).unwrap();
    let link = TapLink::start(&platform, tap).unwrap();
    let evtchn = Arc::new(host.evtchn(GUEST).unwrap());
    let gnttab = host.gnttab(GUEST).unwrap();
    let front = SimNetFront::new(gnttab, evtchn, BACK, NetFrontOptions::default()).unwrap();
    let config = VifConfig {
        frontend: GUEST,
        tx_ring_ref: front.tx_ring_ref(),
        rx_ring_ref: front.rx_ring_ref(),
        tx_port: front.tx_port(),
        rx_port: None,
        features,
        rx_queue: DEFAULT_RX_QUEUE,
    };
    let vif = VifQueue::start(&platform, &config, link.uplink(), Box::new(|_| {})).unwrap();
    if connect {
        link.connect(Arc::new(vif.receiver()), &features).unwrap();
    }
    ip(&["addr", "add", "10.9.0.1/24", "dev", VIF]);
    let mac = "00:16:3e:00:00:05";
    ip(&[
        "neigh",
        "add",
        "10.9.0.2",
        "lladdr",
        mac,
        "dev",
        VIF,
        "nud",
        "permanent",
    ]);
    World {
        vif,
        front,
        link,
        platform,
        _host: host,
        _hv: hv,
    }
}

impl World {
    fn send(&mut self, p: &Packet) {
        self.front.send(p).unwrap();
    }

    /// The next frame for the guest that `wanted` picks (the others,
    /// if any, passed by).
    fn recv(&mut self, what: &str, wanted: impl Fn(&Packet) -> bool) -> Packet {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.front.recv(left).unwrap() {
                Some(p) if wanted(&p) => return p,
                Some(_) => continue,
                None => panic!(
                    "no {what} within the guard: link {:?}, vif {:?}",
                    self.link.stats(),
                    self.vif.stats()
                ),
            }
        }
    }
}

fn is_arp_reply(p: &Packet) -> bool {
    p.data.len() >= 42 && p.data[12..14] == [0x08, 0x06] && p.data[20..22] == [0, 2]
}

/// The guest's ARP request for the host's address.
fn arp_request() -> Packet {
    Packet::new(ethernet(
        [0xff; 6],
        GUEST_MAC,
        0x0806,
        &arp(1, GUEST_MAC, GUEST_IP, [0; 6], HOST_IP),
    ))
}

#[test]
fn the_guest_resolves_the_hosts_address_and_is_answered() {
    in_netns(
        "the_guest_resolves_the_hosts_address_and_is_answered",
        || {
            let mut w = world(VifFeatures::default(), true);
            w.send(&arp_request());
            let reply = w.recv("ARP reply", is_arp_reply);
            let d = &reply.data;
            assert_eq!((&d[..6], &d[6..12]), (&GUEST_MAC[..], &XEN_BACKEND_MAC[..]));
            // Sender: the TAP, at the host's address; target: the guest.
            assert_eq!(&d[22..28], &XEN_BACKEND_MAC);
            assert_eq!(&d[28..32], &HOST_IP);
            assert_eq!((&d[32..38], &d[38..42]), (&GUEST_MAC[..], &GUEST_IP[..]));
            let s = w.link.stats();
            assert!(s.tx_frames >= 1 && s.rx_frames >= 1, "{s:?}");
            assert_eq!(s.tx_bytes, arp_request().data.len() as u64 * s.tx_frames);
        },
    );
}

#[test]
fn the_guest_pings_the_host_and_gets_its_echo() {
    in_netns("the_guest_pings_the_host_and_gets_its_echo", || {
        let mut w = world(VifFeatures::default(), true);
        let payload: Vec<u8> = (0..56).collect();
        let request = ipv4(
            GUEST_IP,
            HOST_IP,
            PROTO_ICMP,
            &icmp_echo(8, 0x1234, 7, &payload),
        );
        w.send(&Packet::new(ethernet(
            XEN_BACKEND_MAC,
            GUEST_MAC,
            0x0800,
            &request,
        )));
        let reply = w.recv("echo reply", |p| {
            p.data.len() > 34 && p.data[23] == PROTO_ICMP && p.data[34] == 0
        });
        let ip_hdr = &reply.data[14..34];
        assert_eq!(internet_checksum(ip_hdr), 0, "the IP header's checksum");
        assert_eq!(
            (&ip_hdr[12..16], &ip_hdr[16..20]),
            (&HOST_IP[..], &GUEST_IP[..])
        );
        let icmp = &reply.data[34..];
        assert_eq!(internet_checksum(icmp), 0, "the ICMP checksum");
        assert_eq!(icmp, &icmp_echo(0, 0x1234, 7, &payload)[..]);
    });
}

/// A UDP frame from the guest to the host's `port`, its checksum field
/// holding `field`.
fn udp_from_guest(port: u16, payload: &[u8], field: u16) -> Packet {
    let mut segment = udp(4000, port, payload);
    segment[6..8].copy_from_slice(&field.to_be_bytes());
    let packet = ipv4(GUEST_IP, HOST_IP, PROTO_UDP, &segment);
    Packet::new(ethernet(XEN_BACKEND_MAC, GUEST_MAC, 0x0800, &packet))
}

/// A UDP counter of this thread's namespace (`/proc/thread-self`: the
/// process's own `/proc/net` is another thread's namespace).
fn udp_stat(name: &str) -> u64 {
    let snmp = std::fs::read_to_string("/proc/thread-self/net/snmp").unwrap();
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp: "));
    let (names, values) = (udp.next().unwrap(), udp.next().unwrap());
    let at = names.split(' ').position(|n| n == name).unwrap();
    values.split(' ').nth(at).unwrap().parse().unwrap()
}

#[test]
fn udp_with_a_blank_checksum_crosses_both_ways() {
    in_netns("udp_with_a_blank_checksum_crosses_both_ways", || {
        let mut w = world(VifFeatures::default(), true);
        let sock = UdpSocket::bind(("10.9.0.1", 0)).unwrap();
        sock.set_read_timeout(Some(WAIT)).unwrap();
        let port = sock.local_addr().unwrap().port();
        // A wrong checksum that is not said to be blank: the kernel drops
        // the datagram, so its checksums are checked on this path.
        w.send(&udp_from_guest(port, b"wrong", 0xbad0));
        // Blank, with garbage in the field: it arrives.
        let mut blank = udp_from_guest(port, b"blank checksum", 0xdead);
        blank.offload.csum_blank = true;
        w.send(&blank);
        let mut buf = [0u8; 100];
        let (n, from) = sock.recv_from(&mut buf).expect("the blank datagram");
        assert_eq!(&buf[..n], b"blank checksum");
        assert_eq!(from, "10.9.0.2:4000".parse::<SocketAddr>().unwrap());
        assert_eq!(udp_stat("InCsumErrors"), 1, "the wrong one, and it alone");
        // And back: the kernel leaves its checksum to the guest.
        sock.send_to(b"and back", "10.9.0.2:4000").unwrap();
        let mut got = w.recv("UDP datagram", is_udp_to_guest);
        assert_eq!(&got.data[42..], b"and back");
        if got.offload.csum_blank {
            checksum::fill(&mut got.data).unwrap();
        }
        assert!(checksum::verify(&got.data).unwrap(), "{:?}", got.offload);
        let s = w.link.stats();
        assert_eq!((s.tx_frames, s.dropped), (2, 0), "{s:?}");
    });
}

/// A UDP datagram to the guest's port 4000.
fn is_udp_to_guest(p: &Packet) -> bool {
    p.data.len() >= 42 && p.data[23] == PROTO_UDP && p.data[36..38] == 4000u16.to_be_bytes()
}

#[test]
fn a_guest_without_offloads_is_sent_complete_checksums() {
    in_netns(
        "a_guest_without_offloads_is_sent_complete_checksums",
        || {
            let none = VifFeatures {
                csum_offload: false,
                gso_tcpv4: false,
                gso_tcpv6: false,
                ..VifFeatures::default()
            };
            let mut w = world(none, true);
            let sock = UdpSocket::bind(("10.9.0.1", 0)).unwrap();
            sock.send_to(b"complete", "10.9.0.2:4000").unwrap();
            let got = w.recv("UDP datagram", is_udp_to_guest);
            assert!(!got.offload.csum_blank, "{:?}", got.offload);
            assert!(checksum::verify(&got.data).unwrap());
            assert_eq!(
                w.vif.stats().csum_filled,
                0,
                "the kernel did it, not the vif"
            );
        },
    );
}

#[test]
fn a_name_is_taken_once_and_must_be_one_linux_takes() {
    in_netns("a_name_is_taken_once_and_must_be_one_linux_takes", || {
        let first = TapDevice::create(VIF, TapOptions::default()).unwrap();
        assert_eq!(first.name(), VIF);
        let again = TapDevice::create(VIF, TapOptions::default()).unwrap_err();
        assert!(
            matches!(&again, TapError::NameInUse { name } if name == VIF),
            "{again:?}"
        );
        let shown = again.to_string();
        assert!(shown.contains(VIF) && shown.contains("exists"), "{shown}");
        // A device of the name that is not a TAP at all.
        let lo = TapDevice::create("lo", TapOptions::default()).unwrap_err();
        assert!(matches!(lo, TapError::NameInUse { .. }), "{lo:?}");
        // IFNAMSIZ: 15 bytes and a NUL.
        let longest = "vif32767.123456";
        assert_eq!(
            TapDevice::create(longest, TapOptions::default())
                .unwrap()
                .name(),
            longest
        );
        for (name, why) in [
            ("vif32767.1234567", "longer than 15 bytes"),
            ("", "empty"),
            ("vif5/0", "'/'"),
            ("vif 5", "white space"),
        ] {
            let e = TapDevice::create(name, TapOptions::default()).unwrap_err();
            assert!(matches!(e, TapError::BadName { .. }), "{name:?}: {e:?}");
            assert!(e.to_string().contains(why), "{name:?}: {e}");
        }
    });
}

/// The flags, MTU and MAC address `ip` shows for a device.
fn shown(name: &str) -> (Vec<String>, String) {
    let line = ip(&["-o", "link", "show", "dev", name]);
    let flags = line.split(['<', '>']).nth(1).unwrap_or_default();
    let flags = flags.split(',').map(String::from).collect();
    (flags, line)
}

#[test]
fn options_set_the_mac_address_the_mtu_and_the_link_state() {
    in_netns(
        "options_set_the_mac_address_the_mtu_and_the_link_state",
        || {
            let _default = TapDevice::create(VIF, TapOptions::default()).unwrap();
            let (flags, line) = shown(VIF);
            assert!(flags.iter().any(|f| f == "UP"), "{line}");
            assert!(
                line.contains("mtu 1500") && line.contains("link/ether fe:ff:ff:ff:ff:ff"),
                "{line}"
            );
            let options = TapOptions {
                mac: Some([0x02, 0, 0, 0, 5, 1]),
                mtu: Some(9000),
                up: false,
            };
            let _other = TapDevice::create("vif5.1", options).unwrap();
            let (flags, line) = shown("vif5.1");
            assert!(!flags.iter().any(|f| f == "UP"), "{line}");
            assert!(
                line.contains("mtu 9000") && line.contains("link/ether 02:00:00:00:05:01"),
                "{line}"
            );
            let bad = TapOptions {
                mtu: Some(10),
                ..TapOptions::default()
            };
            let e = TapDevice::create("vif5.2", bad).unwrap_err();
            assert!(e.to_string().contains("setting the MTU"), "{e}");
        },
    );
}

#[test]
fn a_tap_joins_the_bridge_its_vif_names_as_vif_bridge_does() {
    in_netns(
        "a_tap_joins_the_bridge_its_vif_names_as_vif_bridge_does",
        || {
            ip(&["link", "add", "xenbr0", "type", "bridge"]);
            let tap = TapDevice::create(VIF, TapOptions::default()).unwrap();
            tap.join_bridge("xenbr0").unwrap();
            let (_, line) = shown(VIF);
            assert!(line.contains("master xenbr0"), "{line}");
            // No such bridge, or a name no bridge can have: a clear error.
            let e = tap.join_bridge("nosuchbr").unwrap_err();
            assert!(e.to_string().contains("adding it to the bridge"), "{e}");
            assert!(matches!(
                tap.join_bridge("a/b"),
                Err(TapError::BadName { .. })
            ));
        },
    );
}

#[test]
fn frames_read_before_a_vif_is_connected_are_dropped_and_counted() {
    in_netns(
        "frames_read_before_a_vif_is_connected_are_dropped_and_counted",
        || {
            let mut w = world(VifFeatures::default(), false);
            let sock = UdpSocket::bind(("10.9.0.1", 0)).unwrap();
            sock.send_to(b"too early", "10.9.0.2:4000").unwrap();
            // The frame is read and dropped on the loop's thread: a guard, not
            // a delay (nothing else is sent on the device).
            let deadline = Instant::now() + WAIT;
            while w.link.stats().dropped == 0 {
                assert!(Instant::now() < deadline, "not read: {:?}", w.link.stats());
                std::thread::yield_now();
            }
            assert_eq!(w.link.stats().rx_frames, 0);
            w.link
                .connect(Arc::new(w.vif.receiver()), &VifFeatures::default())
                .unwrap();
            w.send(&arp_request());
            let first = w.recv("a frame", |_| true);
            assert!(
                is_arp_reply(&first),
                "the early frame came after all: {first:?}"
            );
            assert_eq!(w.link.stats().dropped, 1);
        },
    );
}

#[test]
fn stopping_the_link_removes_the_device() {
    in_netns("stopping_the_link_removes_the_device", || {
        let mut w = world(VifFeatures::default(), true);
        w.send(&arp_request());
        w.recv("ARP reply", is_arp_reply);
        w.link.stop();
        w.link.stop();
        // The name is free again: the device is gone with its descriptor.
        // Another test's `ip` may be between fork and exec, holding a copy
        // of every descriptor of the process, ours too, until it execs:
        // the device goes then (a guard, not a delay).
        let deadline = Instant::now() + WAIT;
        let again = loop {
            match TapDevice::create(VIF, TapOptions::default()) {
                Ok(tap) => break tap,
                Err(TapError::NameInUse { .. }) if Instant::now() < deadline => {
                    std::thread::yield_now()
                }
                Err(e) => panic!("{e}"),
            }
        };
        // The vif's uplink drops what the guest sends now.
        let dropped = w.link.stats().dropped;
        w.send(&arp_request());
        w.front.wait_tx_done().unwrap();
        assert_eq!(w.link.stats().dropped, dropped + 1);
        drop(again);
    });
}

#[test]
fn a_device_removed_under_the_link_is_let_go() {
    in_netns("a_device_removed_under_the_link_is_let_go", || {
        let mut w = world(VifFeatures::default(), true);
        ip(&["link", "del", VIF]);
        let deadline = Instant::now() + WAIT;
        while !w.link.is_gone() {
            assert!(Instant::now() < deadline, "the link did not see it go");
            std::thread::yield_now();
        }
        w.send(&arp_request());
        w.front.wait_tx_done().unwrap();
        assert_eq!(w.link.stats().dropped, 1);
        // The loop goes on (the source left it, not spinning on the
        // descriptor's error), and stopping is still fine.
        assert!(w.platform.event_loop().responds(WAIT));
        w.link.stop();
    });
}
