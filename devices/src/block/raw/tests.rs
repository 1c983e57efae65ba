use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use oxvm_api::{CacheMode, DiscardMode};
use vmm_sys_util::tempdir::TempDir;

use super::*;

const MIB: usize = 1 << 20;

fn image(dir: &TempDir, name: &str, size: usize) -> PathBuf {
    let path = dir.as_path().join(name);
    let f = fs::File::create(&path).unwrap();
    f.set_len(size as u64).unwrap();
    path
}

fn opts(cache: CacheMode, discard: DiscardMode) -> DiskOptions {
    DiskOptions {
        readonly: false,
        cache,
        discard,
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn allocated_bytes(path: &Path) -> u64 {
    fs::metadata(path).unwrap().blocks() * 512
}

/// Write, read back and check the file's bytes in every cache mode, at offsets and
/// lengths that are 512- but not 4096-aligned (O_DIRECT's bounce path).
#[test]
fn read_write_in_every_cache_mode() {
    let dir = TempDir::new().unwrap();
    for cache in [
        CacheMode::Writeback,
        CacheMode::Writethrough,
        CacheMode::None,
    ] {
        let path = image(&dir, &format!("{cache:?}.raw"), 4 * MIB);
        let mut disk = RawDisk::open(&path, opts(cache, DiscardMode::Ignore)).unwrap();
        assert_eq!(disk.size(), 4 * MIB as u64);
        assert_eq!(disk.has_volatile_cache(), cache != CacheMode::Writethrough);
        for (offset, len) in [
            (0, 512),
            (512, 1024),
            (4096 - 512, 8192 + 1024),
            (MIB - 512, 2 * MIB + 512),
        ] {
            let data = pattern(len, offset as u8);
            disk.write_at(offset as u64, &data).unwrap();
            let mut back = vec![0u8; len];
            disk.read_at(offset as u64, &mut back).unwrap();
            assert_eq!(back, data, "{cache:?} at {offset}+{len}");
        }
        disk.flush().unwrap();
        let file = fs::read(&path).unwrap();
        assert_eq!(file.len(), 4 * MIB, "{cache:?} changed the file size");
        let last = pattern(2 * MIB + 512, (MIB - 512) as u8);
        assert_eq!(&file[MIB - 512..MIB - 512 + last.len()], &last[..]);
    }
}

/// cache=none on a file whose size is not a multiple of 4096: the partial last block is
/// written whole, and the file is cut back to its size.
#[test]
fn direct_io_keeps_an_unaligned_file_size() {
    let dir = TempDir::new().unwrap();
    let size = 64 * 1024 + 1536;
    let path = image(&dir, "odd.raw", size);
    let mut disk = RawDisk::open(&path, opts(CacheMode::None, DiscardMode::Ignore)).unwrap();
    let data = pattern(1024, 9);
    disk.write_at(size as u64 - 1024, &data).unwrap();
    let mut back = vec![0u8; 1024];
    disk.read_at(size as u64 - 1024, &mut back).unwrap();
    assert_eq!(back, data);
    disk.flush().unwrap();
    let file = fs::read(&path).unwrap();
    assert_eq!(file.len(), size);
    assert_eq!(&file[size - 1024..], &data[..]);
}

#[test]
fn reads_past_the_end_of_a_short_file_are_zero() {
    let dir = TempDir::new().unwrap();
    let path = dir.as_path().join("short.raw");
    fs::File::create(&path)
        .unwrap()
        .write_all(&[1u8; 1000])
        .unwrap();
    for cache in [CacheMode::Writeback, CacheMode::None] {
        let mut disk = RawDisk::open(&path, opts(cache, DiscardMode::Ignore)).unwrap();
        let mut buf = vec![0xffu8; 1024];
        disk.read_at(512, &mut buf).unwrap();
        assert!(buf[..488].iter().all(|&b| b == 1), "{cache:?}");
        assert!(buf[488..].iter().all(|&b| b == 0), "{cache:?}");
    }
}

#[test]
fn discard_unmap_punches_holes() {
    let dir = TempDir::new().unwrap();
    let path = image(&dir, "sparse.raw", 8 * MIB);
    let mut disk = RawDisk::open(&path, opts(CacheMode::Writeback, DiscardMode::Unmap)).unwrap();
    assert!(disk.discard_enabled());
    assert!(disk.discard_granularity() >= 512);
    disk.write_at(0, &pattern(4 * MIB, 1)).unwrap();
    disk.flush().unwrap();
    let before = allocated_bytes(&path);
    assert!(before >= 4 * MIB as u64, "allocated {before}");

    disk.discard(MIB as u64, 2 * MIB as u64).unwrap();
    disk.flush().unwrap();
    let after = allocated_bytes(&path);
    assert!(
        after <= before - 2 * MIB as u64,
        "allocated {before} -> {after}"
    );
    let mut buf = vec![0xffu8; 2 * MIB];
    disk.read_at(MIB as u64, &mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 0));
    assert_eq!(fs::metadata(&path).unwrap().len(), 8 * MIB as u64);
}

#[test]
fn discard_ignore_keeps_data() {
    let dir = TempDir::new().unwrap();
    let path = image(&dir, "keep.raw", 2 * MIB);
    let mut disk = RawDisk::open(&path, opts(CacheMode::Writeback, DiscardMode::Ignore)).unwrap();
    assert!(!disk.discard_enabled());
    let data = pattern(MIB, 3);
    disk.write_at(0, &data).unwrap();
    disk.discard(0, MIB as u64).unwrap();
    let mut back = vec![0u8; MIB];
    disk.read_at(0, &mut back).unwrap();
    assert_eq!(back, data);
    // write_zeroes still zeroes, it just does not unmap.
    disk.write_zeroes(0, 4096, true).unwrap();
    disk.read_at(0, &mut back[..4096]).unwrap();
    assert!(back[..4096].iter().all(|&b| b == 0));
}

#[test]
fn write_zeroes_with_and_without_unmap() {
    let dir = TempDir::new().unwrap();
    for cache in [
        CacheMode::Writeback,
        CacheMode::Writethrough,
        CacheMode::None,
    ] {
        let path = image(&dir, &format!("zero-{cache:?}.raw"), 4 * MIB);
        let mut disk = RawDisk::open(&path, opts(cache, DiscardMode::Unmap)).unwrap();
        disk.write_at(0, &pattern(4 * MIB, 5)).unwrap();
        disk.flush().unwrap();
        let before = allocated_bytes(&path);

        // Without unmap: zeroes, space stays allocated.
        disk.write_zeroes(512, 3 * 512, false).unwrap();
        // With unmap: zeroes and space freed.
        disk.write_zeroes(2 * MIB as u64, MIB as u64, true).unwrap();
        disk.flush().unwrap();

        let file = fs::read(&path).unwrap();
        assert_eq!(file.len(), 4 * MIB);
        let orig = pattern(4 * MIB, 5);
        assert_eq!(file[..512], orig[..512]);
        assert!(file[512..2048].iter().all(|&b| b == 0), "{cache:?}");
        assert_eq!(file[2048..2 * MIB], orig[2048..2 * MIB]);
        assert!(file[2 * MIB..3 * MIB].iter().all(|&b| b == 0), "{cache:?}");
        assert_eq!(file[3 * MIB..], orig[3 * MIB..]);
        assert!(
            allocated_bytes(&path) < before,
            "{cache:?}: nothing unmapped"
        );
    }
}

#[test]
fn readonly_refuses_modifications() {
    let dir = TempDir::new().unwrap();
    let path = image(&dir, "ro.raw", MIB);
    fs::write(&path, pattern(MIB, 7)).unwrap();
    let ro = DiskOptions {
        readonly: true,
        cache: CacheMode::Writeback,
        discard: DiscardMode::Unmap,
    };
    let mut disk = RawDisk::open(&path, ro).unwrap();
    assert!(disk.is_read_only());
    assert!(!disk.discard_enabled());
    let err = disk.write_at(0, &[0u8; 512]).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
    assert!(disk.discard(0, 512).is_err());
    assert!(disk.write_zeroes(0, 512, false).is_err());
    disk.flush().unwrap();
    let mut buf = vec![0u8; 512];
    disk.read_at(0, &mut buf).unwrap();
    assert_eq!(buf, pattern(MIB, 7)[..512]);
    assert_eq!(fs::read(&path).unwrap(), pattern(MIB, 7));
}

#[test]
fn probe_guard_refuses_a_qcow2_header_at_offset_zero() {
    let dir = TempDir::new().unwrap();
    let path = image(&dir, "guard.raw", MIB);
    let mut disk = RawDisk::open(&path, opts(CacheMode::Writeback, DiscardMode::Ignore))
        .unwrap()
        .guard_format_probe();
    let mut sector = vec![0u8; 512];
    sector[..4].copy_from_slice(&QCOW2_MAGIC);
    assert!(disk.write_at(0, &sector).is_err());
    // Anywhere else it is just data.
    disk.write_at(512, &sector).unwrap();
    sector[0] = b'X';
    disk.write_at(0, &sector).unwrap();
}

#[test]
fn neither_file_nor_block_device_is_refused() {
    let dir = TempDir::new().unwrap();
    let err = RawDisk::open(
        dir.as_path(),
        opts(CacheMode::Writeback, DiscardMode::Ignore),
    );
    assert!(err.is_err());
    let err = RawDisk::open(
        Path::new("/dev/null"),
        opts(CacheMode::Writeback, DiscardMode::Ignore),
    )
    .unwrap_err();
    assert!(matches!(err, OpenError::NotADisk), "{err}");
}

/// The O_DIRECT refusal names the file and says what to do instead.
#[test]
fn direct_io_refusal_message() {
    let err = OpenError::direct_io(
        Path::new("/images/vm.raw"),
        io::Error::from_raw_os_error(libc::EINVAL),
    );
    let msg = err.to_string();
    assert!(msg.contains("/images/vm.raw"), "{msg}");
    assert!(
        msg.contains("cache=none") && msg.contains("cache=writeback"),
        "{msg}"
    );
}

/// A loop device, when the host lets us make one (root with /dev/loop-control): size by
/// BLKGETSIZE64, discard by BLKDISCARD. Skipped quietly elsewhere.
#[test]
fn block_device_size_and_discard() {
    let dir = TempDir::new().unwrap();
    let path = image(&dir, "loop.raw", 8 * MIB);
    let Some(dev) = LoopDevice::attach(&path) else {
        eprintln!("skipping: cannot set up a loop device here");
        return;
    };
    let mut disk = RawDisk::open(&dev.0, opts(CacheMode::None, DiscardMode::Unmap)).unwrap();
    assert!(disk.is_block_device());
    assert_eq!(disk.size(), 8 * MIB as u64);
    let data = pattern(MIB, 11);
    disk.write_at(512, &data).unwrap();
    disk.flush().unwrap();
    let mut back = vec![0u8; MIB];
    disk.read_at(512, &mut back).unwrap();
    assert_eq!(back, data);
    disk.discard(0, 4 * MIB as u64).unwrap();
    disk.write_zeroes(4 * MIB as u64, MIB as u64, false)
        .unwrap();
    disk.read_at(4 * MIB as u64, &mut back).unwrap();
    assert!(back.iter().all(|&b| b == 0));
}

struct LoopDevice(PathBuf);

impl LoopDevice {
    fn attach(file: &Path) -> Option<Self> {
        let out = std::process::Command::new("losetup")
            .args(["--find", "--show"])
            .arg(file)
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        let dev = String::from_utf8(out.stdout).ok()?.trim().to_string();
        (!dev.is_empty()).then(|| LoopDevice(PathBuf::from(dev)))
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = std::process::Command::new("losetup")
            .arg("-d")
            .arg(&self.0)
            .status();
    }
}
