//! The whole device on a real tap, with ring queues playing the guest driver.
//!
//! Data flow without a guest: the tap gets a private /24 (10.213.<x>.1, x picked per
//! test and machine-wide unique while held), the "guest" is 10.213.<x>.2 with a static
//! neighbour entry (no ARP needed). The device transmits a hand-built UDP/IPv4 frame to a
//! host socket on the tap's address (proves tx), and a host socket sends to the guest
//! address, which the device must put into an rx buffer (proves rx). Only addresses on
//! the tap are used; nothing leaves this machine. The tap, and with it the addresses and
//! the neighbour entry, disappears when the device is dropped.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use virtio_bindings::virtio_net::*;
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

use super::super::super::{
    ActivateError, ActiveQueue, VirtioDevice, F_RING_EVENT_IDX, F_RING_INDIRECT_DESC, F_VERSION_1,
    TYPE_NET,
};
use super::super::{VirtioNet, QUEUE_SIZE};
use super::*;
use crate::net::tests::{ip, unique_ifname};
use crate::net::Tap;

pub(crate) const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
/// Queue size the ring driver uses.
const QSIZE: u16 = 64;
const HDR: usize = 12;

fn bit(b: u32) -> u64 {
    1 << b
}

// ---- host side ----

/// The tap's private subnet. Picking one and assigning it happens under an exclusive
/// lock so that concurrent test processes never share a subnet.
pub(crate) struct HostNet {
    pub host: Ipv4Addr,
    pub guest: Ipv4Addr,
}

pub(crate) fn host_net(tap: &str) -> HostNet {
    let lock = File::create("/tmp/oxvm-net-tests.lock").unwrap();
    // SAFETY: flock on a file we own; released when `lock` closes.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
    let out = Command::new("ip")
        .args(["-4", "-o", "addr", "show"])
        .output()
        .unwrap();
    let used = String::from_utf8_lossy(&out.stdout).into_owned();
    let start = std::process::id() as usize % 250;
    let x = (0..250)
        .map(|k| (start + k) % 250 + 1)
        .find(|x| !used.contains(&format!("10.213.{x}.")))
        .expect("a free 10.213.x.0/24");
    let host = Ipv4Addr::new(10, 213, x as u8, 1);
    let guest = Ipv4Addr::new(10, 213, x as u8, 2);
    ip(&["addr", "add", &format!("{host}/24"), "dev", tap]);
    let mac = GUEST_MAC
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    ip(&[
        "neigh",
        "replace",
        &guest.to_string(),
        "lladdr",
        &mac,
        "dev",
        tap,
        "nud",
        "permanent",
    ]);
    HostNet { host, guest }
}

fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Ethernet + IPv4 + UDP (checksum 0: "none", valid for IPv4).
pub(crate) fn udp_frame(
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src: SocketAddr,
    dst: SocketAddr,
    payload: &[u8],
) -> Vec<u8> {
    let (SocketAddr::V4(src), SocketAddr::V4(dst)) = (src, dst) else {
        panic!("IPv4 only")
    };
    let mut f = Vec::new();
    f.extend(dst_mac);
    f.extend(src_mac);
    f.extend([0x08, 0x00]);
    let mut iph = [0u8; 20];
    iph[0] = 0x45;
    iph[2..4].copy_from_slice(&((20 + 8 + payload.len()) as u16).to_be_bytes());
    iph[6] = 0x40; // DF
    iph[8] = 64;
    iph[9] = 17;
    iph[12..16].copy_from_slice(&src.ip().octets());
    iph[16..20].copy_from_slice(&dst.ip().octets());
    let c = checksum(&iph);
    iph[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend(iph);
    f.extend(src.port().to_be_bytes());
    f.extend(dst.port().to_be_bytes());
    f.extend(((8 + payload.len()) as u16).to_be_bytes());
    f.extend([0, 0]);
    f.extend(payload);
    f
}

// ---- driver side ----

struct Driver<'a> {
    mem: &'a GuestMemoryMmap,
    queues: Vec<DriverQueue<'a>>,
    kicks: Vec<EventFd>,
    irq: Arc<TestInterrupt>,
    /// Next free descriptor per queue.
    next_desc: Vec<u16>,
}

