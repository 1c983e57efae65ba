//! virtio-blk through the transport: saved after quiescing, restored into a new
//! device on the same guest memory and disk, where the driver just goes on; and
//! quiescing with requests in flight, on io=threads and io=native.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use virtio_bindings::virtio_blk::{VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT};
use vm_memory::{Bytes, GuestAddress};

use super::host::*;
use super::ring::DriverRing;
use crate::block::{DiskBackend, MemDisk, WaitCanceller};
use crate::bus::BusDevice;
use crate::pci::PciDevice;
use crate::virtio::pci::{VirtioPciDevice, VirtioPciState, STATUS_DRIVER_OK};
use crate::virtio::{VirtioBlk, F_RING_EVENT_IDX, F_VERSION_1};

const RING: u64 = 0x1_0000;
const HDR: u64 = 0x10_0000;
const DATA: u64 = 0x20_0000;
const STATUS: u64 = 0x30_0000;
const S_OK: u8 = 0;
const UNTOUCHED: u8 = 0xaa;

pub(super) fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(13).wrapping_add(seed))
        .collect()
}

/// Request slot `slot`: header, 4 KiB of data and status byte at their own addresses.
fn slot_addrs(slot: u64) -> (u64, u64, u64) {
    (HDR + 0x40 * slot, DATA + 0x1000 * slot, STATUS + slot)
}

fn blk_request(
    mem: &crate::virtio::GuestMemoryMmap,
    ring: &mut DriverRing,
    slot: u64,
    kind: u32,
    sector: u64,
) -> u16 {
    let (h, d, s) = slot_addrs(slot);
    let mut hdr = [0u8; 16];
    hdr[..4].copy_from_slice(&kind.to_le_bytes());
    hdr[8..].copy_from_slice(&sector.to_le_bytes());
    mem.write_slice(&hdr, GuestAddress(h)).unwrap();
    mem.write_obj(UNTOUCHED, GuestAddress(s)).unwrap();
    ring.add(&[
        (h, 16, false),
        (d, 4096, kind == VIRTIO_BLK_T_IN),
        (s, 1, true),
    ])
}

fn status_of(mem: &crate::virtio::GuestMemoryMmap, slot: u64) -> u8 {
    mem.read_obj(GuestAddress(slot_addrs(slot).2)).unwrap()
}

fn blk(disk: &MemDisk) -> Box<VirtioBlk> {
    Box::new(VirtioBlk::new("vda", Box::new(disk.clone()), None))
}

/// Quiesce, save, and carry the state through JSON as a state file does.
fn save(dev: &mut VirtioPciDevice) -> VirtioPciState {
    dev.quiesce().unwrap();
    let state = dev.save_state().unwrap();
    serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap()
}

