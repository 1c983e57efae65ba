//! virtio-scsi (virtio 1.2 §5.6): one controller per VM, each disk a SCSI target with
//! a single LUN 0, on the same [`DiskBackend`](crate::block::DiskBackend)s as
//! virtio-blk.
//!
//! The emulated logical units implement what Linux's `sd` and discard need: TEST UNIT
//! READY, INQUIRY (standard; VPD 0x00, 0x80, 0x83, 0xB0, 0xB1, 0xB2), READ CAPACITY
//! (10/16), READ/WRITE (6/10/16), SYNCHRONIZE CACHE (10/16), MODE SENSE (6/10; caching
//! and control pages), REQUEST SENSE, REPORT LUNS, UNMAP, WRITE SAME (10/16, any
//! pattern, UNMAP bit), START STOP UNIT and PREVENT ALLOW MEDIUM REMOVAL. Anything else
//! is CHECK CONDITION, ILLEGAL REQUEST, INVALID COMMAND OPERATION CODE.
//!
//! Layout: `request` parses and checks descriptor chains, `process` and `control` turn
//! request- and control-queue chains into responses, `commands/` emulates the CDBs,
//! `worker` is the I/O thread, `device` the [`VirtioDevice`](crate::virtio::VirtioDevice),
//! `state` what a saved VM keeps of it.

mod commands;
mod config;
mod control;
mod device;
mod lun;
mod metrics;
mod process;
mod request;
mod sense;
mod state;
mod worker;

#[cfg(test)]
mod tests;

pub use device::{ScsiError, VirtioScsi};
pub use lun::{LunConfig, BLOCK_SIZE, MAX_SERIAL_LEN};
pub use metrics::{LunMetrics, LunMetricsSnapshot, ScsiMetrics, ScsiMetricsSnapshot};
pub use state::{ScsiHeaderSizes, ScsiState};

/// Queue indices (virtio 1.2 §5.6.2): control, event, then the request queues.
pub const CONTROL_QUEUE: u16 = 0;
pub const EVENT_QUEUE: u16 = 1;
pub const REQUEST_QUEUE: u16 = 2;

/// Queues offered: control, event and one request queue.
pub const NUM_QUEUES: usize = 3;

/// Maximum size of every queue.
pub const QUEUE_SIZE: u16 = 128;

/// Most disks per controller: the target is one byte of the LUN field.
pub const MAX_TARGETS: usize = 256;
