use std::sync::{Arc, Mutex};

use super::*;

const S5: u8 = 5;
const RESET_VALUE: u8 = 0x0e;

struct Harness {
    dev: AcpiPmDevice,
    reset: EventFdTrigger,
    power_off: EventFdTrigger,
    /// Every level the SCI was driven to, in order.
    sci: Arc<Mutex<Vec<bool>>>,
}

impl Harness {
    fn new() -> Self {
        let reset = EventFdTrigger::new().unwrap();
        let power_off = EventFdTrigger::new().unwrap();
        let config = AcpiPmConfig {
            s5_slp_typ: S5,
            reset_value: RESET_VALUE,
        };
        let mut dev = AcpiPmDevice::new(
            config,
            reset.try_clone().unwrap(),
            power_off.try_clone().unwrap(),
        );
        let sci = Arc::new(Mutex::new(Vec::new()));
        let log = sci.clone();
        dev.set_sci(Box::new(move |high| log.lock().unwrap().push(high)));
        sci.lock().unwrap().clear();
        Self {
            dev,
            reset,
            power_off,
            sci,
        }
    }

    fn read16(&mut self, offset: u64) -> u16 {
        let mut b = [0u8; 2];
        self.dev.read(offset, &mut b);
        u16::from_le_bytes(b)
    }

    fn write16(&mut self, offset: u64, v: u16) {
        self.dev.write(offset, &v.to_le_bytes());
    }

    fn sci_log(&self) -> Vec<bool> {
        std::mem::take(&mut *self.sci.lock().unwrap())
    }

    fn fired(evt: &EventFdTrigger) -> bool {
        evt.read().is_ok()
    }
}

const STS: u64 = 0;
const EN: u64 = 2;
const CNT: u64 = 4;
const RESET: u64 = 8;
const S5_SLEEP: u16 = (S5 as u16) << SLP_TYP_SHIFT | SLP_EN;

#[test]
fn s5_powers_off() {
    let mut h = Harness::new();
    h.write16(CNT, S5_SLEEP | SCI_EN);
    assert!(Harness::fired(&h.power_off));
    assert!(!Harness::fired(&h.reset));
    // SLP_EN is write-only.
    assert_eq!(h.read16(CNT) & SLP_EN, 0);
}

#[test]
fn acpica_two_step_sleep_and_high_byte_write() {
    let mut h = Harness::new();
    // ACPICA writes SLP_TYP first, then SLP_TYP | SLP_EN.
    h.write16(CNT, (S5 as u16) << SLP_TYP_SHIFT);
    assert!(!Harness::fired(&h.power_off));
    h.write16(CNT, S5_SLEEP);
    assert!(Harness::fired(&h.power_off));
    // SLP_TYP and SLP_EN live in the high byte: a byte write there suffices.
    h.dev.write(CNT + 1, &[(S5_SLEEP >> 8) as u8]);
    assert!(Harness::fired(&h.power_off));
    // A low-byte write cannot reach SLP_EN.
    h.dev.write(CNT, &[0xff]);
    assert!(!Harness::fired(&h.power_off));
}

#[test]
fn other_sleep_types_are_ignored() {
    let mut h = Harness::new();
    for typ in (0..8u16).filter(|&t| t != u16::from(S5)) {
        h.write16(CNT, typ << SLP_TYP_SHIFT | SLP_EN);
    }
    assert!(!Harness::fired(&h.power_off));
    assert!(!Harness::fired(&h.reset));
    // S5 type without SLP_EN does nothing either.
    h.write16(CNT, (S5 as u16) << SLP_TYP_SHIFT);
    assert!(!Harness::fired(&h.power_off));
}

#[test]
fn sci_en_always_reads_set() {
    let mut h = Harness::new();
    assert_eq!(h.read16(CNT), SCI_EN);
    h.write16(CNT, 0);
    assert_eq!(h.read16(CNT), SCI_EN);
    h.write16(CNT, 1 << SLP_TYP_SHIFT);
    assert_eq!(h.read16(CNT), 1 << SLP_TYP_SHIFT | SCI_EN);
}