#[test]
fn a_restored_disk_goes_on_at_the_same_ring_position_bar_and_vectors() {
    let mem = memory();
    let disk = MemDisk::new(1 << 20);
    let old = Host::new(2, 24);
    let mut dev = old.device("blk-vda", blk(&disk), &mem);
    // The guest put BAR 0 elsewhere: the restored function must decode there too.
    move_bar(&mut dev, 0xd000_0000);
    let mut ring = DriverRing::new(&mem, RING, 64);
    let features = bring_up(&mut dev, F_VERSION_1 | F_RING_EVENT_IDX, &[(0, &ring)]);

    mem.write_slice(&pattern(4096, 1), GuestAddress(slot_addrs(0).1))
        .unwrap();
    blk_request(&mem, &mut ring, 0, VIRTIO_BLK_T_OUT, 8);
    old.kick(0xd000_0000, 0);
    assert!(old.wait_vector(0) >= 1);
    assert_eq!((ring.used_idx(), status_of(&mem, 0)), (1, S_OK));

    let state = save(&mut dev);
    assert_eq!(state.queues[0].next_avail, 1);
    assert_eq!(state.queues[0].next_used, 1);
    assert_eq!(state.config.bars, vec![0xd000_0000]);
    // The old process goes away.
    drop(dev);

    // The new machine: other GSIs, BAR 0 where the config puts it, same memory/disk.
    let new = Host::new(2, 40);
    let mut dev = new.device("blk-vda", blk(&disk), &mem);
    assert_eq!(new.ioevents.addrs(), vec![BAR + 0x3000]);
    dev.restore_state(&state).unwrap();
    assert_eq!(dev.bar_addr(), 0xd000_0000);
    assert_eq!(
        new.ioevents.addrs(),
        vec![0xd000_3000],
        "kicks follow the BAR"
    );
    let routes = new.routes.get();
    assert_eq!(routes.len(), 2);
    for (v, gsi) in new.gsis.iter().enumerate() {
        assert_eq!(routes[gsi].addr, MSI_ADDR);
        assert_eq!(
            routes[gsi].data,
            msi_data(v),
            "vector {v} keeps its message"
        );
    }
    // The guest sees the registers it left.
    assert_ne!(status(&mut dev) & STATUS_DRIVER_OK, 0);
    write_common(&mut dev, 22, 0, 2);
    assert_eq!(read_common(&mut dev, 24, 2), 64);
    assert_eq!(read_common(&mut dev, 26, 2), 0);
    write_common(&mut dev, 8, 0, 4);
    assert_eq!(read_common(&mut dev, 12, 4), features & 0xffff_ffff);
    // Restored devices wait, quiesced, until the VM resumes: no interrupt yet.
    assert!(dev.is_quiesced());
    assert_eq!(new.fired(0), 0);
    dev.resume_after_quiesce().unwrap();
    // Resuming raised each queue's vector once (see restore.rs); nothing else.
    assert_eq!(new.fired(0), 1);
    assert_eq!(new.fired(1), 0);

    // The driver posts the next request: it lands at used index 1, on vector 0.
    let head = blk_request(&mem, &mut ring, 1, VIRTIO_BLK_T_IN, 8);
    new.kick(0xd000_0000, 0);
    assert!(new.wait_vector(0) >= 1);
    assert_eq!(ring.used_idx(), 2);
    assert_eq!(ring.used_entry(1), (u32::from(head), 4097));
    assert_eq!(status_of(&mem, 1), S_OK);
    let mut back = vec![0u8; 4096];
    mem.read_slice(&mut back, GuestAddress(slot_addrs(1).1))
        .unwrap();
    assert_eq!(back, pattern(4096, 1));
    assert_eq!(new.fired(1), 0, "no configuration interrupt");
    assert!(!new.intx.is_high(), "MSI-X, not INTx");
}

#[test]
fn a_pending_intx_is_raised_again_on_the_new_machine() {
    let mem = memory();
    let disk = MemDisk::new(1 << 20);
    let old = Host::new(2, 24);
    let mut dev = old.device("blk-vda", blk(&disk), &mem);
    let mut ring = DriverRing::new(&mem, RING, 16);
    bring_up(&mut dev, F_VERSION_1, &[(0, &ring)]);
    // The driver falls back to INTx: MSI-X off.
    let cap = msix_cap(&mut dev);
    dev.config_write(cap / 4, 3, &[0]);
    blk_request(&mem, &mut ring, 0, VIRTIO_BLK_T_IN, 0);
    old.kick(BAR, 0);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !old.intx.is_high() {
        assert!(std::time::Instant::now() < deadline, "no INTx");
        std::thread::sleep(Duration::from_millis(1));
    }
    // Saved before the driver read ISR: the line is still high.
    let state = save(&mut dev);
    assert_eq!(state.isr, 1);
    assert!(!state.msix.enabled);

    let new = Host::new(2, 24);
    let mut dev = new.device("blk-vda", blk(&disk), &mem);
    assert!(!new.intx.is_high());
    dev.restore_state(&state).unwrap();
    assert!(new.intx.is_high(), "the new machine's line is raised");
    let mut isr = [0u8];
    dev.read(crate::virtio::pci::layout::ISR, &mut isr);
    assert_eq!(isr[0] & 1, 1);
    assert!(!new.intx.is_high(), "reading ISR drops it, as before");
    assert!(
        new.routes.get().is_empty(),
        "no MSI routes while MSI-X is off"
    );
}

#[test]
fn a_saved_isr_alone_drives_intx() {
    let mem = memory();
    let disk = MemDisk::new(1 << 20);
    let old = Host::new(2, 24);
    let mut dev = old.device("blk-vda", blk(&disk), &mem);
    let mut state = save(&mut dev);
    // A configuration change pending on a device that is not running (nothing else
    // could raise the line on restore).
    state.isr = 2;
    let new = Host::new(2, 24);
    let mut dev = new.device("blk-vda", blk(&disk), &mem);
    dev.restore_state(&state).unwrap();
    assert!(new.intx.is_high());
    let mut isr = [0u8];
    dev.read(crate::virtio::pci::layout::ISR, &mut isr);
    assert_eq!(isr[0], 2);
}

