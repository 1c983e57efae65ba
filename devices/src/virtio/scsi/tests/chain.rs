//! Request parsing and response writing on real guest memory: headers split anywhere,
//! addressing, and every kind of malformed chain.

use std::sync::Mutex;

use virtio_bindings::virtio_scsi::{
    VIRTIO_SCSI_S_BAD_TARGET, VIRTIO_SCSI_S_FAILURE, VIRTIO_SCSI_S_FUNCTION_REJECTED,
    VIRTIO_SCSI_S_OK, VIRTIO_SCSI_S_OVERRUN,
};
use virtio_queue::desc::split::Descriptor;
use vm_memory::{Bytes, GuestAddress};

use super::{cmd_req, fixed_sense, guest_memory, lun_field, rd, read_resp, wr, DiskSpec, Resp};
use crate::virtio::scsi::control::process_control;
use crate::virtio::scsi::lun::{parse_lun, Lun, LunAddress};
use crate::virtio::scsi::process::{process_command, HeaderSizes};
use crate::virtio::scsi::request::{Chain, ChainError, Segment};
use crate::virtio::GuestMemoryMmap;

const SIZES: HeaderSizes = HeaderSizes {
    cdb_size: 32,
    sense_size: 96,
};
const REQ: u64 = 0x1000;
const RESP: u64 = 0x2000;
const DATA: u64 = 0x3000;
const INQUIRY: [u8; 6] = [0x12, 0, 0, 0, 36, 0];

fn luns(n: usize) -> Vec<Mutex<Lun>> {
    (0..n)
        .map(|i| {
            let (config, _) = DiskSpec::default().config(&format!("disk{i}"));
            Mutex::new(Lun::new(i as u16, config))
        })
        .collect()
}

fn submit(mem: &GuestMemoryMmap, luns: &[Mutex<Lun>], descs: &[Descriptor]) -> u32 {
    process_command(mem, descs.iter().copied(), luns, SIZES, &mut Vec::new())
}

fn put(mem: &GuestMemoryMmap, addr: u64, bytes: &[u8]) {
    mem.write_slice(bytes, GuestAddress(addr)).unwrap();
}

/// A standard request: header, response, data-in.
fn simple(mem: &GuestMemoryMmap, lun: [u8; 8], cdb: &[u8], data_in: u32) -> Vec<Descriptor> {
    put(mem, REQ, &cmd_req(lun, 7, cdb));
    let mut d = vec![rd(REQ, 51), wr(RESP, 108)];
    if data_in > 0 {
        d.push(wr(DATA, data_in));
    }
    d
}

fn ok_resp(resid: u32) -> Resp {
    Resp {
        sense_len: 0,
        resid,
        status_qualifier: 0,
        status: 0,
        response: VIRTIO_SCSI_S_OK as u8,
        sense: vec![],
    }
}

#[test]
fn lun_field_decoding() {
    let a = |target, lun| Some(LunAddress { target, lun });
    assert_eq!(parse_lun(&lun_field(0, 0)), a(0, 0));
    assert_eq!(parse_lun(&lun_field(3, 0x123)), a(3, 0x123));
    // Peripheral addressing, as firmware tends to send LUN 0.
    assert_eq!(parse_lun(&[1, 2, 0, 5, 0, 0, 0, 0]), a(2, 5));
    assert_eq!(parse_lun(&[0, 0, 0x40, 0, 0, 0, 0, 0]), None);
    assert_eq!(parse_lun(&[1, 0, 0x40, 0, 0, 0, 0, 1]), None);
    // Peripheral addressing on another bus, extended and well-known LUNs.
    assert_eq!(parse_lun(&[1, 0, 0x01, 0, 0, 0, 0, 0]), None);
    assert_eq!(parse_lun(&[1, 0, 0xC1, 0x01, 0, 0, 0, 0]), None);
    assert_eq!(parse_lun(&[1, 0, 0x80, 0, 0, 0, 0, 0]), None);
}

#[test]
fn inquiry_through_guest_memory() {
    let mem = guest_memory();
    let luns = luns(2);
    let descs = simple(&mem, lun_field(1, 0), &INQUIRY, 96);
    let used = submit(&mem, &luns, &descs);
    assert_eq!(used, 108 + 36);
    assert_eq!(read_resp(&mem, RESP), ok_resp(96 - 36));
    let mut data = [0u8; 36];
    mem.read_slice(&mut data, GuestAddress(DATA)).unwrap();
    assert_eq!(&data[8..16], b"OXVM    ");
}

