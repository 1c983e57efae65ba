//! The AIO context against real O_DIRECT files, with guest memory (page-aligned mmap)
//! as the buffers.

use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use oxvm_api::CacheMode;
use vm_memory::bitmap::Bitmap;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::tempdir::TempDir;

use super::{AioContext, Completion, Op, Refusal, MAX_SEGMENTS};
use crate::block::{DiskOptions, RawDisk};
use crate::virtio::GuestMemoryMmap;

/// A temporary directory on a filesystem that takes O_DIRECT. The system's temporary
/// directory may be a tmpfs, which refuses it; then the build's `target/` folder.
pub(crate) fn direct_io_dir() -> TempDir {
    let fallback = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/direct-io-tests");
    for base in [std::env::temp_dir(), fallback] {
        let _ = fs::create_dir_all(&base);
        let Ok(dir) = TempDir::new_in(&base) else {
            continue;
        };
        let probe = dir.as_path().join("probe");
        if fs::write(&probe, [0u8; 4096]).is_err() {
            continue;
        }
        let opts = DiskOptions {
            cache: CacheMode::None,
            ..Default::default()
        };
        // RawDisk's open makes one aligned O_DIRECT read, which is the test we need.
        if RawDisk::open(&probe, opts).is_ok() {
            return dir;
        }
    }
    panic!("no directory that supports O_DIRECT (tried the temp dir and target/)");
}

fn direct_file(dir: &TempDir, name: &str, size: u64) -> (PathBuf, Arc<File>) {
    let path = dir.as_path().join(name);
    File::create(&path).unwrap().set_len(size).unwrap();
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)
        .unwrap();
    (path, Arc::new(file))
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(13).wrapping_add(seed))
        .collect()
}

fn mem(size: usize) -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), size)]).unwrap()
}

/// Reap until `n` completions arrived.
fn reap_all<T>(ctx: &mut AioContext<T>, n: usize) -> Vec<Completion<T>> {
    let mut done = Vec::new();
    while done.len() < n {
        ctx.reap(true, &mut done).unwrap();
    }
    done
}

#[test]
fn many_writes_in_flight_then_read_back_and_the_eventfd_fires() {
    const N: usize = 16;
    let dir = direct_io_dir();
    let (path, file) = direct_file(&dir, "w.raw", 1 << 20);
    let mem = mem(1 << 20);
    let mut ctx = AioContext::new(file, mem.clone(), N as u16).unwrap();
    let epoll = Epoll::new().unwrap();
    epoll
        .ctl(
            ControlOperation::Add,
            ctx.eventfd().as_raw_fd(),
            EpollEvent::new(EventSet::IN, 7),
        )
        .unwrap();

    // Request i writes 8 KiB from guest 16 KiB * i to file offset 8 KiB * (N - 1 - i),
    // as two pieces of 4 KiB.
    for i in 0..N {
        let at = GuestAddress(0x4000 * i as u64);
        mem.write_slice(&pattern(0x2000, i as u8), at).unwrap();
        let segs = [(at, 0x1000), (GuestAddress(at.0 + 0x1000), 0x1000)];
        let offset = 0x2000 * (N - 1 - i) as u64;
        ctx.submit(Op::Write, offset, &segs, i)
            .map_err(|r| r.reason)
            .unwrap();
    }
    assert_eq!(ctx.in_flight(), N);
    let full = ctx
        .submit(Op::Write, 0, &[(GuestAddress(0), 0x1000)], 99)
        .unwrap_err();
    assert!(matches!(full.reason, Refusal::Full(N)) && full.user == 99);

    let mut events = [EpollEvent::default(); 1];
    assert_eq!(
        epoll.wait(10_000, &mut events).unwrap(),
        1,
        "no eventfd wakeup"
    );
    assert_eq!(events[0].data(), 7);
    ctx.clear_eventfd();

    let mut done = reap_all(&mut ctx, N);
    assert_eq!(ctx.in_flight(), 0);
    done.sort_by_key(|c| c.user);
    for (i, c) in done.iter().enumerate() {
        assert_eq!((c.user, c.op, c.len), (i, Op::Write, 0x2000));
        assert_eq!(c.result.as_ref().unwrap(), &0x2000);
    }
    let contents = fs::read(&path).unwrap();
    for i in 0..N {
        let offset = 0x2000 * (N - 1 - i);
        assert_eq!(contents[offset..offset + 0x2000], pattern(0x2000, i as u8));
    }

    // Read it all back into other guest memory in one request of N pieces.
    let segs: Vec<_> = (0..N)
        .map(|i| (GuestAddress(0x8_0000 + 0x4000 * i as u64), 0x2000))
        .collect();
    ctx.submit(Op::Read, 0, &segs, 0)
        .map_err(|r| r.reason)
        .unwrap();
    let done = reap_all(&mut ctx, 1);
    assert_eq!(done[0].result.as_ref().unwrap(), &(0x2000 * N as u64));
    for (k, &(at, _)) in segs.iter().enumerate() {
        let mut got = vec![0u8; 0x2000];
        mem.read_slice(&mut got, at).unwrap();
        assert_eq!(got, contents[0x2000 * k..0x2000 * (k + 1)]);
    }
}

