use std::fs::OpenOptions;
use std::os::unix::fs::MetadataExt;

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

use super::*;
use crate::snapshot::test_dir::TestDir;

const MIB: usize = 1 << 20;

/// Two regions with a hole between them, like RAM around the MMIO gap.
fn ranges() -> Vec<(GuestAddress, usize)> {
    vec![
        (GuestAddress(0), 8 * MIB),
        (GuestAddress(16 << 20), 4 * MIB),
    ]
}

/// Guest memory with a few patterns; returns it and how many pages hold data.
fn patterned() -> (GuestMemoryMmap, u64) {
    let mem = GuestMemoryMmap::from_ranges(&ranges()).unwrap();
    // Page 0, the last byte of page 5, three pages at 2 MiB, the first page of the high
    // region, the last byte of guest memory.
    mem.write_slice(b"boot sector", GuestAddress(0)).unwrap();
    mem.write_obj(0xa5u8, GuestAddress(6 * 4096 - 1)).unwrap();
    let run: Vec<u8> = (0..3 * 4096).map(|i| (i % 251) as u8 + 1).collect();
    mem.write_slice(&run, GuestAddress(2 << 20)).unwrap();
    mem.write_slice(b"high", GuestAddress(16 << 20)).unwrap();
    mem.write_obj(0x5au8, GuestAddress((20 << 20) - 1)).unwrap();
    (mem, 7)
}

fn contents(mem: &GuestMemoryMmap) -> Vec<Vec<u8>> {
    mem.iter()
        .map(|r| {
            let mut v = vec![0u8; r.len() as usize];
            mem.read_slice(&mut v, r.start_addr()).unwrap();
            v
        })
        .collect()
}

#[test]
fn save_writes_only_data_pages_at_their_addresses() {
    let dir = TestDir::new("mem-save");
    let path = dir.join("memory.raw");
    let (mem, data_pages) = patterned();
    let stats = save_memory(&mem, &path).unwrap();
    let total_pages = (12 * MIB) as u64 / PAGE_SIZE;
    assert_eq!(
        stats,
        MemoryStats {
            bytes_total: 12 * MIB as u64,
            pages_written: data_pages,
            pages_zero: total_pages - data_pages,
        }
    );
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.len(), 20 << 20, "file ends where the last region ends");
    assert!(
        meta.blocks() * 512 <= data_pages * PAGE_SIZE + 64 * 1024,
        "not sparse: {} bytes allocated for {data_pages} data pages",
        meta.blocks() * 512
    );
    let file = std::fs::read(&path).unwrap();
    assert_eq!(&file[..11], b"boot sector");
    assert_eq!(file[6 * 4096 - 1], 0xa5);
    assert_eq!(&file[16 << 20..(16 << 20) + 4], b"high");
    assert_eq!(file[(20 << 20) - 1], 0x5a);
    let c = contents(&mem);
    assert_eq!(&file[..8 * MIB], &c[0][..]);
    assert_eq!(&file[16 << 20..], &c[1][..]);
    assert!(
        file[8 * MIB..16 << 20].iter().all(|&b| b == 0),
        "gap is zero"
    );
    assert!(!crate::snapshot::durable::tmp_path(&path).exists());
}

#[test]
fn lazy_and_copy_restore_give_identical_memory() {
    let dir = TestDir::new("mem-restore");
    let path = dir.join("memory.raw");
    let (mem, data_pages) = patterned();
    save_memory(&mem, &path).unwrap();

    let lazy = map_memory_file(&path, &ranges()).unwrap();
    assert_eq!(contents(&lazy), contents(&mem));

    let (copied, bytes) = copy_memory_file(&path, &ranges()).unwrap();
    assert_eq!(contents(&copied), contents(&mem));
    // Only the data extents are read (ext4 allocates 4 KiB blocks: exactly the pages).
    assert!(
        bytes >= data_pages * PAGE_SIZE && bytes <= data_pages * PAGE_SIZE + 64 * 1024,
        "copied {bytes} bytes for {data_pages} data pages"
    );
}

#[test]
fn lazy_restore_never_writes_the_file() {
    let dir = TestDir::new("mem-lazy");
    let path = dir.join("memory.raw");
    let (mem, _) = patterned();
    save_memory(&mem, &path).unwrap();
    let before = std::fs::read(&path).unwrap();

    let lazy = map_memory_file(&path, &ranges()).unwrap();
    lazy.write_slice(b"guest wrote this", GuestAddress(0))
        .unwrap();
    lazy.write_slice(&[0xff; 8192], GuestAddress(2 << 20))
        .unwrap();
    lazy.write_obj(1u64, GuestAddress(17 << 20)).unwrap(); // a page that was a hole
    let mut check = [0u8; 16];
    lazy.read_slice(&mut check, GuestAddress(0)).unwrap();
    assert_eq!(&check, b"guest wrote this");
    drop(lazy);

    assert!(
        std::fs::read(&path).unwrap() == before,
        "the memory file changed"
    );
    let again = map_memory_file(&path, &ranges()).unwrap();
    assert_eq!(contents(&again), contents(&mem));
}

