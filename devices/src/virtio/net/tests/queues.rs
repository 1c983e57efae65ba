//! Receive, transmit and control queues against ring driver rings, without a tap.

use std::io;

use virtio_bindings::virtio_net::{
    VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, VIRTIO_NET_CTRL_RX, VIRTIO_NET_ERR,
    VIRTIO_NET_OK,
};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};

use super::super::ctrl::CtrlQueue;
use super::super::metrics::NetMetrics;
use super::super::rx::{RxOutcome, RxQueue};
use super::super::tx::{TxQueue, TxStatus};
use super::super::used::UsedRing;
use super::super::MAX_FRAME_LEN;
use super::*;

const SIZE: u16 = 16;

fn frame(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(7) ^ seed).collect()
}

fn read(mem: &GuestMemoryMmap, addr: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
    v
}

// ---- transmit ----

/// Runs `TxQueue::process` collecting frames; `block_first` makes the first write
/// would-block.
fn run_tx(
    tx: &mut TxQueue,
    mem: &GuestMemoryMmap,
    m: &NetMetrics,
    sent: &mut Vec<Vec<u8>>,
) -> TxStatus {
    tx.process(mem, m, 64, &mut |f: &[u8]| {
        sent.push(f.to_vec());
        Ok(f.len())
    })
}

#[test]
fn tx_gathers_header_and_frame() {
    let mem = memory();
    let ring = DriverQueue::new(&mem, 0, SIZE);
    let data = frame(12 + 60, 1);
    mem.write_slice(&data[..12], GuestAddress(0x1_0000))
        .unwrap();
    mem.write_slice(&data[12..40], GuestAddress(0x2_0000))
        .unwrap();
    mem.write_slice(&data[40..], GuestAddress(0x3_0000))
        .unwrap();
    ring.add_chains(
        &[
            desc(0x1_0000, 12, NEXT, 1),
            desc(0x2_0000, 28, NEXT, 2),
            desc(0x3_0000, 32, 0, 0),
        ],
        0,
    );
    let mut tx = TxQueue::new(ring.queue());
    let m = NetMetrics::default();
    let mut sent = Vec::new();
    assert_eq!(run_tx(&mut tx, &mem, &m, &mut sent), TxStatus::Done);
    assert_eq!(sent, vec![data]);
    assert_eq!(ring.used(0), vec![(0, 0)]);
    let s = m.snapshot();
    assert_eq!((s.tx_packets, s.tx_bytes, s.tx_errors), (1, 60, 0));
    assert!(tx.needs_notification(&mem));
    assert!(!tx.needs_notification(&mem), "nothing new since");
}

#[test]
fn tx_fails_malformed_chains_and_goes_on() {
    let mem = memory();
    let ring = DriverQueue::new(&mem, 0, SIZE);
    let good = frame(12 + 14, 2);
    mem.write_slice(&good, GuestAddress(0x5_0000)).unwrap();
    let half = (MAX_FRAME_LEN / 2 + 1) as u32;
    ring.add_chains(
        &[
            desc(MEM_SIZE - 4, 26, 0, 0),  // 0: outside memory
            desc(0x1_0000, 26, WRITE, 0),  // 1: device-writable
            desc(0x1_0000, 25, 0, 0),      // 2: too short (no Ethernet header)
            desc(0x1_0000, half, NEXT, 4), // 3,4: one byte too long
            desc(0x2_0000, half, 0, 0),
            desc(0x5_0000, good.len() as u32, 0, 0), // 5: fine
        ],
        0,
    );
    let mut tx = TxQueue::new(ring.queue());
    let m = NetMetrics::default();
    let mut sent = Vec::new();
    assert_eq!(run_tx(&mut tx, &mem, &m, &mut sent), TxStatus::Done);
    assert_eq!(sent, vec![good]);
    let used = ring.used(0);
    assert_eq!(used, vec![(0, 0), (1, 0), (2, 0), (3, 0), (5, 0)]);
    assert_eq!(m.snapshot().tx_errors, 4);
    assert_eq!(m.snapshot().tx_packets, 1);
}

