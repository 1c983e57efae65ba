//! MSI-X: the vector table and pending-bit array a device exposes in a BAR, and the
//! delivery of vectors through irqfds whose KVM routes follow the table.

use std::sync::Arc;

use vmm_sys_util::eventfd::EventFd;

mod state;

pub use state::{MsixEntryState, MsixState};

pub const CAP_ID_MSIX: u8 = 0x11;
pub const ENTRY_SIZE: u64 = 16;
const CTRL_ENABLE: u16 = 1 << 15;
const CTRL_FUNCTION_MASK: u16 = 1 << 14;
const VECTOR_MASKED: u32 = 1;

/// An MSI message as the guest programmed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsiMessage {
    pub addr: u64,
    pub data: u32,
}

/// Programs the hypervisor's interrupt routes (implemented by the VMM with KVM GSI
/// routing; an irqfd on `gsi` then delivers `msg`).
pub trait MsiRouter: Send + Sync {
    fn update_route(&self, gsi: u32, msg: Option<MsiMessage>);
}

/// One vector's delivery path: the irqfd KVM listens on and its GSI.
pub struct MsixVector {
    pub gsi: u32,
    pub irqfd: EventFd,
}

#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    addr_lo: u32,
    addr_hi: u32,
    data: u32,
    ctrl: u32,
}

pub struct Msix {
    entries: Vec<Entry>,
    pending: Vec<bool>,
    enabled: bool,
    function_masked: bool,
    vectors: Vec<MsixVector>,
    router: Arc<dyn MsiRouter>,
}

