//! The device configuration space, `struct virtio_scsi_config` (virtio 1.2 §5.6.4).

use super::commands::MAX_TRANSFER_BLOCKS;
use super::process::HeaderSizes;
use super::QUEUE_SIZE;

pub(crate) const DEFAULT_CDB_SIZE: u32 = 32;
pub(crate) const DEFAULT_SENSE_SIZE: u32 = 96;

/// Field offsets.
const SENSE_SIZE_OFFSET: usize = 20;
const CDB_SIZE_OFFSET: usize = 24;
pub(crate) const CONFIG_LEN: usize = 36;

/// Size of `struct virtio_scsi_event`.
const EVENT_INFO_SIZE: u32 = 16;

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ConfigSpace {
    num_targets: usize,
    /// The only fields the driver may write (§5.6.4: it may shrink or grow the header
    /// sizes it uses); they take effect at the next activation.
    sizes: HeaderSizes,
}

impl ConfigSpace {
    pub fn new(num_targets: usize) -> Self {
        Self {
            num_targets,
            sizes: HeaderSizes {
                cdb_size: DEFAULT_CDB_SIZE,
                sense_size: DEFAULT_SENSE_SIZE,
            },
        }
    }

    pub fn sizes(&self) -> HeaderSizes {
        self.sizes
    }

    /// Set the driver-writable sizes (a restore; any value is safe, see `write`).
    pub fn set_sizes(&mut self, sizes: HeaderSizes) {
        self.sizes = sizes;
    }

    /// Back to the values a device reset must restore.
    pub fn reset(&mut self) {
        *self = Self::new(self.num_targets);
    }

    fn bytes(&self) -> [u8; CONFIG_LEN] {
        let mut b = [0u8; CONFIG_LEN];
        let mut put32 = |off: usize, v: u32| b[off..off + 4].copy_from_slice(&v.to_le_bytes());
        put32(0, 1); // num_queues: request queues.
                     // seg_max: Linux makes it its scatter-gather table size, and a request uses
                     // seg_max + 2 descriptors (headers), which must fit the ring when the driver
                     // cannot use indirect descriptors.
        put32(4, u32::from(QUEUE_SIZE) - 2);
        put32(8, MAX_TRANSFER_BLOCKS); // max_sectors
        put32(12, u32::from(QUEUE_SIZE)); // cmd_per_lun
        put32(16, EVENT_INFO_SIZE);
        put32(SENSE_SIZE_OFFSET, self.sizes.sense_size);
        put32(CDB_SIZE_OFFSET, self.sizes.cdb_size);
        // max_lun (32..36) is 0: each target has only LUN 0.
        // max_channel (28..30) is 0. max_target: the last disk's target.
        let max_target = u16::try_from(self.num_targets.saturating_sub(1)).unwrap_or(u16::MAX);
        b[30..32].copy_from_slice(&max_target.to_le_bytes());
        b
    }

    pub fn read(&self, offset: u64, data: &mut [u8]) {
        let bytes = self.bytes();
        for (i, out) in data.iter_mut().enumerate() {
            *out = offset
                .checked_add(i as u64)
                .and_then(|o| usize::try_from(o).ok())
                .and_then(|o| bytes.get(o).copied())
                .unwrap_or(0);
        }
    }

    /// Apply a driver write; bytes outside `sense_size` and `cdb_size` are ignored.
    /// Any value is safe to accept: both only move header boundaries inside chains,
    /// which are checked per request, and never size an allocation.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        let mut bytes = self.bytes();
        for (i, &v) in data.iter().enumerate() {
            let Some(o) = offset
                .checked_add(i as u64)
                .and_then(|o| usize::try_from(o).ok())
            else {
                continue;
            };
            if (SENSE_SIZE_OFFSET..CDB_SIZE_OFFSET + 4).contains(&o) {
                bytes[o] = v;
            } else {
                tracing::debug!(offset = o, "ignoring write to read-only virtio-scsi config");
            }
        }
        let get32 = |off: usize| {
            u32::from_le_bytes([bytes[off], bytes[off + 1], bytes[off + 2], bytes[off + 3]])
        };
        self.sizes = HeaderSizes {
            sense_size: get32(SENSE_SIZE_OFFSET),
            cdb_size: get32(CDB_SIZE_OFFSET),
        };
    }
}
