//! virtio-blk (virtio 1.2 §5.2): raw or qcow2 disks, read-only or writable, with flush,
//! discard, write-zeroes and GET_ID.
//!
//! - `config`: offered features and the configuration space;
//! - `request`: descriptor chain → checked request;
//! - `buffers`: a request's guest memory as a byte stream;
//! - `execute`: running a request against the backend;
//! - `worker`: the per-disk thread serving the queue;
//! - `worker_async`: its io=native loop, with reads and writes in flight (Linux AIO);
//! - `metrics`: counters for the API;
//! - `state`: what a saved VM keeps of the device.

mod buffers;
mod config;
mod device;
mod execute;
mod metrics;
mod request;
mod state;
#[cfg(test)]
mod tests;
mod worker;
mod worker_async;

pub use config::{CONFIG_SIZE, MAX_DISCARD_SECTORS, MAX_WRITE_ZEROES_SECTORS, QUEUE_SIZE, SEG_MAX};
pub use device::VirtioBlk;
pub use metrics::{BlkMetrics, BlkMetricsSnapshot};
pub use state::BlkState;