#[test]
fn tx_keeps_the_frame_while_the_tap_would_block() {
    let mem = memory();
    let ring = DriverQueue::new(&mem, 0, SIZE);
    let data = frame(100, 3);
    mem.write_slice(&data, GuestAddress(0x1_0000)).unwrap();
    ring.add_chains(&[desc(0x1_0000, 100, 0, 0)], 0);
    let mut tx = TxQueue::new(ring.queue());
    let m = NetMetrics::default();
    let status = tx.process(&mem, &m, 64, &mut |_: &[u8]| {
        Err(io::Error::from(io::ErrorKind::WouldBlock))
    });
    assert_eq!(status, TxStatus::Blocked);
    assert!(ring.used(0).is_empty(), "not returned yet");
    let mut sent = Vec::new();
    assert_eq!(run_tx(&mut tx, &mem, &m, &mut sent), TxStatus::Done);
    assert_eq!(sent, vec![data]);
    assert_eq!(ring.used(0), vec![(0, 0)]);
    // Other write errors lose the frame but return the chain.
    ring.add_chains(&[desc(0x1_0000, 100, 0, 0)], 1);
    let status = tx.process(&mem, &m, 64, &mut |_: &[u8]| {
        Err(io::Error::from_raw_os_error(libc::EIO))
    });
    assert_eq!(status, TxStatus::Done);
    assert_eq!(ring.used(1), vec![(1, 0)]);
    assert_eq!(m.snapshot().tx_errors, 1);
}

#[test]
fn tx_budget_bounds_one_call() {
    let mem = memory();
    let ring = DriverQueue::new(&mem, 0, SIZE);
    let descs: Vec<_> = (0..10).map(|_| desc(0x1_0000, 64, 0, 0)).collect();
    ring.add_chains(&descs, 0);
    let mut tx = TxQueue::new(ring.queue());
    let m = NetMetrics::default();
    let mut write = |f: &[u8]| Ok(f.len());
    assert_eq!(tx.process(&mem, &m, 4, &mut write), TxStatus::More);
    assert_eq!(ring.used(0).len(), 4);
    assert_eq!(tx.process(&mem, &m, 100, &mut write), TxStatus::Done);
    assert_eq!(ring.used(0).len(), 10);
}

#[test]
fn tx_malformed_chains_count_against_the_budget() {
    let mem = memory();
    let ring = DriverQueue::new(&mem, 0, SIZE);
    let descs: Vec<_> = (0..10).map(|_| desc(MEM_SIZE, 64, 0, 0)).collect();
    ring.add_chains(&descs, 0);
    let mut tx = TxQueue::new(ring.queue());
    let m = NetMetrics::default();
    let mut write = |_: &[u8]| -> io::Result<usize> { panic!("nothing to send") };
    assert_eq!(tx.process(&mem, &m, 4, &mut write), TxStatus::More);
    assert_eq!(ring.used(0).len(), 4);
    assert_eq!(tx.process(&mem, &m, 64, &mut write), TxStatus::Done);
    assert_eq!(m.snapshot().tx_errors, 10);
}

// ---- receive ----

#[test]
fn rx_one_buffer_per_frame() {
    let mem = memory();
    let ring = DriverQueue::new(&mem, 0, SIZE);
    ring.add_chains(
        &[
            desc(0x1_0000, 12, WRITE | NEXT, 1), // header and frame split: fine
            desc(0x2_0000, 2048, WRITE, 0),
            desc(0x3_0000, 2048, WRITE, 0),
        ],
        0,
    );
    let mut rx = RxQueue::new(ring.queue(), false);
    let m = NetMetrics::default();
    let mut f = frame(12 + 100, 4);
    assert_eq!(
        rx.deliver(&mem, &mut f, &m),
        RxOutcome::Delivered { buffers: 1 }
    );
    assert_eq!(ring.used(0), vec![(0, 112)]);
    let hdr = read(&mem, 0x1_0000, 12);
    assert_eq!(&hdr[..10], &f[..10]);
    assert_eq!(&hdr[10..], &1u16.to_le_bytes(), "num_buffers");
    assert_eq!(read(&mem, 0x2_0000, 100), f[12..]);
    let s = m.snapshot();
    assert_eq!((s.rx_packets, s.rx_bytes), (1, 100));
}

