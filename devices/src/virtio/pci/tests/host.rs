//! The hypervisor side of a virtio-pci function (MSI routes, ioeventfds, INTx, irqfds)
//! and a guest driver that brings the function up through its registers.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use vm_memory::GuestAddress;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::ring::DriverRing;
use crate::bus::BusDevice;
use crate::irq::IrqLine;
use crate::pci::{MsiMessage, MsiRouter, MsixVector, PciDevice};
use crate::virtio::pci::layout::{COMMON_CFG, MSIX_TABLE, NOTIFY, NOTIFY_OFF_MULTIPLIER};
use crate::virtio::pci::{
    IoEventRegistrar, VirtioPciDevice, VirtioPciResources, STATUS_ACKNOWLEDGE, STATUS_DRIVER,
    STATUS_DRIVER_OK, STATUS_FEATURES_OK,
};
use crate::virtio::{GuestMemoryMmap, VirtioDevice};

pub(super) const MEM_SIZE: usize = 16 << 20;
/// Where the VMM puts BAR 0 when it builds the function.
pub(super) const BAR: u64 = 0xc000_0000;
/// The MSI message the driver programs for vector `v`.
pub(super) const MSI_ADDR: u64 = 0xfee0_0000;

pub(super) fn msi_data(v: usize) -> u32 {
    0x4000 + v as u32
}

pub(super) fn memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap()
}

/// The MSI routes as the hypervisor holds them.
#[derive(Default)]
pub(super) struct Routes(Mutex<BTreeMap<u32, MsiMessage>>);

impl MsiRouter for Routes {
    fn update_route(&self, gsi: u32, msg: Option<MsiMessage>) {
        let mut r = self.0.lock().unwrap();
        match msg {
            Some(m) => r.insert(gsi, m),
            None => r.remove(&gsi),
        };
    }
}

impl Routes {
    pub fn get(&self) -> BTreeMap<u32, MsiMessage> {
        self.0.lock().unwrap().clone()
    }
}

/// ioeventfds by address. Like KVM, a second registration at an address is refused.
#[derive(Default)]
pub(super) struct IoEvents(Mutex<BTreeMap<u64, EventFd>>);

impl IoEventRegistrar for IoEvents {
    fn register(&self, evt: &EventFd, addr: u64) -> io::Result<()> {
        let mut m = self.0.lock().unwrap();
        if m.contains_key(&addr) {
            return Err(io::Error::from_raw_os_error(libc::EEXIST));
        }
        m.insert(addr, evt.try_clone()?);
        Ok(())
    }

    fn unregister(&self, _evt: &EventFd, addr: u64) -> io::Result<()> {
        match self.0.lock().unwrap().remove(&addr) {
            Some(_) => Ok(()),
            None => Err(io::Error::from_raw_os_error(libc::ENOENT)),
        }
    }
}

impl IoEvents {
    pub fn addrs(&self) -> Vec<u64> {
        self.0.lock().unwrap().keys().copied().collect()
    }

    /// A guest write to `addr` that the hypervisor turns into an eventfd signal.
    fn signal(&self, addr: u64) {
        let m = self.0.lock().unwrap();
        let evt = m
            .get(&addr)
            .unwrap_or_else(|| panic!("no ioeventfd at {addr:#x}"));
        evt.write(1).unwrap();
    }
}

/// The INTx line's level.
#[derive(Clone, Default)]
pub(super) struct Line(Arc<AtomicBool>);

impl IrqLine for Line {
    fn set_level(&self, high: bool) {
        self.0.store(high, Ordering::SeqCst);
    }
}

