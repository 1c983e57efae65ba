//! Tap tests against the real kernel: they need root and /dev/net/tun (both present on
//! this project's machines) and fail, not skip, without them. Every interface they make
//! is uniquely named and removed again.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use super::*;

/// A fresh interface name: `<prefix><pid><n>`, at most 15 bytes.
pub(crate) fn unique_ifname(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let name = format!("{prefix}{}x{n}", std::process::id());
    assert!(name.len() < 16, "{name} too long");
    name
}

/// Run `ip <args>`, panicking with its stderr on failure.
pub(crate) fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Deletes an interface on drop (persistent taps and bridges outlive our fds).
pub(crate) struct LinkGuard(pub String);

impl Drop for LinkGuard {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).output();
    }
}

fn exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

fn sysfs(name: &str, attr: &str) -> String {
    std::fs::read_to_string(Path::new("/sys/class/net").join(name).join(attr))
        .unwrap_or_else(|e| panic!("read {name}/{attr}: {e}"))
        .trim()
        .to_string()
}

fn hex(s: &str) -> u32 {
    u32::from_str_radix(s.trim_start_matches("0x"), 16).unwrap()
}

#[test]
fn creates_a_tap_with_vnet_header_and_removes_it_on_close() {
    let name = unique_ifname("oxt");
    let tap = Tap::open(&name, 1).expect("open tap (needs root and /dev/net/tun)");
    assert!(tap.created());
    assert_eq!(tap.name(), name);
    assert_eq!(tap.queues().len(), 1);
    assert!(exists(&name));
    let flags = hex(&sysfs(&name, "tun_flags"));
    let want = (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as u32;
    assert_eq!(flags & want, want, "tun_flags {flags:#x}");
    assert_eq!(flags & libc::IFF_MULTI_QUEUE as u32, 0);
    // Link set up.
    assert_ne!(hex(&sysfs(&name, "flags")) & libc::IFF_UP as u32, 0);
    // Reads do not block.
    let mut buf = [0u8; 2048];
    let err = loop {
        match tap.queues()[0].read_frame(&mut buf) {
            Ok(_) => continue, // IPv6 chatter after link-up: drain it
            Err(e) => break e,
        }
    };
    assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
    drop(tap);
    assert!(!exists(&name), "a created tap must vanish with its fds");
}

#[test]
fn opens_an_existing_tap_and_leaves_it() {
    let name = unique_ifname("oxt");
    ip(&["tuntap", "add", "dev", &name, "mode", "tap"]);
    let _guard = LinkGuard(name.clone());
    let tap = Tap::open(&name, 1).unwrap();
    assert!(!tap.created());
    drop(tap);
    assert!(exists(&name), "a tap we did not create stays");
}

#[test]
fn opens_an_existing_multiqueue_tap_with_one_queue() {
    let name = unique_ifname("oxt");
    ip(&["tuntap", "add", "dev", &name, "mode", "tap", "multi_queue"]);
    let _guard = LinkGuard(name.clone());
    let tap = Tap::open(&name, 1).unwrap();
    assert!(!tap.created());
    assert_eq!(tap.queues().len(), 1);
}

#[test]
fn busy_tap_error_names_tap_and_step() {
    let name = unique_ifname("oxt");
    let _tap = Tap::open(&name, 1).unwrap();
    let err = Tap::open(&name, 1).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("cannot open tap {name}: TUNSETIFF: Device or resource busy")
    );
}

#[test]
fn invalid_names_are_refused_before_any_syscall() {
    for bad in ["", "a/b", "a b", "tap%d", "sixteen-bytes-xx", ".."] {
        let err = Tap::open(bad, 1).unwrap_err();
        assert!(
            matches!(err, TapError::InvalidName { .. }),
            "{bad:?}: {err}"
        );
    }
    let err = Tap::open("oxtzero", 0).unwrap_err();
    assert!(matches!(err, TapError::NoQueues { .. }), "{err}");
}

#[test]
fn offload_ioctls_are_accepted() {
    let name = unique_ifname("oxt");
    let tap = Tap::open(&name, 1).unwrap();
    let all = libc::TUN_F_CSUM
        | libc::TUN_F_TSO4
        | libc::TUN_F_TSO6
        | libc::TUN_F_TSO_ECN
        | libc::TUN_F_UFO;
    for flags in [0, libc::TUN_F_CSUM, all] {
        tap.set_offload(flags)
            .unwrap_or_else(|e| panic!("offload {flags:#x}: {e}"));
    }
}