#[test]
fn reset_register() {
    let mut h = Harness::new();
    h.dev.write(RESET, &[0x06]);
    assert!(!Harness::fired(&h.reset));
    h.dev.write(RESET, &[RESET_VALUE]);
    assert!(Harness::fired(&h.reset));
    assert!(!Harness::fired(&h.power_off));
    // A dword write starting at the reset register: only its low byte counts.
    h.dev.write(RESET, &u32::from(RESET_VALUE).to_le_bytes());
    assert!(Harness::fired(&h.reset));
    let mut b = [0xaa];
    h.dev.read(RESET, &mut b);
    assert_eq!(b, [0]);
}

#[test]
fn power_button_status_is_write_one_to_clear() {
    let mut h = Harness::new();
    h.dev.press_power_button();
    assert_eq!(h.read16(STS), PWRBTN);
    // Not enabled: the status latches but no SCI.
    assert!(!h.dev.sci_asserted());
    assert!(h.sci_log().is_empty());
    // Writing zeros clears nothing.
    h.write16(STS, 0);
    assert_eq!(h.read16(STS), PWRBTN);
    h.write16(STS, PWRBTN);
    assert_eq!(h.read16(STS), 0);
}

#[test]
fn sci_follows_status_and_enable() {
    let mut h = Harness::new();
    h.write16(EN, PWRBTN);
    assert_eq!(h.read16(EN), PWRBTN);
    assert!(h.sci_log().is_empty());

    h.dev.press_power_button();
    assert!(h.dev.sci_asserted());
    assert_eq!(h.sci_log(), [true]);
    // A second press while asserted is not a new transition.
    h.dev.press_power_button();
    assert!(h.sci_log().is_empty());

    // Disabling drops the line, re-enabling raises it again (the status is latched).
    h.write16(EN, 0);
    assert_eq!(h.sci_log(), [false]);
    h.write16(EN, PWRBTN);
    assert_eq!(h.sci_log(), [true]);

    // Acknowledging the event drops it.
    h.write16(STS, PWRBTN);
    assert!(!h.dev.sci_asserted());
    assert_eq!(h.sci_log(), [false]);
}

#[test]
fn pressed_before_enable_asserts_on_enable() {
    let mut h = Harness::new();
    h.dev.press_power_button();
    h.write16(EN, PWRBTN);
    assert_eq!(h.sci_log(), [true]);
}

#[test]
fn late_sci_connection_sees_current_level() {
    let mut h = Harness::new();
    h.write16(EN, PWRBTN);
    h.dev.press_power_button();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    h.dev
        .set_sci(Box::new(move |high| log.lock().unwrap().push(high)));
    assert_eq!(*seen.lock().unwrap(), [true]);
}

#[test]
fn dword_pm1_evt_access() {
    let mut h = Harness::new();
    h.dev.press_power_button();
    // One 32-bit write: clear nothing in STS, enable PWRBTN in EN.
    let evt = u32::from(PWRBTN) << 16;
    h.dev.write(STS, &evt.to_le_bytes());
    assert_eq!(h.sci_log(), [true]);
    let mut d = [0u8; 4];
    h.dev.read(STS, &mut d);
    assert_eq!(
        u32::from_le_bytes(d),
        u32::from(PWRBTN) << 16 | u32::from(PWRBTN)
    );
    // One 32-bit write acknowledging the status and keeping the enable.
    let ack = u32::from(PWRBTN) << 16 | u32::from(PWRBTN);
    h.dev.write(STS, &ack.to_le_bytes());
    assert_eq!(h.sci_log(), [false]);
    h.dev.read(STS, &mut d);
    assert_eq!(u32::from_le_bytes(d), u32::from(PWRBTN) << 16);
}

#[test]
fn byte_accesses() {
    let mut h = Harness::new();
    // PWRBTN_EN is bit 0 of PM1_EN's high byte.
    h.dev.write(EN + 1, &[0x01]);
    assert_eq!(h.read16(EN), PWRBTN);
    // A low-byte write leaves the high byte alone.
    h.dev.write(EN, &[0xff]);
    assert_eq!(h.read16(EN), PWRBTN | 0xff);
    h.dev.press_power_button();
    let mut b = [0u8];
    h.dev.read(STS + 1, &mut b);
    assert_eq!(b, [0x01]);
    h.dev.read(STS, &mut b);
    assert_eq!(b, [0x00]);
    // W1C on the low byte does not touch PWRBTN_STS.
    h.dev.write(STS, &[0xff]);
    assert_eq!(h.read16(STS), PWRBTN);
    h.dev.write(STS + 1, &[0x01]);
    assert_eq!(h.read16(STS), 0);
}

