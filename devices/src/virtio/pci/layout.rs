//! Where each virtio structure lives in BAR 0 of a virtio-pci function.

/// BAR 0 size: a power of two that holds every region below.
pub const BAR_SIZE: u64 = 0x1_0000;
pub const COMMON_CFG: u64 = 0x0000;
pub const COMMON_CFG_LEN: u64 = 0x38;
pub const ISR: u64 = 0x1000;
pub const ISR_LEN: u64 = 1;
pub const DEVICE_CFG: u64 = 0x2000;
pub const DEVICE_CFG_LEN: u64 = 0x1000;
pub const NOTIFY: u64 = 0x3000;
/// Each queue has its own notify address, so each gets its own ioeventfd.
pub const NOTIFY_OFF_MULTIPLIER: u32 = 4;
pub const NOTIFY_LEN: u64 = 0x1000;
pub const MSIX_TABLE: u64 = 0x8000;
pub const MSIX_PBA: u64 = 0xc000;

/// Virtio PCI vendor and the modern device ID base (virtio 1.x §4.1.2).
pub const VIRTIO_PCI_VENDOR: u16 = 0x1af4;
pub const VIRTIO_PCI_DEVICE_BASE: u16 = 0x1040;

/// Capability types (`cfg_type`).
pub const CAP_COMMON: u8 = 1;
pub const CAP_NOTIFY: u8 = 2;
pub const CAP_ISR: u8 = 3;
pub const CAP_DEVICE: u8 = 4;
const CAP_ID_VENDOR: u8 = 0x09;

/// `struct virtio_pci_cap` (plus `notify_off_multiplier` for the notify capability).
pub fn virtio_cap(cfg_type: u8, offset: u64, length: u64) -> Vec<u8> {
    let mut cap_len = 16u8;
    if cfg_type == CAP_NOTIFY {
        cap_len = 20;
    }
    let mut c = vec![CAP_ID_VENDOR, 0, cap_len, cfg_type, 0, 0, 0, 0];
    c.extend_from_slice(&(offset as u32).to_le_bytes());
    c.extend_from_slice(&(length as u32).to_le_bytes());
    if cfg_type == CAP_NOTIFY {
        c.extend_from_slice(&NOTIFY_OFF_MULTIPLIER.to_le_bytes());
    }
    c
}
