//! Tests of the virtio-blk device: request parsing and execution on mock queues, the
//! device with its worker thread, and a property ("fuzz") test of arbitrary chains.

mod device;
mod fuzz;
mod requests;
mod support;
