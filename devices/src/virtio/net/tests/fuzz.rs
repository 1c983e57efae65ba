//! Property-based fuzzing of descriptor parsing: arbitrary descriptor tables (any
//! address, length, flags and links, indirect tables full of garbage), arbitrary
//! available rings (heads out of range, an index far ahead of the ring), fed to the
//! transmit, receive and control paths. They must never panic or loop forever, and what
//! they do report must be consistent.

use proptest::collection::vec;
use proptest::prelude::*;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};

use super::super::ctrl::CtrlQueue;
use super::super::metrics::NetMetrics;
use super::super::rx::{RxOutcome, RxQueue};
use super::super::tx::{TxQueue, TxStatus};
use super::super::MAX_FRAME_LEN;
use super::*;
use crate::net::VNET_HDR_LEN;

const SIZE: u16 = 16;
/// Where indirect tables the generated descriptors may point at live.
const TABLE: u64 = 0x8_0000;

#[derive(Debug, Clone)]
struct Layout {
    descs: Vec<RawDescriptor>,
    indirect: Vec<RawDescriptor>,
    heads: Vec<u16>,
    /// The available index the driver claims (may exceed the heads it wrote).
    avail_idx: u16,
}

fn arb_desc() -> impl Strategy<Value = RawDescriptor> {
    let addr = prop_oneof![
        4 => 0x1_0000u64..0x2_0000,        // ordinary buffers
        1 => Just(TABLE),                  // an indirect table
        1 => (MEM_SIZE - 0x2000)..(MEM_SIZE + 0x1000), // across the end of memory
        1 => any::<u64>(),
    ];
    let len = prop_oneof![
        4 => 0u32..0x3000,
        1 => 0u32..0x2_0000,
        1 => any::<u32>(),
    ];
    let flags = prop_oneof![4 => 0u16..8, 1 => any::<u16>()];
    let next = prop_oneof![4 => 0u16..SIZE, 1 => any::<u16>()];
    (addr, len, flags, next).prop_map(|(a, l, f, n)| desc(a, l, f, n))
}

fn arb_layout() -> impl Strategy<Value = Layout> {
    (
        vec(arb_desc(), 1..=usize::from(SIZE)),
        vec(arb_desc(), 0..8),
        vec(
            prop_oneof![8 => 0u16..SIZE, 1 => any::<u16>()],
            0..=usize::from(SIZE),
        ),
        prop_oneof![4 => Just(None), 1 => any::<u16>().prop_map(Some)],
    )
        .prop_map(|(descs, indirect, heads, idx)| Layout {
            avail_idx: idx.unwrap_or(heads.len() as u16),
            descs,
            indirect,
            heads,
        })
}

/// Write `layout` into fresh guest memory and hand back a ready queue.
fn setup<'a>(mem: &'a GuestMemoryMmap, layout: &Layout) -> (DriverQueue<'a>, Queue) {
    let ring = DriverQueue::new(mem, 0, SIZE);
    for (i, d) in layout.descs.iter().enumerate() {
        ring.set_desc(i as u16, *d);
    }
    for (i, d) in layout.indirect.iter().enumerate() {
        mem.write_obj(*d, GuestAddress(TABLE + 16 * i as u64))
            .unwrap();
    }
    for (i, h) in layout.heads.iter().enumerate() {
        ring.set_avail(i as u16, *h);
    }
    ring.set_avail_idx(layout.avail_idx);
    let queue = ring.queue();
    (ring, queue)
}

/// Used elements are well-formed: ids inside the queue, no more than were offered.
fn check_used(ring: &DriverQueue<'_>) -> Vec<(u32, u32)> {
    let used = ring.used(0);
    assert!(used.len() <= usize::from(SIZE), "{used:?}");
    assert!(used.iter().all(|&(id, _)| id < u32::from(SIZE)), "{used:?}");
    used
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn tx_survives_any_chain(layout in arb_layout(), blocked in any::<bool>()) {
        let mem = memory();
        let (ring, queue) = setup(&mem, &layout);
        let mut tx = TxQueue::new(queue);
        let m = NetMetrics::default();
        let mut sent = 0u64;
        let mut first = blocked;
        let mut status = TxStatus::More;
        for _ in 0..4 {
            status = tx.process(&mem, &m, 64, &mut |f: &[u8]| {
                assert!(f.len() >= VNET_HDR_LEN + 14 && f.len() <= MAX_FRAME_LEN);
                if std::mem::take(&mut first) {
                    return Err(std::io::ErrorKind::WouldBlock.into());
                }
                sent += 1;
                Ok(f.len())
            });
            if status == TxStatus::Done {
                break;
            }
        }
        prop_assert_eq!(status, TxStatus::Done);
        let used = check_used(&ring);
        prop_assert!(used.iter().all(|&(_, len)| len == 0));
        let s = m.snapshot();
        prop_assert_eq!(s.tx_packets, sent);
        prop_assert!(s.tx_packets <= used.len() as u64);
    }

    #[test]
    fn rx_survives_any_buffers(
        layout in arb_layout(),
        mergeable in any::<bool>(),
        frames in vec(prop_oneof![VNET_HDR_LEN..200usize, VNET_HDR_LEN..70_000usize], 1..6),
    ) {
        let mem = memory();
        let (ring, queue) = setup(&mem, &layout);
        let mut rx = RxQueue::new(queue, mergeable);
        let m = NetMetrics::default();
        let mut delivered = 0;
        for len in frames {
            let before = rx.queue().next_used();
            let mut frame = vec![0x5au8; len];
            match rx.deliver(&mem, &mut frame, &m) {
                RxOutcome::Delivered { buffers } => {
                    delivered += 1;
                    prop_assert!(buffers >= 1 && (mergeable || buffers == 1));
                    // The frame's buffers are the last `buffers` used elements and
                    // hold exactly the frame.
                    let used = ring.used(before);
                    let mine = &used[used.len() - usize::from(buffers)..];
                    let total: u64 = mine.iter().map(|&(_, l)| u64::from(l)).sum();
                    prop_assert_eq!(total, len as u64);
                }
                RxOutcome::NeedBuffers | RxOutcome::Retry | RxOutcome::Dropped => {}
            }
        }
        check_used(&ring);
        prop_assert_eq!(m.snapshot().rx_packets, delivered);
    }

    #[test]
    fn ctrl_survives_any_command(layout in arb_layout(), garbage in vec(any::<u8>(), 0..64)) {
        let mem = memory();
        mem.write_slice(&garbage, GuestAddress(0x1_0000)).unwrap();
        let (ring, queue) = setup(&mem, &layout);
        let mut ctrl = CtrlQueue::new(queue);
        let m = NetMetrics::default();
        ctrl.process(&mem, &m, 64, 4, &mut |n| {
            assert!((1..=4).contains(&n));
            true
        });
        let used = check_used(&ring);
        prop_assert!(used.iter().all(|&(_, len)| len <= 1));
    }
}
