//! x86-64 machine setup for oxvm: memory layout, boot protocol, CPU state, tables.

pub mod acpi;
pub mod boot;
pub mod cpuid;
mod error;
pub mod gdt;
pub mod lapic;
pub mod layout;
pub mod memory;
pub mod msr;
pub mod paging;
pub mod regs;

pub use error::ArchError;
