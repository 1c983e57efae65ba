//! One request at a time through parse + execute, on a mock queue and an in-memory disk:
//! what well-formed requests do, and that every malformed one fails with a status (or,
//! without a status byte, is returned unanswered) and never panics.

use virtio_bindings::virtio_blk::*;
use vm_memory::{Bytes, GuestAddress};

use super::support::*;
use crate::block::{DiskBackend, MemDisk};
use crate::virtio::blk::request::{S_IOERR, S_OK, S_UNSUPP};

const DISK: usize = 1 << 20;

/// A MemDisk with a pattern, and the pattern.
fn disk() -> (MemDisk, Vec<u8>) {
    let data = pattern(DISK, 3);
    (MemDisk::from_bytes(data.clone()), data)
}

#[test]
fn read_request() {
    let mem = mem();
    let (d, data) = disk();
    header(&mem, HDR, VIRTIO_BLK_T_IN, 8);
    let (used, m) = serve(
        &mem,
        d,
        &[desc(HDR, 16, R), desc(DATA, 4096, W), desc(STATUS, 1, W)],
    );
    assert_eq!(used, 4097);
    assert_eq!(status_at(&mem, STATUS), S_OK);
    let mut got = vec![0u8; 4096];
    mem.read_slice(&mut got, GuestAddress(DATA)).unwrap();
    assert_eq!(got, data[4096..8192]);
    let s = m.snapshot();
    assert_eq!((s.read_ops, s.read_bytes), (1, 4096));
}

#[test]
fn write_request_spread_over_descriptors() {
    let mem = mem();
    let (d, _) = disk();
    let payload = pattern(1536, 99);
    mem.write_slice(&payload[..512], GuestAddress(DATA))
        .unwrap();
    mem.write_slice(&payload[512..], GuestAddress(DATA + 0x10000))
        .unwrap();
    // The header split in two descriptors, the data in two more.
    header(&mem, HDR, VIRTIO_BLK_T_OUT, 1);
    let (used, m) = serve(
        &mem,
        d.clone(),
        &[
            desc(HDR, 4, R),
            desc(HDR + 4, 12, R),
            desc(DATA, 512, R),
            desc(DATA + 0x10000, 1024, R),
            desc(STATUS, 1, W),
        ],
    );
    assert_eq!(used, 1);
    assert_eq!(status_at(&mem, STATUS), S_OK);
    assert_eq!(d.contents()[512..2048], payload[..]);
    assert_eq!(m.snapshot().write_bytes, 1536);
}

#[test]
fn header_and_data_in_one_descriptor_status_as_last_writable_byte() {
    let mem = mem();
    let (d, data) = disk();
    // Header and write data in one readable descriptor.
    header(&mem, HDR, VIRTIO_BLK_T_OUT, 0);
    mem.write_slice(&[0xee; 512], GuestAddress(HDR + 16))
        .unwrap();
    let (used, _) = serve(
        &mem,
        d.clone(),
        &[desc(HDR, 16 + 512, R), desc(STATUS, 1, W)],
    );
    assert_eq!((used, status_at(&mem, STATUS)), (1, S_OK));
    assert_eq!(d.contents()[..512], [0xee; 512]);
    // Read data and status in one writable descriptor: the status is its last byte.
    header(&mem, HDR, VIRTIO_BLK_T_IN, 1);
    let (used, _) = serve(&mem, d, &[desc(HDR, 16, R), desc(DATA, 513, W)]);
    assert_eq!(used, 513);
    assert_eq!(status_at(&mem, DATA + 512), S_OK);
    let mut got = vec![0u8; 512];
    mem.read_slice(&mut got, GuestAddress(DATA)).unwrap();
    assert_eq!(got, data[512..1024]);
}

#[test]
fn flush_runs_the_backend_flush() {
    let mem = mem();
    let (d, _) = disk();
    header(&mem, HDR, VIRTIO_BLK_T_FLUSH, 0);
    let (used, m) = serve(&mem, d.clone(), &[desc(HDR, 16, R), desc(STATUS, 1, W)]);
    assert_eq!((used, status_at(&mem, STATUS)), (1, S_OK));
    assert_eq!(d.flushes(), 1);
    assert_eq!(m.snapshot().flushes, 1);
}

#[test]
fn get_id_returns_the_padded_serial() {
    let mem = mem();
    let (d, _) = disk();
    header(&mem, HDR, VIRTIO_BLK_T_GET_ID, 0);
    mem.write_slice(&[0xff; 20], GuestAddress(DATA)).unwrap();
    let (used, _) = serve(
        &mem,
        d,
        &[desc(HDR, 16, R), desc(DATA, 20, W), desc(STATUS, 1, W)],
    );
    assert_eq!((used, status_at(&mem, STATUS)), (21, S_OK));
    let mut id = [0u8; 20];
    mem.read_slice(&mut id, GuestAddress(DATA)).unwrap();
    assert_eq!(&id[..4], b"SN-1");
    assert!(id[4..].iter().all(|&b| b == 0));
}

