//! Guest memory as a raw file whose offset is the guest-physical address: RAM above
//! 4 GiB sits at offset 4 GiB and the MMIO gap below it is a hole. Pages that are all
//! zero are not written, so they stay holes too (a sparse file); restoring maps the file
//! privately (pages load on first touch) or copies only its data extents.

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

use super::durable::replace_file;
use super::error::SnapshotError;
use crate::GuestMemoryMmap;

/// The granule of the memory file: a page either holds data or is a hole.
pub const PAGE_SIZE: u64 = 4096;
/// How much guest memory `save_memory` reads at a time.
const CHUNK: usize = 1 << 20;

/// What `save_memory` wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryStats {
    /// Guest RAM saved (the sum of the regions' sizes, without the holes between them).
    pub bytes_total: u64,
    /// Pages written to the file.
    pub pages_written: u64,
    /// All-zero pages left as holes.
    pub pages_zero: u64,
}

/// The length of the memory file for `regions`: the end of the highest region.
pub fn memory_file_len(regions: &[(GuestAddress, usize)]) -> u64 {
    regions
        .iter()
        .map(|(a, len)| a.0 + *len as u64)
        .max()
        .unwrap_or(0)
}

/// Saves all of `mem` to `path` (through `path.tmp`, fsynced and renamed): the file is as
/// long as the end of the last region, every page that is not all zero is written at its
/// guest-physical address, all-zero pages and the gaps between regions are holes.
/// The VM must be paused (no vCPU or device writing guest memory).
pub fn save_memory(mem: &GuestMemoryMmap, path: &Path) -> Result<MemoryStats, SnapshotError> {
    let ranges: Vec<(GuestAddress, usize)> = mem
        .iter()
        .map(|r| (r.start_addr(), r.len() as usize))
        .collect();
    let file_len = memory_file_len(&ranges);
    replace_file(path, |file, tmp| {
        file.set_len(file_len)
            .map_err(SnapshotError::io(tmp, "set the length of"))?;
        let mut stats = MemoryStats::default();
        let mut buf = vec![0u8; CHUNK];
        for &(start, size) in &ranges {
            stats.bytes_total += size as u64;
            let mut done = 0usize;
            while done < size {
                let n = CHUNK.min(size - done);
                let gpa = start.0 + done as u64;
                read_guest(mem, gpa, &mut buf[..n], tmp)?;
                write_nonzero_pages(file, gpa, &buf[..n], &mut stats, tmp)?;
                done += n;
            }
        }
        Ok(stats)
    })
}

/// Writes the pages at the guest-physical addresses `pages` (each rounded down to its
/// page) from `mem` into an existing memory file, zero pages included, for incremental
/// saves. Does not fsync: call `file.sync_all()` when done. `path` names the file in
/// messages. Returns the number of pages written. Never write into a file a running VM
/// is lazily mapped from (`map_memory_file`): its pages not yet copied would change
/// under the guest. (`save_memory` replaces the file by rename, which is safe.)
pub fn save_pages(
    mem: &GuestMemoryMmap,
    file: &File,
    path: &Path,
    pages: impl Iterator<Item = u64>,
) -> Result<u64, SnapshotError> {
    let mut buf = vec![0u8; PAGE_SIZE as usize];
    let mut written = 0;
    for gpa in pages {
        let page = gpa & !(PAGE_SIZE - 1);
        let region = mem.find_region(GuestAddress(page)).ok_or_else(|| {
            SnapshotError::PageOutsideMemory {
                path: path.to_path_buf(),
                gpa,
            }
        })?;
        let region_end = region.start_addr().0 + region.len();
        let n = PAGE_SIZE.min(region_end - page) as usize;
        read_guest(mem, page, &mut buf[..n], path)?;
        file.write_all_at(&buf[..n], page)
            .map_err(SnapshotError::io(path, "write"))?;
        written += 1;
    }
    Ok(written)
}

fn read_guest(
    mem: &GuestMemoryMmap,
    gpa: u64,
    buf: &mut [u8],
    path: &Path,
) -> Result<(), SnapshotError> {
    mem.read_slice(buf, GuestAddress(gpa))
        .map_err(|e| SnapshotError::GuestMemory {
            path: path.to_path_buf(),
            action: "read",
            reason: format!("at {gpa:#x}: {e}"),
        })
}

/// Writes the runs of non-zero pages of `data` (guest memory from `gpa`) at their
/// guest-physical offsets, one write per run.
fn write_nonzero_pages(
    file: &File,
    gpa: u64,
    data: &[u8],
    stats: &mut MemoryStats,
    path: &Path,
) -> Result<(), SnapshotError> {
    let page = PAGE_SIZE as usize;
    let mut run_start: Option<usize> = None;
    let mut off = 0;
    while off < data.len() {
        let end = (off + page).min(data.len());
        if is_zero(&data[off..end]) {
            stats.pages_zero += 1;
            if let Some(s) = run_start.take() {
                write_run(file, gpa, data, s, off, path)?;
            }
        } else {
            stats.pages_written += 1;
            run_start.get_or_insert(off);
        }
        off = end;
    }
    if let Some(s) = run_start {
        write_run(file, gpa, data, s, data.len(), path)?;
    }
    Ok(())
}

fn write_run(
    file: &File,
    gpa: u64,
    data: &[u8],
    from: usize,
    to: usize,
    path: &Path,
) -> Result<(), SnapshotError> {
    file.write_all_at(&data[from..to], gpa + from as u64)
        .map_err(SnapshotError::io(path, "write"))
}

