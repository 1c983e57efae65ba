//! Fast tests with hand-written guests (machine code at a fixed address, entered in
//! 64-bit mode): exits, serial, SMP start, reset and power-off, error handling.

mod common;

use std::time::Duration;

use common::asm::Asm;
use common::vm::{raw_vm, run_to_end, RunningVm, Scratch};
use serde_json::json;

const T: Duration = Duration::from_secs(30);

#[test]
fn serial_output_and_acpi_power_off_exit_0() {
    let s = Scratch::new();
    let code = Asm::new()
        .puts("hello\n")
        .power_off()
        .halt_forever()
        .finish();
    let (st, out, err) = run_to_end(&raw_vm(&s, &code, 1, json!({})), T);
    assert_eq!(out, "hello\n", "stderr: {err}");
    assert_eq!(st.code(), Some(0), "stderr: {err}");
}

#[test]
fn port_exits_reach_devices_and_open_bus_reads_all_ones() {
    let s = Scratch::new();
    let mut a = Asm::new();
    // CMOS register D (0x0d) reads 0x80 ("valid RAM and time"); port 0x2f0 has no
    // device and reads 0xff. The guest echoes both bytes to COM1.
    a.mov_dx(0x70).mov_al(0x0d).out_dx_al();
    a.mov_dx(0x71).in_al_dx().mov_dx(0x3f8).out_dx_al();
    a.mov_dx(0x2f0).in_al_dx().mov_dx(0x3f8).out_dx_al();
    let code = a.power_off().halt_forever().finish();
    let mut vm = RunningVm::start(&raw_vm(&s, &code, 1, json!({})));
    assert_eq!(vm.wait(T).code(), Some(0));
    assert_eq!(vm.stdout.bytes(), vec![0x80, 0xff]);
}

#[test]
fn mmio_exits_read_all_ones_and_writes_are_dropped() {
    let s = Scratch::new();
    let mut a = Asm::new();
    // 0xd0000000 is in the 32-bit MMIO gap with no device: the write exits to the VMM
    // and is dropped, the read exits and returns all ones.
    a.mov_ebx(0xd000_0000).mov_eax(0x1234_5678).store_eax_rbx();
    a.load_al_rbx().mov_dx(0x3f8).out_dx_al();
    let code = a.power_off().halt_forever().finish();
    let mut vm = RunningVm::start(&raw_vm(&s, &code, 1, json!({})));
    assert_eq!(vm.wait(T).code(), Some(0), "{}", vm.stderr.text());
    assert_eq!(vm.stdout.bytes(), vec![0xff]);
}

/// Real-mode code for an AP started by SIPI vector 8 (CS = 0x800, IP = 0): print 'B',
/// set the flag byte at 0x3000, halt.
fn ap_trampoline() -> Vec<u8> {
    vec![
        0xba, 0xf8, 0x03, // mov dx, 0x3f8
        0xb0, b'B', // mov al, 'B'
        0xee, // out dx, al
        0xc6, 0x06, 0x00, 0x30, 0x01, // mov byte [0x3000], 1
        0xf4, 0xeb, 0xfd, // hlt; jmp hlt
    ]
}

#[test]
fn two_vcpus_both_run_after_init_sipi() {
    let s = Scratch::new();
    let mut a = Asm::new();
    // Copy nothing: the AP code sits at 0x8000 because the payload is loaded at
    // 1 MiB; the BSP writes it there first, 4 bytes at a time.
    let tramp = ap_trampoline();
    for (i, chunk) in tramp.chunks(4).enumerate() {
        let mut w = [0u8; 4];
        w[..chunk.len()].copy_from_slice(chunk);
        a.mov_ebx(0x8000 + 4 * i as u32)
            .mov_eax(u32::from_le_bytes(w))
            .store_eax_rbx();
    }
    // ICR high = APIC ID 1; ICR low = INIT, then SIPI with vector 8 (0x8000).
    a.mov_ebx(0xfee0_0310).mov_eax(1 << 24).store_eax_rbx();
    a.mov_ebx(0xfee0_0300).mov_eax(0x0000_4500).store_eax_rbx();
    a.mov_eax(0x0000_4608).store_eax_rbx();
    // Wait for the AP's flag, then report and power off.
    a.mov_ebx(0x3000)
        .label("wait")
        .pause()
        .load_eax_rbx()
        .cmp_eax(1)
        .jne("wait");
    let code = a.putc(b'A').power_off().halt_forever().finish();
    let (st, out, err) = run_to_end(&raw_vm(&s, &code, 2, json!({})), T);
    assert_eq!(out, "BA", "stderr: {err}");
    assert_eq!(st.code(), Some(0), "stderr: {err}");
}