#[test]
fn rx_drops_a_frame_larger_than_a_buffer_and_keeps_the_buffer() {
    let mem = memory();
    let ring = DriverQueue::new(&mem, 0, SIZE);
    ring.add_chains(&[desc(0x1_0000, 64, WRITE, 0)], 0);
    let mut rx = RxQueue::new(ring.queue(), false);
    let m = NetMetrics::default();
    assert_eq!(rx.deliver(&mem, &mut frame(100, 0), &m), RxOutcome::Dropped);
    assert_eq!(m.snapshot().rx_dropped, 1);
    assert!(ring.used(0).is_empty());
    assert_eq!(
        rx.deliver(&mem, &mut frame(50, 0), &m),
        RxOutcome::Delivered { buffers: 1 }
    );
    assert_eq!(ring.used(0), vec![(0, 50)]);
}

#[test]
fn rx_waits_for_buffers() {
    let mem = memory();
    let ring = DriverQueue::new(&mem, 0, SIZE);
    let mut rx = RxQueue::new(ring.queue(), false);
    let m = NetMetrics::default();
    let mut f = frame(80, 5);
    assert_eq!(rx.deliver(&mem, &mut f, &m), RxOutcome::NeedBuffers);
    assert!(!rx.enable_notification(&mem), "nothing arrived meanwhile");
    ring.add_chains(&[desc(0x1_0000, 2048, WRITE, 0)], 0);
    assert_eq!(
        rx.deliver(&mem, &mut f, &m),
        RxOutcome::Delivered { buffers: 1 }
    );
    assert_eq!(m.snapshot().rx_dropped, 0);
}

#[test]
fn rx_mergeable_spreads_a_frame_and_publishes_it_at_once() {
    let mem = memory();
    let ring = DriverQueue::new(&mem, 0, SIZE);
    let descs: Vec<_> = (0..4)
        .map(|i| desc(0x1_0000 + i * 0x1000, 1024, WRITE, 0))
        .collect();
    ring.add_chains(&descs, 0);
    let mut rx = RxQueue::new(ring.queue(), true);
    let m = NetMetrics::default();
    let mut f = frame(3000, 6);
    assert_eq!(
        rx.deliver(&mem, &mut f, &m),
        RxOutcome::Delivered { buffers: 3 }
    );
    assert_eq!(ring.used(0), vec![(0, 1024), (1, 1024), (2, 952)]);
    let mut got = read(&mem, 0x1_0000, 1024);
    got.extend(read(&mem, 0x1_1000, 1024));
    got.extend(read(&mem, 0x1_2000, 952));
    assert_eq!(&got[10..12], &3u16.to_le_bytes(), "num_buffers");
    assert_eq!(got[12..], f[12..]);
    // The fourth buffer is kept for the next frame.
    let mut small = frame(60, 7);
    assert_eq!(
        rx.deliver(&mem, &mut small, &m),
        RxOutcome::Delivered { buffers: 1 }
    );
    assert_eq!(ring.used(3), vec![(3, 60)]);
}

