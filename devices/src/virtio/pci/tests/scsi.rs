//! virtio-scsi through the transport: a WRITE before the save, a READ after the restore
//! into a new controller on the same disk; the header sizes the driver changed after
//! activation stay as they were for the running queues.

use vm_memory::{Bytes, GuestAddress};

use super::blk::pattern;
use super::host::*;
use super::ring::DriverRing;
use crate::block::MemDisk;
use crate::bus::BusDevice;
use crate::virtio::pci::layout::DEVICE_CFG;
use crate::virtio::pci::{VirtioPciDevice, VirtioPciState};
use crate::virtio::scsi::{LunConfig, ScsiHeaderSizes};
use crate::virtio::{
    GuestMemoryMmap, VirtioDeviceState, VirtioScsi, F_RING_EVENT_IDX, F_VERSION_1,
};

const CDB_SIZE: usize = 32;
const SENSE_SIZE: usize = 96;
const REQ_LEN: usize = 8 + 8 + 3 + CDB_SIZE;
const RESP_LEN: usize = 12 + SENSE_SIZE;
const REQ: u64 = 0x10_0000;
const RESP: u64 = 0x11_0000;
const DATA: u64 = 0x12_0000;

fn controller(host: &Host, disk: &MemDisk, id: &str, mem: &GuestMemoryMmap) -> VirtioPciDevice {
    let lun = LunConfig {
        id: id.into(),
        backend: Box::new(disk.clone()),
        discard: false,
        serial: None,
    };
    host.device("scsi0", Box::new(VirtioScsi::new(vec![lun]).unwrap()), mem)
}

/// A READ(10)/WRITE(10) of `blocks` 512-byte blocks at `lba` for target 0 LUN 0,
/// request slot `slot`; returns the chain head.
fn rw10(
    mem: &GuestMemoryMmap,
    ring: &mut DriverRing,
    slot: u64,
    write: bool,
    lba: u32,
    blocks: u16,
) -> u16 {
    let mut req = [0u8; REQ_LEN];
    req[..8].copy_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]);
    req[8..16].copy_from_slice(&(slot + 1).to_le_bytes());
    let cdb = &mut req[19..];
    cdb[0] = if write { 0x2a } else { 0x28 };
    cdb[2..6].copy_from_slice(&lba.to_be_bytes());
    cdb[7..9].copy_from_slice(&blocks.to_be_bytes());
    let (r, s, d) = (
        REQ + 0x100 * slot,
        RESP + 0x100 * slot,
        DATA + 0x1_0000 * slot,
    );
    mem.write_slice(&req, GuestAddress(r)).unwrap();
    mem.write_slice(&[0xaa; RESP_LEN], GuestAddress(s)).unwrap();
    let len = u32::from(blocks) * 512;
    if write {
        ring.add(&[
            (r, REQ_LEN as u32, false),
            (d, len, false),
            (s, RESP_LEN as u32, true),
        ])
    } else {
        ring.add(&[
            (r, REQ_LEN as u32, false),
            (s, RESP_LEN as u32, true),
            (d, len, true),
        ])
    }
}

/// (SCSI status, virtio response) of request slot `slot`.
fn outcome(mem: &GuestMemoryMmap, slot: u64) -> (u8, u8) {
    let mut r = [0u8; 12];
    mem.read_slice(&mut r, GuestAddress(RESP + 0x100 * slot))
        .unwrap();
    (r[10], r[11])
}

fn cdb_size(dev: &mut VirtioPciDevice) -> u32 {
    let mut b = [0u8; 4];
    dev.read(DEVICE_CFG + 24, &mut b);
    u32::from_le_bytes(b)
}