#[test]
fn missing_targets_and_luns_are_bad_target() {
    let mem = guest_memory();
    let luns = luns(2);
    for lun in [
        lun_field(2, 0),
        lun_field(0, 1),
        [0, 0, 0x40, 0, 0, 0, 0, 0],
        [1, 0, 0xC1, 0x01, 0, 0, 0, 0],
    ] {
        let descs = simple(&mem, lun, &INQUIRY, 96);
        assert_eq!(submit(&mem, &luns, &descs), 108, "{lun:?}");
        let r = read_resp(&mem, RESP);
        assert_eq!(r.response, VIRTIO_SCSI_S_BAD_TARGET as u8);
        assert_eq!(r.status, 0);
    }
    // Peripheral addressing of LUN 0 works.
    let descs = simple(&mem, [1, 1, 0, 0, 0, 0, 0, 0], &INQUIRY, 36);
    assert_eq!(submit(&mem, &luns, &descs), 108 + 36);
    assert_eq!(read_resp(&mem, RESP), ok_resp(0));
}

#[test]
fn check_condition_carries_sense() {
    let mem = guest_memory();
    let luns = luns(1);
    let descs = simple(
        &mem,
        lun_field(0, 0),
        &[0xA3, 0x0C, 0, 0, 0, 0, 0, 0, 0, 64, 0, 0],
        64,
    );
    assert_eq!(submit(&mem, &luns, &descs), 108);
    let r = read_resp(&mem, RESP);
    assert_eq!(r.response, VIRTIO_SCSI_S_OK as u8);
    assert_eq!(r.status, 0x02);
    assert_eq!(r.sense_len, 18);
    assert_eq!(r.sense, fixed_sense(5, 0x20, 0));
    assert_eq!(r.resid, 64);
}

#[test]
fn headers_and_data_may_be_split_anywhere() {
    let mem = guest_memory();
    let luns = luns(1);
    // WRITE(10) LBA 3, 2 blocks; request header in three pieces, the data in two
    // (one in the other memory region), crossing the header/data boundary.
    let req = cmd_req(lun_field(0, 0), 1, &[0x2A, 0, 0, 0, 0, 3, 0, 0, 2, 0]);
    let data: Vec<u8> = (0..1024u32).map(|i| (i % 251) as u8).collect();
    let mut readable = req.clone();
    readable.extend_from_slice(&data);
    put(&mem, 0x1000, &readable[..10]);
    put(&mem, 0x1100, &readable[10..60]);
    put(&mem, 0x20_0000, &readable[60..]);
    let descs = [
        rd(0x1000, 10),
        rd(0x1100, 50),
        rd(0x20_0000, (readable.len() - 60) as u32),
        wr(0x5000, 5),
        wr(0x5100, 103),
    ];
    assert_eq!(submit(&mem, &luns, &descs), 108);
    let mut resp = [0u8; 12];
    mem.read_slice(&mut resp[..5], GuestAddress(0x5000))
        .unwrap();
    mem.read_slice(&mut resp[5..], GuestAddress(0x5100))
        .unwrap();
    assert_eq!(resp[10..12], [0, VIRTIO_SCSI_S_OK as u8]);

    // Read it back into a data-in split over three descriptors, the response header
    // sharing its last descriptor with the first data bytes.
    put(
        &mem,
        REQ,
        &cmd_req(lun_field(0, 0), 2, &[0x28, 0, 0, 0, 0, 3, 0, 0, 2, 0]),
    );
    let descs = [
        rd(REQ, 51),
        wr(0x6000, 100),
        wr(0x6100, 8 + 300),
        wr(0x20_8000, 724),
    ];
    assert_eq!(submit(&mem, &luns, &descs), 108 + 1024);
    let mut back = vec![0u8; 1024];
    mem.read_slice(&mut back[..300], GuestAddress(0x6108))
        .unwrap();
    mem.read_slice(&mut back[300..], GuestAddress(0x20_8000))
        .unwrap();
    assert_eq!(back, data);
}

#[test]
fn zero_length_descriptors_are_harmless() {
    let mem = guest_memory();
    let luns = luns(1);
    put(&mem, REQ, &cmd_req(lun_field(0, 0), 7, &INQUIRY));
    let descs = [
        rd(REQ, 0),
        rd(REQ, 51),
        rd(0xdead_0000_0000, 0),
        wr(RESP, 108),
        wr(0xdead_0000_0000, 0),
        wr(DATA, 36),
    ];
    assert_eq!(submit(&mem, &luns, &descs), 108 + 36);
    assert_eq!(read_resp(&mem, RESP), ok_resp(0));
}