impl<'a> Driver<'a> {
    /// Set up `n` queues (rings at 0x4000 * i) and activate `dev` with them.
    fn activate(
        dev: &mut VirtioNet,
        mem: &'a GuestMemoryMmap,
        features: u64,
        n: u16,
    ) -> Result<Self, ActivateError> {
        let mut d = Driver {
            mem,
            queues: Vec::new(),
            kicks: Vec::new(),
            irq: Arc::new(TestInterrupt::default()),
            next_desc: vec![0; usize::from(n)],
        };
        let mut active = Vec::new();
        for i in 0..n {
            let ring = DriverQueue::new(mem, u64::from(i) * 0x4000, QSIZE);
            let kick = EventFd::new(libc::EFD_NONBLOCK).unwrap();
            active.push(ActiveQueue {
                index: i,
                queue: ring.queue(),
                kick: kick.try_clone().unwrap(),
            });
            d.queues.push(ring);
            d.kicks.push(kick);
        }
        dev.activate(mem.clone(), d.irq.clone(), features, active)?;
        Ok(d)
    }

    /// Offer chains (each a list of descriptors, linked here) on queue `q` and kick.
    fn offer(&mut self, q: u16, chains: &[Vec<(u64, u32, u16)>]) -> Vec<u16> {
        let qi = usize::from(q);
        let mut heads = Vec::new();
        for chain in chains {
            let first = self.next_desc[qi];
            let descs: Vec<_> = chain
                .iter()
                .enumerate()
                .map(|(i, &(addr, len, flags))| {
                    let last = i + 1 == chain.len();
                    let next = first + i as u16 + 1;
                    desc(addr, len, if last { flags } else { flags | NEXT }, next)
                })
                .collect();
            self.queues[qi].add_chains(&descs, first);
            self.next_desc[qi] += chain.len() as u16;
            heads.push(first);
        }
        self.kicks[qi].write(1).unwrap();
        heads
    }

    fn used(&self, q: u16) -> Vec<(u32, u32)> {
        self.queues[usize::from(q)].used(0)
    }

    fn read(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        self.mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
        v
    }
}

/// Receive buffers: `n` single-descriptor chains of `len` bytes at `base`, `stride` apart.
fn rx_chains(base: u64, n: u64, len: u32) -> Vec<Vec<(u64, u32, u16)>> {
    (0..n)
        .map(|i| vec![(base + i * 0x1000, len, WRITE)])
        .collect()
}

/// Find the UDP datagram carrying `payload` among the used rx buffers (not mergeable:
/// one buffer each) and return its header + frame.
fn find_rx(driver: &Driver<'_>, base: u64, payload: &[u8]) -> Option<Vec<u8>> {
    driver.used(0).into_iter().find_map(|(id, len)| {
        let data = driver.read(base + u64::from(id) * 0x1000, len as usize);
        data.windows(payload.len())
            .any(|w| w == payload)
            .then_some(data)
    })
}

fn thread_tid(name: &str) -> Option<u32> {
    std::fs::read_dir("/proc/self/task").ok()?.find_map(|e| {
        let e = e.ok()?;
        let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
        (comm.trim() == name).then(|| e.file_name().to_str()?.parse().ok())?
    })
}

