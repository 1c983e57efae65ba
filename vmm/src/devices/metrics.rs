//! Handles on every device's counters, kept by the machine so the API can read them,
//! and their translation into the API's counters.

use std::collections::BTreeMap;
use std::sync::Arc;

use oxvm_api::control::{DiskCounters, NicCounters};
use oxvm_devices::virtio::blk::BlkMetrics;
use oxvm_devices::virtio::net::NetMetrics;
use oxvm_devices::virtio::scsi::ScsiMetrics;

#[derive(Default)]
pub struct DeviceMetrics {
    pub(super) blk: Vec<(String, Arc<BlkMetrics>)>,
    pub(super) scsi: Option<ScsiMetrics>,
    pub(super) net: Vec<(String, Arc<NetMetrics>)>,
}

impl DeviceMetrics {
    /// By disk id, virtio-blk and SCSI disks alike.
    pub fn disks(&self) -> BTreeMap<String, DiskCounters> {
        let mut out = BTreeMap::new();
        for (id, m) in &self.blk {
            let s = m.snapshot();
            out.insert(
                id.clone(),
                DiskCounters {
                    read_ops: s.read_ops,
                    read_bytes: s.read_bytes,
                    write_ops: s.write_ops,
                    write_bytes: s.write_bytes,
                    flush_ops: s.flushes,
                    discard_ops: s.discards + s.write_zeroes,
                    errors: s.io_errors + s.invalid_requests + s.unsupported,
                },
            );
        }
        if let Some(scsi) = &self.scsi {
            for l in scsi.snapshot().luns {
                out.insert(
                    l.id.clone(),
                    DiskCounters {
                        read_ops: l.read_ops,
                        read_bytes: l.read_bytes,
                        write_ops: l.write_ops,
                        write_bytes: l.write_bytes,
                        flush_ops: l.flushes,
                        discard_ops: l.unmaps,
                        // CHECK CONDITIONs are mostly the guest probing for optional
                        // commands; only host I/O failures count as errors.
                        errors: l.io_errors,
                    },
                );
            }
        }
        out
    }

    /// By NIC id.
    pub fn nics(&self) -> BTreeMap<String, NicCounters> {
        self.net
            .iter()
            .map(|(id, m)| {
                let s = m.snapshot();
                let c = NicCounters {
                    rx_packets: s.rx_packets,
                    rx_bytes: s.rx_bytes,
                    tx_packets: s.tx_packets,
                    tx_bytes: s.tx_bytes,
                    rx_dropped: s.rx_dropped + s.rx_errors,
                    tx_dropped: s.tx_errors,
                };
                (id.clone(), c)
            })
            .collect()
    }
}