#[test]
fn unaligned_word_across_registers() {
    let mut h = Harness::new();
    // Bytes +3 (PM1_EN high) and +4 (PM1_CNT low).
    h.dev.write(3, &[0x01, 0x00]);
    assert_eq!(h.read16(EN), PWRBTN);
    let mut w = [0u8; 2];
    h.dev.read(3, &mut w);
    assert_eq!(w, [0x01, SCI_EN as u8]);
}

#[test]
fn reserved_and_out_of_range_offsets() {
    let mut h = Harness::new();
    for offset in [6, 7, 9, 0xf, ACPI_PM_PORT_LEN, 0x1000, u64::MAX] {
        let mut b = [0u8];
        h.dev.read(offset, &mut b);
        assert_eq!(b, [0xff], "offset {offset:#x}");
        h.dev.write(offset, &[0xff]);
    }
    // A dword read hanging off the end of the block, and one that wraps.
    let mut d = [0u8; 4];
    h.dev.read(ACPI_PM_PORT_LEN - 2, &mut d);
    assert_eq!(d, [0xff; 4]);
    h.dev.read(u64::MAX - 1, &mut d);
    assert_eq!(d, [0xff; 4]);
    h.dev.write(u64::MAX - 1, &[0xff; 8]);
    // Wide writes over reserved bytes change nothing.
    h.dev.write(6, &[0xff, 0xff]);
    h.dev.write(9, &[0xff; 7]);
    assert!(!Harness::fired(&h.reset));
    assert!(!Harness::fired(&h.power_off));
    assert_eq!(h.read16(STS), 0);
    assert_eq!(h.read16(EN), 0);
    assert_eq!(h.read16(CNT), SCI_EN);
}

#[test]
fn state_round_trips_and_redrives_the_sci() {
    let mut old = Harness::new();
    old.write16(EN, PWRBTN);
    old.dev.press_power_button();
    old.write16(CNT, (S5 as u16) << SLP_TYP_SHIFT);
    assert!(old.dev.sci_asserted());
    let json = serde_json::to_string(&old.dev.save_state()).unwrap();
    let saved: AcpiPmState = serde_json::from_str(&json).unwrap();

    let mut new = Harness::new();
    new.dev.restore_state(&saved).unwrap();
    assert_eq!(
        new.sci_log(),
        vec![true],
        "the new machine's SCI line is raised"
    );
    assert!(new.dev.sci_asserted());
    assert_eq!(new.read16(STS), PWRBTN);
    assert_eq!(new.read16(EN), PWRBTN);
    assert_eq!(new.read16(CNT), (S5 as u16) << SLP_TYP_SHIFT | SCI_EN);
    // The guest acknowledges: the line drops as usual.
    new.write16(STS, PWRBTN);
    assert_eq!(new.sci_log(), vec![false]);

    // A state without a pending event drives the line low.
    let mut quiet = Harness::new();
    quiet
        .dev
        .restore_state(&AcpiPmState {
            pm1_sts: 0,
            pm1_en: PWRBTN,
            pm1_cnt: SCI_EN,
        })
        .unwrap();
    assert_eq!(quiet.sci_log(), vec![false]);
}

#[test]
fn bad_states_are_refused() {
    let mut h = Harness::new();
    for (state, field) in [
        (
            AcpiPmState {
                pm1_sts: 1,
                pm1_en: 0,
                pm1_cnt: 0,
            },
            "`pm1_sts`",
        ),
        (
            AcpiPmState {
                pm1_sts: 0,
                pm1_en: 0,
                pm1_cnt: SLP_EN,
            },
            "`pm1_cnt`",
        ),
    ] {
        let e = h.dev.restore_state(&state).unwrap_err().to_string();
        assert!(e.contains("acpi_pm") && e.contains(field), "{e}");
    }
    assert!(h.sci_log().is_empty());
    assert_eq!(h.read16(CNT), SCI_EN);
}