#[test]
fn a_device_the_driver_never_started_restores_idle() {
    let mem = memory();
    let disk = MemDisk::new(1 << 20);
    let old = Host::new(2, 24);
    let mut dev = old.device("blk-vda", blk(&disk), &mem);
    write_common(&mut dev, 20, 1, 1); // ACKNOWLEDGE only
    let state = save(&mut dev);
    let new = Host::new(2, 24);
    let mut dev = new.device("blk-vda", blk(&disk), &mem);
    dev.restore_state(&state).unwrap();
    assert_eq!(status(&mut dev), 1);
    assert!(new.routes.get().is_empty());
    assert_eq!(new.fired(0), 0);
    // And the driver can bring it up from there.
    let ring = DriverRing::new(&mem, RING, 16);
    bring_up(&mut dev, F_VERSION_1, &[(0, &ring)]);
}

#[test]
fn a_running_device_cannot_be_saved_before_it_is_quiesced() {
    let mem = memory();
    let disk = MemDisk::new(1 << 20);
    let host = Host::new(2, 24);
    let mut dev = host.device("blk-vda", blk(&disk), &mem);
    let ring = DriverRing::new(&mem, RING, 16);
    bring_up(&mut dev, F_VERSION_1, &[(0, &ring)]);
    let e = dev.save_state().unwrap_err().to_string();
    assert!(e.contains("blk-vda") && e.contains("quiesce"), "{e}");
    dev.quiesce().unwrap();
    assert!(dev.is_quiesced());
    dev.save_state().unwrap();
    // Quiescing twice is harmless; so is resuming twice.
    dev.quiesce().unwrap();
    dev.resume_after_quiesce().unwrap();
    dev.resume_after_quiesce().unwrap();
    assert!(!dev.is_quiesced());
}

/// A disk whose first write blocks until the device's stop path cancels waits
/// (`WaitCanceller`, which quiescing fires before joining the worker). So that write
/// is certainly in flight when quiescing starts, and completes only because
/// quiescing lets it: no timing involved.
#[derive(Clone)]
struct GateDisk {
    inner: MemDisk,
    cancel: WaitCanceller,
    armed: Arc<AtomicBool>,
    entered: Arc<(Mutex<bool>, Condvar)>,
}

impl GateDisk {
    fn new(inner: MemDisk) -> Self {
        GateDisk {
            inner,
            cancel: WaitCanceller::new(),
            armed: Arc::new(AtomicBool::new(true)),
            entered: Arc::default(),
        }
    }

    /// Wait until the held write is in the disk.
    fn wait_entered(&self) {
        let (m, c) = &*self.entered;
        let guard = m.lock().unwrap();
        let (_guard, timeout) = c
            .wait_timeout_while(guard, Duration::from_secs(10), |e| !*e)
            .unwrap();
        assert!(!timeout.timed_out(), "the write never reached the disk");
    }
}

impl DiskBackend for GateDisk {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.inner.read_at(offset, buf)
    }
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        if self.armed.swap(false, Ordering::SeqCst) {
            let (m, c) = &*self.entered;
            *m.lock().unwrap() = true;
            c.notify_all();
            while !self.cancel.wait_timeout(Duration::from_secs(60)) {}
        }
        self.inner.write_at(offset, buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
    fn discard(&mut self, offset: u64, len: u64) -> io::Result<()> {
        self.inner.discard(offset, len)
    }
    fn write_zeroes(&mut self, offset: u64, len: u64, unmap: bool) -> io::Result<()> {
        self.inner.write_zeroes(offset, len, unmap)
    }
    fn has_volatile_cache(&self) -> bool {
        true
    }
    fn is_read_only(&self) -> bool {
        false
    }
    fn wait_canceller(&self) -> Option<WaitCanceller> {
        Some(self.cancel.clone())
    }
}

