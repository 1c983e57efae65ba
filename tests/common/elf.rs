//! A minimal ELF64 file: one PT_LOAD segment, enough for the loader to accept it.

/// An x86-64 ELF executable whose single segment of `size` bytes loads at `paddr`.
pub fn elf_with_segment(paddr: u64, size: u64) -> Vec<u8> {
    let mut f = Vec::new();
    // e_ident: magic, 64-bit, little endian, version 1.
    f.extend_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
    f.extend_from_slice(&2u16.to_le_bytes()); // e_type EXEC
    f.extend_from_slice(&62u16.to_le_bytes()); // e_machine x86-64
    f.extend_from_slice(&1u32.to_le_bytes()); // e_version
    f.extend_from_slice(&paddr.to_le_bytes()); // e_entry
    f.extend_from_slice(&64u64.to_le_bytes()); // e_phoff
    f.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    f.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    f.extend_from_slice(&64u16.to_le_bytes()); // e_ehsize
    f.extend_from_slice(&56u16.to_le_bytes()); // e_phentsize
    f.extend_from_slice(&1u16.to_le_bytes()); // e_phnum
    f.extend_from_slice(&[0; 6]); // e_shentsize, e_shnum, e_shstrndx
    let data_off = 64 + 56u64;
    f.extend_from_slice(&1u32.to_le_bytes()); // p_type LOAD
    f.extend_from_slice(&5u32.to_le_bytes()); // p_flags R+X
    f.extend_from_slice(&data_off.to_le_bytes()); // p_offset
    f.extend_from_slice(&paddr.to_le_bytes()); // p_vaddr
    f.extend_from_slice(&paddr.to_le_bytes()); // p_paddr
    f.extend_from_slice(&size.to_le_bytes()); // p_filesz
    f.extend_from_slice(&size.to_le_bytes()); // p_memsz
    f.extend_from_slice(&0x1000u64.to_le_bytes()); // p_align
    f.resize((data_off + size) as usize, 0xf4);
    f
}