impl Line {
    pub fn is_high(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// One machine's hypervisor side of one function.
pub(super) struct Host {
    pub routes: Arc<Routes>,
    pub ioevents: Arc<IoEvents>,
    pub intx: Line,
    /// The hypervisor's end of each MSI-X vector's irqfd.
    irqfds: Vec<EventFd>,
    pub gsis: Vec<u32>,
}

impl Host {
    /// `vectors` MSI-X vectors on GSIs from `first_gsi` (a restoring machine may well
    /// allocate other GSIs).
    pub fn new(vectors: usize, first_gsi: u32) -> Self {
        Host {
            routes: Arc::default(),
            ioevents: Arc::default(),
            intx: Line::default(),
            irqfds: (0..vectors)
                .map(|_| EventFd::new(libc::EFD_NONBLOCK).unwrap())
                .collect(),
            gsis: (0..vectors as u32).map(|i| first_gsi + i).collect(),
        }
    }

    /// Build the function as the VMM does, BAR 0 at [`BAR`].
    pub fn device(
        &self,
        name: &str,
        device: Box<dyn VirtioDevice>,
        mem: &GuestMemoryMmap,
    ) -> VirtioPciDevice {
        let res = VirtioPciResources {
            bar_addr: BAR,
            msix_vectors: self
                .irqfds
                .iter()
                .zip(&self.gsis)
                .map(|(fd, &gsi)| MsixVector {
                    gsi,
                    irqfd: fd.try_clone().unwrap(),
                })
                .collect(),
            msi_router: self.routes.clone(),
            ioevents: self.ioevents.clone(),
            intx: Box::new(self.intx.clone()),
            intx_gsi: 16,
            mem: mem.clone(),
        };
        VirtioPciDevice::new(name.into(), device, res).unwrap()
    }

    /// The driver notifies queue `q` of the function whose BAR 0 is at `bar`.
    pub fn kick(&self, bar: u64, q: u16) {
        self.ioevents
            .signal(bar + NOTIFY + u64::from(q) * u64::from(NOTIFY_OFF_MULTIPLIER));
    }

    /// How often vector `v` fired since the last look (without waiting).
    pub fn fired(&self, v: usize) -> u64 {
        self.irqfds[v].read().unwrap_or(0)
    }

    /// Wait (at most 10 s) until vector `v` fires; how often it did.
    pub fn wait_vector(&self, v: usize) -> u64 {
        let epoll = Epoll::new().unwrap();
        epoll
            .ctl(
                ControlOperation::Add,
                self.irqfds[v].as_raw_fd(),
                EpollEvent::new(EventSet::IN, 0),
            )
            .unwrap();
        let mut ev = [EpollEvent::default()];
        let n = epoll.wait(10_000, &mut ev).unwrap();
        assert_eq!(n, 1, "MSI-X vector {v} did not fire");
        self.fired(v)
    }
}

// ---- the guest driver ----

pub(super) fn read_common(dev: &mut VirtioPciDevice, offset: u64, len: usize) -> u64 {
    let mut b = [0u8; 8];
    dev.read(COMMON_CFG + offset, &mut b[..len]);
    u64::from_le_bytes(b)
}

pub(super) fn write_common(dev: &mut VirtioPciDevice, offset: u64, value: u64, len: usize) {
    dev.write(COMMON_CFG + offset, &value.to_le_bytes()[..len]);
}

pub(super) fn status(dev: &mut VirtioPciDevice) -> u8 {
    read_common(dev, 20, 1) as u8
}

/// Config-space offset of the MSI-X capability.
pub(super) fn msix_cap(dev: &mut VirtioPciDevice) -> usize {
    let mut off = (dev.config_read(0x34 / 4) & 0xff) as usize;
    loop {
        let dword = dev.config_read(off / 4);
        if dword & 0xff == 0x11 {
            return off;
        }
        off = ((dword >> 8) & 0xff) as usize;
        assert_ne!(off, 0, "no MSI-X capability");
    }
}

/// The guest moves BAR 0 to `addr` (the VMM's PCI root moves the MMIO range and tells
/// the function).
pub(super) fn move_bar(dev: &mut VirtioPciDevice, addr: u32) {
    let change = dev
        .config_write(4, 0, &addr.to_le_bytes())
        .expect("the BAR moved");
    dev.bar_moved(&change);
}

/// Bring the function up as Linux's virtio_pci does: features (`wanted` & offered),
/// MSI-X with vector i for queue i and the last one for configuration changes, the
/// queues on `rings` (queue index, ring), DRIVER_OK. Returns the negotiated features.
pub(super) fn bring_up(
    dev: &mut VirtioPciDevice,
    wanted: u64,
    rings: &[(u16, &DriverRing)],
) -> u64 {
    write_common(dev, 20, 0, 1);
    write_common(dev, 20, u64::from(STATUS_ACKNOWLEDGE | STATUS_DRIVER), 1);
    let mut offered = 0;
    for sel in 0..2 {
        write_common(dev, 0, sel, 4);
        offered |= read_common(dev, 4, 4) << (32 * sel);
    }
    let features = offered & wanted;
    for sel in 0..2 {
        write_common(dev, 8, sel, 4);
        write_common(dev, 12, (features >> (32 * sel)) & 0xffff_ffff, 4);
    }
    write_common(
        dev,
        20,
        u64::from(STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK),
        1,
    );
    assert_ne!(status(dev) & STATUS_FEATURES_OK, 0, "features refused");

    // MSI-X: enable, program and unmask every vector.
    let cap = msix_cap(dev);
    dev.config_write(cap / 4, 3, &[0x80]);
    let num_queues = read_common(dev, 18, 2) as usize;
    for v in 0..=num_queues {
        let entry = MSIX_TABLE + 16 * v as u64;
        dev.write(entry, &(MSI_ADDR as u32).to_le_bytes());
        dev.write(entry + 4, &0u32.to_le_bytes());
        dev.write(entry + 8, &msi_data(v).to_le_bytes());
        dev.write(entry + 12, &0u32.to_le_bytes());
    }
    write_common(dev, 16, num_queues as u64, 2);
    assert_eq!(read_common(dev, 16, 2), num_queues as u64);

    for (q, ring) in rings {
        write_common(dev, 22, u64::from(*q), 2);
        write_common(dev, 24, u64::from(ring.size()), 2);
        write_common(dev, 26, u64::from(*q), 2);
        assert_eq!(read_common(dev, 26, 2), u64::from(*q), "vector accepted");
        let (desc, avail, used) = ring.addrs();
        write_common(dev, 32, desc, 8);
        write_common(dev, 40, avail, 8);
        write_common(dev, 48, used, 8);
        write_common(dev, 28, 1, 2);
    }
    write_common(
        dev,
        20,
        u64::from(STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK),
        1,
    );
    assert_ne!(status(dev) & STATUS_DRIVER_OK, 0);
    features
}