/// utime + stime of thread `tid`, in clock ticks.
fn cpu_ticks(tid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of stat; `after` starts at field 3.
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

// ---- tests ----

#[test]
fn features_config_space_and_queues() {
    let tap = Tap::open(&unique_ifname("oxt"), 1).unwrap();
    let dev = VirtioNet::new("cfg", tap, GUEST_MAC);
    assert_eq!(dev.device_type(), TYPE_NET);
    assert_eq!(dev.queue_max_sizes(), vec![QUEUE_SIZE; 2]);
    let f = dev.device_features();
    for b in [
        VIRTIO_NET_F_MAC,
        VIRTIO_NET_F_STATUS,
        VIRTIO_NET_F_CSUM,
        VIRTIO_NET_F_GUEST_CSUM,
        VIRTIO_NET_F_HOST_TSO4,
        VIRTIO_NET_F_HOST_TSO6,
        VIRTIO_NET_F_HOST_ECN,
        VIRTIO_NET_F_GUEST_TSO4,
        VIRTIO_NET_F_GUEST_TSO6,
        VIRTIO_NET_F_GUEST_ECN,
        VIRTIO_NET_F_MRG_RXBUF,
    ] {
        assert_ne!(f & bit(b), 0, "feature {b}");
    }
    for b in [VIRTIO_NET_F_MQ, VIRTIO_NET_F_CTRL_VQ, VIRTIO_NET_F_MTU] {
        assert_eq!(f & bit(b), 0, "feature {b}");
    }
    assert_ne!(f & F_VERSION_1, 0);

    let mut cfg = [0xffu8; 12];
    dev.read_config(0, &mut cfg);
    assert_eq!(cfg[..6], GUEST_MAC);
    assert_eq!(
        cfg[6..],
        [1, 0, 1, 0, 0, 0],
        "status LINK_UP, 1 pair, then zeros"
    );
    let mut far = [0xffu8; 4];
    dev.read_config(u64::MAX, &mut far);
    assert_eq!(far, [0; 4]);
    dev.link().set_up(false);
    let mut status = [0xffu8; 2];
    dev.read_config(6, &mut status);
    assert_eq!(status, [0, 0]);

    let mq = VirtioNet::new(
        "cfgmq",
        Tap::open(&unique_ifname("oxt"), 4).unwrap(),
        GUEST_MAC,
    );
    assert_eq!(mq.queue_max_sizes(), vec![QUEUE_SIZE; 9]);
    let f = mq.device_features();
    assert_ne!(f & bit(VIRTIO_NET_F_MQ), 0);
    assert_ne!(f & bit(VIRTIO_NET_F_CTRL_VQ), 0);
    let mut pairs = [0u8; 2];
    mq.read_config(8, &mut pairs);
    assert_eq!(u16::from_le_bytes(pairs), 4);
}

#[test]
fn activation_checks_features_and_queues() {
    let mut dev = VirtioNet::new(
        "act",
        Tap::open(&unique_ifname("oxt"), 1).unwrap(),
        GUEST_MAC,
    );
    let mem = memory();
    let err = Driver::activate(&mut dev, &mem, 0, 2).err().unwrap();
    assert!(
        matches!(err, ActivateError::MissingFeatures(F_VERSION_1)),
        "{err}"
    );
    let err = Driver::activate(&mut dev, &mem, F_VERSION_1, 1)
        .err()
        .unwrap();
    assert!(matches!(err, ActivateError::BadQueue(1, _)), "{err}");
    let err = Driver::activate(&mut dev, &mem, F_VERSION_1, 3)
        .err()
        .unwrap();
    assert!(matches!(err, ActivateError::BadQueue(2, _)), "{err}");
    // And then it works, and reset stops the worker.
    let _d = Driver::activate(&mut dev, &mem, F_VERSION_1, 2).unwrap();
    assert!(wait_until(5, || thread_tid("net-act-q0").is_some()));
    dev.reset();
    assert!(thread_tid("net-act-q0").is_none());
}

#[test]
fn udp_through_the_tap_both_ways() {
    let name = unique_ifname("oxt");
    let tap = Tap::open(&name, 1).unwrap();
    let host_mac = tap.host_mac().unwrap();
    let mut dev = VirtioNet::new("e2e", tap, GUEST_MAC);
    let net = host_net(&name);
    let sock = UdpSocket::bind((net.host, 0)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();

    let mem = memory();
    let features = F_VERSION_1 | F_RING_EVENT_IDX | F_RING_INDIRECT_DESC | bit(VIRTIO_NET_F_MAC);
    let mut driver = Driver::activate(&mut dev, &mem, features, 2).unwrap();
    let rx_base = 0x4_0000;
    driver.offer(0, &rx_chains(rx_base, 32, 2048));

    // Transmit: header and frame in separate descriptors.
    let guest_src = SocketAddr::from((net.guest, 4242));
    let payload = b"oxvm virtio-net tx test";
    let frame = udp_frame(
        host_mac,
        GUEST_MAC,
        guest_src,
        sock.local_addr().unwrap(),
        payload,
    );
    mem.write_slice(&[0u8; HDR], GuestAddress(0x8_0000))
        .unwrap();
    mem.write_slice(&frame, GuestAddress(0x8_1000)).unwrap();
    driver.offer(
        1,
        &[vec![
            (0x8_0000, HDR as u32, 0),
            (0x8_1000, frame.len() as u32, 0),
        ]],
    );
    let mut buf = [0u8; 256];
    let (n, from) = sock
        .recv_from(&mut buf)
        .expect("host receives the guest's datagram");
    assert_eq!(&buf[..n], payload);
    assert_eq!(from, guest_src);
    assert!(wait_until(5, || driver.used(1) == vec![(0, 0)]));
    assert!(wait_until(5, || driver.irq.count(1) >= 1), "tx interrupt");

    // Receive.
    let payload = b"oxvm virtio-net rx test";
    sock.send_to(payload, (net.guest, 5353)).unwrap();
    let mut got = None;
    assert!(wait_until(10, || {
        got = find_rx(&driver, rx_base, payload);
        got.is_some()
    }));
    let got = got.unwrap();
    assert_eq!(&got[10..12], &1u16.to_le_bytes(), "num_buffers");
    let eth = &got[HDR..];
    assert_eq!(eth[..6], GUEST_MAC);
    assert_eq!(eth[6..12], host_mac);
    assert_eq!(eth[12..14], [0x08, 0x00]);
    assert_eq!(eth[14 + 16..14 + 20], net.guest.octets());
    assert_eq!(u16::from_be_bytes([eth[14 + 22], eth[14 + 23]]), 5353);
    assert!(driver.irq.count(0) >= 1, "rx interrupt");

    let m = dev.metrics().snapshot();
    assert_eq!(m.tx_packets, 1);
    assert_eq!(m.tx_bytes, frame.len() as u64);
    assert!(m.rx_packets >= 1);
    assert_eq!((m.tx_errors, m.rx_errors, m.rx_dropped), (0, 0, 0));
    dev.reset();
}

#[test]
fn rx_waits_for_guest_buffers_without_spinning() {
    let name = unique_ifname("oxt");
    let tap = Tap::open(&name, 1).unwrap();
    let mut dev = VirtioNet::new("idle", tap, GUEST_MAC);
    let net = host_net(&name);
    let sock = UdpSocket::bind((net.host, 0)).unwrap();
    let mem = memory();
    let mut driver = Driver::activate(&mut dev, &mem, F_VERSION_1, 2).unwrap();

    let payload = b"oxvm waits for buffers";
    sock.send_to(payload, (net.guest, 5353)).unwrap();
    let metrics = dev.metrics();
    assert!(wait_until(10, || metrics.snapshot().rx_no_buffers >= 1));
    let tid = thread_tid("net-idle-q0").expect("worker thread named net-idle-q0");
    let before = cpu_ticks(tid);
    std::thread::sleep(Duration::from_millis(500));
    let spent = cpu_ticks(tid) - before;
    assert!(
        spent <= 5,
        "worker used {spent} ticks while waiting for buffers"
    );

    let rx_base = 0x4_0000;
    driver.offer(0, &rx_chains(rx_base, 32, 2048));
    assert!(wait_until(10, || find_rx(&driver, rx_base, payload).is_some()));
    assert_eq!(metrics.snapshot().rx_dropped, 0);
}

#[test]
fn rx_mergeable_buffers_end_to_end() {
    let name = unique_ifname("oxt");
    let tap = Tap::open(&name, 1).unwrap();
    let mut dev = VirtioNet::new("mrg", tap, GUEST_MAC);
    let net = host_net(&name);
    let sock = UdpSocket::bind((net.host, 0)).unwrap();
    let mem = memory();
    let features = F_VERSION_1
        | bit(VIRTIO_NET_F_MRG_RXBUF)
        | bit(VIRTIO_NET_F_GUEST_CSUM)
        | bit(VIRTIO_NET_F_GUEST_TSO4)
        | bit(VIRTIO_NET_F_GUEST_TSO6)
        | bit(VIRTIO_NET_F_GUEST_ECN);
    let mut driver = Driver::activate(&mut dev, &mem, features, 2).unwrap();
    let rx_base = 0x4_0000;
    driver.offer(0, &rx_chains(rx_base, 48, 1024));

    let payload: Vec<u8> = (0..1400u32).map(|i| (i % 251) as u8).collect();
    sock.send_to(&payload, (net.guest, 5353)).unwrap();
    // Reassemble frames from the used ring: num_buffers says how many follow.
    let mut found = None;
    assert!(wait_until(10, || {
        let used = driver.used(0);
        let mut i = 0;
        while i < used.len() {
            let (id, len) = used[i];
            let first = driver.read(rx_base + u64::from(id) * 0x1000, len as usize);
            let count = usize::from(u16::from_le_bytes([first[10], first[11]]));
            if count == 0 || i + count > used.len() {
                return false;
            }
            let mut whole = first;
            for &(id, len) in &used[i + 1..i + count] {
                whole.extend(driver.read(rx_base + u64::from(id) * 0x1000, len as usize));
            }
            if whole
                .windows(payload.len())
                .any(|w| w == payload.as_slice())
            {
                found = Some((count, whole.len()));
                return true;
            }
            i += count;
        }
        false
    }));
    let (count, len) = found.unwrap();
    assert_eq!(count, 2, "a {len}-byte frame in 1024-byte buffers");
    assert_eq!(len, HDR + 14 + 20 + 8 + payload.len());
}

#[test]
fn multiqueue_pairs_follow_the_control_queue() {
    let name = unique_ifname("oxt");
    let tap = Tap::open(&name, 2).unwrap();
    let mut dev = VirtioNet::new("mq", tap, GUEST_MAC);
    let mem = memory();
    let features = F_VERSION_1 | bit(VIRTIO_NET_F_MQ) | bit(VIRTIO_NET_F_CTRL_VQ);
    let mut driver = Driver::activate(&mut dev, &mem, features, 5).unwrap();
    // One pair in use until the driver asks for more.
    assert!(dev.tap().queues()[0].is_enabled());
    assert!(!dev.tap().queues()[1].is_enabled());
    assert!(wait_until(5, || thread_tid("net-mq-q0").is_some()
        && thread_tid("net-mq-q1").is_some()));

    let command = |driver: &mut Driver<'_>, n: u16, at: u64| -> u8 {
        let base = 0x9_0000 + at * 0x100;
        let [lo, hi] = n.to_le_bytes();
        let cmd = [
            VIRTIO_NET_CTRL_MQ as u8,
            VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET as u8,
            lo,
            hi,
        ];
        mem.write_slice(&cmd, GuestAddress(base)).unwrap();
        mem.write_obj(0xeeu8, GuestAddress(base + 0x80)).unwrap();
        let before = driver.used(4).len();
        driver.offer(4, &[vec![(base, 4, 0), (base + 0x80, 1, WRITE)]]);
        assert!(wait_until(5, || driver.used(4).len() == before + 1));
        mem.read_obj(GuestAddress(base + 0x80)).unwrap()
    };
    assert_eq!(command(&mut driver, 2, 0), VIRTIO_NET_OK as u8);
    assert!(dev.tap().queues()[1].is_enabled());
    assert_eq!(command(&mut driver, 3, 1), VIRTIO_NET_ERR as u8);
    assert!(dev.tap().queues()[1].is_enabled());
    assert_eq!(command(&mut driver, 1, 2), VIRTIO_NET_OK as u8);
    assert!(!dev.tap().queues()[1].is_enabled());
    assert!(driver.irq.count(4) >= 1, "ctrl interrupt");
    dev.reset();
    assert!(thread_tid("net-mq-q0").is_none() && thread_tid("net-mq-q1").is_none());
}

#[test]
fn link_changes_interrupt_the_running_driver() {
    let mut dev = VirtioNet::new(
        "link",
        Tap::open(&unique_ifname("oxt"), 1).unwrap(),
        GUEST_MAC,
    );
    let link = dev.link();
    let mem = memory();
    let driver = Driver::activate(&mut dev, &mem, F_VERSION_1, 2).unwrap();
    link.set_up(false);
    link.set_up(false);
    assert_eq!(
        driver.irq.configs.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    link.set_up(true);
    assert_eq!(
        driver.irq.configs.load(std::sync::atomic::Ordering::SeqCst),
        2
    );
    dev.reset();
    link.set_up(false);
    assert_eq!(
        driver.irq.configs.load(std::sync::atomic::Ordering::SeqCst),
        2
    );
}

#[test]
fn from_config_opens_and_bridges() {
    let bridge = unique_ifname("oxb");
    ip(&["link", "add", &bridge, "type", "bridge"]);
    let _guard = crate::net::tests::LinkGuard(bridge.clone());
    let cfg: oxvm_api::NicConfig = nic_config(&unique_ifname("oxt"), &bridge);
    let dev = VirtioNet::from_config(&cfg, GUEST_MAC).unwrap();
    assert_eq!(dev.queue_pairs(), 2);
    assert_eq!(dev.tap().bridge().as_deref(), Some(bridge.as_str()));
    assert!(dev.tap().created());
}

fn nic_config(tap: &str, bridge: &str) -> oxvm_api::NicConfig {
    oxvm_api::NicConfig {
        id: "nic0".into(),
        tap: tap.into(),
        mac: None,
        queues: 2,
        bridge: Some(bridge.into()),
        model: oxvm_api::NicModel::Virtio,
    }
}
