//! x86-64 machine setup for oxvm: memory layout, boot protocol, CPU state, tables.

pub mod layout;