#[test]
fn refuses_what_o_direct_cannot_take() {
    let dir = direct_io_dir();
    let (_, file) = direct_file(&dir, "r.raw", 1 << 20);
    let mem = mem(8 << 20);
    let mut ctx = AioContext::new(file, mem, 4).unwrap();
    let mut refusal = |offset, segs: &[(GuestAddress, u32)]| {
        ctx.submit(Op::Read, offset, segs, ()).unwrap_err().reason
    };
    let page = GuestAddress(0x1000);
    assert!(matches!(refusal(512, &[(page, 4096)]), Refusal::Unaligned));
    assert!(matches!(refusal(0, &[(page, 512)]), Refusal::Unaligned));
    assert!(matches!(
        refusal(0, &[(GuestAddress(0x1200), 4096)]),
        Refusal::Unaligned
    ));
    assert!(matches!(refusal(0, &[]), Refusal::Size));
    assert!(matches!(
        refusal(0, &[(GuestAddress(16 << 20), 4096)]),
        Refusal::Memory(_)
    ));
    let many: Vec<_> = (0..=MAX_SEGMENTS as u64)
        .map(|i| (GuestAddress(0x1000 * i), 0x1000))
        .collect();
    assert!(matches!(refusal(0, &many), Refusal::TooManySegments));
    assert_eq!(ctx.in_flight(), 0, "a refused request holds no slot");
}

#[test]
fn a_piece_spanning_memory_regions_and_a_short_read() {
    let dir = direct_io_dir();
    // The file is 8 KiB: a 16 KiB read at 0 comes back short.
    let (path, file) = direct_file(&dir, "s.raw", 0x2000);
    fs::write(&path, pattern(0x2000, 5)).unwrap();
    let mem = GuestMemoryMmap::from_ranges(&[
        (GuestAddress(0), 0x10000),
        (GuestAddress(0x10000), 0x10000),
    ])
    .unwrap();
    let mut ctx = AioContext::new(file, mem.clone(), 2).unwrap();
    ctx.submit(Op::Read, 0, &[(GuestAddress(0xF000), 0x4000)], ())
        .map_err(|r| r.reason)
        .unwrap();
    let done = reap_all(&mut ctx, 1);
    assert_eq!(done[0].len, 0x4000);
    assert_eq!(done[0].result.as_ref().unwrap(), &0x2000);
    let mut got = vec![0u8; 0x2000];
    mem.read_slice(&mut got, GuestAddress(0xF000)).unwrap();
    assert_eq!(got, pattern(0x2000, 5));
}

#[test]
fn dropping_the_context_waits_for_requests_in_flight() {
    let dir = direct_io_dir();
    let (path, file) = direct_file(&dir, "d.raw", 1 << 20);
    let mem = mem(1 << 20);
    mem.write_slice(&pattern(1 << 20, 9), GuestAddress(0))
        .unwrap();
    let mut ctx = AioContext::new(file, mem, 8).unwrap();
    for i in 0..8u64 {
        let at = GuestAddress(0x2_0000 * i);
        ctx.submit(Op::Write, 0x2_0000 * i, &[(at, 0x2_0000)], ())
            .map_err(|r| r.reason)
            .unwrap();
    }
    drop(ctx);
    // Every write was done by the time drop returned.
    assert_eq!(fs::read(&path).unwrap(), pattern(1 << 20, 9));
}

#[test]
fn kernel_errors_come_back_as_refusals_or_completions() {
    let dir = direct_io_dir();
    let (path, _) = direct_file(&dir, "ro.raw", 1 << 20);
    let read_only = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)
        .unwrap();
    let mut ctx = AioContext::new(Arc::new(read_only), mem(1 << 20), 2).unwrap();
    // A write to a read-only descriptor fails: at submission (EBADF) on current
    // kernels; either way the caller gets the error and the slot back.
    let mut failed = false;
    match ctx.submit(Op::Write, 0, &[(GuestAddress(0), 4096)], ()) {
        Err(r) => failed = matches!(r.reason, Refusal::Submit(_)),
        Ok(()) => {
            for c in reap_all(&mut ctx, 1) {
                failed = c.result.is_err();
            }
        }
    }
    assert!(failed);
    assert_eq!(ctx.in_flight(), 0);
}

/// Whether the page holding `addr` is marked in `mem`'s dirty bitmap.
fn is_dirty(mem: &GuestMemoryMmap, addr: u64) -> bool {
    let region = mem.find_region(GuestAddress(addr)).unwrap();
    let offset = addr - region.start_addr().0;
    region.bitmap().dirty_at(offset as usize)
}

#[test]
fn reads_mark_the_pages_the_kernel_wrote_dirty() {
    // The kernel writes through raw iovecs, which vm-memory's bitmap cannot see: live
    // migration relies on the completion marking them.
    let dir = direct_io_dir();
    let (path, file) = direct_file(&dir, "m.raw", 0x10000);
    fs::write(&path, pattern(0x10000, 3)).unwrap();
    let mem = GuestMemoryMmap::from_ranges(&[
        (GuestAddress(0), 0x10000),
        (GuestAddress(0x10000), 0x10000),
    ])
    .unwrap();
    let mut ctx = AioContext::new(file, mem.clone(), 2).unwrap();

    // A write only reads guest memory: nothing becomes dirty.
    ctx.submit(Op::Write, 0, &[(GuestAddress(0x2000), 0x1000)], ())
        .map_err(|r| r.reason)
        .unwrap();
    reap_all(&mut ctx, 1);
    assert!((0..0x20000).step_by(0x1000).all(|a| !is_dirty(&mem, a)));

    // A read spanning both regions, in two pieces: exactly its pages become dirty.
    let segs = [
        (GuestAddress(0xE000), 0x3000),
        (GuestAddress(0x4000), 0x1000),
    ];
    ctx.submit(Op::Read, 0, &segs, ())
        .map_err(|r| r.reason)
        .unwrap();
    reap_all(&mut ctx, 1);
    let dirty: Vec<u64> = (0..0x20000)
        .step_by(0x1000)
        .filter(|&a| is_dirty(&mem, a))
        .collect();
    assert_eq!(dirty, [0x4000, 0xE000, 0xF000, 0x10000]);
}