impl Msix {
    /// A table with one entry per vector, all masked (the reset state).
    pub fn new(vectors: Vec<MsixVector>, router: Arc<dyn MsiRouter>) -> Self {
        let n = vectors.len();
        Msix {
            entries: vec![
                Entry {
                    ctrl: VECTOR_MASKED,
                    ..Default::default()
                };
                n
            ],
            pending: vec![false; n],
            enabled: false,
            function_masked: false,
            vectors,
            router,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn table_size(&self) -> u64 {
        self.entries.len() as u64 * ENTRY_SIZE
    }

    pub fn pba_size(&self) -> u64 {
        self.entries.len().div_ceil(64) as u64 * 8
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The capability body for config space: `[id, next, control(2), table(4), pba(4)]`
    /// with the table and PBA in BAR `bar` at the given offsets, and its write mask
    /// (only the enable and function-mask bits are writable).
    pub fn capability(&self, bar: u8, table_offset: u32, pba_offset: u32) -> (Vec<u8>, Vec<u8>) {
        let ctrl = (self.entries.len() as u16).saturating_sub(1);
        let mut body = vec![CAP_ID_MSIX, 0];
        body.extend_from_slice(&ctrl.to_le_bytes());
        body.extend_from_slice(&(table_offset | u32::from(bar)).to_le_bytes());
        body.extend_from_slice(&(pba_offset | u32::from(bar)).to_le_bytes());
        let mut mask = vec![0u8; body.len()];
        mask[3] = 0xc0;
        (body, mask)
    }

    /// The guest wrote the capability's message control word.
    pub fn set_control(&mut self, ctrl: u16) {
        let was_active = self.enabled && !self.function_masked;
        self.enabled = ctrl & CTRL_ENABLE != 0;
        self.function_masked = ctrl & CTRL_FUNCTION_MASK != 0;
        if self.enabled {
            for v in 0..self.entries.len() {
                self.update_route(v);
            }
        }
        if !was_active && self.enabled && !self.function_masked {
            self.deliver_pending();
        }
    }

    fn masked(&self, v: usize) -> bool {
        self.function_masked || self.entries[v].ctrl & VECTOR_MASKED != 0
    }

    fn update_route(&self, v: usize) {
        let e = &self.entries[v];
        let msg = (self.enabled && e.ctrl & VECTOR_MASKED == 0).then_some(MsiMessage {
            addr: u64::from(e.addr_lo) | (u64::from(e.addr_hi) << 32),
            data: e.data,
        });
        if let Some(vec) = self.vectors.get(v) {
            self.router.update_route(vec.gsi, msg);
        }
    }

    fn deliver_pending(&mut self) {
        for v in 0..self.entries.len() {
            if self.pending[v] && !self.masked(v) {
                self.pending[v] = false;
                self.fire(v);
            }
        }
    }

    fn fire(&self, v: usize) {
        if let Some(vec) = self.vectors.get(v) {
            if let Err(e) = vec.irqfd.write(1) {
                tracing::warn!("MSI-X vector {v}: irqfd write failed: {e}");
            }
        }
    }

    /// Deliver vector `v`. Returns false when MSI-X is disabled (the caller then uses
    /// INTx); a masked vector is left pending and delivered when unmasked.
    pub fn trigger(&mut self, v: u16) -> bool {
        if !self.enabled {
            return false;
        }
        let v = usize::from(v);
        if v >= self.entries.len() {
            return true; // no such vector (e.g. VIRTIO_MSI_NO_VECTOR): nothing to do
        }
        if self.masked(v) {
            self.pending[v] = true;
        } else {
            self.fire(v);
        }
        true
    }

    pub fn read_table(&self, offset: u64, data: &mut [u8]) {
        let (v, field) = ((offset / ENTRY_SIZE) as usize, offset % ENTRY_SIZE);
        let Some(e) = self.entries.get(v) else {
            data.fill(0xff);
            return;
        };
        let words = [e.addr_lo, e.addr_hi, e.data, e.ctrl];
        let mut bytes = [0u8; 16];
        for (i, w) in words.iter().enumerate() {
            bytes[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
        }
        copy_out(&bytes, field as usize, data);
    }

    pub fn write_table(&mut self, offset: u64, data: &[u8]) {
        let (v, field) = (
            (offset / ENTRY_SIZE) as usize,
            (offset % ENTRY_SIZE) as usize,
        );
        let Some(e) = self.entries.get(v).copied() else {
            return;
        };
        let mut bytes = [0u8; 16];
        for (i, w) in [e.addr_lo, e.addr_hi, e.data, e.ctrl].iter().enumerate() {
            bytes[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
        }
        if field + data.len() > 16 {
            return;
        }
        bytes[field..field + data.len()].copy_from_slice(data);
        let w = |i: usize| u32::from_le_bytes(bytes[i * 4..i * 4 + 4].try_into().unwrap());
        let was_masked = self.masked(v);
        self.entries[v] = Entry {
            addr_lo: w(0),
            addr_hi: w(1),
            data: w(2),
            // Only the mask bit of vector control is writable.
            ctrl: w(3) & VECTOR_MASKED,
        };
        self.update_route(v);
        if was_masked && !self.masked(v) && self.pending[v] {
            self.pending[v] = false;
            self.fire(v);
        }
    }

    pub fn read_pba(&self, offset: u64, data: &mut [u8]) {
        let mut bytes = vec![0u8; self.pba_size() as usize];
        for (v, p) in self.pending.iter().enumerate() {
            if *p {
                bytes[v / 8] |= 1 << (v % 8);
            }
        }
        copy_out(&bytes, offset as usize, data);
    }
}

fn copy_out(src: &[u8], at: usize, data: &mut [u8]) {
    for (i, b) in data.iter_mut().enumerate() {
        *b = src.get(at + i).copied().unwrap_or(0);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[derive(Default)]
    struct Routes(Mutex<Vec<(u32, Option<MsiMessage>)>>);
    impl MsiRouter for Routes {
        fn update_route(&self, gsi: u32, msg: Option<MsiMessage>) {
            self.0.lock().unwrap().push((gsi, msg));
        }
    }

    fn msix(n: u32) -> (Msix, Arc<Routes>) {
        let routes = Arc::new(Routes::default());
        let vectors = (0..n)
            .map(|i| MsixVector {
                gsi: 24 + i,
                irqfd: EventFd::new(libc::EFD_NONBLOCK).unwrap(),
            })
            .collect();
        (Msix::new(vectors, routes.clone()), routes)
    }

    #[test]
    fn masked_vectors_pend_and_fire_on_unmask() {
        let (mut m, routes) = msix(2);
        assert!(!m.trigger(0), "disabled MSI-X falls back to INTx");
        m.set_control(CTRL_ENABLE);
        m.write_table(16, &0xfee0_0000u32.to_le_bytes());
        m.write_table(24, &0x4041u32.to_le_bytes());
        assert!(m.trigger(1));
        assert!(m.vectors[1].irqfd.read().is_err(), "masked: not fired");
        let mut pba = [0u8; 8];
        m.read_pba(0, &mut pba);
        assert_eq!(pba[0], 0b10);
        m.write_table(28, &0u32.to_le_bytes()); // unmask
        assert_eq!(m.vectors[1].irqfd.read().unwrap(), 1);
        m.read_pba(0, &mut pba);
        assert_eq!(pba[0], 0);
        let last = *routes.0.lock().unwrap().last().unwrap();
        assert_eq!(
            last,
            (
                25,
                Some(MsiMessage {
                    addr: 0xfee0_0000,
                    data: 0x4041
                })
            )
        );
        assert!(m.trigger(1));
        assert_eq!(m.vectors[1].irqfd.read().unwrap(), 1);
        // Out-of-range vectors and offsets are harmless.
        assert!(m.trigger(0xffff));
        m.write_table(0x1000, &[1, 2, 3, 4]);
        let mut d = [0u8; 4];
        m.read_table(0x1000, &mut d);
        assert_eq!(d, [0xff; 4]);
    }

    #[test]
    fn function_mask_holds_all_vectors() {
        let (mut m, _) = msix(1);
        m.set_control(CTRL_ENABLE | CTRL_FUNCTION_MASK);
        m.write_table(12, &0u32.to_le_bytes());
        assert!(m.trigger(0));
        assert!(m.vectors[0].irqfd.read().is_err());
        m.set_control(CTRL_ENABLE);
        assert_eq!(m.vectors[0].irqfd.read().unwrap(), 1);
    }

    #[test]
    fn capability_layout() {
        let (m, _) = msix(3);
        let (body, mask) = m.capability(0, 0x8000, 0x9000);
        assert_eq!(body[0], CAP_ID_MSIX);
        assert_eq!(u16::from_le_bytes([body[2], body[3]]), 2);
        assert_eq!(u32::from_le_bytes(body[4..8].try_into().unwrap()), 0x8000);
        assert_eq!(mask[3], 0xc0);
    }
}
