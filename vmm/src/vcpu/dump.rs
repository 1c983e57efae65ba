//! Register dump for a vCPU that stopped on an error: what an operator (or a bug
//! report) needs to see where the guest was.

use kvm_ioctls::VcpuFd;

pub fn dump_registers(index: u32, vcpu: &VcpuFd) -> String {
    let mut out = format!("vCPU {index} registers:\n");
    match vcpu.get_regs() {
        Ok(r) => out.push_str(&format!(
            "  rip={:#018x} rsp={:#018x} rflags={:#x}\n  rax={:#018x} rbx={:#018x} rcx={:#018x} rdx={:#018x}\n  rsi={:#018x} rdi={:#018x} rbp={:#018x}\n  r8={:#018x} r9={:#018x} r10={:#018x} r11={:#018x}\n  r12={:#018x} r13={:#018x} r14={:#018x} r15={:#018x}\n",
            r.rip, r.rsp, r.rflags, r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rbp,
            r.r8, r.r9, r.r10, r.r11, r.r12, r.r13, r.r14, r.r15
        )),
        Err(e) => out.push_str(&format!("  (KVM_GET_REGS failed: {e})\n")),
    }
    match vcpu.get_sregs() {
        Ok(s) => out.push_str(&format!(
            "  cs={:#x} (base {:#x} l={} db={}) ss={:#x} ds={:#x}\n  cr0={:#x} cr2={:#x} cr3={:#x} cr4={:#x} efer={:#x}\n  gdt={:#x}/{:#x} idt={:#x}/{:#x} apic_base={:#x}\n",
            s.cs.selector, s.cs.base, s.cs.l, s.cs.db, s.ss.selector, s.ds.selector,
            s.cr0, s.cr2, s.cr3, s.cr4, s.efer, s.gdt.base, s.gdt.limit, s.idt.base,
            s.idt.limit, s.apic_base
        )),
        Err(e) => out.push_str(&format!("  (KVM_GET_SREGS failed: {e})\n")),
    }
    out
}