#[test]
fn rx_mergeable_waits_without_returning_partial_buffers() {
    let mem = memory();
    let ring = DriverQueue::new(&mem, 0, SIZE);
    ring.add_chains(
        &[
            desc(0x1_0000, 1024, WRITE, 0),
            desc(0x2_0000, 1024, WRITE, 0),
        ],
        0,
    );
    let mut rx = RxQueue::new(ring.queue(), true);
    let m = NetMetrics::default();
    let mut f = frame(3000, 8);
    assert_eq!(rx.deliver(&mem, &mut f, &m), RxOutcome::NeedBuffers);
    assert!(ring.used(0).is_empty());
    ring.add_chains(&[desc(0x3_0000, 1024, WRITE, 0)], 2);
    assert_eq!(
        rx.deliver(&mem, &mut f, &m),
        RxOutcome::Delivered { buffers: 3 }
    );
    assert_eq!(ring.used(0).len(), 3);
}

#[test]
fn rx_mergeable_drops_what_all_buffers_cannot_hold() {
    let mem = memory();
    let ring = DriverQueue::new(&mem, 0, 4);
    let descs: Vec<_> = (0..4)
        .map(|i| desc(0x1_0000 + i * 0x1000, 100, WRITE, 0))
        .collect();
    ring.add_chains(&descs, 0);
    let mut rx = RxQueue::new(ring.queue(), true);
    let m = NetMetrics::default();
    assert_eq!(
        rx.deliver(&mem, &mut frame(1000, 0), &m),
        RxOutcome::Dropped
    );
    assert_eq!(m.snapshot().rx_dropped, 1);
    assert_eq!(
        rx.deliver(&mem, &mut frame(150, 0), &m),
        RxOutcome::Delivered { buffers: 2 }
    );
}

#[test]
fn rx_returns_malformed_buffers_unused() {
    let mem = memory();
    let ring = DriverQueue::new(&mem, 0, SIZE);
    ring.add_chains(
        &[
            desc(0x1_0000, 2048, 0, 0),           // 0: driver-readable
            desc(MEM_SIZE - 100, 2048, WRITE, 0), // 1: outside memory
            desc(0x1_0000, 8, WRITE, 0),          // 2: smaller than the header
            desc(0x2_0000, 2048, WRITE, 0),       // 3: fine
        ],
        0,
    );
    let mut rx = RxQueue::new(ring.queue(), false);
    let m = NetMetrics::default();
    assert_eq!(
        rx.deliver(&mem, &mut frame(100, 0), &m),
        RxOutcome::Delivered { buffers: 1 }
    );
    assert_eq!(ring.used(0), vec![(0, 0), (1, 0), (2, 0), (3, 100)]);
    assert_eq!(m.snapshot().rx_errors, 3);
}

#[test]
fn rx_malformed_chains_bound_one_call() {
    let mem = memory();
    let ring = DriverQueue::new(&mem, 0, 4);
    let bad: Vec<_> = (0..4).map(|_| desc(0x1_0000, 64, 0, 0)).collect();
    ring.add_chains(&bad, 0);
    let mut rx = RxQueue::new(ring.queue(), true);
    let m = NetMetrics::default();
    let mut f = frame(100, 0);
    assert_eq!(rx.deliver(&mem, &mut f, &m), RxOutcome::Retry);
    assert_eq!(ring.used(0).len(), 4);
    ring.add_chains(&[desc(0x2_0000, 2048, WRITE, 0)], 0);
    assert_eq!(
        rx.deliver(&mem, &mut f, &m),
        RxOutcome::Delivered { buffers: 1 }
    );
    assert_eq!(m.snapshot().rx_errors, 4);
}

// ---- used ring and interrupts ----

#[test]
fn event_idx_suppresses_interrupts_until_used_event() {
    let mem = memory();
    let ring = DriverQueue::new(&mem, 0, SIZE);
    let mut queue: Queue = ring.queue();
    queue.set_event_idx(true);
    let mut used = UsedRing::new(&queue);
    ring.set_used_event(2); // "interrupt me when entry 2 is used"
    used.publish(&mut queue, &mem, &[(0, 0), (1, 0)]).unwrap();
    assert!(!used.needs_notification(&queue, &mem));
    used.publish(&mut queue, &mem, &[(2, 0)]).unwrap();
    assert!(used.needs_notification(&queue, &mem));
    // Without EVENT_IDX: every batch.
    queue.set_event_idx(false);
    used.publish(&mut queue, &mem, &[(3, 0)]).unwrap();
    assert!(used.needs_notification(&queue, &mem));
    // Heads outside the queue are never returned.
    used.publish(&mut queue, &mem, &[(SIZE, 0)]).unwrap();
    assert_eq!(queue.next_used(), 4);
}

