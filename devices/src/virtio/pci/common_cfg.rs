//! `struct virtio_pci_common_cfg` (virtio 1.x §4.1.4.3): feature negotiation, device
//! status and per-queue setup, as a register file the driver reads and writes with
//! 1-, 2- and 4-byte accesses.

pub const NO_VECTOR: u16 = 0xffff;

/// Driver-side view of one queue before activation.
#[derive(Debug, Clone, Copy)]
pub struct QueueCfg {
    pub max_size: u16,
    pub size: u16,
    pub enabled: bool,
    pub msix_vector: u16,
    pub desc: u64,
    pub driver: u64,
    pub device: u64,
}

impl QueueCfg {
    pub fn new(max_size: u16) -> Self {
        QueueCfg {
            max_size,
            size: max_size,
            enabled: false,
            msix_vector: NO_VECTOR,
            desc: 0,
            driver: 0,
            device: 0,
        }
    }
}

pub struct CommonCfg {
    /// Size of the function's MSI-X table: vectors at or past it are refused.
    pub msix_vectors: u16,
    pub device_feature_select: u32,
    pub driver_feature_select: u32,
    pub driver_features: u64,
    pub msix_config: u16,
    pub status: u8,
    pub config_generation: u8,
    pub queue_select: u16,
    pub queues: Vec<QueueCfg>,
}

/// What a register write asks the transport to do.
#[derive(Debug, PartialEq, Eq)]
pub enum CfgAction {
    None,
    /// New device status value written.
    Status(u8),
}

impl CommonCfg {
    pub fn new(queue_max_sizes: &[u16], msix_vectors: u16) -> Self {
        CommonCfg {
            msix_vectors,
            device_feature_select: 0,
            driver_feature_select: 0,
            driver_features: 0,
            msix_config: NO_VECTOR,
            status: 0,
            config_generation: 0,
            queue_select: 0,
            queues: queue_max_sizes.iter().map(|&m| QueueCfg::new(m)).collect(),
        }
    }

    /// Back to the reset state (keeps the queue maxima).
    pub fn reset(&mut self) {
        let maxes: Vec<u16> = self.queues.iter().map(|q| q.max_size).collect();
        *self = CommonCfg::new(&maxes, self.msix_vectors);
    }

    /// A vector the driver chose: one the table does not have reads back as
    /// NO_VECTOR, which tells the driver the mapping failed (virtio 1.2 §4.1.5.1.2).
    fn vector(&self, v: u16) -> u16 {
        if v < self.msix_vectors {
            v
        } else {
            NO_VECTOR
        }
    }

    fn queue(&self) -> Option<&QueueCfg> {
        self.queues.get(usize::from(self.queue_select))
    }

    fn queue_mut(&mut self) -> Option<&mut QueueCfg> {
        self.queues.get_mut(usize::from(self.queue_select))
    }

    /// The 64 bytes of the structure as currently visible.
    fn image(&self, device_features: u64) -> [u8; 64] {
        let mut b = [0u8; 64];
        let put = |b: &mut [u8; 64], off: usize, v: &[u8]| b[off..off + v.len()].copy_from_slice(v);
        put(&mut b, 0, &self.device_feature_select.to_le_bytes());
        let df = match self.device_feature_select {
            0 => device_features as u32,
            1 => (device_features >> 32) as u32,
            _ => 0,
        };
        put(&mut b, 4, &df.to_le_bytes());
        put(&mut b, 8, &self.driver_feature_select.to_le_bytes());
        let drf = match self.driver_feature_select {
            0 => self.driver_features as u32,
            1 => (self.driver_features >> 32) as u32,
            _ => 0,
        };
        put(&mut b, 12, &drf.to_le_bytes());
        put(&mut b, 16, &self.msix_config.to_le_bytes());
        put(&mut b, 18, &(self.queues.len() as u16).to_le_bytes());
        b[20] = self.status;
        b[21] = self.config_generation;
        put(&mut b, 22, &self.queue_select.to_le_bytes());
        if let Some(q) = self.queue() {
            put(&mut b, 24, &q.size.to_le_bytes());
            put(&mut b, 26, &q.msix_vector.to_le_bytes());
            put(&mut b, 28, &u16::from(q.enabled).to_le_bytes());
            put(&mut b, 30, &self.queue_select.to_le_bytes()); // queue_notify_off
            put(&mut b, 32, &q.desc.to_le_bytes());
            put(&mut b, 40, &q.driver.to_le_bytes());
            put(&mut b, 48, &q.device.to_le_bytes());
        }
        b
    }

    pub fn read(&self, offset: u64, data: &mut [u8], device_features: u64) {
        let img = self.image(device_features);
        for (i, d) in data.iter_mut().enumerate() {
            *d = img.get(offset as usize + i).copied().unwrap_or(0);
        }
    }

