//! Tests of the virtio-blk device: request parsing and execution on mock queues, the
//! device with its worker thread, the io=native worker, and a property ("fuzz") test of
//! arbitrary chains.

mod device;
mod fuzz;
mod native;
mod requests;
mod support;
