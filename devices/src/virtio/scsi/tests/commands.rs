//! Command emulation: byte-exact data formats, sense for every error class, and the
//! data path against the in-memory disk.

use super::{fixed_sense, run, DiskSpec};
use crate::block::IoDirection;
use crate::virtio::scsi::commands::{
    CmdError, Transferred, MAX_TRANSFER_BLOCKS, MAX_UNMAP_BLOCKS, MAX_WRITE_SAME_BLOCKS,
};
use crate::virtio::scsi::sense::Sense;

const ILLEGAL_REQUEST: u8 = 5;

fn check(result: Result<Transferred, CmdError>) -> [u8; 18] {
    match result {
        Err(CmdError::Check(s)) => s.to_fixed(),
        other => panic!("expected CHECK CONDITION, got {other:?}"),
    }
}

/// Sense for INVALID FIELD IN CDB pointing at `byte`.
fn invalid_field(byte: u8) -> [u8; 18] {
    let mut s = fixed_sense(ILLEGAL_REQUEST, 0x24, 0);
    s[15] = 0xC0; // SKSV | C/D
    s[17] = byte;
    s
}

fn be32(v: u32) -> [u8; 4] {
    v.to_be_bytes()
}

// ---- INQUIRY ----

#[test]
fn standard_inquiry_is_byte_exact() {
    let (mut lun, _) = DiskSpec::default().lun();
    let (r, data) = run(&mut lun, &[0x12, 0, 0, 0, 0xff, 0], &[], 255);
    let mut expected = vec![0x00, 0x00, 0x06, 0x02, 31, 0x00, 0x00, 0x02];
    expected.extend_from_slice(b"OXVM    ");
    expected.extend_from_slice(b"VIRTUAL DISK    ");
    expected.extend_from_slice(b"0001");
    assert_eq!(data, expected);
    assert_eq!(r.unwrap().data_in, 36);
}

#[test]
fn inquiry_is_truncated_to_the_allocation_length() {
    let (mut lun, _) = DiskSpec::default().lun();
    let (r, data) = run(&mut lun, &[0x12, 0, 0, 0, 5, 0], &[], 255);
    assert_eq!(r.unwrap().data_in, 5);
    assert_eq!(data, [0x00, 0x00, 0x06, 0x02, 31]);
    // And to the guest's buffer.
    let (r, _) = run(&mut lun, &[0x12, 0, 0, 0, 0xff, 0], &[], 10);
    assert_eq!(r.unwrap().data_in, 10);
}

#[test]
fn vpd_supported_pages() {
    let (mut lun, _) = DiskSpec::default().lun();
    let (_, data) = run(&mut lun, &[0x12, 1, 0x00, 0, 0xff, 0], &[], 255);
    assert_eq!(data, [0, 0x00, 0, 6, 0x00, 0x80, 0x83, 0xB0, 0xB1, 0xB2]);

    // Without a serial, page 0x80 is neither listed nor served.
    let (mut lun, _) = DiskSpec {
        serial: None,
        ..Default::default()
    }
    .lun();
    let (_, data) = run(&mut lun, &[0x12, 1, 0x00, 0, 0xff, 0], &[], 255);
    assert_eq!(data, [0, 0x00, 0, 5, 0x00, 0x83, 0xB0, 0xB1, 0xB2]);
    let (r, _) = run(&mut lun, &[0x12, 1, 0x80, 0, 0xff, 0], &[], 255);
    assert_eq!(check(r), invalid_field(2));
}

#[test]
fn vpd_unit_serial_number() {
    let (mut lun, _) = DiskSpec::default().lun();
    let (_, data) = run(&mut lun, &[0x12, 1, 0x80, 0, 0xff, 0], &[], 255);
    let mut expected = vec![0, 0x80, 0, 7];
    expected.extend_from_slice(b"SN-0001");
    assert_eq!(data, expected);
}

#[test]
fn vpd_device_identification() {
    let (mut lun, _) = DiskSpec::default().lun();
    let (_, data) = run(&mut lun, &[0x12, 1, 0x83, 0, 0xff, 0], &[], 255);
    // T10 vendor ID designator: 4-byte header + "OXVM    " + serial (7) = 19 bytes;
    // NAA designator: 4 + 8 = 12 bytes.
    assert_eq!(&data[..4], &[0, 0x83, 0, 31]);
    assert_eq!(&data[4..8], &[0x02, 0x01, 0x00, 15]);
    assert_eq!(&data[8..16], b"OXVM    ");
    assert_eq!(&data[16..23], b"SN-0001");
    assert_eq!(&data[23..27], &[0x01, 0x03, 0x00, 8]);
    assert_eq!(data[27] >> 4, 0x3, "NAA locally assigned");
    assert_eq!(data.len(), 35);

    // Stable: the same identity gives the same NAA, another identity another one.
    let (mut again, _) = DiskSpec::default().lun();
    let (_, data2) = run(&mut again, &[0x12, 1, 0x83, 0, 0xff, 0], &[], 255);
    assert_eq!(data, data2);
    let (mut other, _) = DiskSpec {
        serial: Some("SN-0002".into()),
        ..Default::default()
    }
    .lun();
    let (_, data3) = run(&mut other, &[0x12, 1, 0x83, 0, 0xff, 0], &[], 255);
    assert_ne!(data[27..35], data3[27..35]);
}