#[test]
fn discard_and_write_zeroes() {
    let mem = mem();
    let (d, data) = disk();
    header(&mem, HDR, VIRTIO_BLK_T_DISCARD, 0);
    segment(&mem, DATA, 2, 4, 0);
    let (used, _) = serve(
        &mem,
        d.clone(),
        &[desc(HDR, 16, R), desc(DATA, 16, R), desc(STATUS, 1, W)],
    );
    assert_eq!((used, status_at(&mem, STATUS)), (1, S_OK));
    assert!(d.contents()[1024..3072].iter().all(|&b| b == 0));
    assert_eq!(d.contents()[3072..4096], data[3072..4096]);

    header(&mem, HDR, VIRTIO_BLK_T_WRITE_ZEROES, 0);
    segment(&mem, DATA, 100, 1, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP);
    let (_, m) = serve(
        &mem,
        d.clone(),
        &[desc(HDR, 16, R), desc(DATA, 16, R), desc(STATUS, 1, W)],
    );
    assert_eq!(status_at(&mem, STATUS), S_OK);
    assert!(d.contents()[51200..51712].iter().all(|&b| b == 0));
    assert_eq!(m.snapshot().write_zeroes, 1);
}

/// Serve `descs` on a fresh patterned disk and expect `status` at STATUS, the disk
/// unchanged and no panic.
fn expect_status(
    mem: &crate::virtio::GuestMemoryMmap,
    descs: &[virtio_queue::desc::RawDescriptor],
    status: u8,
) {
    let (d, data) = disk();
    mem.write_obj(0xaau8, GuestAddress(STATUS)).unwrap();
    let (used, m) = serve(mem, d.clone(), descs);
    assert_eq!(status_at(mem, STATUS), status);
    assert_eq!(used, 1);
    assert_eq!(d.contents(), data, "a refused request changed the disk");
    let s = m.snapshot();
    assert_eq!(s.invalid_requests + s.unsupported, 1);
}

#[test]
fn sector_out_of_range() {
    let mem = mem();
    let last = (DISK / 512) as u64;
    for (t, sector) in [
        (VIRTIO_BLK_T_IN, last),
        (VIRTIO_BLK_T_OUT, last - 1),
        (VIRTIO_BLK_T_OUT, u64::MAX),
        (VIRTIO_BLK_T_IN, u64::MAX / 512 + 1),
    ] {
        header(&mem, HDR, t, sector);
        let flags = if t == VIRTIO_BLK_T_IN { W } else { R };
        expect_status(
            &mem,
            &[
                desc(HDR, 16, R),
                desc(DATA, 1024, flags),
                desc(STATUS, 1, W),
            ],
            S_IOERR,
        );
    }
    // Discard and write-zeroes segments too, including sector + count overflowing.
    for (t, sector, num) in [
        (VIRTIO_BLK_T_DISCARD, last - 1, 2),
        (VIRTIO_BLK_T_WRITE_ZEROES, u64::MAX, 1),
        (VIRTIO_BLK_T_WRITE_ZEROES, 0, (1 << 17) + 1),
    ] {
        header(&mem, HDR, t, 0);
        segment(&mem, DATA, sector, num, 0);
        expect_status(
            &mem,
            &[desc(HDR, 16, R), desc(DATA, 16, R), desc(STATUS, 1, W)],
            S_IOERR,
        );
    }
}

#[test]
fn data_length_not_a_multiple_of_512() {
    let mem = mem();
    header(&mem, HDR, VIRTIO_BLK_T_OUT, 0);
    expect_status(
        &mem,
        &[desc(HDR, 16, R), desc(DATA, 700, R), desc(STATUS, 1, W)],
        S_IOERR,
    );
}

#[test]
fn data_descriptor_in_the_wrong_direction() {
    let mem = mem();
    // A read whose data buffer is device-readable.
    header(&mem, HDR, VIRTIO_BLK_T_IN, 0);
    expect_status(
        &mem,
        &[desc(HDR, 16, R), desc(DATA, 512, R), desc(STATUS, 1, W)],
        S_IOERR,
    );
    // A write whose data buffer is device-writable.
    header(&mem, HDR, VIRTIO_BLK_T_OUT, 0);
    expect_status(
        &mem,
        &[desc(HDR, 16, R), desc(DATA, 512, W), desc(STATUS, 1, W)],
        S_IOERR,
    );
    // A readable descriptor after a writable one.
    expect_status(
        &mem,
        &[
            desc(HDR, 16, R),
            desc(DATA, 512, W),
            desc(DATA + 4096, 512, R),
            desc(STATUS, 1, W),
        ],
        S_IOERR,
    );
    // The header in a device-writable descriptor.
    expect_status(&mem, &[desc(HDR, 16, W), desc(STATUS, 1, W)], S_IOERR);
}

