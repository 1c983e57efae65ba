//! Virtio devices from the VM config: one virtio-blk function per `bus: virtio` disk,
//! one virtio-scsi controller for all `bus: scsi` disks, one virtio-net per NIC.

use oxvm_api::{parse_mac, DiscardMode, DiskBus, VmConfig};
use oxvm_devices::block::open_disk;
use oxvm_devices::virtio::scsi::LunConfig;
use oxvm_devices::virtio::{VirtioBlk, VirtioNet, VirtioScsi};
use oxvm_devices::Tap;

use super::{DeviceMetrics, PciBus};
use crate::error::VmmError;

/// A MAC for NICs without one: QEMU's locally administered 52:54:00 prefix and three
/// bytes hashed (FNV-1a) from the VM name and NIC id, so it is stable across boots and
/// differs between NICs.
pub fn derived_mac(vm: &str, nic: &str) -> [u8; 6] {
    let mut h: u32 = 0x811c_9dc5;
    for b in vm.bytes().chain([0]).chain(nic.bytes()) {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    let [a, b, c, _] = h.to_be_bytes();
    [0x52, 0x54, 0x00, a, b, c]
}

/// Attach every configured device; returns handles on their counters.
pub fn attach_virtio_devices(pci: &mut PciBus, cfg: &VmConfig) -> Result<DeviceMetrics, VmmError> {
    let dev_err = |e: &dyn std::fmt::Display| VmmError::Device(e.to_string());
    let mut metrics = DeviceMetrics::default();
    for d in cfg.disks.iter().filter(|d| d.bus == DiskBus::Virtio) {
        let backend = open_disk(d).map_err(|e| dev_err(&e))?;
        let blk = VirtioBlk::new(d.id.clone(), backend, d.serial.clone());
        metrics.blk.push((d.id.clone(), blk.metrics()));
        pci.add_virtio(&format!("blk-{}", d.id), Box::new(blk))?;
    }

    let mut luns = Vec::new();
    for d in cfg.disks.iter().filter(|d| d.bus == DiskBus::Scsi) {
        luns.push(LunConfig {
            id: d.id.clone(),
            backend: open_disk(d).map_err(|e| dev_err(&e))?,
            discard: d.discard == DiscardMode::Unmap,
            serial: d.serial.clone(),
        });
    }
    if !luns.is_empty() {
        let scsi = VirtioScsi::new(luns).map_err(|e| dev_err(&e))?;
        metrics.scsi = Some(scsi.metrics());
        pci.add_virtio("scsi0", Box::new(scsi))?;
    }

    for n in &cfg.nics {
        let tap = Tap::open(&n.tap, n.queues).map_err(|e| dev_err(&e))?;
        if let Some(br) = &n.bridge {
            tap.attach_to_bridge(br).map_err(|e| dev_err(&e))?;
        }
        tap.set_up().map_err(|e| dev_err(&e))?;
        let mac = n
            .mac
            .as_deref()
            .and_then(parse_mac)
            .unwrap_or_else(|| derived_mac(&cfg.name, &n.id));
        let net = VirtioNet::new(n.id.clone(), tap, mac);
        metrics.net.push((n.id.clone(), net.metrics()));
        pci.add_virtio(&format!("net-{}", n.id), Box::new(net))?;
    }
    Ok(metrics)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_macs_are_stable_local_and_distinct() {
        let a = derived_mac("vm1", "eth0");
        assert_eq!(a, derived_mac("vm1", "eth0"));
        assert_ne!(a, derived_mac("vm1", "eth1"));
        assert_ne!(a, derived_mac("vm2", "eth0"));
        assert_eq!(&a[..3], &[0x52, 0x54, 0x00]);
    }
}