#[test]
fn data_in_smaller_than_a_read_is_overrun() {
    let mem = guest_memory();
    let luns = luns(1);
    let descs = simple(
        &mem,
        lun_field(0, 0),
        &[0x28, 0, 0, 0, 0, 0, 0, 0, 2, 0],
        512,
    );
    assert_eq!(submit(&mem, &luns, &descs), 108);
    assert_eq!(read_resp(&mem, RESP).response, VIRTIO_SCSI_S_OVERRUN as u8);
}

fn failure() -> Resp {
    Resp {
        response: VIRTIO_SCSI_S_FAILURE as u8,
        ..ok_resp(0)
    }
}

/// Poison the response area so we can tell whether it was written.
fn poison(mem: &GuestMemoryMmap) {
    put(mem, RESP, &[0xAA; 108]);
}

#[test]
fn malformed_chains_fail_with_failure_when_they_can() {
    let mem = guest_memory();
    let luns = luns(1);
    put(&mem, REQ, &cmd_req(lun_field(0, 0), 7, &INQUIRY));
    let cases: Vec<(&str, Vec<Descriptor>)> = vec![
        (
            "readable after writable",
            vec![rd(REQ, 51), wr(RESP, 108), rd(DATA, 16)],
        ),
        (
            "readable in the hole",
            vec![rd(0x10_0000, 51), wr(RESP, 108)],
        ),
        (
            "readable past the end",
            vec![rd(0x2F_FFF0, 51), wr(RESP, 108)],
        ),
        (
            "readable address wraps",
            vec![rd(u64::MAX - 10, 51), wr(RESP, 108)],
        ),
        ("short request header", vec![rd(REQ, 50), wr(RESP, 108)]),
        ("no request header", vec![wr(RESP, 108)]),
        ("short response", vec![rd(REQ, 51), wr(RESP, 107)]),
        (
            "data-in outside memory",
            vec![rd(REQ, 51), wr(RESP, 108), wr(0x40_0000, 36)],
        ),
    ];
    for (what, descs) in cases {
        poison(&mem);
        assert_eq!(submit(&mem, &luns, &descs), 12, "{what}");
        let r = read_resp(&mem, RESP);
        assert_eq!(
            (r.sense_len, r.resid, r.status, r.response),
            (0, 0, 0, VIRTIO_SCSI_S_FAILURE as u8),
            "{what}"
        );
    }
    assert_eq!(read_resp(&mem, RESP), failure());
}

#[test]
fn malformed_chains_without_room_for_a_response_are_dropped() {
    let mem = guest_memory();
    let luns = luns(1);
    put(&mem, REQ, &cmd_req(lun_field(0, 0), 7, &INQUIRY));
    let cases: Vec<(&str, Vec<Descriptor>)> = vec![
        ("no writable part", vec![rd(REQ, 51)]),
        ("writable too short", vec![rd(0x10_0000, 51), wr(RESP, 11)]),
        (
            "writable outside memory",
            vec![rd(REQ, 51), wr(0x10_0000, 108)],
        ),
        ("nothing", vec![]),
    ];
    for (what, descs) in cases {
        poison(&mem);
        assert_eq!(submit(&mem, &luns, &descs), 0, "{what}");
        let mut b = [0u8; 108];
        mem.read_slice(&mut b, GuestAddress(RESP)).unwrap();
        assert_eq!(b, [0xAA; 108], "{what}: response area was written");
    }
}

#[test]
fn overlong_chains_are_malformed() {
    let mem = guest_memory();
    let mut descs = vec![rd(REQ, 51)];
    descs.extend(std::iter::repeat_n(wr(RESP, 1), 1100));
    let chain = Chain::parse(&mem, descs);
    assert_eq!(chain.error, Some(ChainError::TooLong));
}

#[test]
fn chain_parse_keeps_writable_segments_before_a_bad_one() {
    let mem = guest_memory();
    let chain = Chain::parse(
        &mem,
        [rd(REQ, 51), wr(RESP, 20), wr(0x10_0000, 8), wr(DATA, 100)],
    );
    assert_eq!(
        chain.writable.segments(),
        &[Segment {
            addr: GuestAddress(RESP),
            len: 20
        }]
    );
    assert!(matches!(
        chain.error,
        Some(ChainError::OutsideMemory { index: 2, .. })
    ));
}