#[test]
fn short_header() {
    let mem = mem();
    header(&mem, HDR, VIRTIO_BLK_T_FLUSH, 0);
    expect_status(&mem, &[desc(HDR, 15, R), desc(STATUS, 1, W)], S_IOERR);
}

#[test]
fn buffers_outside_guest_memory_and_huge_lengths() {
    let mem = mem();
    let end = MEM_SIZE as u64;
    header(&mem, HDR, VIRTIO_BLK_T_IN, 0);
    for data in [
        desc(end, 512, W),
        desc(end - 256, 512, W),
        desc(u64::MAX - 100, 512, W),
        desc(DATA, 0xffff_fe00, W),
    ] {
        expect_status(&mem, &[desc(HDR, 16, R), data, desc(STATUS, 1, W)], S_IOERR);
    }
    // The header itself outside memory.
    expect_status(
        &mem,
        &[desc(end + 4096, 16, R), desc(STATUS, 1, W)],
        S_IOERR,
    );
}

#[test]
fn writes_to_a_read_only_disk_fail() {
    let mem = mem();
    let data = pattern(DISK, 3);
    let d = MemDisk::from_bytes(data.clone()).read_only();
    header(&mem, HDR, VIRTIO_BLK_T_OUT, 0);
    let (used, _) = serve(
        &mem,
        d.clone(),
        &[desc(HDR, 16, R), desc(DATA, 512, R), desc(STATUS, 1, W)],
    );
    assert_eq!((used, status_at(&mem, STATUS)), (1, S_IOERR));
    header(&mem, HDR, VIRTIO_BLK_T_WRITE_ZEROES, 0);
    segment(&mem, DATA, 0, 1, 0);
    serve(
        &mem,
        d.clone(),
        &[desc(HDR, 16, R), desc(DATA, 16, R), desc(STATUS, 1, W)],
    );
    assert_eq!(status_at(&mem, STATUS), S_IOERR);
    assert_eq!(d.contents(), data);
    // Reads work.
    header(&mem, HDR, VIRTIO_BLK_T_IN, 0);
    serve(
        &mem,
        d,
        &[desc(HDR, 16, R), desc(DATA, 512, W), desc(STATUS, 1, W)],
    );
    assert_eq!(status_at(&mem, STATUS), S_OK);
}

#[test]
fn unsupported_requests() {
    let mem = mem();
    for t in [
        VIRTIO_BLK_T_SCSI_CMD,
        VIRTIO_BLK_T_BARRIER | VIRTIO_BLK_T_OUT,
        99,
        u32::MAX,
    ] {
        header(&mem, HDR, t, 0);
        expect_status(&mem, &[desc(HDR, 16, R), desc(STATUS, 1, W)], S_UNSUPP);
    }
    // Discard with the unmap flag, unknown flags, more than one segment.
    header(&mem, HDR, VIRTIO_BLK_T_DISCARD, 0);
    segment(&mem, DATA, 0, 1, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP);
    expect_status(
        &mem,
        &[desc(HDR, 16, R), desc(DATA, 16, R), desc(STATUS, 1, W)],
        S_UNSUPP,
    );
    header(&mem, HDR, VIRTIO_BLK_T_WRITE_ZEROES, 0);
    segment(&mem, DATA, 0, 1, 0x80);
    expect_status(
        &mem,
        &[desc(HDR, 16, R), desc(DATA, 16, R), desc(STATUS, 1, W)],
        S_UNSUPP,
    );
    segment(&mem, DATA, 0, 1, 0);
    segment(&mem, DATA + 16, 8, 1, 0);
    expect_status(
        &mem,
        &[desc(HDR, 16, R), desc(DATA, 32, R), desc(STATUS, 1, W)],
        S_UNSUPP,
    );
    // A segment of the wrong size is malformed.
    expect_status(
        &mem,
        &[desc(HDR, 16, R), desc(DATA, 20, R), desc(STATUS, 1, W)],
        S_IOERR,
    );
}

