//! `memory::restore_guest_memory` with a real RAM layout: file offsets across the MMIO
//! gap, and KVM slot registration.

use std::fs::File;
use std::os::unix::fs::FileExt;

use kvm_ioctls::Kvm;
use oxvm_arch::layout::{HIGH_RAM_START, MMIO_GAP_START};
use oxvm_arch::memory::RamLayout;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use super::test_dir::TestDir;
use super::{save_memory, MemoryStats};
use crate::memory::{load_guest_memory, restore_guest_memory, MemoryRestore};
use crate::migration::dirty::take_bitmap_dirty;

const MIB: u64 = 1 << 20;

#[test]
fn offsets_are_guest_physical_across_the_mmio_gap() {
    let dir = TestDir::new("restore-gap");
    let path = dir.join("memory.raw");
    let ram = RamLayout::new(MMIO_GAP_START + 64 * MIB);
    assert_eq!(ram.high_size, 64 * MIB);
    let marks = [
        (0x1000, b"low page".as_slice()),
        (MMIO_GAP_START - 8, b"gap-end!"),
        (HIGH_RAM_START, b"4 GiB"),
        (HIGH_RAM_START + 64 * MIB - 3, b"end"),
    ];
    let file = File::create(&path).unwrap();
    file.set_len(HIGH_RAM_START + 64 * MIB).unwrap();
    for (gpa, bytes) in marks {
        file.write_all_at(bytes, gpa).unwrap();
    }
    drop(file);

    for mode in [MemoryRestore::Lazy, MemoryRestore::Copy] {
        let mem = load_guest_memory(&ram, &path, mode).unwrap();
        assert_eq!(mem.num_regions(), 2);
        for (gpa, bytes) in marks {
            let mut got = vec![0u8; bytes.len()];
            mem.read_slice(&mut got, GuestAddress(gpa)).unwrap();
            assert_eq!(got, bytes, "{mode:?} at {gpa:#x}");
        }
        let mut zero = [1u8; 16];
        mem.read_slice(&mut zero, GuestAddress(HIGH_RAM_START + 4096))
            .unwrap();
        assert_eq!(zero, [0; 16], "{mode:?}: a hole reads as zeros");
    }
}

#[test]
fn restore_registers_kvm_slots_in_both_modes() {
    let kvm = match Kvm::new() {
        Ok(k) => k,
        Err(e) => {
            eprintln!("skipped: /dev/kvm: {e}");
            return;
        }
    };
    let dir = TestDir::new("restore-kvm");
    let path = dir.join("memory.raw");
    let ram = RamLayout::new(16 * MIB);
    let saved = crate::GuestMemoryMmap::from_ranges(&ram.regions()).unwrap();
    saved
        .write_slice(b"saved guest", GuestAddress(0x10_0000))
        .unwrap();
    let stats = save_memory(&saved, &path).unwrap();
    assert_eq!(
        stats,
        MemoryStats {
            bytes_total: 16 * MIB,
            pages_written: 1,
            pages_zero: 16 * MIB / 4096 - 1,
        }
    );

    for mode in [MemoryRestore::Lazy, MemoryRestore::Copy] {
        let vm = kvm.create_vm().unwrap();
        let mem = restore_guest_memory(&vm, &ram, &path, mode).unwrap();
        let mut got = [0u8; 11];
        mem.read_slice(&mut got, GuestAddress(0x10_0000)).unwrap();
        assert_eq!(&got, b"saved guest", "{mode:?}");
    }
}

#[test]
fn restore_refuses_a_file_for_another_memory_size() {
    let kvm = match Kvm::new() {
        Ok(k) => k,
        Err(e) => {
            eprintln!("skipped: /dev/kvm: {e}");
            return;
        }
    };
    let dir = TestDir::new("restore-size");
    let path = dir.join("memory.raw");
    File::create(&path).unwrap().set_len(8 * MIB).unwrap();
    let vm = kvm.create_vm().unwrap();
    let err = restore_guest_memory(&vm, &RamLayout::new(16 * MIB), &path, MemoryRestore::Lazy)
        .unwrap_err();
    let msg = err.to_string();
    for part in [
        path.to_str().unwrap(),
        &(8 * MIB).to_string(),
        &(16 * MIB).to_string(),
    ] {
        assert!(msg.contains(part), "`{part}` missing from: {msg}");
    }
}

#[test]
fn restored_memory_tracks_device_writes_in_both_modes() {
    // A restored VM can be live-migrated too: the private file mapping carries the same
    // dirty bitmap as anonymous memory.
    let dir = TestDir::new("restore-dirty");
    let path = dir.join("memory.raw");
    let file = File::create(&path).unwrap();
    file.set_len(16 * MIB).unwrap();
    file.write_all_at(b"data", 0x20_0000).unwrap();
    drop(file);
    for mode in [MemoryRestore::Lazy, MemoryRestore::Copy] {
        let mem = load_guest_memory(&RamLayout::new(16 * MIB), &path, mode).unwrap();
        // A copy marks what it filled; a migration's first round sends every page anyway.
        take_bitmap_dirty(&mem);
        mem.write_obj(1u8, GuestAddress(0x7008)).unwrap();
        assert_eq!(take_bitmap_dirty(&mem), [0x7000], "{mode:?}");
    }
}