// ---- control ----

fn ctrl_command(mem: &GuestMemoryMmap, ring: &DriverQueue<'_>, at: u16, cmd: &[u8]) {
    let base = 0x6_0000 + u64::from(at) * 0x100;
    mem.write_slice(cmd, GuestAddress(base)).unwrap();
    mem.write_obj(0xeeu8, GuestAddress(base + 0x80)).unwrap();
    ring.add_chains(
        &[
            desc(base, cmd.len() as u32, NEXT, at + 1),
            desc(base + 0x80, 1, WRITE, 0),
        ],
        at,
    );
}

fn ack(mem: &GuestMemoryMmap, at: u16) -> u8 {
    mem.read_obj(GuestAddress(0x6_0000 + u64::from(at) * 0x100 + 0x80))
        .unwrap()
}

#[test]
fn ctrl_sets_queue_pairs_and_refuses_the_rest() {
    let mem = memory();
    let ring = DriverQueue::new(&mem, 0, SIZE);
    let mq = VIRTIO_NET_CTRL_MQ as u8;
    let set = VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET as u8;
    ctrl_command(&mem, &ring, 0, &[mq, set, 2, 0]);
    ctrl_command(&mem, &ring, 2, &[mq, set, 0, 0]); // zero pairs
    ctrl_command(&mem, &ring, 4, &[mq, set, 5, 0]); // more than we have
    ctrl_command(&mem, &ring, 6, &[mq, set, 1]); // truncated
    ctrl_command(&mem, &ring, 8, &[VIRTIO_NET_CTRL_RX as u8, 0, 1]); // promisc on
    ctrl_command(&mem, &ring, 10, &[77, 0]); // unknown class
                                             // No ack byte: malformed.
    ring.add_chains(&[desc(0x7_0000, 4, 0, 0)], 12);
    let mut ctrl = CtrlQueue::new(ring.queue());
    let m = NetMetrics::default();
    let mut asked = Vec::new();
    ctrl.process(&mem, &m, 64, 4, &mut |n| {
        asked.push(n);
        true
    });
    assert_eq!(asked, vec![2]);
    let ok = VIRTIO_NET_OK as u8;
    let err = VIRTIO_NET_ERR as u8;
    let acks: Vec<u8> = [0, 2, 4, 6, 8, 10].iter().map(|&a| ack(&mem, a)).collect();
    assert_eq!(acks, vec![ok, err, err, err, ok, err]);
    let used = ring.used(0);
    assert_eq!(
        used,
        vec![(0, 1), (2, 1), (4, 1), (6, 1), (8, 1), (10, 1), (12, 0)]
    );
    let s = m.snapshot();
    assert_eq!((s.ctrl_commands, s.ctrl_errors), (6, 5));
    // A bounded number of commands per call.
    // (Descriptors are free again: reuse them.)
    for at in [0, 2, 4] {
        ctrl_command(&mem, &ring, at, &[mq, set, 1, 0]);
    }
    assert!(ctrl.process(&mem, &m, 2, 4, &mut |_| true));
    assert_eq!(ring.used(0).len(), 9);
    assert!(!ctrl.process(&mem, &m, 2, 4, &mut |_| true));
    assert_eq!(ring.used(0).len(), 10);
    // A failed switch is reported as an error too.
    ctrl_command(&mem, &ring, 6, &[mq, set, 3, 0]);
    ctrl.process(&mem, &m, 64, 4, &mut |_| false);
    assert_eq!(ack(&mem, 6), err);
}