#[test]
fn vpd_block_limits() {
    let (mut lun, _) = DiskSpec::default().lun();
    let (_, d) = run(&mut lun, &[0x12, 1, 0xB0, 0, 0xff, 0], &[], 255);
    let mut expected = vec![0u8; 64];
    expected[1] = 0xB0;
    expected[3] = 0x3C;
    expected[4] = 0x01; // WSNZ
    expected[8..12].copy_from_slice(&be32(MAX_TRANSFER_BLOCKS));
    expected[20..24].copy_from_slice(&be32(MAX_UNMAP_BLOCKS));
    expected[24..28].copy_from_slice(&be32(256));
    expected[28..32].copy_from_slice(&be32(8));
    expected[36..44].copy_from_slice(&u64::from(MAX_WRITE_SAME_BLOCKS).to_be_bytes());
    assert_eq!(d, expected);

    // Without discard: no unmap limits, WRITE SAME still offered.
    let (mut lun, _) = DiskSpec {
        discard: false,
        ..Default::default()
    }
    .lun();
    let (_, d) = run(&mut lun, &[0x12, 1, 0xB0, 0, 0xff, 0], &[], 255);
    expected[20..32].fill(0);
    assert_eq!(d, expected);
}

#[test]
fn vpd_block_device_characteristics() {
    let (mut lun, _) = DiskSpec::default().lun();
    let (_, d) = run(&mut lun, &[0x12, 1, 0xB1, 0, 0xff, 0], &[], 255);
    let mut expected = vec![0u8; 64];
    expected[1] = 0xB1;
    expected[3] = 0x3C;
    expected[5] = 0x01; // non-rotating
    assert_eq!(d, expected);
}

#[test]
fn vpd_logical_block_provisioning() {
    let (mut lun, _) = DiskSpec::default().lun();
    let (_, d) = run(&mut lun, &[0x12, 1, 0xB2, 0, 0xff, 0], &[], 255);
    assert_eq!(d, [0, 0xB2, 0, 4, 0, 0xE0, 0x02, 0]);
    let (mut lun, _) = DiskSpec {
        discard: false,
        ..Default::default()
    }
    .lun();
    let (_, d) = run(&mut lun, &[0x12, 1, 0xB2, 0, 0xff, 0], &[], 255);
    assert_eq!(d, [0, 0xB2, 0, 4, 0, 0, 0, 0]);
}

#[test]
fn inquiry_errors() {
    let (mut lun, _) = DiskSpec::default().lun();
    // Page code without EVPD.
    let (r, _) = run(&mut lun, &[0x12, 0, 0x80, 0, 0xff, 0], &[], 255);
    assert_eq!(check(r), invalid_field(2));
    // Unknown VPD page.
    let (r, _) = run(&mut lun, &[0x12, 1, 0x89, 0, 0xff, 0], &[], 255);
    assert_eq!(check(r), invalid_field(2));
    // CMDDT.
    let (r, _) = run(&mut lun, &[0x12, 2, 0, 0, 0xff, 0], &[], 255);
    assert_eq!(check(r), invalid_field(1));
    // NACA in the CONTROL byte.
    let (r, _) = run(&mut lun, &[0x12, 0, 0, 0, 0xff, 0x04], &[], 255);
    assert_eq!(check(r), invalid_field(5));
}

// ---- READ CAPACITY ----