#[test]
fn driver_chosen_header_sizes_are_honoured() {
    let mem = guest_memory();
    let luns = luns(1);
    let sizes = HeaderSizes {
        cdb_size: 16,
        sense_size: 32,
    };
    let mut req = cmd_req(lun_field(0, 0), 1, &INQUIRY);
    req.truncate(19 + 16);
    put(&mem, REQ, &req);
    let descs = [rd(REQ, 35), wr(RESP, 12 + 32 + 36)];
    let used = process_command(&mem, descs, &luns, sizes, &mut Vec::new());
    assert_eq!(used, 12 + 32 + 36);
    let mut data = [0u8; 36];
    mem.read_slice(&mut data, GuestAddress(RESP + 44)).unwrap();
    assert_eq!(&data[8..16], b"OXVM    ");

    // A CDB area shorter than the command needs: INVALID FIELD IN CDB, and sense is
    // cut to sense_size.
    let sizes = HeaderSizes {
        cdb_size: 6,
        sense_size: 8,
    };
    let mut req = cmd_req(lun_field(0, 0), 1, &[0x28, 0, 0, 0, 0, 0]);
    req.truncate(19 + 6);
    put(&mem, REQ, &req);
    let descs = [rd(REQ, 25), wr(RESP, 12 + 8 + 512)];
    assert_eq!(
        process_command(&mem, descs, &luns, sizes, &mut Vec::new()),
        20
    );
    let r = read_resp(&mem, RESP);
    assert_eq!((r.status, r.sense_len), (2, 8));
    assert_eq!(r.sense, fixed_sense(5, 0x24, 0)[..8]);
}

// ---- control queue ----

fn tmf(subtype: u32, lun: [u8; 8]) -> Vec<u8> {
    let mut r = Vec::new();
    r.extend_from_slice(&0u32.to_le_bytes());
    r.extend_from_slice(&subtype.to_le_bytes());
    r.extend_from_slice(&lun);
    r.extend_from_slice(&99u64.to_le_bytes());
    r
}

fn control(
    mem: &GuestMemoryMmap,
    luns: &[Mutex<Lun>],
    req: &[u8],
    resp_len: u32,
) -> (u32, Vec<u8>) {
    put(mem, REQ, req);
    put(mem, RESP, &[0xAA; 8]);
    let used = process_control(mem, [rd(REQ, req.len() as u32), wr(RESP, resp_len)], luns);
    let mut b = vec![0u8; resp_len as usize];
    mem.read_slice(&mut b, GuestAddress(RESP)).unwrap();
    (used, b)
}

#[test]
fn task_management_functions() {
    let mem = guest_memory();
    let luns = luns(1);
    // ABORT TASK, ABORT TASK SET, CLEAR TASK SET, I_T NEXUS RESET, LUN RESET, QUERY
    // TASK, QUERY TASK SET: all complete.
    for subtype in [0, 1, 3, 4, 5, 6, 7] {
        assert_eq!(
            control(&mem, &luns, &tmf(subtype, lun_field(0, 0)), 1),
            (1, vec![0]),
            "subtype {subtype}"
        );
    }
    // CLEAR ACA and unknown subtypes are rejected.
    for subtype in [2, 8, 1000] {
        assert_eq!(
            control(&mem, &luns, &tmf(subtype, lun_field(0, 0)), 1),
            (1, vec![VIRTIO_SCSI_S_FUNCTION_REJECTED as u8])
        );
    }
    assert_eq!(
        control(&mem, &luns, &tmf(5, lun_field(1, 0)), 1),
        (1, vec![VIRTIO_SCSI_S_BAD_TARGET as u8])
    );
}

#[test]
fn asynchronous_notification_requests() {
    let mem = guest_memory();
    let luns = luns(1);
    for kind in [1u32, 2] {
        let mut req = kind.to_le_bytes().to_vec();
        req.extend_from_slice(&lun_field(0, 0));
        req.extend_from_slice(&0xffu32.to_le_bytes());
        assert_eq!(control(&mem, &luns, &req, 5), (5, vec![0, 0, 0, 0, 0]));
    }
}

#[test]
fn bad_control_requests() {
    let mem = guest_memory();
    let luns = luns(1);
    let failure = VIRTIO_SCSI_S_FAILURE as u8;
    // Unknown type.
    let mut req = 7u32.to_le_bytes().to_vec();
    req.extend_from_slice(&[0; 20]);
    assert_eq!(control(&mem, &luns, &req, 1), (1, vec![failure]));
    // TMF too short.
    let req = &tmf(0, lun_field(0, 0))[..20];
    assert_eq!(control(&mem, &luns, req, 1), (1, vec![failure]));
    // No room for the response.
    assert_eq!(control(&mem, &luns, &tmf(0, lun_field(0, 0)), 0).0, 0);
    // Readable part outside memory.
    let used = process_control(&mem, [rd(0x10_0000, 24), wr(RESP, 1)], &luns);
    assert_eq!(used, 1);
    let mut b = [0u8; 1];
    mem.read_slice(&mut b, GuestAddress(RESP)).unwrap();
    assert_eq!(b, [failure]);
}
