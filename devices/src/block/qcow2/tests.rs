use std::fs;
use std::path::{Path, PathBuf};

use oxvm_api::{CacheMode, DiscardMode, DiskFormat};
use vmm_sys_util::tempdir::TempDir;

use super::*;
use crate::block::QCOW2_MAGIC;

const MIB: u64 = 1 << 20;

fn opts(cache: CacheMode) -> DiskOptions {
    DiskOptions {
        readonly: false,
        cache,
        discard: DiscardMode::Unmap,
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(13).wrapping_add(seed))
        .collect()
}

fn read(disk: &mut Qcow2Disk, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    disk.read_at(offset, &mut buf).unwrap();
    buf
}

fn new_image(dir: &Path, name: &str, size: u64) -> PathBuf {
    let path = dir.join(name);
    Qcow2Disk::create(&path, size, None).unwrap();
    path
}

#[test]
fn create_write_flush_reopen() {
    let dir = TempDir::new().unwrap();
    for cache in [
        CacheMode::Writeback,
        CacheMode::Writethrough,
        CacheMode::None,
    ] {
        let path = new_image(dir.as_path(), &format!("{cache:?}.qcow2"), 16 * MIB);
        assert_eq!(&fs::read(&path).unwrap()[..4], &QCOW2_MAGIC);
        let data = pattern(3 * 4096 + 512, 1);
        {
            let mut disk = Qcow2Disk::open(&path, opts(cache)).unwrap();
            assert_eq!(disk.size(), 16 * MIB);
            assert_eq!(disk.cluster_size(), 65536);
            assert_eq!(disk.discard_granularity(), 65536);
            assert_eq!(read(&mut disk, 0, 4096), vec![0u8; 4096]);
            disk.write_at(MIB - 512, &data).unwrap();
            disk.flush().unwrap();
            assert_eq!(read(&mut disk, MIB - 512, data.len()), data);
        }
        let mut disk = Qcow2Disk::open(&path, opts(cache)).unwrap();
        assert_eq!(read(&mut disk, MIB - 512, data.len()), data, "{cache:?}");
    }
}

#[test]
fn backing_file_chain_resolves_relative_to_the_image() {
    let dir = TempDir::new().unwrap();
    // base.raw <- mid.qcow2 <- top.qcow2, names stored relative.
    let base = dir.as_path().join("base.raw");
    let base_data = pattern(4 * MIB as usize, 2);
    fs::write(&base, &base_data).unwrap();
    let mid = dir.as_path().join("mid.qcow2");
    Qcow2Disk::create(&mid, 4 * MIB, Some(("base.raw", DiskFormat::Raw))).unwrap();
    {
        let mut m = Qcow2Disk::open(&mid, opts(CacheMode::Writeback)).unwrap();
        m.write_at(MIB, &[0xaa; 4096]).unwrap();
        m.flush().unwrap();
    }
    let top = dir.as_path().join("top.qcow2");
    Qcow2Disk::create(&top, 4 * MIB, Some(("mid.qcow2", DiskFormat::Qcow2))).unwrap();

    // The stored names are relative: imago resolves each against the directory of the
    // image naming it, not against the working directory.
    let mut disk = Qcow2Disk::open(&top, opts(CacheMode::Writeback)).unwrap();
    assert_eq!(read(&mut disk, 0, 4096), base_data[..4096]);
    assert_eq!(read(&mut disk, MIB, 4096), vec![0xaa; 4096]);

    // Writes go to the top image only.
    disk.write_at(2 * MIB, &[0x55; 512]).unwrap();
    disk.flush().unwrap();
    assert_eq!(read(&mut disk, 2 * MIB, 512), vec![0x55; 512]);
    assert_eq!(
        read(&mut disk, 2 * MIB + 512, 512),
        base_data[2 * MIB as usize + 512..][..512]
    );
    assert_eq!(fs::read(&base).unwrap(), base_data);

    // Discarding over a backing file reads zeroes, not the backing data.
    disk.discard(0, 65536).unwrap();
    assert_eq!(read(&mut disk, 0, 4096), vec![0u8; 4096]);
    // write_zeroes without unmap too.
    disk.write_zeroes(3 * MIB, 65536 + 512, false).unwrap();
    assert_eq!(
        read(&mut disk, 3 * MIB, 65536 + 512),
        vec![0u8; 65536 + 512]
    );
    assert_eq!(
        read(&mut disk, 3 * MIB + 65536 + 512, 512),
        base_data[(3 * MIB + 65536 + 512) as usize..][..512]
    );
}

