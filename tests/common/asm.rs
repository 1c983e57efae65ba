//! A tiny x86 assembler for small test guests: just the instructions the tests use,
//! with labels for short jumps. Code runs in 64-bit mode (raw payloads) unless noted.

use std::collections::HashMap;

#[derive(Default)]
pub struct Asm {
    pub code: Vec<u8>,
    labels: HashMap<&'static str, usize>,
    fixups: Vec<(usize, &'static str)>,
}

impl Asm {
    pub fn new() -> Self {
        Self::default()
    }

    fn emit(&mut self, bytes: &[u8]) -> &mut Self {
        self.code.extend_from_slice(bytes);
        self
    }

    pub fn label(&mut self, name: &'static str) -> &mut Self {
        self.labels.insert(name, self.code.len());
        self
    }

    /// mov dx, imm16
    pub fn mov_dx(&mut self, v: u16) -> &mut Self {
        let [a, b] = v.to_le_bytes();
        self.emit(&[0x66, 0xba, a, b])
    }
    /// mov al, imm8
    pub fn mov_al(&mut self, v: u8) -> &mut Self {
        self.emit(&[0xb0, v])
    }
    /// mov ax, imm16
    pub fn mov_ax(&mut self, v: u16) -> &mut Self {
        let [a, b] = v.to_le_bytes();
        self.emit(&[0x66, 0xb8, a, b])
    }
    /// mov eax, imm32 (zero-extends into rax)
    pub fn mov_eax(&mut self, v: u32) -> &mut Self {
        self.emit(&[0xb8]).emit(&v.to_le_bytes())
    }
    /// mov ebx, imm32 (zero-extends into rbx)
    pub fn mov_ebx(&mut self, v: u32) -> &mut Self {
        self.emit(&[0xbb]).emit(&v.to_le_bytes())
    }
    /// out dx, al
    pub fn out_dx_al(&mut self) -> &mut Self {
        self.emit(&[0xee])
    }
    /// out dx, ax
    pub fn out_dx_ax(&mut self) -> &mut Self {
        self.emit(&[0x66, 0xef])
    }
    /// in al, dx
    pub fn in_al_dx(&mut self) -> &mut Self {
        self.emit(&[0xec])
    }
    /// out dx, eax
    pub fn out_dx_eax(&mut self) -> &mut Self {
        self.emit(&[0xef])
    }
    /// in eax, dx
    pub fn in_eax_dx(&mut self) -> &mut Self {
        self.emit(&[0xed])
    }
    /// shr eax, imm8
    pub fn shr_eax(&mut self, n: u8) -> &mut Self {
        self.emit(&[0xc1, 0xe8, n])
    }
    /// mov al, [rbx]
    pub fn load_al_rbx(&mut self) -> &mut Self {
        self.emit(&[0x8a, 0x03])
    }
    /// mov eax, [rbx]
    pub fn load_eax_rbx(&mut self) -> &mut Self {
        self.emit(&[0x8b, 0x03])
    }
    /// mov [rbx], eax
    pub fn store_eax_rbx(&mut self) -> &mut Self {
        self.emit(&[0x89, 0x03])
    }
    /// lock inc dword [rbx]
    pub fn lock_inc_rbx(&mut self) -> &mut Self {
        self.emit(&[0xf0, 0xff, 0x03])
    }
    /// cmp eax, imm8 (sign-extended)
    pub fn cmp_eax(&mut self, v: i8) -> &mut Self {
        self.emit(&[0x83, 0xf8, v as u8])
    }
    /// popcnt rax, [rbx]: KVM's instruction emulator does not implement it, so on an
    /// MMIO address it makes KVM_RUN fail with an emulation error on every host.
    pub fn popcnt_rax_rbx(&mut self) -> &mut Self {
        self.emit(&[0xf3, 0x48, 0x0f, 0xb8, 0x03])
    }
    /// mov ecx, imm32
    pub fn mov_ecx(&mut self, v: u32) -> &mut Self {
        self.emit(&[0xb9]).emit(&v.to_le_bytes())
    }
    /// dec ecx
    pub fn dec_ecx(&mut self) -> &mut Self {
        self.emit(&[0xff, 0xc9])
    }
    pub fn pause(&mut self) -> &mut Self {
        self.emit(&[0xf3, 0x90])
    }
    pub fn hlt(&mut self) -> &mut Self {
        self.emit(&[0xf4])
    }
    pub fn ud2(&mut self) -> &mut Self {
        self.emit(&[0x0f, 0x0b])
    }
    fn short_jump(&mut self, opcode: u8, target: &'static str) -> &mut Self {
        self.emit(&[opcode, 0]);
        self.fixups.push((self.code.len() - 1, target));
        self
    }
    pub fn jmp(&mut self, target: &'static str) -> &mut Self {
        self.short_jump(0xeb, target)
    }
    pub fn jne(&mut self, target: &'static str) -> &mut Self {
        self.short_jump(0x75, target)
    }

    /// add ebx, imm32
    pub fn add_ebx(&mut self, v: u32) -> &mut Self {
        self.emit(&[0x81, 0xc3]).emit(&v.to_le_bytes())
    }
    /// inc eax
    pub fn inc_eax(&mut self) -> &mut Self {
        self.emit(&[0xff, 0xc0])
    }
    /// cmp ebx, imm32
    pub fn cmp_ebx(&mut self, v: u32) -> &mut Self {
        self.emit(&[0x81, 0xfb]).emit(&v.to_le_bytes())
    }
    /// jb rel8 (unsigned below)
    pub fn jb(&mut self, target: &'static str) -> &mut Self {
        self.short_jump(0x72, target)
    }

    /// Write one byte to COM1.
    pub fn putc(&mut self, c: u8) -> &mut Self {
        self.mov_dx(0x3f8).mov_al(c).out_dx_al()
    }
    /// Write `s` to COM1.
    pub fn puts(&mut self, s: &str) -> &mut Self {
        self.mov_dx(0x3f8);
        for b in s.bytes() {
            self.mov_al(b).out_dx_al();
        }
        self
    }
    /// ACPI S5: SLP_TYP 5 | SLP_EN into PM1a_CNT (port 0x604).
    pub fn power_off(&mut self) -> &mut Self {
        self.mov_dx(0x604).mov_ax((5 << 10) | (1 << 13)).out_dx_ax()
    }
    /// Pulse the CPU reset line through the keyboard controller.
    pub fn i8042_reset(&mut self) -> &mut Self {
        self.mov_dx(0x64).mov_al(0xfe).out_dx_al()
    }
    /// Loop forever with interrupts off (a halted vCPU stays in KVM until kicked).
    pub fn halt_forever(&mut self) -> &mut Self {
        self.label("__halt").hlt().jmp("__halt")
    }

    /// Resolve labels; panics on an unknown label or a jump out of rel8 range.
    pub fn finish(&mut self) -> Vec<u8> {
        for (at, target) in self.fixups.drain(..) {
            let dest = *self
                .labels
                .get(target)
                .unwrap_or_else(|| panic!("label {target}"));
            let rel = dest as i64 - (at as i64 + 1);
            let rel = i8::try_from(rel).unwrap_or_else(|_| panic!("jump to {target} too far"));
            self.code[at] = rel as u8;
        }
        self.code.clone()
    }
}
