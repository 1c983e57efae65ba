//! Reading kernels, initrds and raw payloads from files into guest memory.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use linux_loader::loader::bootparam::setup_header;
use linux_loader::loader::{
    load_cmdline, BzImage, Cmdline, Elf, KernelLoader, KernelLoaderResult, PvhBootCapability,
};
use vm_memory::{Bytes, GuestAddress};

use super::InitrdPlacement;
use crate::layout::{CMDLINE_MAX_SIZE, CMDLINE_START, HIMEM_START};
use crate::memory::{GuestMemoryMmap, RamLayout};
use crate::ArchError;

/// Offset of `startup_64` from the start of a bzImage's protected-mode code.
const BZIMAGE_STARTUP_64_OFFSET: u64 = 0x200;
/// Linux/x86's COMMAND_LINE_SIZE for kernels that do not say (ELF images).
const DEFAULT_CMDLINE_SIZE: usize = 2048;
/// Highest initrd end for kernels that do not say (the boot protocol's default).
const DEFAULT_INITRD_ADDR_MAX: u64 = 0x37ff_ffff;

#[derive(Debug, Clone, Copy)]
pub struct LoadedKernel {
    /// Linux 64-bit entry point.
    pub entry64: u64,
    /// PVH 32-bit entry point, when the ELF has the note.
    pub pvh_entry: Option<u64>,
    /// First byte after the kernel's memory footprint (image plus what it unpacks into).
    pub end: u64,
    /// The bzImage's setup header (None for ELF images).
    pub setup_header: Option<setup_header>,
}

impl LoadedKernel {
    /// Command line capacity including the NUL terminator.
    pub fn cmdline_max(&self) -> usize {
        let announced = self
            .setup_header
            .map(|h| h.cmdline_size as usize + 1)
            .filter(|&s| s > 1)
            .unwrap_or(DEFAULT_CMDLINE_SIZE);
        announced.min(CMDLINE_MAX_SIZE)
    }

    pub fn initrd_addr_max(&self) -> u64 {
        self.setup_header
            .map(|h| h.initrd_addr_max as u64)
            .filter(|&m| m != 0)
            .unwrap_or(DEFAULT_INITRD_ADDR_MAX)
    }
}

fn open(path: &Path, what: &'static str) -> Result<(File, u64), ArchError> {
    let file = File::open(path).map_err(|source| ArchError::Open {
        what,
        path: path.to_path_buf(),
        source,
    })?;
    let size = file
        .metadata()
        .map_err(|source| ArchError::Open {
            what,
            path: path.to_path_buf(),
            source,
        })?
        .len();
    if !file.metadata().map(|m| m.is_file()).unwrap_or(false) {
        return Err(ArchError::Open {
            what,
            path: path.to_path_buf(),
            source: std::io::Error::other("not a regular file"),
        });
    }
    Ok((file, size))
}

fn too_large(what: &'static str, path: &Path, size: u64, ram: &RamLayout) -> ArchError {
    ArchError::TooLarge {
        what,
        path: path.to_path_buf(),
        size,
        ram_mib: (ram.low_size + ram.high_size) >> 20,
    }
}