// ---- stopping with the queues kept (a save) ----

#[test]
fn a_frame_waiting_for_the_tap_goes_back_to_the_ring() {
    let mem = memory();
    let ring = DriverQueue::new(&mem, 0, SIZE);
    let first = frame(100, 1);
    let second = frame(120, 2);
    mem.write_slice(&first, GuestAddress(0x1_0000)).unwrap();
    mem.write_slice(&second, GuestAddress(0x2_0000)).unwrap();
    ring.add_chains(&[desc(0x1_0000, 100, 0, 0), desc(0x2_0000, 120, 0, 0)], 0);
    let mut tx = TxQueue::new(ring.queue());
    let m = NetMetrics::default();
    let mut sent = 0;
    let status = tx.process(&mem, &m, 64, &mut |f: &[u8]| {
        if sent == 0 {
            sent += 1;
            Ok(f.len())
        } else {
            Err(io::Error::from(io::ErrorKind::WouldBlock))
        }
    });
    assert_eq!(status, TxStatus::Blocked);
    let queue = tx.into_queue();
    assert_eq!((queue.next_avail(), queue.next_used()), (1, 1));
    // Served again (here or after a restore): the second frame goes out, once.
    let mut tx = TxQueue::new(queue);
    let mut out = Vec::new();
    assert_eq!(run_tx(&mut tx, &mem, &m, &mut out), TxStatus::Done);
    assert_eq!(out, vec![second]);
    assert_eq!(ring.used(0), vec![(0, 0), (1, 0)]);
}

#[test]
fn receive_buffers_taken_for_a_frame_go_back_to_the_ring() {
    let mem = memory();
    let ring = DriverQueue::new(&mem, 0, SIZE);
    ring.add_chains(
        &[
            desc(0x1_0000, 1024, WRITE, 0),
            desc(0x2_0000, 1024, WRITE, 0),
        ],
        0,
    );
    let mut rx = RxQueue::new(ring.queue(), true);
    let m = NetMetrics::default();
    // A frame needing three buffers takes the two there are, and waits.
    assert_eq!(
        rx.deliver(&mem, &mut frame(3000, 8), &m),
        RxOutcome::NeedBuffers
    );
    rx.release_stash(&mem);
    let queue = rx.into_queue();
    assert_eq!((queue.next_avail(), queue.next_used()), (0, 0));
    assert!(ring.used(0).is_empty(), "nothing handed back half filled");
    // After the restore the same buffers take the next frame, in order.
    let mut rx = RxQueue::new(queue, true);
    let mut f = frame(1500, 9);
    assert_eq!(
        rx.deliver(&mem, &mut f, &m),
        RxOutcome::Delivered { buffers: 2 }
    );
    assert_eq!(ring.used(0), vec![(0, 1024), (1, 476)]);
}

#[test]
fn receive_buffers_around_a_malformed_chain_are_returned_empty() {
    let mem = memory();
    let ring = DriverQueue::new(&mem, 0, SIZE);
    ring.add_chains(
        &[
            desc(0x1_0000, 1024, WRITE, 0),
            desc(0x1_0000, 8, WRITE, 0), // smaller than the header: returned at once
            desc(0x2_0000, 1024, WRITE, 0),
        ],
        0,
    );
    let mut rx = RxQueue::new(ring.queue(), true);
    let m = NetMetrics::default();
    assert_eq!(
        rx.deliver(&mem, &mut frame(3000, 8), &m),
        RxOutcome::NeedBuffers
    );
    assert_eq!(ring.used(0), vec![(1, 0)]);
    rx.release_stash(&mem);
    let queue = rx.into_queue();
    // Stepping back would offer chain 1 twice: the two good ones come back empty.
    assert_eq!(queue.next_avail(), 3);
    assert_eq!(ring.used(0), vec![(1, 0), (0, 0), (2, 0)]);
}