#[test]
fn offload_flags_follow_guest_features() {
    use virtio_bindings::virtio_net::*;
    let f = |bits: &[u32]| bits.iter().fold(0u64, |acc, b| acc | 1 << b);
    assert_eq!(offload_flags(0), 0);
    // TSO without checksum offload is invalid (and the kernel says EINVAL).
    assert_eq!(offload_flags(f(&[VIRTIO_NET_F_GUEST_TSO4])), 0);
    assert_eq!(
        offload_flags(f(&[VIRTIO_NET_F_GUEST_CSUM])),
        libc::TUN_F_CSUM
    );
    assert_eq!(
        offload_flags(f(&[
            VIRTIO_NET_F_GUEST_CSUM,
            VIRTIO_NET_F_GUEST_TSO4,
            VIRTIO_NET_F_GUEST_TSO6,
            VIRTIO_NET_F_GUEST_ECN,
            VIRTIO_NET_F_GUEST_UFO,
        ])),
        libc::TUN_F_CSUM
            | libc::TUN_F_TSO4
            | libc::TUN_F_TSO6
            | libc::TUN_F_TSO_ECN
            | libc::TUN_F_UFO
    );
    // Host-side (transmit) offloads are not the tap's business here.
    assert_eq!(
        offload_flags(f(&[VIRTIO_NET_F_CSUM, VIRTIO_NET_F_HOST_TSO4])),
        0
    );
}

#[test]
fn multiqueue_opens_one_fd_per_queue() {
    use std::os::fd::AsRawFd;
    let name = unique_ifname("oxt");
    let tap = Tap::open(&name, 4).unwrap();
    assert_eq!(tap.queues().len(), 4);
    let mut fds: Vec<_> = tap.queues().iter().map(|q| q.as_raw_fd()).collect();
    fds.sort();
    fds.dedup();
    assert_eq!(fds.len(), 4);
    let flags = hex(&sysfs(&name, "tun_flags"));
    assert_ne!(
        flags & libc::IFF_MULTI_QUEUE as u32,
        0,
        "tun_flags {flags:#x}"
    );
    // Detach and re-attach a queue; repeating a state is a no-op.
    tap.set_queue_enabled(3, false).unwrap();
    assert!(!tap.queues()[3].is_enabled());
    tap.set_queue_enabled(3, false).unwrap();
    tap.set_queue_enabled(3, true).unwrap();
    assert!(tap.queues()[3].is_enabled());
    assert!(tap.set_queue_enabled(4, true).is_err());
    drop(tap);
    assert!(!exists(&name));
}

#[test]
fn single_queue_tap_refuses_a_multiqueue_open() {
    let name = unique_ifname("oxt");
    ip(&["tuntap", "add", "dev", &name, "mode", "tap"]);
    let _guard = LinkGuard(name.clone());
    let err = Tap::open(&name, 2).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!("cannot open tap {name}: TUNSETIFF: ")),
        "{err}"
    );
}

#[test]
fn host_mac_is_the_tap_address() {
    let name = unique_ifname("oxt");
    let tap = Tap::open(&name, 1).unwrap();
    let mac = tap.host_mac().unwrap();
    let text = mac
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    assert_eq!(text, sysfs(&name, "address"));
    assert_eq!(tap.if_index().unwrap().to_string(), sysfs(&name, "ifindex"));
}

#[test]
fn attaches_to_a_bridge() {
    let bridge = unique_ifname("oxb");
    ip(&["link", "add", &bridge, "type", "bridge"]);
    let _guard = LinkGuard(bridge.clone());
    let name = unique_ifname("oxt");
    let tap = Tap::open(&name, 1).unwrap();
    assert_eq!(tap.bridge(), None);
    tap.attach_to_bridge(&bridge).unwrap();
    assert_eq!(tap.bridge().as_deref(), Some(bridge.as_str()));
    // Again: already a port, fine.
    tap.attach_to_bridge(&bridge).unwrap();
    drop(tap);
    assert!(!exists(&name));
    assert!(exists(&bridge));
}

#[test]
fn missing_bridge_is_named_in_the_error() {
    let name = unique_ifname("oxt");
    let tap = Tap::open(&name, 1).unwrap();
    let missing = unique_ifname("oxn");
    let err = tap.attach_to_bridge(&missing).unwrap_err();
    assert!(matches!(err, TapError::NoBridge { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!("cannot attach tap {name} to bridge {missing}: bridge {missing} does not exist")
    );
}

#[test]
fn a_non_bridge_is_refused_as_bridge() {
    let name = unique_ifname("oxt");
    let other = unique_ifname("oxt");
    let tap = Tap::open(&name, 1).unwrap();
    let _other = Tap::open(&other, 1).unwrap();
    let err = tap.attach_to_bridge(&other).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!(
            "cannot attach tap {name} to bridge {other}: SIOCBRADDIF: "
        )),
        "{err}"
    );
}