#[test]
fn read_capacity_10() {
    let (mut lun, _) = DiskSpec::default().lun(); // 1 MiB = 2048 blocks
    let (r, d) = run(&mut lun, &[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[], 8);
    assert_eq!(d, [0, 0, 0x07, 0xFF, 0, 0, 0x02, 0x00]);
    assert_eq!(r.unwrap().data_in, 8);
    // PMI = 0 with a non-zero LBA.
    let (r, _) = run(&mut lun, &[0x25, 0, 0, 0, 0, 1, 0, 0, 0, 0], &[], 8);
    assert_eq!(check(r), invalid_field(2));
}

#[test]
fn read_capacity_10_saturates_for_huge_disks() {
    let (mut lun, _) = DiskSpec {
        size: 4 << 40, // 4 TiB: 2^33 blocks
        ..Default::default()
    }
    .lun();
    let (_, d) = run(&mut lun, &[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[], 8);
    assert_eq!(d, [0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0x02, 0x00]);
    let (_, d) = run(
        &mut lun,
        &[0x9E, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0],
        &[],
        32,
    );
    assert_eq!(&d[..8], &((1u64 << 33) - 1).to_be_bytes());
}

#[test]
fn read_capacity_16() {
    let (mut lun, _) = DiskSpec::default().lun();
    let cdb = [0x9E, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0];
    let (_, d) = run(&mut lun, &cdb, &[], 32);
    let mut expected = [0u8; 32];
    expected[6] = 0x07;
    expected[7] = 0xFF;
    expected[10] = 0x02;
    expected[14] = 0x80; // LBPME
    assert_eq!(d, expected);

    let (mut lun, _) = DiskSpec {
        discard: false,
        ..Default::default()
    }
    .lun();
    let (_, d) = run(&mut lun, &cdb, &[], 32);
    expected[14] = 0;
    assert_eq!(d, expected);

    // Allocation length 12: truncated.
    let cdb12 = [0x9E, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 12, 0, 0];
    let (r, d) = run(&mut lun, &cdb12, &[], 32);
    assert_eq!(r.unwrap().data_in, 12);
    assert_eq!(d, expected[..12]);

    // Another SERVICE ACTION IN service action.
    let (r, _) = run(
        &mut lun,
        &[0x9E, 0x12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0],
        &[],
        32,
    );
    assert_eq!(check(r), invalid_field(1));
}

// ---- MODE SENSE ----

fn caching_page(wce: bool) -> Vec<u8> {
    let mut p = vec![0u8; 20];
    p[0] = 0x08;
    p[1] = 0x12;
    if wce {
        p[2] = 0x04;
    }
    p
}

fn control_page() -> Vec<u8> {
    let mut p = vec![0u8; 12];
    p[0] = 0x0A;
    p[1] = 0x0A;
    p[3] = 0x10;
    p
}

#[test]
fn mode_sense_6_all_pages() {
    let (mut lun, _) = DiskSpec::default().lun();
    let (_, d) = run(&mut lun, &[0x1A, 0, 0x3F, 0, 0xff, 0], &[], 255);
    let mut expected = vec![43, 0, 0x10, 8];
    expected.extend_from_slice(&[0, 0, 0x08, 0x00, 0, 0, 0x02, 0x00]); // 2048 blocks of 512
    expected.extend(caching_page(true));
    expected.extend(control_page());
    assert_eq!(d, expected);
}

#[test]
fn mode_sense_6_caching_page_dbd_and_write_protect() {
    let (mut lun, _) = DiskSpec {
        read_only: true,
        volatile_cache: false,
        ..Default::default()
    }
    .lun();
    let (_, d) = run(&mut lun, &[0x1A, 0x08, 0x08, 0, 0xff, 0], &[], 255);
    let mut expected = vec![23, 0, 0x90, 0];
    expected.extend(caching_page(false));
    assert_eq!(d, expected);
}

#[test]
fn mode_sense_header_only_keeps_the_full_length() {
    // Linux first asks for the 4-byte header to learn the length.
    let (mut lun, _) = DiskSpec::default().lun();
    let (r, d) = run(&mut lun, &[0x1A, 0, 0x3F, 0, 4, 0], &[], 255);
    assert_eq!(r.unwrap().data_in, 4);
    assert_eq!(d, [43, 0, 0x10, 8]);
}

#[test]
fn mode_sense_10_long_lba_and_control_page() {
    let (mut lun, _) = DiskSpec::default().lun();
    let (_, d) = run(
        &mut lun,
        &[0x5A, 0x10, 0x0A, 0, 0, 0, 0, 0, 0xff, 0],
        &[],
        255,
    );
    let mut expected = vec![0, 34, 0, 0x10, 0x01, 0, 0, 16];
    let mut desc = [0u8; 16];
    desc[6] = 0x08; // 2048 blocks
    desc[14] = 0x02; // 512
    expected.extend_from_slice(&desc);
    expected.extend(control_page());
    assert_eq!(d, expected);

    // Without LLBAA: short descriptor, LONGLBA clear.
    let (_, d) = run(&mut lun, &[0x5A, 0, 0x08, 0, 0, 0, 0, 0, 0xff, 0], &[], 255);
    let mut expected = vec![0, 34, 0, 0x10, 0, 0, 0, 8];
    expected.extend_from_slice(&[0, 0, 0x08, 0x00, 0, 0, 0x02, 0x00]);
    expected.extend(caching_page(true));
    assert_eq!(d, expected);
}

#[test]
fn mode_sense_changeable_values_are_all_zero() {
    let (mut lun, _) = DiskSpec::default().lun();
    let (_, d) = run(&mut lun, &[0x1A, 0x08, 0x40 | 0x3F, 0, 0xff, 0], &[], 255);
    let mut expected = vec![35, 0, 0x10, 0];
    let mut caching = caching_page(false);
    caching[2] = 0;
    expected.extend(caching);
    let mut control = control_page();
    control[3] = 0;
    expected.extend(control);
    assert_eq!(d, expected);
}

#[test]
fn mode_sense_errors() {
    let (mut lun, _) = DiskSpec::default().lun();
    // Saved values.
    let (r, _) = run(&mut lun, &[0x1A, 0, 0xC0 | 0x08, 0, 0xff, 0], &[], 255);
    assert_eq!(check(r), fixed_sense(ILLEGAL_REQUEST, 0x39, 0));
    // Unsupported page.
    let (r, _) = run(&mut lun, &[0x1A, 0, 0x1C, 0, 0xff, 0], &[], 255);
    assert_eq!(check(r), invalid_field(2));
    // Unsupported subpage.
    let (r, _) = run(&mut lun, &[0x1A, 0, 0x08, 0x01, 0xff, 0], &[], 255);
    assert_eq!(check(r), invalid_field(3));
    // All pages and subpages is fine.
    let (r, _) = run(&mut lun, &[0x1A, 0, 0x3F, 0xFF, 0xff, 0], &[], 255);
    assert!(r.is_ok());
}

// ---- REPORT LUNS, REQUEST SENSE, TEST UNIT READY, START STOP ----

#[test]
fn report_luns() {
    let (mut lun, _) = DiskSpec::default().lun();
    let (_, d) = run(&mut lun, &[0xA0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0], &[], 256);
    assert_eq!(d, [0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    // Well-known LUNs only: an empty list.
    let (_, d) = run(&mut lun, &[0xA0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0], &[], 256);
    assert_eq!(d, [0, 0, 0, 0, 0, 0, 0, 0]);
    let (r, _) = run(
        &mut lun,
        &[0xA0, 0, 0x10, 0, 0, 0, 0, 0, 1, 0, 0, 0],
        &[],
        256,
    );
    assert_eq!(check(r), invalid_field(2));
}

#[test]
fn request_sense_reports_no_sense() {
    let (mut lun, _) = DiskSpec::default().lun();
    let (_, d) = run(&mut lun, &[0x03, 0, 0, 0, 252, 0], &[], 252);
    assert_eq!(d, fixed_sense(0, 0, 0));
    let (r, _) = run(&mut lun, &[0x03, 1, 0, 0, 252, 0], &[], 252);
    assert_eq!(check(r), invalid_field(1));
}

#[test]
fn test_unit_ready_and_start_stop() {
    let (mut lun, state) = DiskSpec::default().lun();
    let (r, d) = run(&mut lun, &[0, 0, 0, 0, 0, 0], &[], 0);
    assert_eq!(r.unwrap(), Transferred::default());
    assert!(d.is_empty());
    // START: nothing to do.
    let (r, _) = run(&mut lun, &[0x1B, 0, 0, 0, 0x01, 0], &[], 0);
    assert!(r.is_ok());
    assert_eq!(state.lock().unwrap().flushes, 0);
    // STOP flushes.
    let (r, _) = run(&mut lun, &[0x1B, 0, 0, 0, 0x00, 0], &[], 0);
    assert!(r.is_ok());
    assert_eq!(state.lock().unwrap().flushes, 1);
    // Eject.
    let (r, _) = run(&mut lun, &[0x1B, 0, 0, 0, 0x02, 0], &[], 0);
    assert_eq!(check(r), invalid_field(4));
    // PREVENT ALLOW MEDIUM REMOVAL: allow is fine, prevent is not.
    let (r, _) = run(&mut lun, &[0x1E, 0, 0, 0, 0, 0], &[], 0);
    assert!(r.is_ok());
    let (r, _) = run(&mut lun, &[0x1E, 0, 0, 0, 1, 0], &[], 0);
    assert_eq!(check(r), invalid_field(4));
}

// ---- Errors common to all commands ----

#[test]
fn unsupported_opcodes_are_invalid_command_operation_code() {
    let (mut lun, _) = DiskSpec::default().lun();
    // MODE SELECT(6), LOG SENSE, MAINTENANCE IN, VERIFY(10), ATA PASS-THROUGH(16),
    // a vendor-specific opcode.
    for op in [0x15u8, 0x4D, 0xA3, 0x2F, 0x85, 0xC0, 0xFF] {
        let (r, _) = run(
            &mut lun,
            &[op, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            &[],
            512,
        );
        assert_eq!(
            check(r),
            fixed_sense(ILLEGAL_REQUEST, 0x20, 0),
            "opcode {op:#x}"
        );
    }
    assert_eq!(
        lun.metrics
            .check_conditions
            .load(std::sync::atomic::Ordering::Relaxed),
        7
    );
}

// ---- READ / WRITE ----

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn write_read_round_trip_with_every_cdb_size() {
    let (mut lun, state) = DiskSpec::default().lun();
    let data = pattern(2 * 512, 7);

    // WRITE(10) LBA 5, 2 blocks.
    let (r, _) = run(&mut lun, &[0x2A, 0, 0, 0, 0, 5, 0, 0, 2, 0], &data, 0);
    assert_eq!(r.unwrap().data_out, 1024);
    assert_eq!(state.lock().unwrap().writes, vec![(5 * 512, 1024)]);
    // Throttling (iotune) sees the request once.
    assert_eq!(
        state.lock().unwrap().admitted,
        vec![(IoDirection::Write, 1024)]
    );

    // READ(16) of the same blocks.
    let (r, d) = run(
        &mut lun,
        &[0x88, 0, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 2, 0, 0],
        &[],
        1024,
    );
    assert_eq!(r.unwrap().data_in, 1024);
    assert_eq!(d, data);
    assert_eq!(
        state.lock().unwrap().admitted.last(),
        Some(&(IoDirection::Read, 1024))
    );

    // READ(6) of LBA 6 only.
    let (_, d) = run(&mut lun, &[0x08, 0, 0, 6, 1, 0], &[], 512);
    assert_eq!(d, data[512..]);

    // WRITE(6) with transfer length 0 means 256 blocks.
    let big = pattern(256 * 512, 3);
    let (r, _) = run(&mut lun, &[0x0A, 0, 0, 100, 0, 0], &big, 0);
    assert_eq!(r.unwrap().data_out, 256 * 512);
    let (_, d) = run(
        &mut lun,
        &[0x28, 0, 0, 0, 0, 100, 0, 1, 0, 0],
        &[],
        256 * 512,
    );
    assert_eq!(d, big);

    // WRITE(16) at the last block.
    let last = pattern(512, 9);
    let (r, _) = run(
        &mut lun,
        &[0x8A, 0, 0, 0, 0, 0, 0, 0, 0x07, 0xFF, 0, 0, 0, 1, 0, 0],
        &last,
        0,
    );
    assert!(r.is_ok());
    let (_, d) = run(&mut lun, &[0x28, 0, 0, 0, 0x07, 0xFF, 0, 0, 1, 0], &[], 512);
    assert_eq!(d, last);

    let m = &lun.metrics;
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(m.write_ops.load(Relaxed), 3);
    assert_eq!(m.write_bytes.load(Relaxed), 1024 + 256 * 512 + 512);
    assert_eq!(m.read_ops.load(Relaxed), 4);
}

#[test]
fn large_transfers_cross_the_bounce_buffer() {
    let (mut lun, _) = DiskSpec {
        size: 8 << 20,
        ..Default::default()
    }
    .lun();
    let data = pattern(3 * 1024 * 1024 + 512, 1); // > 3 chunks
    let blocks = (data.len() / 512) as u16;
    let [hi, lo] = blocks.to_be_bytes();
    let (r, _) = run(&mut lun, &[0x2A, 0, 0, 0, 0, 1, 0, hi, lo, 0], &data, 0);
    assert!(r.is_ok());
    let (_, d) = run(
        &mut lun,
        &[0x28, 0, 0, 0, 0, 1, 0, hi, lo, 0],
        &[],
        data.len(),
    );
    assert_eq!(d, data);
}

#[test]
fn fua_write_flushes_when_the_cache_is_volatile() {
    let (mut lun, state) = DiskSpec::default().lun();
    let (r, _) = run(
        &mut lun,
        &[0x2A, 0x08, 0, 0, 0, 0, 0, 0, 1, 0],
        &[1; 512],
        0,
    );
    assert!(r.is_ok());
    assert_eq!(state.lock().unwrap().flushes, 1);

    let (mut lun, state) = DiskSpec {
        volatile_cache: false,
        ..Default::default()
    }
    .lun();
    let (r, _) = run(
        &mut lun,
        &[0x2A, 0x08, 0, 0, 0, 0, 0, 0, 1, 0],
        &[1; 512],
        0,
    );
    assert!(r.is_ok());
    assert_eq!(state.lock().unwrap().flushes, 0);
}

#[test]
fn zero_length_transfers_do_nothing() {
    let (mut lun, state) = DiskSpec::default().lun();
    let (r, _) = run(&mut lun, &[0x2A, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[], 0);
    assert_eq!(r.unwrap(), Transferred::default());
    assert!(state.lock().unwrap().writes.is_empty());
}

#[test]
fn lba_out_of_range() {
    let (mut lun, state) = DiskSpec::default().lun();
    let oor = fixed_sense(ILLEGAL_REQUEST, 0x21, 0);
    // First block past the end.
    let (r, _) = run(&mut lun, &[0x28, 0, 0, 0, 0x08, 0x00, 0, 0, 1, 0], &[], 512);
    assert_eq!(check(r), oor);
    // Straddling the end.
    let (r, _) = run(
        &mut lun,
        &[0x2A, 0, 0, 0, 0x07, 0xFF, 0, 0, 2, 0],
        &[0; 1024],
        0,
    );
    assert_eq!(check(r), oor);
    // LBA + length overflowing 64 bits.
    let (r, _) = run(
        &mut lun,
        &[
            0x88, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 2, 0, 0,
        ],
        &[],
        1024,
    );
    assert_eq!(check(r), oor);
    assert!(state.lock().unwrap().writes.is_empty());
}

#[test]
fn transfer_larger_than_the_limit_is_an_invalid_field() {
    let (mut lun, _) = DiskSpec::default().lun();
    let (r, _) = run(
        &mut lun,
        &[0x88, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0],
        &[],
        512,
    );
    assert_eq!(check(r), invalid_field(10));
}

#[test]
fn protection_information_is_refused() {
    let (mut lun, _) = DiskSpec::default().lun();
    let (r, _) = run(&mut lun, &[0x28, 0x20, 0, 0, 0, 0, 0, 0, 1, 0], &[], 512);
    assert_eq!(check(r), invalid_field(1));
}

#[test]
fn buffers_too_small_for_the_transfer_overrun() {
    let (mut lun, state) = DiskSpec::default().lun();
    let (r, _) = run(&mut lun, &[0x28, 0, 0, 0, 0, 0, 0, 0, 2, 0], &[], 512);
    assert_eq!(r, Err(CmdError::Overrun));
    let (r, _) = run(&mut lun, &[0x2A, 0, 0, 0, 0, 0, 0, 0, 2, 0], &[0; 512], 0);
    assert_eq!(r, Err(CmdError::Overrun));
    assert!(state.lock().unwrap().writes.is_empty());
}

#[test]
fn writes_to_a_read_only_lun_are_data_protect() {
    let (mut lun, _) = DiskSpec {
        read_only: true,
        ..Default::default()
    }
    .lun();
    let wp = fixed_sense(7, 0x27, 0);
    let (r, _) = run(&mut lun, &[0x2A, 0, 0, 0, 0, 0, 0, 0, 1, 0], &[0; 512], 0);
    assert_eq!(check(r), wp);
    let (r, _) = run(&mut lun, &[0x0A, 0, 0, 0, 1, 0], &[0; 512], 0);
    assert_eq!(check(r), wp);
    let unmap = unmap_list(&[(0, 1)]);
    let (r, _) = run(&mut lun, &unmap_cdb(unmap.len()), &unmap, 0);
    assert_eq!(check(r), wp);
    let (r, _) = run(&mut lun, &ws16(0x08, 0, 1), &[0; 512], 0);
    assert_eq!(check(r), wp);
    // Reads still work.
    let (r, _) = run(&mut lun, &[0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0], &[], 512);
    assert!(r.is_ok());
}

#[test]
fn io_errors_are_medium_errors() {
    let (mut lun, state) = DiskSpec::default().lun();
    state.lock().unwrap().fail_read = true;
    let (r, _) = run(&mut lun, &[0x28, 0, 0, 0, 0, 42, 0, 0, 1, 0], &[], 512);
    let mut expected = fixed_sense(3, 0x11, 0);
    expected[0] = 0xF0; // VALID: INFORMATION holds the LBA
    expected[6] = 42;
    assert_eq!(check(r), expected);

    state.lock().unwrap().fail_write = Some(libc::EIO);
    let (r, _) = run(&mut lun, &[0x2A, 0, 0, 0, 0, 43, 0, 0, 1, 0], &[0; 512], 0);
    let mut expected = fixed_sense(3, 0x0C, 0);
    expected[0] = 0xF0;
    expected[6] = 43;
    assert_eq!(check(r), expected);

    // Host out of space: thin provisioning exhaustion, not a medium error.
    state.lock().unwrap().fail_write = Some(libc::ENOSPC);
    let (r, _) = run(&mut lun, &[0x2A, 0, 0, 0, 0, 43, 0, 0, 1, 0], &[0; 512], 0);
    assert_eq!(check(r), fixed_sense(7, 0x27, 0x07));

    state.lock().unwrap().fail_flush = true;
    let (r, _) = run(&mut lun, &[0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[], 0);
    assert_eq!(check(r), fixed_sense(3, 0x0C, 0));

    state.lock().unwrap().fail_discard = true;
    let list = unmap_list(&[(8, 8)]);
    let (r, _) = run(&mut lun, &unmap_cdb(list.len()), &list, 0);
    let mut expected = fixed_sense(3, 0x0C, 0);
    expected[0] = 0xF0;
    expected[6] = 8;
    assert_eq!(check(r), expected);

    assert_eq!(
        lun.metrics
            .io_errors
            .load(std::sync::atomic::Ordering::Relaxed),
        5
    );
}

#[test]
fn sense_information_is_left_unset_past_32_bits() {
    let s = Sense::read_error(1 << 32).to_fixed();
    assert_eq!(s, fixed_sense(3, 0x11, 0));
}

// ---- SYNCHRONIZE CACHE ----

#[test]
fn synchronize_cache_flushes_the_backend() {
    let (mut lun, state) = DiskSpec::default().lun();
    let (r, _) = run(&mut lun, &[0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[], 0);
    assert!(r.is_ok());
    let (r, _) = run(
        &mut lun,
        &[0x91, 0x02, 0, 0, 0, 0, 0, 0, 0, 16, 0, 0, 0, 16, 0, 0],
        &[],
        0,
    );
    assert!(r.is_ok());
    assert_eq!(state.lock().unwrap().flushes, 2);
    assert_eq!(
        lun.metrics
            .flushes
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
    // Range past the end.
    let (r, _) = run(&mut lun, &[0x35, 0, 0, 0, 0x08, 0x00, 0, 0, 0, 0], &[], 0);
    assert_eq!(check(r), fixed_sense(ILLEGAL_REQUEST, 0x21, 0));
    assert_eq!(state.lock().unwrap().flushes, 2);
}

// ---- UNMAP ----

fn unmap_cdb(param_len: usize) -> Vec<u8> {
    let [hi, lo] = (param_len as u16).to_be_bytes();
    vec![0x42, 0, 0, 0, 0, 0, 0, hi, lo, 0]
}

fn unmap_list(ranges: &[(u64, u32)]) -> Vec<u8> {
    let bd_len = ranges.len() * 16;
    let mut l = Vec::new();
    l.extend_from_slice(&((bd_len + 6) as u16).to_be_bytes());
    l.extend_from_slice(&(bd_len as u16).to_be_bytes());
    l.extend_from_slice(&[0; 4]);
    for &(lba, n) in ranges {
        l.extend_from_slice(&lba.to_be_bytes());
        l.extend_from_slice(&n.to_be_bytes());
        l.extend_from_slice(&[0; 4]);
    }
    l
}

#[test]
fn unmap_discards_every_descriptor() {
    let (mut lun, state) = DiskSpec::default().lun();
    let list = unmap_list(&[(8, 16), (100, 0), (2040, 8)]);
    let (r, _) = run(&mut lun, &unmap_cdb(list.len()), &list, 0);
    assert_eq!(r.unwrap().data_out, list.len() as u64);
    assert_eq!(
        state.lock().unwrap().discards,
        vec![(8 * 512, 16 * 512), (2040 * 512, 8 * 512)]
    );
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(lun.metrics.unmaps.load(Relaxed), 1);
    assert_eq!(lun.metrics.unmap_bytes.load(Relaxed), 24 * 512);
}

#[test]
fn unmap_validates_the_whole_list_first() {
    let (mut lun, state) = DiskSpec::default().lun();
    let list = unmap_list(&[(0, 8), (2047, 2)]);
    let (r, _) = run(&mut lun, &unmap_cdb(list.len()), &list, 0);
    assert_eq!(check(r), fixed_sense(ILLEGAL_REQUEST, 0x21, 0));
    assert!(state.lock().unwrap().discards.is_empty());
}

#[test]
fn unmap_parameter_errors() {
    let (mut lun, state) = DiskSpec::default().lun();
    // Parameter list length 0: nothing to do.
    let (r, _) = run(&mut lun, &unmap_cdb(0), &[], 0);
    assert_eq!(r.unwrap(), Transferred::default());
    // Shorter than the header.
    let (r, _) = run(&mut lun, &unmap_cdb(4), &[0; 4], 0);
    assert_eq!(check(r), fixed_sense(ILLEGAL_REQUEST, 0x1A, 0));
    // Data-out shorter than the parameter list length.
    let list = unmap_list(&[(0, 8)]);
    let (r, _) = run(&mut lun, &unmap_cdb(list.len()), &list[..20], 0);
    assert_eq!(r, Err(CmdError::Overrun));
    // A block descriptor length longer than what was sent: the cut descriptor is ignored.
    let mut list = unmap_list(&[(0, 8), (16, 8)]);
    list.truncate(8 + 16 + 10);
    let (r, _) = run(&mut lun, &unmap_cdb(list.len()), &list, 0);
    assert!(r.is_ok());
    assert_eq!(state.lock().unwrap().discards, vec![(0, 8 * 512)]);
    // Too many descriptors.
    let many: Vec<(u64, u32)> = (0..257).map(|i| (i, 1)).collect();
    let list = unmap_list(&many);
    let (r, _) = run(&mut lun, &unmap_cdb(list.len()), &list, 0);
    let mut expected = fixed_sense(ILLEGAL_REQUEST, 0x26, 0);
    expected[15] = 0x80; // SKSV, C/D = 0: parameter list
    expected[17] = 2;
    assert_eq!(check(r), expected);
    // ANCHOR.
    let list = unmap_list(&[(0, 8)]);
    let mut cdb = unmap_cdb(list.len());
    cdb[1] = 1;
    let (r, _) = run(&mut lun, &cdb, &list, 0);
    assert_eq!(check(r), invalid_field(1));
}

#[test]
fn unmap_total_is_limited() {
    let (mut lun, state) = DiskSpec {
        size: 4 << 30,
        ..Default::default()
    }
    .lun();
    let list = unmap_list(&[(0, MAX_UNMAP_BLOCKS), (MAX_UNMAP_BLOCKS as u64, 1)]);
    let (r, _) = run(&mut lun, &unmap_cdb(list.len()), &list, 0);
    let mut expected = fixed_sense(ILLEGAL_REQUEST, 0x26, 0);
    expected[15] = 0x80;
    expected[17] = 8 + 16 + 8;
    assert_eq!(check(r), expected);
    assert!(state.lock().unwrap().discards.is_empty());
}

#[test]
fn unmap_needs_discard_enabled() {
    let (mut lun, _) = DiskSpec {
        discard: false,
        ..Default::default()
    }
    .lun();
    let list = unmap_list(&[(0, 8)]);
    let (r, _) = run(&mut lun, &unmap_cdb(list.len()), &list, 0);
    assert_eq!(check(r), fixed_sense(ILLEGAL_REQUEST, 0x20, 0));
}

// ---- WRITE SAME ----

fn ws16(flags: u8, lba: u64, blocks: u32) -> Vec<u8> {
    let mut c = vec![0x93, flags];
    c.extend_from_slice(&lba.to_be_bytes());
    c.extend_from_slice(&blocks.to_be_bytes());
    c.extend_from_slice(&[0, 0]);
    c
}

fn ws10(flags: u8, lba: u32, blocks: u16) -> Vec<u8> {
    let mut c = vec![0x41, flags];
    c.extend_from_slice(&lba.to_be_bytes());
    c.push(0);
    c.extend_from_slice(&blocks.to_be_bytes());
    c.push(0);
    c
}

#[test]
fn write_same_16_with_unmap_is_write_zeroes_with_unmap() {
    let (mut lun, state) = DiskSpec::default().lun();
    let (r, _) = run(&mut lun, &ws16(0x08, 64, 128), &[0; 512], 0);
    assert_eq!(r.unwrap().data_out, 512);
    assert_eq!(
        state.lock().unwrap().write_zeroes,
        vec![(64 * 512, 128 * 512, true)]
    );
    assert_eq!(
        lun.metrics
            .unmaps
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[test]
fn write_same_zeroes_without_unmap_or_without_discard() {
    let (mut lun, state) = DiskSpec::default().lun();
    let (r, _) = run(&mut lun, &ws10(0, 1, 2), &[0; 512], 0);
    assert!(r.is_ok());
    // NDOB: no data-out at all.
    let (r, _) = run(&mut lun, &ws16(0x01, 3, 4), &[], 0);
    assert_eq!(r.unwrap().data_out, 0);
    assert_eq!(
        state.lock().unwrap().write_zeroes,
        vec![(512, 1024, false), (3 * 512, 4 * 512, false)]
    );

    let (mut lun, state) = DiskSpec {
        discard: false,
        ..Default::default()
    }
    .lun();
    let (r, _) = run(&mut lun, &ws16(0x08, 0, 8), &[0; 512], 0);
    assert!(r.is_ok());
    assert_eq!(
        state.lock().unwrap().write_zeroes,
        vec![(0, 8 * 512, false)]
    );
}

#[test]
fn write_same_with_a_pattern_writes_every_block() {
    let (mut lun, state) = DiskSpec::default().lun();
    let block = pattern(512, 5);
    let (r, _) = run(&mut lun, &ws10(0x08, 10, 3), &block, 0);
    assert!(r.is_ok());
    assert!(state.lock().unwrap().write_zeroes.is_empty());
    let (_, d) = run(&mut lun, &[0x28, 0, 0, 0, 0, 10, 0, 0, 3, 0], &[], 3 * 512);
    assert_eq!(d, [block.clone(), block.clone(), block].concat());
}

#[test]
fn write_same_errors() {
    let (mut lun, state) = DiskSpec::default().lun();
    // Zero blocks (WSNZ) and more than the maximum.
    let (r, _) = run(&mut lun, &ws16(0x08, 0, 0), &[0; 512], 0);
    assert_eq!(check(r), invalid_field(10));
    let (r, _) = run(
        &mut lun,
        &ws16(0x08, 0, MAX_WRITE_SAME_BLOCKS + 1),
        &[0; 512],
        0,
    );
    assert_eq!(check(r), invalid_field(10));
    let (r, _) = run(&mut lun, &ws10(0, 0, 0), &[0; 512], 0);
    assert_eq!(check(r), invalid_field(7));
    // Out of range.
    let (r, _) = run(&mut lun, &ws16(0x08, 2000, 100), &[0; 512], 0);
    assert_eq!(check(r), fixed_sense(ILLEGAL_REQUEST, 0x21, 0));
    // ANCHOR, LBDATA.
    let (r, _) = run(&mut lun, &ws16(0x18, 0, 1), &[0; 512], 0);
    assert_eq!(check(r), invalid_field(1));
    let (r, _) = run(&mut lun, &ws10(0x02, 0, 1), &[0; 512], 0);
    assert_eq!(check(r), invalid_field(1));
    // Missing data-out block.
    let (r, _) = run(&mut lun, &ws16(0x08, 0, 1), &[0; 100], 0);
    assert_eq!(r, Err(CmdError::Overrun));
    assert!(state.lock().unwrap().write_zeroes.is_empty());
}
