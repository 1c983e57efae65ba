//! What the device offers: feature bits and the configuration space (virtio 1.2 §5.2.3,
//! §5.2.4), laid out with the offsets of virtio-bindings' `virtio_blk_config`.

use std::mem::{offset_of, size_of};

use virtio_bindings::virtio_blk::*;

use crate::block::{DiskBackend, SECTOR_SIZE};
use crate::virtio::{F_RING_EVENT_IDX, F_RING_INDIRECT_DESC, F_VERSION_1};

/// Descriptors per queue.
pub const QUEUE_SIZE: u16 = 256;

/// Data segments per request: the queue size minus header and status (as QEMU does).
pub const SEG_MAX: u32 = QUEUE_SIZE as u32 - 2;

/// Largest discard: 1 GiB (the driver splits larger ones).
pub const MAX_DISCARD_SECTORS: u32 = 1 << 21;

/// Largest write-zeroes: 64 MiB, so that the write-zeroes fallback (writing real zeroes
/// where the host cannot zero ranges) keeps each request short.
pub const MAX_WRITE_ZEROES_SECTORS: u32 = 1 << 17;

/// Size of the configuration space.
pub const CONFIG_SIZE: usize = size_of::<virtio_blk_config>();

pub(crate) const fn bit(b: u32) -> u64 {
    1 << b
}

/// The features offered for `backend`: always VERSION_1, SEG_MAX, BLK_SIZE and FLUSH (a
/// writethrough backend still takes flushes, they are just cheap); RO for read-only
/// disks; WRITE_ZEROES for writable ones; DISCARD only with discard=unmap.
pub(crate) fn device_features(backend: &dyn DiskBackend) -> u64 {
    let mut f = F_VERSION_1
        | F_RING_EVENT_IDX
        | F_RING_INDIRECT_DESC
        | bit(VIRTIO_BLK_F_SEG_MAX)
        | bit(VIRTIO_BLK_F_BLK_SIZE)
        | bit(VIRTIO_BLK_F_FLUSH);
    if backend.is_read_only() {
        f |= bit(VIRTIO_BLK_F_RO);
    } else {
        f |= bit(VIRTIO_BLK_F_WRITE_ZEROES);
        if backend.discard_enabled() {
            f |= bit(VIRTIO_BLK_F_DISCARD);
        }
    }
    f
}

/// The configuration space bytes for `backend`.
pub(crate) fn config_space(backend: &dyn DiskBackend) -> [u8; CONFIG_SIZE] {
    let mut c = [0u8; CONFIG_SIZE];
    let mut put =
        |offset: usize, bytes: &[u8]| c[offset..offset + bytes.len()].copy_from_slice(bytes);
    let alignment =
        (backend.discard_granularity() / SECTOR_SIZE).clamp(1, u64::from(u32::MAX)) as u32;

    put(
        offset_of!(virtio_blk_config, capacity),
        &(backend.size() / SECTOR_SIZE).to_le_bytes(),
    );
    put(
        offset_of!(virtio_blk_config, seg_max),
        &SEG_MAX.to_le_bytes(),
    );
    put(
        offset_of!(virtio_blk_config, blk_size),
        &(SECTOR_SIZE as u32).to_le_bytes(),
    );
    put(
        offset_of!(virtio_blk_config, num_queues),
        &1u16.to_le_bytes(),
    );
    put(
        offset_of!(virtio_blk_config, max_discard_sectors),
        &MAX_DISCARD_SECTORS.to_le_bytes(),
    );
    put(
        offset_of!(virtio_blk_config, max_discard_seg),
        &1u32.to_le_bytes(),
    );
    put(
        offset_of!(virtio_blk_config, discard_sector_alignment),
        &alignment.to_le_bytes(),
    );
    put(
        offset_of!(virtio_blk_config, max_write_zeroes_sectors),
        &MAX_WRITE_ZEROES_SECTORS.to_le_bytes(),
    );
    put(
        offset_of!(virtio_blk_config, max_write_zeroes_seg),
        &1u32.to_le_bytes(),
    );
    put(
        offset_of!(virtio_blk_config, write_zeroes_may_unmap),
        &[u8::from(backend.discard_enabled())],
    );
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::MemDisk;

    fn u32_at(c: &[u8], off: usize) -> u32 {
        u32::from_le_bytes(c[off..off + 4].try_into().unwrap())
    }

    /// The offsets of virtio 1.2 §5.2.4, spelled out.
    #[test]
    fn layout_matches_the_spec() {
        let disk = MemDisk::new(8 << 20);
        let c = config_space(&disk);
        assert_eq!(CONFIG_SIZE, 96);
        assert_eq!(u64::from_le_bytes(c[0..8].try_into().unwrap()), 16384);
        assert_eq!(u32_at(&c, 12), 254); // seg_max
        assert_eq!(u32_at(&c, 20), 512); // blk_size
        assert_eq!(u16::from_le_bytes([c[34], c[35]]), 1); // num_queues
        assert_eq!(u32_at(&c, 36), MAX_DISCARD_SECTORS);
        assert_eq!(u32_at(&c, 40), 1); // max_discard_seg
        assert_eq!(u32_at(&c, 44), 1); // discard_sector_alignment (512 B)
        assert_eq!(u32_at(&c, 48), MAX_WRITE_ZEROES_SECTORS);
        assert_eq!(u32_at(&c, 52), 1); // max_write_zeroes_seg
        assert_eq!(c[56], 1); // write_zeroes_may_unmap
        assert!(c[57..].iter().all(|&b| b == 0));
    }

    #[test]
    fn features_follow_the_backend() {
        let rw = device_features(&MemDisk::new(4096));
        assert_ne!(rw & F_VERSION_1, 0);
        assert_ne!(rw & bit(VIRTIO_BLK_F_FLUSH), 0);
        assert_ne!(rw & bit(VIRTIO_BLK_F_DISCARD), 0);
        assert_ne!(rw & bit(VIRTIO_BLK_F_WRITE_ZEROES), 0);
        assert_eq!(rw & bit(VIRTIO_BLK_F_RO), 0);
        let ro = device_features(&MemDisk::new(4096).read_only());
        assert_ne!(ro & bit(VIRTIO_BLK_F_RO), 0);
        assert_eq!(ro & bit(VIRTIO_BLK_F_DISCARD), 0);
        assert_eq!(ro & bit(VIRTIO_BLK_F_WRITE_ZEROES), 0);
    }
}