#[test]
fn quiescing_completes_the_request_in_flight_and_resuming_serves_the_next() {
    let mem = memory();
    let disk = MemDisk::new(1 << 20);
    let gate = GateDisk::new(disk.clone());
    let host = Host::new(2, 24);
    let blk = VirtioBlk::new("vdg", Box::new(gate.clone()), None);
    let mut dev = host.device("blk-vdg", Box::new(blk), &mem);
    let mut ring = DriverRing::new(&mem, RING, 16);
    bring_up(&mut dev, F_VERSION_1, &[(0, &ring)]);

    mem.write_slice(&pattern(4096, 7), GuestAddress(slot_addrs(0).1))
        .unwrap();
    blk_request(&mem, &mut ring, 0, VIRTIO_BLK_T_OUT, 0);
    // A second request behind it: not taken before the quiesce, served after.
    mem.write_slice(&pattern(4096, 8), GuestAddress(slot_addrs(1).1))
        .unwrap();
    blk_request(&mem, &mut ring, 1, VIRTIO_BLK_T_OUT, 8);
    host.kick(BAR, 0);
    gate.wait_entered();
    assert_eq!(ring.used_idx(), 0, "the first write is in flight");

    dev.quiesce().unwrap();
    assert_eq!(ring.used_idx(), 1, "completed before quiesce returned");
    assert_eq!(status_of(&mem, 0), S_OK);
    assert_eq!(status_of(&mem, 1), UNTOUCHED, "not started");
    assert_eq!(disk.contents()[..4096], pattern(4096, 7)[..]);
    assert!(host.wait_vector(0) >= 1, "the driver heard about it");
    let state = dev.save_state().unwrap();
    assert_eq!(
        (state.queues[0].next_avail, state.queues[0].next_used),
        (1, 1),
        "nothing taken is left half done"
    );

    // The VM goes on: the same queue, where it stood.
    dev.resume_after_quiesce().unwrap();
    assert!(host.wait_vector(0) >= 1);
    assert_eq!(ring.used_idx(), 2);
    assert_eq!(status_of(&mem, 1), S_OK);
    assert_eq!(disk.contents()[4096..8192], pattern(4096, 8)[..]);
}

#[test]
fn quiescing_io_native_completes_what_is_in_flight() {
    use crate::block::aio::direct_io_dir;
    use crate::block::{DiskOptions, RawDisk};
    use oxvm_api::CacheMode;

    let dir = direct_io_dir();
    let path = dir.as_path().join("quiesce.raw");
    std::fs::write(&path, vec![0u8; 1 << 20]).unwrap();
    let open = || {
        let opts = DiskOptions {
            cache: CacheMode::None,
            ..Default::default()
        };
        let disk = RawDisk::open(&path, opts).unwrap().with_native_io();
        Box::new(VirtioBlk::new("vdn", Box::new(disk), None))
    };
    let mem = memory();
    let host = Host::new(2, 24);
    let mut dev = host.device("blk-vdn", open(), &mem);
    // Three descriptors per request, all in flight at once.
    let mut ring = DriverRing::new(&mem, RING, 128);
    bring_up(&mut dev, F_VERSION_1, &[(0, &ring)]);
    const N: u64 = 32;
    for slot in 0..N {
        mem.write_slice(&pattern(4096, slot as u8), GuestAddress(slot_addrs(slot).1))
            .unwrap();
        blk_request(&mem, &mut ring, slot, VIRTIO_BLK_T_OUT, 8 * slot);
    }
    host.kick(BAR, 0);
    // Whatever the worker had taken by now is completed; the rest is untouched.
    let state = save(&mut dev);
    let q = &state.queues[0];
    assert_eq!(q.next_avail, q.next_used, "no request half done");
    assert_eq!(ring.used_idx(), q.next_used);
    for slot in 0..N {
        let done = (0..ring.used_idx()).any(|i| ring.used_entry(i).0 == 3 * slot as u32);
        let expect = if done { S_OK } else { UNTOUCHED };
        assert_eq!(status_of(&mem, slot), expect, "slot {slot}");
    }
    drop(dev);

    // Restored (new device on the same file): the rest is served.
    let new = Host::new(2, 24);
    let mut dev = new.device("blk-vdn", open(), &mem);
    dev.restore_state(&state).unwrap();
    dev.resume_after_quiesce().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while ring.used_idx() < N as u16 {
        assert!(std::time::Instant::now() < deadline, "requests lost");
        new.wait_vector(0);
    }
    let file = std::fs::read(&path).unwrap();
    for slot in 0..N {
        assert_eq!(status_of(&mem, slot), S_OK);
        let at = 4096 * slot as usize;
        assert_eq!(file[at..at + 4096], pattern(4096, slot as u8)[..]);
    }
    drop(dev);
}
