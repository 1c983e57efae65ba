//! Shared helpers for the integration tests: they run the real `oxvm` binary.
#![allow(dead_code)] // each test binary uses a different part of this module

pub mod asm;
pub mod counting;
pub mod elf;
pub mod guest_mem;
pub mod http;
pub mod linux;
pub mod netns;
pub mod qemu_img;
pub mod vm;
