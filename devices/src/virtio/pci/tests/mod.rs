//! The virtio-pci transport with its devices, driven as a guest driver and a
//! hypervisor would drive them: bring-up through the registers, requests through the
//! rings, kicks through the ioeventfds registered at the notify addresses, interrupts
//! through MSI-X irqfds. Most tests save a device and restore it into a new one built
//! the same way, as a restoring VMM does.

mod blk;
mod host;
mod malformed;
mod net;
mod ring;
mod scsi;
