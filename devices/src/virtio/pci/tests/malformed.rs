//! States that must be refused: each names the device and the field, and the device
//! is left as it was built (a later good state still restores).

use super::host::*;
use super::ring::DriverRing;
use crate::block::MemDisk;
use crate::virtio::net::NetState;
use crate::virtio::pci::{VirtioPciDevice, VirtioPciState};
use crate::virtio::{VirtioBlk, VirtioDeviceState, F_RING_EVENT_IDX, F_VERSION_1};

const RING: u64 = 0x1_0000;

fn device(host: &Host, disk_size: usize) -> VirtioPciDevice {
    let disk = MemDisk::new(disk_size);
    host.device(
        "blk-vda",
        Box::new(VirtioBlk::new("vda", Box::new(disk), None)),
        &memory(),
    )
}

// The checks only look at ring addresses against the memory layout, so each device
// may have guest memory of its own here.

/// A good state: a running disk whose driver set up queue 0 at `RING`.
fn good_state() -> VirtioPciState {
    let host = Host::new(2, 24);
    let mut dev = device(&host, 1 << 20);
    let ring = DriverRing::new(&memory(), RING, 64);
    bring_up(&mut dev, F_VERSION_1 | F_RING_EVENT_IDX, &[(0, &ring)]);
    dev.quiesce().unwrap();
    dev.save_state().unwrap()
}

#[test]
fn bad_values_are_refused_with_device_and_field_named() {
    let good = good_state();
    type Edit = fn(&mut VirtioPciState);
    let cases: Vec<(&str, Edit)> = vec![
        ("queues[0].size", |s| s.queues[0].size = 3),
        ("queues[0].size", |s| s.queues[0].size = 512),
        ("queues[0].size", |s| s.queues[0].size = 0),
        ("queues[0].desc_table", |s| {
            s.queues[0].desc_table = MEM_SIZE as u64 - 0x100
        }),
        ("queues[0].avail_ring", |s| {
            s.queues[0].avail_ring = u64::MAX - 1
        }),
        ("queues[0].used_ring", |s| s.queues[0].used_ring += 2),
        ("queues[0].msix_vector", |s| s.queues[0].msix_vector = 9999),
        ("queues[0].event_idx", |s| {
            s.queues[0].event_idx = true;
            s.common.driver_features &= !F_RING_EVENT_IDX;
        }),
        ("queues", |s| {
            s.queues.pop();
        }),
        ("common.msix_config", |s| s.common.msix_config = 2),
        ("common.status", |s| s.common.status |= 0x10),
        ("common.status", |s| s.common.status &= !0x08),
        ("common.driver_features", |s| {
            s.common.driver_features |= 1 << 60
        }),
        ("common.driver_features", |s| {
            s.common.driver_features &= !F_VERSION_1
        }),
        ("isr", |s| s.isr = 4),
        ("device_type", |s| s.device_type = 1),
        ("device.type", |s| {
            s.device = VirtioDeviceState::Net(NetState {
                mac: [0; 6],
                link_up: true,
                queue_pairs: 1,
            })
        }),
        ("device.capacity_sectors", |s| {
            if let VirtioDeviceState::Blk(b) = &mut s.device {
                b.capacity_sectors += 1;
            }
        }),
        ("msix.enabled", |s| s.msix.enabled = false),
        ("msix.entries", |s| {
            s.msix.entries.pop();
        }),
        ("msix.pending", |s| s.msix.pending.push(false)),
        ("config.regs[0]", |s| s.config.regs[0] = 0x1041_1af4),
        ("config.regs", |s| s.config.regs.truncate(16)),
        ("config.bars[0]", |s| s.config.bars[0] = 0xd000_1000),
    ];
    for (field, edit) in cases {
        let mut bad = good.clone();
        edit(&mut bad);
        let host = Host::new(2, 24);
        let mut dev = device(&host, 1 << 20);
        let err = dev.restore_state(&bad).unwrap_err().to_string();
        assert!(
            err.starts_with("blk-vda: ") && err.contains(&format!("field `{field}`")),
            "{field}: {err}"
        );
        // Nothing was applied.
        assert_eq!(dev.bar_addr(), BAR);
        assert_eq!(host.ioevents.addrs(), vec![BAR + 0x3000]);
        assert!(host.routes.get().is_empty(), "{field}: routes programmed");
        assert_eq!(status(&mut dev), 0);
        dev.restore_state(&good).unwrap();
    }
}

#[test]
fn a_disk_of_another_size_or_mode_is_refused() {
    let good = good_state();
    let host = Host::new(2, 24);
    let mut dev = device(&host, 2 << 20);
    let err = dev.restore_state(&good).unwrap_err().to_string();
    assert!(err.contains("`device.capacity_sectors`"), "{err}");
    let ro = MemDisk::new(1 << 20).read_only();
    let host = Host::new(2, 24);
    let mut dev = host.device(
        "blk-vdb",
        Box::new(VirtioBlk::new("vdb", Box::new(ro), None)),
        &memory(),
    );
    let err = dev.restore_state(&good).unwrap_err().to_string();
    assert!(err.starts_with("blk-vdb: "), "{err}");
    assert!(err.contains("`device.read_only`"), "{err}");
}

#[test]
fn only_a_fresh_device_takes_a_state() {
    let good = good_state();
    let host = Host::new(2, 24);
    let mut dev = device(&host, 1 << 20);
    dev.restore_state(&good).unwrap();
    let err = dev.restore_state(&good).unwrap_err().to_string();
    assert!(err.contains("freshly built"), "{err}");
}

#[test]
fn unknown_fields_in_a_state_file_are_refused() {
    let json = serde_json::to_value(good_state()).unwrap();
    for path in [
        &[][..],
        &["common"][..],
        &["queues", "0"][..],
        &["msix"][..],
    ] {
        let mut v = json.clone();
        let mut at = &mut v;
        for key in path {
            at = match key.parse::<usize>() {
                Ok(i) => &mut at[i],
                Err(_) => &mut at[*key],
            };
        }
        at.as_object_mut().unwrap().insert("bogus".into(), 1.into());
        let err = serde_json::from_value::<VirtioPciState>(v).unwrap_err();
        assert!(err.to_string().contains("bogus"), "{path:?}: {err}");
    }
}