#[test]
fn discard_not_negotiated_is_unsupported() {
    let mem = mem();
    let (d, _) = disk();
    let mut lim = limits(&d);
    lim.discard = false;
    header(&mem, HDR, VIRTIO_BLK_T_DISCARD, 0);
    segment(&mem, DATA, 0, 1, 0);
    let (used, _) = serve_with(
        &mem,
        Box::new(d),
        lim,
        &[desc(HDR, 16, R), desc(DATA, 16, R), desc(STATUS, 1, W)],
    );
    assert_eq!((used, status_at(&mem, STATUS)), (1, S_UNSUPP));
}

#[test]
fn chains_without_a_status_byte_are_returned_unanswered() {
    let mem = mem();
    header(&mem, HDR, VIRTIO_BLK_T_IN, 0);
    for descs in [
        // Header only.
        vec![desc(HDR, 16, R)],
        // The "status" descriptor is not device-writable.
        vec![desc(HDR, 16, R), desc(STATUS, 1, R)],
        // An empty writable descriptor holds no status byte.
        vec![desc(HDR, 16, R), desc(STATUS, 0, W)],
        // The status byte lies outside guest memory.
        vec![desc(HDR, 16, R), desc(MEM_SIZE as u64 + 10, 1, W)],
        // Longer than 4 GiB in total: virtio-queue ends the chain before the status.
        vec![
            desc(HDR, 16, R),
            desc(DATA, u32::MAX, W),
            desc(STATUS, 1, W),
        ],
    ] {
        let (d, data) = disk();
        mem.write_obj(0xaau8, GuestAddress(STATUS)).unwrap();
        let (used, m) = serve(&mem, d.clone(), &descs);
        assert_eq!(used, 0);
        assert_eq!(status_at(&mem, STATUS), 0xaa);
        assert_eq!(d.contents(), data);
        assert_eq!(m.snapshot().invalid_requests, 1);
    }
    // With a writable data buffer before a readable "status", the data buffer's last
    // byte is the status byte (requests are byte streams), and the order is wrong.
    let (d, _) = disk();
    let (used, _) = serve(
        &mem,
        d,
        &[desc(HDR, 16, R), desc(DATA, 512, W), desc(STATUS, 1, R)],
    );
    assert_eq!((used, status_at(&mem, DATA + 511)), (1, S_IOERR));
}

#[test]
fn host_io_errors_are_ioerr() {
    let mem = mem();
    for (t, data_flags) in [
        (VIRTIO_BLK_T_IN, W),
        (VIRTIO_BLK_T_OUT, R),
        (VIRTIO_BLK_T_FLUSH, R),
    ] {
        header(&mem, HDR, t, 0);
        let descs = if t == VIRTIO_BLK_T_FLUSH {
            vec![desc(HDR, 16, R), desc(STATUS, 1, W)]
        } else {
            vec![
                desc(HDR, 16, R),
                desc(DATA, 512, data_flags),
                desc(STATUS, 1, W),
            ]
        };
        let disk = FailingDisk;
        let lim = limits(&disk);
        let (used, m) = serve_with(&mem, Box::new(disk), lim, &descs);
        assert_eq!((used, status_at(&mem, STATUS)), (1, S_IOERR));
        assert_eq!(m.snapshot().io_errors, 1);
    }
}

#[test]
fn indirect_chain_is_served() {
    use virtio_queue::mock::MockSplitQueue;
    let mem = mem();
    let (d, data) = disk();
    let vq = MockSplitQueue::new(&mem, 16);
    // The mock builds an indirect table of 3 descriptors at 0x3000_0000 > MEM_SIZE, so
    // build our own: table at 0x8000 with header, data, status.
    let table = 0x8000u64;
    let descs = [
        virtio_queue::desc::split::Descriptor::new(HDR, 16, 1, 1),
        virtio_queue::desc::split::Descriptor::new(DATA, 512, 1 | W, 2),
        virtio_queue::desc::split::Descriptor::new(STATUS, 1, W, 0),
    ];
    for (i, dsc) in descs.iter().enumerate() {
        mem.write_obj(
            virtio_queue::desc::RawDescriptor::from(*dsc),
            GuestAddress(table + 16 * i as u64),
        )
        .unwrap();
    }
    header(&mem, HDR, VIRTIO_BLK_T_IN, 2);
    let head = desc(
        table,
        48,
        virtio_bindings::virtio_ring::VRING_DESC_F_INDIRECT as u16,
    );
    let chain = vq.build_desc_chain(&[head]).unwrap();
    let lim = limits(&d);
    let (mut ex, _) = executor(Box::new(d), lim);
    assert_eq!(ex.serve(chain, &mem), 513);
    assert_eq!(status_at(&mem, STATUS), S_OK);
    let mut got = vec![0u8; 512];
    mem.read_slice(&mut got, GuestAddress(DATA)).unwrap();
    assert_eq!(got, data[1024..1536]);
    assert!(ex.into_backend().size() > 0);
}