/// Load an ELF vmlinux or a bzImage; the format is taken from the file's contents.
pub fn load_kernel(
    mem: &GuestMemoryMmap,
    ram: &RamLayout,
    path: &Path,
) -> Result<LoadedKernel, ArchError> {
    let (mut file, size) = open(path, "kernel")?;
    if size > ram.low_end() {
        return Err(too_large("kernel", path, size, ram));
    }
    let mut magic = [0u8; 4];
    let is_elf = file.read_exact(&mut magic).is_ok() && magic == *b"\x7fELF";
    let himem = Some(GuestAddress(HIMEM_START));
    let result = if is_elf {
        Elf::load(mem, None, &mut file, himem)
    } else {
        file.seek(SeekFrom::Start(0))
            .map_err(|_| ArchError::NotAKernel(path.to_path_buf()))?;
        BzImage::load(mem, None, &mut file, himem)
    };
    let r: KernelLoaderResult = result.map_err(|e| {
        use linux_loader::loader::{bzimage, elf, Error as L};
        match e {
            L::Elf(elf::Error::ReadKernelImage)
            | L::Bzimage(bzimage::Error::ReadBzImageCompressedKernel) => {
                too_large("kernel", path, size, ram)
            }
            L::Bzimage(bzimage::Error::InvalidBzImage)
            | L::Elf(elf::Error::InvalidElfMagicNumber) => {
                ArchError::NotAKernel(path.to_path_buf())
            }
            L::Bzimage(bzimage::Error::ReadBzImageHeader) if !is_elf => {
                ArchError::NotAKernel(path.to_path_buf())
            }
            other => ArchError::KernelLoad {
                path: path.to_path_buf(),
                reason: other.to_string(),
            },
        }
    })?;

    let (entry64, end) = match r.setup_header {
        Some(h) => {
            // The decompressor unpacks the kernel in place: its footprint is init_size
            // from the load address, not the file size.
            let footprint = (h.init_size as u64).max(r.kernel_end - r.kernel_load.0);
            (
                r.kernel_load.0 + BZIMAGE_STARTUP_64_OFFSET,
                r.kernel_load.0 + footprint,
            )
        }
        None => (r.kernel_load.0, r.kernel_end),
    };
    if end > ram.low_end() {
        return Err(too_large("kernel", path, end, ram));
    }
    let pvh_entry = match r.pvh_boot_cap {
        PvhBootCapability::PvhEntryPresent(a) => Some(a.0),
        _ => None,
    };
    Ok(LoadedKernel {
        entry64,
        pvh_entry,
        end,
        setup_header: r.setup_header,
    })
}

/// Place the initrd as high in low memory as the kernel allows, page aligned, above
/// the kernel (the convention of every boot loader).
pub fn load_initrd(
    mem: &GuestMemoryMmap,
    ram: &RamLayout,
    kernel: &LoadedKernel,
    path: &Path,
) -> Result<InitrdPlacement, ArchError> {
    let (mut file, size) = open(path, "initrd")?;
    let top = ram.low_end().min(kernel.initrd_addr_max() + 1);
    let addr = top
        .checked_sub(size)
        .map(|a| a & !0xfff)
        .filter(|&a| a >= kernel.end)
        .ok_or_else(|| too_large("initrd", path, size, ram))?;
    mem.read_exact_volatile_from(GuestAddress(addr), &mut file, size as usize)
        .map_err(|e| ArchError::KernelLoad {
            path: path.to_path_buf(),
            reason: format!("reading initrd: {e}"),
        })?;
    Ok(InitrdPlacement { addr, size })
}

pub fn write_cmdline(mem: &GuestMemoryMmap, cmdline: &str) -> Result<(), ArchError> {
    let mut c = Cmdline::new(CMDLINE_MAX_SIZE).map_err(|_| ArchError::BootTables("cmdline"))?;
    if !cmdline.is_empty() {
        c.insert_str(cmdline)
            .map_err(|e| ArchError::InvalidCmdline(e.to_string()))?;
    }
    load_cmdline(mem, GuestAddress(CMDLINE_START), &c).map_err(|_| ArchError::BootTables("cmdline"))
}

pub fn load_raw(
    mem: &GuestMemoryMmap,
    ram: &RamLayout,
    path: &Path,
    load_address: u64,
) -> Result<(), ArchError> {
    let (mut file, size) = open(path, "raw payload")?;
    load_address
        .checked_add(size)
        .filter(|&end| end <= ram.low_end())
        .ok_or_else(|| too_large("raw payload", path, size, ram))?;
    mem.read_exact_volatile_from(GuestAddress(load_address), &mut file, size as usize)
        .map_err(|e| ArchError::KernelLoad {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
}