fn rebooting_guest() -> Vec<u8> {
    Asm::new().putc(b'R').i8042_reset().halt_forever().finish()
}

#[test]
fn i8042_reset_with_on_reboot_exit_ends_the_process() {
    let s = Scratch::new();
    let vm = raw_vm(&s, &rebooting_guest(), 1, json!({ "on_reboot": "exit" }));
    let (st, out, err) = run_to_end(&vm, T);
    assert_eq!(out, "R", "stderr: {err}");
    assert_eq!(st.code(), Some(0), "stderr: {err}");
}

#[test]
fn i8042_reset_with_on_reboot_restart_boots_again_in_the_same_process() {
    let s = Scratch::new();
    // The guest waits a little before each reset, so the test rebuilds the machine a
    // handful of times rather than hundreds: on PVM hosts, registering guest memory in a
    // fresh VM now and then blocks for a long time in the host kernel
    // (synchronize_srcu in KVM_SET_USER_MEMORY_REGION), see docs/testing.md.
    let paced = Asm::new()
        .putc(b'R')
        .mov_ecx(200_000)
        .label("delay")
        .dec_ecx()
        .jne("delay")
        .i8042_reset()
        .halt_forever()
        .finish();
    let vm = raw_vm(&s, &paced, 2, json!({ "on_reboot": "restart" }));
    let mut vm = RunningVm::start(&vm);
    let pid = vm.pid();
    // Three boots of the same guest in one process prove the machine is rebuilt.
    vm.expect_stdout(T, |o| o.starts_with("RRR"), "three boots");
    assert_eq!(vm.pid(), pid);
    // SIGHUP stops at once (a SIGTERM would start a graceful shutdown, which this
    // guest's next reset would end).
    vm.signal(libc::SIGHUP);
    let st = vm.wait(T);
    assert_eq!(st.code(), Some(128 + libc::SIGHUP), "{}", vm.stderr.text());
}

#[test]
fn acpi_reset_register_resets() {
    let s = Scratch::new();
    let code = Asm::new()
        .putc(b'R')
        .mov_dx(0x608)
        .mov_al(0x0e)
        .out_dx_al()
        .halt_forever()
        .finish();
    let (st, out, err) = run_to_end(&raw_vm(&s, &code, 1, json!({ "on_reboot": "exit" })), T);
    assert_eq!((out.as_str(), st.code()), ("R", Some(0)), "stderr: {err}");
}

#[test]
fn emulation_failure_dumps_registers_and_fails() {
    let s = Scratch::new();
    let code = Asm::new()
        .putc(b'E')
        .mov_ebx(0xd000_0000)
        .popcnt_rax_rbx()
        .power_off()
        .halt_forever()
        .finish();
    let (st, out, err) = run_to_end(&raw_vm(&s, &code, 1, json!({})), T);
    assert_eq!(out, "E");
    assert_eq!(st.code(), Some(1), "stderr: {err}");
    assert!(err.contains("vCPU 0 failed"), "{err}");
    assert!(err.contains("rip=0x"), "{err}");
    assert!(err.contains("cr0="), "{err}");
}

#[test]
fn pci_host_bridge_visible_through_ports_and_ecam() {
    let s = Scratch::new();
    let mut a = Asm::new();
    // Mechanism #1: address 0x80000000 (bus 0, device 0, function 0, register 0),
    // then read the vendor/device dword and print its four bytes.
    a.mov_dx(0xcf8).mov_eax(0x8000_0000).out_dx_eax();
    a.mov_dx(0xcfc).in_eax_dx();
    for _ in 0..4 {
        a.mov_dx(0x3f8).out_dx_al().shr_eax(8);
    }
    // ECAM: the same dword at 0xe0000000, then an empty slot (device 5).
    a.mov_ebx(0xe000_0000).load_eax_rbx();
    for _ in 0..4 {
        a.mov_dx(0x3f8).out_dx_al().shr_eax(8);
    }
    a.mov_ebx(0xe000_0000 | (5 << 15))
        .load_al_rbx()
        .mov_dx(0x3f8)
        .out_dx_al();
    let code = a.power_off().halt_forever().finish();
    let mut vm = RunningVm::start(&raw_vm(&s, &code, 1, json!({})));
    assert_eq!(vm.wait(T).code(), Some(0), "{}", vm.stderr.text());
    // QEMU's PCIe host bridge IDs 1b36:0008, twice, then all ones for the empty slot.
    assert_eq!(
        vm.stdout.bytes(),
        vec![0x36, 0x1b, 0x08, 0x00, 0x36, 0x1b, 0x08, 0x00, 0xff]
    );
}
