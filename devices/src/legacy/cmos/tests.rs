use std::time::{Duration, UNIX_EPOCH};

use super::*;
use crate::bus::BusDevice;

/// 2024-02-29 13:05:09 UTC, a Thursday.
const LEAP_DAY_AFTERNOON: u64 = 1_709_211_909;
const MIB: u64 = 1 << 20;

fn cmos_at(secs: u64) -> Cmos {
    Cmos::with_clock(
        48 * MIB,
        0,
        Box::new(move || UNIX_EPOCH + Duration::from_secs(secs)),
    )
}

fn read_reg(cmos: &mut Cmos, reg: u8) -> u8 {
    cmos.write(0, &[reg]);
    let mut b = [0u8];
    cmos.read(1, &mut b);
    b[0]
}

fn write_reg(cmos: &mut Cmos, reg: u8, value: u8) {
    cmos.write(0, &[reg]);
    cmos.write(1, &[value]);
}

#[test]
fn time_in_bcd_by_default() {
    let mut c = cmos_at(LEAP_DAY_AFTERNOON);
    let regs = [0x00, 0x02, 0x04, 0x06, 0x07, 0x08, 0x09, 0x32];
    let got: Vec<u8> = regs.iter().map(|&r| read_reg(&mut c, r)).collect();
    assert_eq!(got, [0x09, 0x05, 0x13, 0x05, 0x29, 0x02, 0x24, 0x20]);
}

#[test]
fn time_in_binary_when_dm_is_set() {
    let mut c = cmos_at(LEAP_DAY_AFTERNOON);
    write_reg(&mut c, REG_B, REG_B_24H | REG_B_DM);
    let regs = [0x00, 0x02, 0x04, 0x06, 0x07, 0x08, 0x09, 0x32];
    let got: Vec<u8> = regs.iter().map(|&r| read_reg(&mut c, r)).collect();
    assert_eq!(got, [9, 5, 13, 5, 29, 2, 24, 20]);
}

#[test]
fn twelve_hour_mode() {
    let mut c = cmos_at(LEAP_DAY_AFTERNOON);
    write_reg(&mut c, REG_B, 0);
    assert_eq!(read_reg(&mut c, REG_HOURS), 0x80 | 0x01);
    // Midnight is 12 AM.
    let mut c = cmos_at(LEAP_DAY_AFTERNOON - 13 * 3600);
    write_reg(&mut c, REG_B, REG_B_DM);
    assert_eq!(read_reg(&mut c, REG_HOURS), 12);
}

#[test]
fn status_registers() {
    let mut c = cmos_at(0);
    assert_eq!(read_reg(&mut c, REG_A), 0x26);
    assert_eq!(read_reg(&mut c, REG_B), 0x02);
    assert_eq!(read_reg(&mut c, REG_C), 0);
    assert_eq!(read_reg(&mut c, REG_D), 0x80);
    // UIP can never be set; C and D are read-only.
    write_reg(&mut c, REG_A, 0xa6);
    assert_eq!(read_reg(&mut c, REG_A), 0x26);
    write_reg(&mut c, REG_C, 0xff);
    write_reg(&mut c, REG_D, 0);
    assert_eq!(read_reg(&mut c, REG_C), 0);
    assert_eq!(read_reg(&mut c, REG_D), 0x80);
}

#[test]
fn time_writes_are_ignored() {
    let mut c = cmos_at(LEAP_DAY_AFTERNOON);
    write_reg(&mut c, REG_YEAR, 0x99);
    write_reg(&mut c, REG_CENTURY, 0x19);
    assert_eq!(read_reg(&mut c, REG_YEAR), 0x24);
    assert_eq!(read_reg(&mut c, REG_CENTURY), 0x20);
}

#[test]
fn index_masks_the_nmi_bit() {
    let mut c = cmos_at(LEAP_DAY_AFTERNOON);
    assert_eq!(read_reg(&mut c, 0x80 | REG_MINUTES), 0x05);
    write_reg(&mut c, 0x80 | 0x40, 0x5a);
    assert_eq!(read_reg(&mut c, 0x40), 0x5a);
}

#[test]
fn unknown_registers_are_plain_nvram() {
    let mut c = cmos_at(0);
    assert_eq!(read_reg(&mut c, 0x7f), 0);
    write_reg(&mut c, 0x7f, 0xa5);
    assert_eq!(read_reg(&mut c, 0x7f), 0xa5);
    // Alarm registers are storage too.
    write_reg(&mut c, 0x01, 0x33);
    assert_eq!(read_reg(&mut c, 0x01), 0x33);
}

#[test]
fn memory_size_is_published() {
    let mut c = cmos_at(0);
    assert_eq!(read_reg(&mut c, 0x15), 0x80);
    assert_eq!(read_reg(&mut c, 0x16), 0x02);
    let ext = u16::from_le_bytes([read_reg(&mut c, 0x30), read_reg(&mut c, 0x31)]);
    assert_eq!(ext, 47 * 1024);
    let ext16 = u16::from_le_bytes([read_reg(&mut c, 0x34), read_reg(&mut c, 0x35)]);
    assert_eq!(ext16, 32 * 16);
}

#[test]
fn port_widths_and_offsets() {
    let mut c = cmos_at(LEAP_DAY_AFTERNOON);
    let mut b = [0u8];
    // The index port reads as open bus.
    c.read(0, &mut b);
    assert_eq!(b, [0xff]);
    // `out 0x70, ax`: index in AL, data in AH.
    c.write(0, &[0x41, 0x77]);
    assert_eq!(read_reg(&mut c, 0x41), 0x77);
    // A word read at the data port: second byte is past the device.
    c.write(0, &[REG_SECONDS]);
    let mut w = [0u8; 2];
    c.read(1, &mut w);
    assert_eq!(w, [0x09, 0xff]);
    let mut d = [0u8; 4];
    c.read(u64::MAX, &mut d);
    assert_eq!(d, [0xff; 4]);
    c.write(2, &[1, 2, 3, 4]);
    c.write(u64::MAX, &[1, 2]);
}

#[test]
fn state_round_trips_and_bad_states_are_refused() {
    let mut old = cmos_at(LEAP_DAY_AFTERNOON);
    write_reg(&mut old, 0x41, 0x77);
    write_reg(&mut old, REG_B, REG_B_24H | REG_B_DM);
    old.write(0, &[0x41]);
    let json = serde_json::to_string(&old.save_state()).unwrap();
    let saved: CmosState = serde_json::from_str(&json).unwrap();

    // A new machine (the RAM size registers come from the same config anyway).
    let mut new = cmos_at(LEAP_DAY_AFTERNOON);
    new.restore_state(&saved).unwrap();
    assert_eq!(new.save_state(), saved);
    // The selected index survived: a data read without writing the index first.
    let mut b = [0u8];
    new.read(1, &mut b);
    assert_eq!(b, [0x77]);
    // Binary mode kept: the time reads 13, not 0x13.
    assert_eq!(read_reg(&mut new, REG_HOURS), 13);

    let mut bad = saved.clone();
    bad.nvram.pop();
    let e = new.restore_state(&bad).unwrap_err().to_string();
    assert!(e.contains("cmos") && e.contains("`nvram`"), "{e}");
    let mut bad = saved;
    bad.index = 0x80;
    let e = new.restore_state(&bad).unwrap_err().to_string();
    assert!(e.contains("`index`"), "{e}");
}