fn is_zero(page: &[u8]) -> bool {
    // OR-folding fixed blocks vectorizes; the early exit is per block.
    page.chunks(64)
        .all(|block| block.iter().fold(0u8, |acc, &b| acc | b) == 0)
}

/// Opens the memory file read-only and checks it has exactly the length `regions` need.
fn open_memory_file(path: &Path, regions: &[(GuestAddress, usize)]) -> Result<File, SnapshotError> {
    let file = File::open(path).map_err(SnapshotError::io(path, "open"))?;
    let got = file
        .metadata()
        .map_err(SnapshotError::io(path, "stat"))?
        .len();
    let expected = memory_file_len(regions);
    if got != expected {
        return Err(SnapshotError::MemorySizeMismatch {
            path: path.to_path_buf(),
            expected,
            got,
            hint: if got < expected {
                "truncated?"
            } else {
                "saved from a VM with more memory?"
            },
        });
    }
    Ok(file)
}

/// Checks that the memory file at `path` exists, is readable and has exactly the length
/// `regions` need, without mapping anything: a restore calls it before it builds a VM.
pub fn check_memory_file(
    path: &Path,
    regions: &[(GuestAddress, usize)],
) -> Result<(), SnapshotError> {
    open_memory_file(path, regions).map(drop)
}

/// Maps each of `regions` from the memory file at `path`, privately, at file offset ==
/// guest-physical address: pages are read from the file on first touch, guest writes go
/// to anonymous copies and the file is never modified (it is opened read-only). The file
/// must not change while the mapping lives.
pub fn map_memory_file(
    path: &Path,
    regions: &[(GuestAddress, usize)],
) -> Result<GuestMemoryMmap, SnapshotError> {
    let file = Arc::new(open_memory_file(path, regions)?);
    crate::memory::map_file_regions(file, regions, libc::MAP_PRIVATE).map_err(|reason| {
        SnapshotError::GuestMemory {
            path: path.to_path_buf(),
            action: "map",
            reason,
        }
    })
}

/// Allocates anonymous memory for `regions` and copies the memory file's data extents
/// into it (holes stay zero, so a sparse file costs only its data). Returns the memory
/// and the number of bytes copied.
pub fn copy_memory_file(
    path: &Path,
    regions: &[(GuestAddress, usize)],
) -> Result<(GuestMemoryMmap, u64), SnapshotError> {
    let file = open_memory_file(path, regions)?;
    let mem = GuestMemoryMmap::from_ranges(regions).map_err(|e| SnapshotError::GuestMemory {
        path: path.to_path_buf(),
        action: "allocate",
        reason: e.to_string(),
    })?;
    let copied = fill(&file, path, regions, &mem)?;
    Ok((mem, copied))
}

/// Copies the memory file's data extents into `mem`, memory for `regions` that reads
/// as zero (fresh memory of any kind); returns the bytes copied.
pub fn fill_from_memory_file(
    path: &Path,
    regions: &[(GuestAddress, usize)],
    mem: &GuestMemoryMmap,
) -> Result<u64, SnapshotError> {
    let file = open_memory_file(path, regions)?;
    fill(&file, path, regions, mem)
}

fn fill(
    mut file: &File,
    path: &Path,
    regions: &[(GuestAddress, usize)],
    mem: &GuestMemoryMmap,
) -> Result<u64, SnapshotError> {
    let mut copied = 0u64;
    for (data, hole) in data_extents(file, path, memory_file_len(regions))? {
        for &(start, size) in regions {
            let from = data.max(start.0);
            let to = hole.min(start.0 + size as u64);
            if from >= to {
                continue;
            }
            file.seek(SeekFrom::Start(from))
                .map_err(SnapshotError::io(path, "seek in"))?;
            mem.read_exact_volatile_from(GuestAddress(from), &mut file, (to - from) as usize)
                .map_err(|e| SnapshotError::GuestMemory {
                    path: path.to_path_buf(),
                    action: "read into",
                    reason: format!("{} bytes at {from:#x}: {e}", to - from),
                })?;
            copied += to - from;
        }
    }
    Ok(copied)
}

/// The `[data, hole)` extents of the first `len` bytes of `file` (SEEK_DATA/SEEK_HOLE).
/// A file system without them reports the whole file as data.
fn data_extents(file: &File, path: &Path, len: u64) -> Result<Vec<(u64, u64)>, SnapshotError> {
    let mut extents = Vec::new();
    let mut off = 0u64;
    while off < len {
        let data = match lseek(file, off, libc::SEEK_DATA) {
            Ok(d) => d,
            // ENXIO: no data at or after `off`.
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => break,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                extents.push((off, len));
                break;
            }
            Err(e) => return Err(SnapshotError::io(path, "find the data in")(e)),
        };
        if data >= len {
            break;
        }
        let hole = lseek(file, data, libc::SEEK_HOLE)
            .map_err(SnapshotError::io(path, "find the holes in"))?
            .min(len);
        extents.push((data, hole));
        off = hole;
    }
    Ok(extents)
}

fn lseek(file: &File, off: u64, whence: libc::c_int) -> std::io::Result<u64> {
    // SAFETY: lseek on a file descriptor `file` keeps open for the whole call; it touches
    // no memory of this process.
    let r = unsafe { libc::lseek(file.as_raw_fd(), off as libc::off_t, whence) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r as u64)
    }
}

#[cfg(test)]
mod tests;
