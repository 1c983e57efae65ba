//! Guest RAM in a memfd, mapped shared (`memory_shared` in the VM config): another oxvm
//! on this host can then take the memory over through its file descriptor (a local
//! live migration) instead of receiving a copy. The file's offset is the guest-physical
//! address, as in a saved memory file (the MMIO gap is a hole).

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::Arc;

use oxvm_arch::memory::GuestRegionMmap;
use serde::{Deserialize, Serialize};
use vm_memory::bitmap::AtomicBitmap;
use vm_memory::mmap::{MmapRegionBuilder, NewBitmap};
use vm_memory::{FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

use crate::GuestMemoryMmap;

/// One region of a shared guest memory: where it is in the guest and in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharedRegion {
    pub gpa: u64,
    pub size: u64,
    pub offset: u64,
}

/// Map `regions` of `file` at file offset == guest-physical address, with `flags`
/// (`MAP_PRIVATE` for a saved memory file, `MAP_SHARED` for a memfd), with the dirty
/// bitmap every guest memory here has (so any of them can be live-migrated).
pub fn map_file_regions(
    file: Arc<File>,
    regions: &[(GuestAddress, usize)],
    flags: i32,
) -> Result<GuestMemoryMmap, String> {
    let mut mapped = Vec::with_capacity(regions.len());
    for &(start, size) in regions {
        let region = MmapRegionBuilder::new_with_bitmap(size, AtomicBitmap::with_len(size))
            .with_file_offset(FileOffset::from_arc(Arc::clone(&file), start.0))
            .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
            .with_mmap_flags(libc::MAP_NORESERVE | flags)
            .build()
            .map_err(|e| format!("{size} bytes at {:#x}: {e}", start.0))?;
        let region = GuestRegionMmap::new(region, start)
            .ok_or_else(|| format!("region at {:#x} overflows", start.0))?;
        mapped.push(region);
    }
    GuestMemoryMmap::from_regions(mapped).map_err(|e| e.to_string())
}

/// Fresh, zeroed guest memory for `regions` in a new memfd, mapped shared.
pub fn create_shared_memory(regions: &[(GuestAddress, usize)]) -> Result<GuestMemoryMmap, String> {
    let name = c"oxvm-guest-ram";
    // SAFETY: memfd_create takes a NUL-terminated name and flags and returns a new fd
    // (or -1); it touches no memory of ours.
    let fd =
        unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if fd < 0 {
        return Err(format!("memfd_create: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: `fd` was just created by memfd_create and is owned by nothing else.
    let file = unsafe { File::from_raw_fd(fd) };
    let len = regions
        .iter()
        .map(|(a, s)| a.0 + *s as u64)
        .max()
        .unwrap_or(0);
    file.set_len(len)
        .map_err(|e| format!("sizing the memfd to {len} bytes: {e}"))?;
    // Its size is fixed for good: whoever else holds it (a migration's destination)
    // can rely on every mapped page existing (a shrunk file would be SIGBUS).
    // SAFETY: F_ADD_SEALS on an fd we own, with an integer argument.
    let sealed = unsafe {
        libc::fcntl(
            file.as_raw_fd(),
            libc::F_ADD_SEALS,
            libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL,
        )
    };
    if sealed < 0 {
        return Err(format!(
            "sealing the memfd: {}",
            std::io::Error::last_os_error()
        ));
    }
    map_file_regions(Arc::new(file), regions, libc::MAP_SHARED)
}

/// Whether `file` is a memfd whose size cannot change (what [`create_shared_memory`]
/// makes): only such a file may back guest memory received from another process.
pub fn is_sealed_memfd(file: &File) -> bool {
    // SAFETY: F_GET_SEALS on a valid fd; no memory is passed.
    let seals = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GET_SEALS) };
    seals >= 0
        && seals & (libc::F_SEAL_SHRINK | libc::F_SEAL_GROW)
            == libc::F_SEAL_SHRINK | libc::F_SEAL_GROW
}

/// The memfd behind `mem` and its layout, when every region is a shared mapping of
/// one file at offset == guest-physical address (what [`create_shared_memory`] and
/// [`map_file_regions`] with `MAP_SHARED` make); `None` for anonymous memory or a
/// private mapping of a saved memory file.
pub fn shared_memory(mem: &GuestMemoryMmap) -> Option<(Arc<File>, Vec<SharedRegion>)> {
    let mut file: Option<Arc<File>> = None;
    let mut layout = Vec::new();
    for r in mem.iter() {
        let fo = r.file_offset()?;
        if r.flags() & libc::MAP_SHARED == 0 || fo.start() != r.start_addr().0 {
            return None;
        }
        match &file {
            Some(f) if !Arc::ptr_eq(f, fo.arc()) => return None,
            Some(_) => {}
            None => file = Some(fo.arc().clone()),
        }
        layout.push(SharedRegion {
            gpa: r.start_addr().0,
            size: r.len(),
            offset: fo.start(),
        });
    }
    Some((file?, layout))
}

#[cfg(test)]
mod tests {
    use vm_memory::Bytes;

    use super::*;

    fn regions() -> Vec<(GuestAddress, usize)> {
        vec![(GuestAddress(0), 2 << 20), (GuestAddress(4 << 20), 1 << 20)]
    }

    #[test]
    fn a_second_mapping_of_the_memfd_sees_the_same_memory() {
        let mem = create_shared_memory(&regions()).unwrap();
        mem.write_obj(0xfeed_u64, GuestAddress(0x1000)).unwrap();
        mem.write_obj(0xbeef_u64, GuestAddress((4 << 20) + 8))
            .unwrap();
        let (file, layout) = shared_memory(&mem).expect("shared");
        assert_eq!(
            layout,
            vec![
                SharedRegion {
                    gpa: 0,
                    size: 2 << 20,
                    offset: 0
                },
                SharedRegion {
                    gpa: 4 << 20,
                    size: 1 << 20,
                    offset: 4 << 20
                },
            ]
        );
        // What another process does with the fd it received.
        let other = map_file_regions(file, &regions(), libc::MAP_SHARED).unwrap();
        assert_eq!(other.read_obj::<u64>(GuestAddress(0x1000)).unwrap(), 0xfeed);
        assert_eq!(
            other.read_obj::<u64>(GuestAddress((4 << 20) + 8)).unwrap(),
            0xbeef
        );
        other.write_obj(7u64, GuestAddress(0x2000)).unwrap();
        assert_eq!(mem.read_obj::<u64>(GuestAddress(0x2000)).unwrap(), 7);
    }

    #[test]
    fn the_memfd_cannot_shrink() {
        let mem = create_shared_memory(&regions()).unwrap();
        let (file, _) = shared_memory(&mem).unwrap();
        assert!(is_sealed_memfd(&file));
        assert!(file.set_len(4096).is_err());
        let plain = vmm_sys_util::tempfile::TempFile::new().unwrap().into_file();
        assert!(!is_sealed_memfd(&plain));
    }

    #[test]
    fn anonymous_and_private_memory_is_not_shared() {
        let anon = GuestMemoryMmap::from_ranges(&regions()).unwrap();
        assert!(shared_memory(&anon).is_none());
        let (file, _) = shared_memory(&create_shared_memory(&regions()).unwrap()).unwrap();
        let private = map_file_regions(file, &regions(), libc::MAP_PRIVATE).unwrap();
        assert!(shared_memory(&private).is_none());
    }
}
