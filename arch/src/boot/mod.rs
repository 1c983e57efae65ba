//! Loading what the VM boots and preparing the boot CPU's entry state.
//!
//! A kernel is an ELF `vmlinux` (Linux 64-bit entry, or PVH when the ELF carries the Xen
//! PVH note) or a `bzImage` (its protected-mode part loaded at 1 MiB and entered at the
//! 64-bit `startup_64`, never through the 16-bit setup code). A raw payload is machine
//! code copied to a fixed address and entered in long mode.

mod kernel;
mod pvh;
mod zero_page;

use std::path::PathBuf;

use crate::memory::{GuestMemoryMmap, RamLayout};
use crate::regs::EntryMode;
use crate::ArchError;

pub use kernel::LoadedKernel;

/// Which entry of an ELF kernel to use (see the VM file's `boot.entry`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryPreference {
    Auto,
    Linux64,
    Pvh,
}

#[derive(Debug, Clone)]
pub enum Payload {
    Kernel {
        kernel: PathBuf,
        initrd: Option<PathBuf>,
        cmdline: String,
        entry: EntryPreference,
    },
    Raw {
        path: PathBuf,
        load_address: u64,
        entry: u64,
    },
}

/// Load `payload` into `mem` and write the boot data structures; returns how the boot
/// vCPU must enter. `rsdp` is the ACPI root pointer to hand to the kernel.
pub fn load_payload(
    mem: &GuestMemoryMmap,
    ram: &RamLayout,
    payload: &Payload,
    rsdp: u64,
) -> Result<EntryMode, ArchError> {
    match payload {
        Payload::Raw {
            path,
            load_address,
            entry,
        } => {
            kernel::load_raw(mem, ram, path, *load_address)?;
            Ok(EntryMode::Raw64 { entry: *entry })
        }
        Payload::Kernel {
            kernel,
            initrd,
            cmdline,
            entry,
        } => {
            let loaded = kernel::load_kernel(mem, ram, kernel)?;
            let use_pvh = match (entry, loaded.pvh_entry) {
                (EntryPreference::Pvh, None) => return Err(ArchError::NoPvhNote(kernel.clone())),
                (EntryPreference::Pvh | EntryPreference::Auto, Some(_)) => true,
                _ => false,
            };
            let cmdline_max = loaded.cmdline_max();
            if cmdline.len() >= cmdline_max {
                return Err(ArchError::CmdlineTooLong {
                    len: cmdline.len(),
                    max: cmdline_max - 1,
                });
            }
            let initrd = match initrd {
                Some(p) => Some(kernel::load_initrd(mem, ram, &loaded, p)?),
                None => None,
            };
            kernel::write_cmdline(mem, cmdline)?;
            if use_pvh {
                let start_info = pvh::write_start_info(mem, ram, initrd, rsdp)?;
                Ok(EntryMode::Pvh {
                    entry: loaded.pvh_entry.unwrap_or_default(),
                    start_info,
                })
            } else {
                let zero_page =
                    zero_page::write_zero_page(mem, ram, &loaded, cmdline.len(), initrd, rsdp)?;
                Ok(EntryMode::Linux64 {
                    entry: loaded.entry64,
                    zero_page,
                })
            }
        }
    }
}

/// Where an initrd landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitrdPlacement {
    pub addr: u64,
    pub size: u64,
}
