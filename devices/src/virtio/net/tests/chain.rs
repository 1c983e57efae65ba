//! Descriptor-chain checks: every way a chain can be malformed fails that chain only.

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};

use super::super::chain::{parse_chain, ChainError, Limits, ParsedChain, Segment};
use super::*;

const SIZE: u16 = 16;
const ANY: Limits = Limits {
    max_readable: usize::MAX,
    max_writable: usize::MAX,
};

/// Lay out `descs` as the descriptor table, offer `heads`, pop and parse every chain.
fn parse_all(
    descs: &[RawDescriptor],
    heads: &[u16],
    limits: Limits,
) -> Vec<Result<ParsedChain, ChainError>> {
    parse_all_with(descs, heads, limits, |_| {})
}

fn parse_all_with(
    descs: &[RawDescriptor],
    heads: &[u16],
    limits: Limits,
    setup: impl FnOnce(&GuestMemoryMmap),
) -> Vec<Result<ParsedChain, ChainError>> {
    let mem = memory();
    let ring = DriverQueue::new(&mem, 0, SIZE);
    for (i, d) in descs.iter().enumerate() {
        ring.set_desc(i as u16, *d);
    }
    for (i, h) in heads.iter().enumerate() {
        ring.set_avail(i as u16, *h);
    }
    ring.set_avail_idx(heads.len() as u16);
    setup(&mem);
    let mut queue: Queue = ring.queue();
    let mut out = Vec::new();
    while let Some(chain) = queue.pop_descriptor_chain(&mem) {
        out.push(parse_chain(&mem, chain, limits));
    }
    out
}

fn seg(addr: u64, len: u32) -> Segment {
    Segment {
        addr: GuestAddress(addr),
        len,
    }
}

#[test]
fn readable_then_writable() {
    let r = parse_all(
        &[
            desc(0x1_0000, 12, NEXT, 1),
            desc(0x2_0000, 100, NEXT, 2),
            desc(0x3_0000, 0, NEXT, 3), // empty: skipped
            desc(0x4_0000, 1, WRITE, 0),
        ],
        &[0],
        ANY,
    );
    let p = r[0].as_ref().unwrap();
    assert_eq!(p.head, 0);
    assert_eq!(p.readable, vec![seg(0x1_0000, 12), seg(0x2_0000, 100)]);
    assert_eq!(p.writable, vec![seg(0x4_0000, 1)]);
    assert_eq!((p.readable_len, p.writable_len, p.descriptors), (112, 1, 4));
}

#[test]
fn outside_guest_memory() {
    let cases = [
        desc(MEM_SIZE, 1, 0, 0),
        desc(MEM_SIZE - 10, 11, 0, 0),
        desc(u64::MAX - 4, 100, 0, 0), // wraps around
        desc(0x1000, u32::MAX, WRITE, 0),
    ];
    for d in cases {
        let r = parse_all(&[d], &[0], ANY);
        assert!(
            matches!(r[0], Err(ChainError::OutsideMemory { index: 0, .. })),
            "{r:?}"
        );
    }
    // The last byte of memory is fine.
    let r = parse_all(&[desc(MEM_SIZE - 1, 1, 0, 0)], &[0], ANY);
    assert!(r[0].is_ok());
}

#[test]
fn readable_after_writable() {
    let r = parse_all(
        &[desc(0x1_0000, 8, WRITE | NEXT, 1), desc(0x2_0000, 8, 0, 0)],
        &[0],
        ANY,
    );
    assert_eq!(r[0], Err(ChainError::ReadableAfterWritable(1)));
}

#[test]
fn loops_and_bad_links_break_the_chain() {
    // 0 -> 1 -> 0 -> ...: the iterator gives up after the queue size.
    let r = parse_all(
        &[desc(0x1_0000, 8, NEXT, 1), desc(0x1_0000, 8, NEXT, 0)],
        &[0],
        ANY,
    );
    assert_eq!(r[0], Err(ChainError::Broken(usize::from(SIZE))));
    // next beyond the table.
    let r = parse_all(&[desc(0x1_0000, 8, NEXT, SIZE)], &[0], ANY);
    assert_eq!(r[0], Err(ChainError::Broken(1)));
    // head beyond the table.
    let r = parse_all(&[desc(0x1_0000, 8, 0, 0)], &[SIZE + 3], ANY);
    assert_eq!(r[0], Err(ChainError::Empty));
}

#[test]
fn limits_per_direction() {
    let limits = Limits {
        max_readable: 100,
        max_writable: 0,
    };
    let r = parse_all(
        &[
            desc(0x1_0000, 60, NEXT, 1),
            desc(0x2_0000, 41, 0, 0),
            desc(0x3_0000, 1, WRITE, 0),
            desc(0x3_0000, 0, WRITE, 0),
        ],
        &[0, 2, 3],
        limits,
    );
    assert!(
        matches!(r[0], Err(ChainError::TooLong { max: 100, .. })),
        "{r:?}"
    );
    assert!(
        matches!(r[1], Err(ChainError::TooLong { max: 0, .. })),
        "{r:?}"
    );
    // A zero-length writable descriptor carries nothing: fine.
    assert!(r[2].is_ok());
    // Lengths that would overflow a u32 in total end the chain early: broken.
    let r = parse_all(
        &[
            desc(0x1_0000, 0x8000_0000, NEXT, 1),
            desc(0x1_0000, 0x8000_0000, 0, 0),
        ],
        &[0],
        ANY,
    );
    assert!(r[0].is_err(), "{r:?}");
}

#[test]
fn indirect_tables() {
    let table = 0x8_0000u64;
    let good = |mem: &GuestMemoryMmap| {
        mem.write_obj(desc(0x1_0000, 12, NEXT, 1), GuestAddress(table))
            .unwrap();
        mem.write_obj(desc(0x2_0000, 50, 0, 0), GuestAddress(table + 16))
            .unwrap();
    };
    let r = parse_all_with(&[desc(table, 32, INDIRECT, 0)], &[0], ANY, good);
    let p = r[0].as_ref().unwrap();
    assert_eq!(p.readable, vec![seg(0x1_0000, 12), seg(0x2_0000, 50)]);

    // Table length not a multiple of 16, table outside memory, nested indirect.
    for d in [
        desc(table, 20, INDIRECT, 0),
        desc(MEM_SIZE + 0x1000, 32, INDIRECT, 0),
    ] {
        let r = parse_all_with(&[d], &[0], ANY, good);
        assert_eq!(r[0], Err(ChainError::Empty), "{d:?}");
    }
    let nested = |mem: &GuestMemoryMmap| {
        mem.write_obj(desc(0x1_0000, 12, NEXT, 1), GuestAddress(table))
            .unwrap();
        mem.write_obj(desc(table, 32, INDIRECT, 0), GuestAddress(table + 16))
            .unwrap();
    };
    let r = parse_all_with(&[desc(table, 32, INDIRECT, 0)], &[0], ANY, nested);
    assert_eq!(r[0], Err(ChainError::Broken(1)));
}

#[test]
fn one_bad_chain_does_not_affect_the_next() {
    let r = parse_all(
        &[desc(MEM_SIZE, 8, 0, 0), desc(0x1_0000, 8, 0, 0)],
        &[0, 1],
        ANY,
    );
    assert!(r[0].is_err());
    assert_eq!(r[1].as_ref().unwrap().readable, vec![seg(0x1_0000, 8)]);
}