#[test]
fn wrong_length_file_is_refused_with_both_sizes() {
    let dir = TestDir::new("mem-short");
    let path = dir.join("memory.raw");
    let (mem, _) = patterned();
    save_memory(&mem, &path).unwrap();
    let file = OpenOptions::new().write(true).open(&path).unwrap();

    file.set_len((20 << 20) - 4096).unwrap();
    for err in [
        check_memory_file(&path, &ranges()).unwrap_err(),
        map_memory_file(&path, &ranges()).unwrap_err(),
        copy_memory_file(&path, &ranges()).unwrap_err(),
    ] {
        let msg = err.to_string();
        assert!(
            matches!(err, SnapshotError::MemorySizeMismatch { .. }),
            "{msg}"
        );
        for part in [
            path.to_str().unwrap(),
            &((20 << 20) - 4096).to_string(),
            &(20 << 20).to_string(),
            "truncated",
        ] {
            assert!(msg.contains(part), "`{part}` missing from: {msg}");
        }
    }

    file.set_len(20 << 20).unwrap();
    check_memory_file(&path, &ranges()).unwrap();
    file.set_len(24 << 20).unwrap();
    let msg = map_memory_file(&path, &ranges()).unwrap_err().to_string();
    assert!(msg.contains("more memory"), "{msg}");

    let msg = map_memory_file(&dir.join("absent.raw"), &ranges())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("absent.raw") && msg.contains("cannot open"),
        "{msg}"
    );
}

#[test]
fn save_pages_updates_single_pages() {
    let dir = TestDir::new("mem-pages");
    let path = dir.join("memory.raw");
    let (mem, _) = patterned();
    save_memory(&mem, &path).unwrap();

    // The guest changes two pages and zeroes one that had data.
    mem.write_slice(b"changed", GuestAddress(0x3000)).unwrap();
    mem.write_slice(b"upstairs", GuestAddress((16 << 20) + 0x2000))
        .unwrap();
    mem.write_slice(&[0u8; 4096], GuestAddress(0)).unwrap();
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    let n = save_pages(
        &mem,
        &file,
        &path,
        [0x3007, (16 << 20) + 0x2000, 0].into_iter(),
    )
    .unwrap();
    assert_eq!(n, 3);
    drop(file);
    let restored = map_memory_file(&path, &ranges()).unwrap();
    assert_eq!(contents(&restored), contents(&mem));

    let file = OpenOptions::new().write(true).open(&path).unwrap();
    let err = save_pages(&mem, &file, &path, [10 << 20].into_iter()).unwrap_err();
    assert!(
        matches!(err, SnapshotError::PageOutsideMemory { gpa, .. } if gpa == 10 << 20),
        "{err}"
    );
}

#[test]
fn copy_reads_only_the_data_of_a_sparse_file() {
    // 1 GiB of guest memory, 40 MiB of it data, spread out.
    let dir = TestDir::new("mem-sparse");
    let path = dir.join("memory.raw");
    let regions = [(GuestAddress(0), 1 << 30)];
    let file = File::create(&path).unwrap();
    file.set_len(1 << 30).unwrap();
    let chunk: Vec<u8> = (0..4 * MIB).map(|i| (i % 253) as u8 | 1).collect();
    for i in 0..10u64 {
        file.write_all_at(&chunk, i * (100 << 20)).unwrap();
    }
    drop(file);

    let (mem, copied) = copy_memory_file(&path, &regions).unwrap();
    assert_eq!(copied, 40 << 20);
    let mut buf = vec![0u8; 4 * MIB];
    mem.read_slice(&mut buf, GuestAddress(900 << 20)).unwrap();
    assert_eq!(buf, chunk);
    mem.read_slice(&mut buf, GuestAddress(950 << 20)).unwrap();
    assert!(buf.iter().all(|&b| b == 0));
}

#[test]
fn zero_detection() {
    assert!(is_zero(&[0u8; 4096]));
    let mut page = [0u8; 4096];
    page[4095] = 1;
    assert!(!is_zero(&page));
    page[4095] = 0;
    page[0] = 0x80;
    assert!(!is_zero(&page));
    assert!(is_zero(&[0u8; 100]), "a partial page");
}