#[test]
fn a_restored_controller_goes_on_with_the_sizes_it_was_started_with() {
    let mem = memory();
    let disk = MemDisk::new(1 << 20);
    let old = Host::new(4, 24);
    let mut dev = controller(&old, &disk, "sda", &mem);
    let ctrl = DriverRing::new(&mem, 0x1_0000, 64);
    let event = DriverRing::new(&mem, 0x1_4000, 64);
    let mut req = DriverRing::new(&mem, 0x1_8000, 64);
    bring_up(
        &mut dev,
        F_VERSION_1 | F_RING_EVENT_IDX,
        &[(0, &ctrl), (1, &event), (2, &req)],
    );
    // A driver changing cdb_size now gets it at the next activation only.
    dev.write(DEVICE_CFG + 24, &16u32.to_le_bytes());

    mem.write_slice(&pattern(4096, 3), GuestAddress(DATA))
        .unwrap();
    rw10(&mem, &mut req, 0, true, 4, 8);
    old.kick(BAR, 2);
    assert!(old.wait_vector(2) >= 1);
    assert_eq!(req.used_idx(), 1);
    assert_eq!(outcome(&mem, 0), (0, 0), "GOOD, VIRTIO_SCSI_S_OK");
    assert_eq!(disk.contents()[2048..6144], pattern(4096, 3)[..]);

    dev.quiesce().unwrap();
    let state = dev.save_state().unwrap();
    let state: VirtioPciState =
        serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap();
    let VirtioDeviceState::Scsi(s) = &state.device else {
        panic!("not a scsi state")
    };
    assert_eq!(s.luns, vec!["sda".to_string()]);
    assert_eq!(
        s.config,
        ScsiHeaderSizes {
            cdb_size: 16,
            sense_size: 96
        }
    );
    assert_eq!(
        s.active,
        Some(ScsiHeaderSizes {
            cdb_size: 32,
            sense_size: 96
        })
    );
    assert_eq!(
        (state.queues[2].next_avail, state.queues[2].next_used),
        (1, 1)
    );
    drop(dev);

    let new = Host::new(4, 40);
    let mut dev = controller(&new, &disk, "sda", &mem);
    dev.restore_state(&state).unwrap();
    assert_eq!(cdb_size(&mut dev), 16);
    assert_eq!((new.fired(0), new.fired(1), new.fired(2)), (0, 0, 0));
    dev.resume_after_quiesce().unwrap();
    // One interrupt per queue from resuming the restored device (see restore.rs).
    assert_eq!((new.fired(0), new.fired(1), new.fired(2)), (1, 1, 1));
    // The request queue still takes 32-byte CDBs, as before the save.
    let head = rw10(&mem, &mut req, 1, false, 4, 8);
    new.kick(BAR, 2);
    assert!(new.wait_vector(2) >= 1);
    assert_eq!(req.used_idx(), 2);
    assert_eq!(
        req.used_entry(1),
        (u32::from(head), (RESP_LEN + 4096) as u32)
    );
    assert_eq!(outcome(&mem, 1), (0, 0));
    let mut back = vec![0u8; 4096];
    mem.read_slice(&mut back, GuestAddress(DATA + 0x1_0000))
        .unwrap();
    assert_eq!(back, pattern(4096, 3));
    drop(dev);

    // A controller with other disks refuses the state.
    let mut other = controller(&Host::new(4, 24), &disk, "sdb", &mem);
    let err = other.restore_state(&state).unwrap_err().to_string();
    assert!(
        err.starts_with("scsi0: ") && err.contains("`device.luns`"),
        "{err}"
    );
}

#[test]
fn a_quiesced_controller_takes_a_new_disk_backend_and_writes_go_there() {
    let mem = memory();
    let old_disk = MemDisk::new(1 << 20);
    let host = Host::new(4, 24);
    let mut dev = controller(&host, &old_disk, "sda", &mem);
    let ctrl = DriverRing::new(&mem, 0x1_0000, 64);
    let event = DriverRing::new(&mem, 0x1_4000, 64);
    let mut req = DriverRing::new(&mem, 0x1_8000, 64);
    bring_up(&mut dev, F_VERSION_1, &[(0, &ctrl), (1, &event), (2, &req)]);

    // While the worker runs, the disks are its own: refused.
    let mut visit = |_: &str, _: &mut Box<dyn crate::block::DiskBackend>| Ok(());
    assert!(dev.visit_disks(&mut visit).unwrap_err().contains("quiesce"));

    dev.quiesce().unwrap();
    let new_disk = MemDisk::new(1 << 20);
    let mut seen = Vec::new();
    let mut swap = |id: &str, backend: &mut Box<dyn crate::block::DiskBackend>| {
        seen.push(id.to_string());
        backend.flush().map_err(|e| e.to_string())?;
        *backend = Box::new(new_disk.clone());
        Ok(())
    };
    dev.visit_disks(&mut swap).unwrap();
    assert_eq!(seen, ["sda"]);
    assert_eq!(old_disk.flushes(), 1, "the old backend was flushed first");
    // A replacement of another size is refused (the guest knows the capacity).
    let mut wrong = |_: &str, b: &mut Box<dyn crate::block::DiskBackend>| {
        *b = Box::new(MemDisk::new(4096));
        Ok(())
    };
    assert!(dev.visit_disks(&mut wrong).unwrap_err().contains("size"));
    let mut back = |_: &str, b: &mut Box<dyn crate::block::DiskBackend>| {
        *b = Box::new(new_disk.clone());
        Ok(())
    };
    dev.visit_disks(&mut back).unwrap();
    dev.resume_after_quiesce().unwrap();

    mem.write_slice(&pattern(4096, 9), GuestAddress(DATA))
        .unwrap();
    rw10(&mem, &mut req, 0, true, 4, 8);
    host.kick(BAR, 2);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while req.used_idx() < 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the write was not served"
        );
        host.wait_vector(2);
    }
    assert_eq!(outcome(&mem, 0), (0, 0));
    assert_eq!(new_disk.contents()[2048..6144], pattern(4096, 9)[..]);
    assert_eq!(old_disk.contents()[2048..6144], vec![0u8; 4096][..]);
}