    pub fn write(&mut self, offset: u64, data: &[u8]) -> CfgAction {
        let off = offset as usize;
        if off + data.len() > 56 {
            return CfgAction::None;
        }
        // Merge the written bytes into the field(s) they cover.
        let mut img = self.image(0);
        img[off..off + data.len()].copy_from_slice(data);
        let u16_at = |i: usize| u16::from_le_bytes([img[i], img[i + 1]]);
        let u32_at = |i: usize| u32::from_le_bytes(img[i..i + 4].try_into().unwrap());
        let u64_at = |i: usize| u64::from_le_bytes(img[i..i + 8].try_into().unwrap());
        let touches = |start: usize, len: usize| off < start + len && start < off + data.len();
        let queue_live = self.status & super::STATUS_DRIVER_OK != 0;
        let mut action = CfgAction::None;
        if touches(0, 4) {
            self.device_feature_select = u32_at(0);
        }
        if touches(8, 4) {
            self.driver_feature_select = u32_at(8);
        }
        if touches(12, 4) && self.status & super::STATUS_FEATURES_OK == 0 {
            let v = u64::from(u32_at(12));
            match self.driver_feature_select {
                0 => self.driver_features = (self.driver_features & !0xffff_ffff) | v,
                1 => self.driver_features = (self.driver_features & 0xffff_ffff) | (v << 32),
                _ => {}
            }
        }
        if touches(16, 2) {
            self.msix_config = self.vector(u16_at(16));
        }
        if touches(20, 1) {
            action = CfgAction::Status(img[20]);
        }
        if touches(22, 2) {
            self.queue_select = u16_at(22);
        }
        let queue_select = self.queue_select;
        let queue_vector = self.vector(u16_at(26));
        if let Some(q) = self.queue_mut() {
            if touches(26, 2) {
                q.msix_vector = queue_vector;
            }
            // Queue geometry is fixed once the queue is enabled or the device is live.
            if !q.enabled && !queue_live {
                if touches(24, 2) {
                    let s = u16_at(24);
                    // Split rings need a power of two no larger than the maximum.
                    if s.is_power_of_two() && s <= q.max_size {
                        q.size = s;
                    } else {
                        tracing::debug!("queue {queue_select}: invalid size {s} ignored");
                    }
                }
                if touches(32, 8) {
                    q.desc = u64_at(32);
                }
                if touches(40, 8) {
                    q.driver = u64_at(40);
                }
                if touches(48, 8) {
                    q.device = u64_at(48);
                }
                if touches(28, 2) && u16_at(28) == 1 {
                    q.enabled = true;
                }
            }
        }
        action
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feature_windows_and_queue_setup() {
        let mut c = CommonCfg::new(&[256, 128], 3);
        let mut d = [0u8; 4];
        c.write(0, &1u32.to_le_bytes());
        c.read(4, &mut d, 0x1_0000_0002);
        assert_eq!(u32::from_le_bytes(d), 1);
        c.write(8, &1u32.to_le_bytes());
        c.write(12, &1u32.to_le_bytes());
        c.write(8, &0u32.to_le_bytes());
        c.write(12, &2u32.to_le_bytes());
        assert_eq!(c.driver_features, 0x1_0000_0002);
        c.write(22, &1u16.to_le_bytes());
        c.write(24, &64u16.to_le_bytes());
        c.write(24, &100u16.to_le_bytes()); // not a power of two: ignored
        c.write(32, &0x1000u32.to_le_bytes());
        c.write(36, &0x1u32.to_le_bytes());
        c.write(28, &1u16.to_le_bytes());
        let q = c.queues[1];
        assert_eq!((q.size, q.desc, q.enabled), (64, 0x1_0000_1000, true));
        // Locked once enabled.
        c.write(24, &32u16.to_le_bytes());
        assert_eq!(c.queues[1].size, 64);
        let mut n = [0u8; 2];
        c.read(18, &mut n, 0);
        assert_eq!(u16::from_le_bytes(n), 2);
        assert_eq!(c.write(20, &[1]), CfgAction::Status(1));
        // Out of range: harmless.
        assert_eq!(c.write(60, &[1, 2, 3, 4]), CfgAction::None);
        c.write(22, &9u16.to_le_bytes());
        c.read(24, &mut n, 0);
        assert_eq!(n, [0, 0]);
    }

    #[test]
    fn vectors_past_the_table_read_back_as_no_vector() {
        let mut c = CommonCfg::new(&[64], 2);
        c.write(16, &1u16.to_le_bytes());
        assert_eq!(c.msix_config, 1);
        c.write(16, &2u16.to_le_bytes());
        assert_eq!(c.msix_config, NO_VECTOR);
        c.write(26, &9999u16.to_le_bytes());
        assert_eq!(c.queues[0].msix_vector, NO_VECTOR);
        c.write(26, &0u16.to_le_bytes());
        assert_eq!(c.queues[0].msix_vector, 0);
        c.reset();
        assert_eq!(c.msix_vectors, 2);
    }
}
