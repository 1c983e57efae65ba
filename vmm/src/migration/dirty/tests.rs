use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;

use kvm_ioctls::Kvm;
use oxvm_arch::layout::{HIGH_RAM_START, MMIO_GAP_START};
use oxvm_arch::memory::RamLayout;
use vm_memory::bitmap::Bitmap;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};
use vmm_sys_util::eventfd::EventFd;

use super::*;
use crate::memory::{register_guest_memory, set_dirty_logging};

const MIB: u64 = 1 << 20;

fn small() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&RamLayout::new(16 * MIB).regions()).unwrap()
}

#[test]
fn device_writes_are_taken_once() {
    let mem = small();
    assert!(take_bitmap_dirty(&mem).is_empty(), "fresh memory is clean");

    // Bytes::write_slice, across a page boundary: both pages.
    mem.write_slice(&[1; 16], GuestAddress(0x1ff8)).unwrap();
    // A VolatileSlice write (what the queue's descriptor walkers get), page 100 (past
    // the first 64-page word of the bitmap).
    let slice = mem.get_slice(GuestAddress(100 * 4096 + 8), 8).unwrap();
    slice.write_slice(&[2; 4], 0).unwrap();
    // VolatileSlice::copy_from, and an atomic store (used ring index).
    mem.get_slice(GuestAddress(0x5000), 8)
        .unwrap()
        .copy_from(&[3u8; 8]);
    mem.store(7u16, GuestAddress(0x9002), Ordering::Release)
        .unwrap();

    assert_eq!(
        take_bitmap_dirty(&mem),
        [0x1000, 0x2000, 0x5000, 0x9000, 100 * 4096]
    );
    assert!(take_bitmap_dirty(&mem).is_empty(), "taken pages are clean");

    // Written again after being taken: taken again.
    mem.write_obj(9u8, GuestAddress(0x5000)).unwrap();
    assert_eq!(take_bitmap_dirty(&mem), [0x5000]);
}

#[test]
fn raw_pointer_writes_are_seen_only_once_marked() {
    // `ptr_guard_mut` hands out a raw pointer that vm-memory cannot follow: a kernel
    // write through it (here read(2), for io=native it is AIO) is invisible until the
    // writer marks the range, as `AioContext::reap` does.
    let mem = small();
    let addr = GuestAddress(0x3_0000);
    let slice = mem.get_slice(addr, 8).unwrap();
    let evt = EventFd::new(libc::EFD_NONBLOCK).unwrap();
    evt.write(5).unwrap();
    let guard = slice.ptr_guard_mut();
    // SAFETY: the pointer is 8 bytes of guest memory that `mem` keeps mapped for the
    // call, and an eventfd read writes exactly 8 bytes.
    let n = unsafe { libc::read(evt.as_raw_fd(), guard.as_ptr().cast(), 8) };
    assert_eq!(n, 8);
    assert_eq!(mem.read_obj::<u64>(addr).unwrap(), 5);
    assert!(take_bitmap_dirty(&mem).is_empty());

    slice.bitmap().mark_dirty(0, slice.len());
    assert_eq!(take_bitmap_dirty(&mem), [addr.0]);
    assert!(take_bitmap_dirty(&mem).is_empty());
}

#[test]
fn pages_above_4_gib_have_their_own_addresses() {
    let ram = RamLayout::new(MMIO_GAP_START + 16 * MIB);
    let mem = GuestMemoryMmap::from_ranges(&ram.regions()).unwrap();
    assert_eq!(mem.num_regions(), 2);
    let gpas = [
        MMIO_GAP_START - 4096,
        HIGH_RAM_START,
        HIGH_RAM_START + 70 * 4096 + 123,
        HIGH_RAM_START + 16 * MIB - 1,
    ];
    for gpa in gpas {
        mem.write_obj(0xAAu8, GuestAddress(gpa)).unwrap();
    }
    let pages: Vec<u64> = gpas.iter().map(|g| g & !4095).collect();
    assert_eq!(take_bitmap_dirty(&mem), pages);
}

#[test]
fn the_kvm_log_reads_every_slot_once_logging_is_on() {
    let kvm = match Kvm::new() {
        Ok(k) => k,
        Err(e) => {
            eprintln!("skipped: /dev/kvm: {e}");
            return;
        }
    };
    let vm = kvm.create_vm().unwrap();
    let ram = RamLayout::new(MMIO_GAP_START + 16 * MIB);
    let mem = GuestMemoryMmap::from_ranges(&ram.regions()).unwrap();
    register_guest_memory(&vm, &ram, &mem).unwrap();
    // Without logging, KVM has no log to give.
    assert!(take_kvm_dirty(&vm, &mem).is_err());

    set_dirty_logging(&vm, &mem, true).unwrap();
    // No vCPU ran: nothing was written by the guest. The VMM's write is not KVM's to
    // see (it goes through the VMM's mapping), which is why the bitmaps exist.
    mem.write_obj(1u8, GuestAddress(HIGH_RAM_START)).unwrap();
    assert_eq!(take_kvm_dirty(&vm, &mem).unwrap(), Vec::<u64>::new());
    assert_eq!(take_bitmap_dirty(&mem), [HIGH_RAM_START]);
    set_dirty_logging(&vm, &mem, false).unwrap();
}