#[test]
fn missing_backing_file_is_named() {
    let dir = TempDir::new().unwrap();
    let top = dir.as_path().join("orphan.qcow2");
    Qcow2Disk::create(&top, MIB, Some(("gone.raw", DiskFormat::Raw))).unwrap();
    let err = Qcow2Disk::open(&top, opts(CacheMode::Writeback)).unwrap_err();
    match &err {
        OpenError::MissingBacking { backing, .. } => {
            assert_eq!(backing, &dir.as_path().join("gone.raw"))
        }
        other => panic!("unexpected error: {other}"),
    }
    assert!(err.to_string().contains("gone.raw"), "{err}");
}

#[test]
fn discard_frees_clusters_and_write_zeroes_unmaps() {
    let dir = TempDir::new().unwrap();
    let path = new_image(dir.as_path(), "d.qcow2", 16 * MIB);
    let mut disk = Qcow2Disk::open(&path, opts(CacheMode::Writeback)).unwrap();
    disk.write_at(0, &pattern(8 * MIB as usize, 4)).unwrap();
    disk.flush().unwrap();
    disk.discard(0, 4 * MIB).unwrap();
    disk.write_zeroes(4 * MIB, 2 * MIB, true).unwrap();
    disk.flush().unwrap();
    assert_eq!(
        read(&mut disk, 0, 6 * MIB as usize),
        vec![0u8; 6 * MIB as usize]
    );
    assert_eq!(
        read(&mut disk, 6 * MIB, 4096),
        pattern(8 * MIB as usize, 4)[6 * MIB as usize..][..4096]
    );
    // New writes reuse the freed clusters instead of growing the file.
    let len_before = fs::metadata(&path).unwrap().len();
    disk.write_at(0, &pattern(4 * MIB as usize, 8)).unwrap();
    disk.flush().unwrap();
    assert!(fs::metadata(&path).unwrap().len() <= len_before + 2 * 65536);
}

#[test]
fn discard_ignore_keeps_data() {
    let dir = TempDir::new().unwrap();
    let path = new_image(dir.as_path(), "i.qcow2", 4 * MIB);
    let ignore = DiskOptions {
        discard: DiscardMode::Ignore,
        ..opts(CacheMode::Writeback)
    };
    let mut disk = Qcow2Disk::open(&path, ignore).unwrap();
    assert!(!disk.discard_enabled());
    disk.write_at(0, &[9u8; 65536]).unwrap();
    disk.discard(0, 65536).unwrap();
    assert_eq!(read(&mut disk, 0, 65536), vec![9u8; 65536]);
}

#[test]
fn readonly_refuses_writes() {
    let dir = TempDir::new().unwrap();
    let path = new_image(dir.as_path(), "ro.qcow2", 4 * MIB);
    let before = fs::read(&path).unwrap();
    let ro = DiskOptions {
        readonly: true,
        ..opts(CacheMode::Writeback)
    };
    let mut disk = Qcow2Disk::open(&path, ro).unwrap();
    assert!(disk.is_read_only());
    assert!(disk.write_at(0, &[1u8; 512]).is_err());
    assert!(disk.discard(0, 512).is_err());
    assert!(disk.write_zeroes(0, 512, false).is_err());
    disk.flush().unwrap();
    assert_eq!(read(&mut disk, 0, 512), vec![0u8; 512]);
    drop(disk);
    assert_eq!(fs::read(&path).unwrap(), before);
}

#[test]
fn header_gives_size_and_backing_name() {
    let dir = TempDir::new().unwrap();
    let base = dir.as_path().join("base.raw");
    fs::write(&base, vec![0u8; 4096]).unwrap();
    assert_eq!(read_qcow2_header(&base).unwrap(), None, "raw is no qcow2");
    let mid = new_image(dir.as_path(), "mid.qcow2", 8 * MIB);
    let h = read_qcow2_header(&mid).unwrap().unwrap();
    assert_eq!((h.size, h.backing.clone()), (8 * MIB, None));
    assert_eq!(h.backing_path(&mid), None);
    let top = dir.as_path().join("top.qcow2");
    Qcow2Disk::create(&top, 8 * MIB, Some(("mid.qcow2", DiskFormat::Qcow2))).unwrap();
    let h = read_qcow2_header(&top).unwrap().unwrap();
    assert_eq!(h.backing.as_deref(), Some("mid.qcow2"));
    assert_eq!(h.backing_path(&top), Some(mid));
    let abs = dir.as_path().join("abs.qcow2");
    let target = base.to_str().unwrap();
    Qcow2Disk::create(&abs, 4096, Some((target, DiskFormat::Raw))).unwrap();
    let h = read_qcow2_header(&abs).unwrap().unwrap();
    assert_eq!(h.backing_path(&abs), Some(base));
    // A short file is not qcow2 either; a missing one is an error.
    fs::write(dir.as_path().join("short"), b"QFI").unwrap();
    assert_eq!(
        read_qcow2_header(&dir.as_path().join("short")).unwrap(),
        None
    );
    assert!(read_qcow2_header(&dir.as_path().join("missing")).is_err());
}
