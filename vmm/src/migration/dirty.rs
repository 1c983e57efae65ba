//! Which guest pages were written since the last look, for the pre-copy rounds.
//!
//! Two kinds of writers, two sources: vCPUs write through KVM's mappings, which only
//! KVM's dirty log sees (`take_kvm_dirty`); the VMM's own threads (virtio workers, AIO
//! completions) write through vm-memory, which marks the `AtomicBitmap` every region
//! of `GuestMemoryMmap` carries (`take_bitmap_dirty`). A page may be in both lists.

use kvm_ioctls::VmFd;
use oxvm_arch::memory::GuestRegionMmap;
use vm_memory::bitmap::AtomicBitmap;
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion, MmapRegion};

use crate::error::{kvm_err, VmmError};
use crate::GuestMemoryMmap;

/// The page both logs count in: the x86-64 host page, which is what
/// `AtomicBitmap::with_len` (used by `GuestMemoryMmap::from_ranges`) and KVM use.
const PAGE_SIZE: u64 = 4096;

/// Guest-physical addresses (page aligned, ascending) of the pages the VMM's own
/// threads wrote since the last call; their bits are cleared. Safe against writers
/// running meanwhile: each 64-page word is swapped for zero atomically, and writers
/// mark a page after writing it, so a returned page already holds what marked it and a
/// write that lands after the swap marks it again for the next call. The caller copies
/// the pages after this returns.
pub fn take_bitmap_dirty(mem: &GuestMemoryMmap) -> Vec<u64> {
    let mut pages = Vec::new();
    for region in mem.iter() {
        let bitmap = region_bitmap(region);
        debug_assert_eq!(
            bitmap.len() as u64,
            region.len().div_ceil(PAGE_SIZE),
            "the dirty bitmap does not count 4 KiB pages"
        );
        push_pages(&mut pages, region.start_addr().0, &bitmap.get_and_reset());
    }
    pages
}

/// Guest-physical addresses (page aligned, ascending) of the pages vCPUs wrote since
/// the last call, from KVM_GET_DIRTY_LOG (which also clears the log). Slot i is region
/// i in address order, as `crate::memory` registers them; logging must be on
/// (`crate::memory::set_dirty_logging`), otherwise KVM refuses.
pub fn take_kvm_dirty(vm: &VmFd, mem: &GuestMemoryMmap) -> Result<Vec<u64>, VmmError> {
    let mut pages = Vec::new();
    for (slot, region) in mem.iter().enumerate() {
        let words = vm
            .get_dirty_log(slot as u32, region.len() as usize)
            .map_err(kvm_err("KVM_GET_DIRTY_LOG"))?;
        push_pages(&mut pages, region.start_addr().0, &words);
    }
    Ok(pages)
}

/// The region's own bitmap: `GuestMemoryRegion::bitmap` only gives an offset view,
/// which cannot be read and cleared as a whole.
fn region_bitmap(region: &GuestRegionMmap) -> &AtomicBitmap {
    let mapping: &MmapRegion<AtomicBitmap> = region;
    mapping.bitmap()
}

/// Append the address of every page whose bit is set in `words` (bit i of word w is
/// page 64 * w + i from `base`).
fn push_pages(out: &mut Vec<u64>, base: u64, words: &[u64]) {
    for (w, &word) in words.iter().enumerate() {
        let mut bits = word;
        while bits != 0 {
            let page = w as u64 * 64 + u64::from(bits.trailing_zeros());
            out.push(base + page * PAGE_SIZE);
            bits &= bits - 1;
        }
    }
}

#[cfg(test)]
mod tests;
