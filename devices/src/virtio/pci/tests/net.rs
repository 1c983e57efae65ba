//! virtio-net through the transport on a real tap (root, /dev/net/tun): a frame sent
//! before the save and one after the restore both reach a host socket, and the second
//! lands at the next used entry of the transmit queue, on its vector.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use virtio_bindings::virtio_net::{VIRTIO_NET_F_MAC, VIRTIO_NET_F_STATUS};
use vm_memory::{Bytes, GuestAddress};

use super::host::*;
use super::ring::DriverRing;
use crate::bus::BusDevice;
use crate::net::tests::unique_ifname;
use crate::net::Tap;
use crate::virtio::net::tests::device::{host_net, udp_frame, GUEST_MAC};
use crate::virtio::net::NetState;
use crate::virtio::pci::{VirtioPciDevice, VirtioPciState};
use crate::virtio::{VirtioDeviceState, VirtioNet, F_RING_EVENT_IDX, F_VERSION_1};

const RX_RING: u64 = 0x1_0000;
const TX_RING: u64 = 0x2_0000;
const HDR_LEN: usize = 12;

/// Build the NIC on tap `name` (created, addressed), and a host socket on its side.
fn nic(
    host: &Host,
    name: &str,
    mem: &crate::virtio::GuestMemoryMmap,
) -> (VirtioPciDevice, UdpSocket, SocketAddr, [u8; 6]) {
    let tap = Tap::open(name, 1).unwrap();
    let host_mac = tap.host_mac().unwrap();
    let dev = host.device(
        "net-eth0",
        Box::new(VirtioNet::new("eth0", tap, GUEST_MAC)),
        mem,
    );
    let net = host_net(name);
    let sock = UdpSocket::bind((net.host, 0)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    (dev, sock, SocketAddr::from((net.guest, 4242)), host_mac)
}

/// The driver transmits `payload` to `sock` from `guest` (frame at `at`).
fn send(
    mem: &crate::virtio::GuestMemoryMmap,
    tx: &mut DriverRing,
    at: u64,
    host_mac: [u8; 6],
    guest: SocketAddr,
    sock: &UdpSocket,
    payload: &[u8],
) -> u16 {
    let frame = udp_frame(
        host_mac,
        GUEST_MAC,
        guest,
        sock.local_addr().unwrap(),
        payload,
    );
    mem.write_slice(&[0u8; HDR_LEN], GuestAddress(at)).unwrap();
    mem.write_slice(&frame, GuestAddress(at + 0x100)).unwrap();
    tx.add(&[
        (at, HDR_LEN as u32, false),
        (at + 0x100, frame.len() as u32, false),
    ])
}

/// Wait until the kernel has removed tap `name` (it does so after the last fd closed,
/// not always before `close` returns); reopening it before fails with EBUSY.
fn tap_gone(name: &str) {
    let path = std::path::Path::new("/sys/class/net").join(name);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while path.exists() {
        assert!(std::time::Instant::now() < deadline, "tap {name} stays");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn receive(sock: &UdpSocket) -> Vec<u8> {
    let mut buf = [0u8; 256];
    let (n, _) = sock
        .recv_from(&mut buf)
        .expect("the host gets the datagram");
    buf[..n].to_vec()
}

#[test]
fn a_restored_nic_transmits_from_where_it_stood() {
    let mem = memory();
    let name = unique_ifname("oxs");
    let old = Host::new(3, 24);
    let (mut dev, sock, guest, host_mac) = nic(&old, &name, &mem);
    let rx = DriverRing::new(&mem, RX_RING, 64);
    let mut tx = DriverRing::new(&mem, TX_RING, 64);
    let wanted =
        F_VERSION_1 | F_RING_EVENT_IDX | (1 << VIRTIO_NET_F_MAC) | (1 << VIRTIO_NET_F_STATUS);
    bring_up(&mut dev, wanted, &[(0, &rx), (1, &tx)]);

    send(
        &mem,
        &mut tx,
        0x10_0000,
        host_mac,
        guest,
        &sock,
        b"before the save",
    );
    old.kick(BAR, 1);
    assert_eq!(receive(&sock), b"before the save");
    assert!(old.wait_vector(1) >= 1);
    assert_eq!(tx.used_idx(), 1);

    dev.quiesce().unwrap();
    let state = dev.save_state().unwrap();
    let state: VirtioPciState =
        serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap();
    assert_eq!(
        state.device,
        VirtioDeviceState::Net(NetState {
            mac: GUEST_MAC,
            link_up: true,
            queue_pairs: 1
        })
    );
    assert_eq!(
        (state.queues[1].next_avail, state.queues[1].next_used),
        (1, 1)
    );
    // The old process goes, and its tap with it; the new one opens the tap by name.
    drop((dev, sock));
    tap_gone(&name);

    let new = Host::new(3, 40);
    let (mut dev, sock, guest, host_mac) = nic(&new, &name, &mem);
    dev.restore_state(&state).unwrap();
    assert_eq!(new.fired(1), 0, "nothing until the VM resumes");
    dev.resume_after_quiesce().unwrap();
    assert_eq!(new.fired(1), 1, "resuming raises each queue's vector once");
    let head = send(
        &mem,
        &mut tx,
        0x11_0000,
        host_mac,
        guest,
        &sock,
        b"after the restore",
    );
    new.kick(BAR, 1);
    assert_eq!(receive(&sock), b"after the restore");
    assert!(new.wait_vector(1) >= 1);
    assert_eq!(tx.used_idx(), 2);
    assert_eq!(tx.used_entry(1), (u32::from(head), 0));
    assert_eq!(new.fired(2), 0, "no configuration interrupt");
    drop(dev);
}

#[test]
fn a_link_taken_down_stays_down() {
    let mem = memory();
    let name = unique_ifname("oxs");
    let old = Host::new(3, 24);
    let (dev, _sock, _, _) = nic(&old, &name, &mem);
    let mut state = dev.save_state().unwrap();
    let VirtioDeviceState::Net(n) = &mut state.device else {
        panic!("not a net state")
    };
    n.link_up = false;
    drop(dev);
    tap_gone(&name);
    let new = Host::new(3, 24);
    let (mut dev, _sock, _, _) = nic(&new, &name, &mem);
    dev.restore_state(&state).unwrap();
    let mut status = [0u8; 2];
    dev.read(crate::virtio::pci::layout::DEVICE_CFG + 6, &mut status);
    assert_eq!(status, [0, 0], "LINK_UP clear");
    // A state for another MAC is refused.
    let mut other = state.clone();
    if let VirtioDeviceState::Net(n) = &mut other.device {
        n.mac[5] ^= 1;
    }
    drop(dev);
    tap_gone(&name);
    let (mut dev, _sock, _, _) = nic(&Host::new(3, 24), &name, &mem);
    let err = dev.restore_state(&other).unwrap_err().to_string();
    assert!(
        err.starts_with("net-eth0: ") && err.contains("`device.mac`"),
        "{err}"
    );
}
