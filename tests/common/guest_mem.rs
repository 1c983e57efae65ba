//! Reading a running VM's guest RAM from the host, through /proc/<pid>/mem: the test
//! sees exactly what the guest wrote, without asking the VMM.

use std::os::unix::fs::FileExt;

fn read_at(pid: u32, addr: u64, buf: &mut [u8]) -> bool {
    let Ok(mem) = std::fs::File::open(format!("/proc/{pid}/mem")) else {
        return false;
    };
    mem.read_exact_at(buf, addr).is_ok()
}

/// Host address of guest-physical 0 in process `pid`, whose guest RAM is `size`
/// bytes and holds `probe` at guest-physical `probe_gpa` (e.g. the payload's code).
/// The kernel may merge the RAM mapping with a neighbouring anonymous one, so the RAM
/// is looked for at both ends of every large enough read-write mapping.
pub fn ram_base(pid: u32, size: u64, probe_gpa: u64, probe: &[u8]) -> u64 {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let mut found = Vec::new();
    for l in maps.lines() {
        let mut f = l.split_whitespace();
        let (Some(range), Some(perms)) = (f.next(), f.next()) else {
            continue;
        };
        // Anonymous, or a private mapping of a saved memory file (a lazy restore).
        if !perms.starts_with("rw") {
            continue;
        }
        let Some((a, b)) = range.split_once('-') else {
            continue;
        };
        let (a, b) = (
            u64::from_str_radix(a, 16).unwrap(),
            u64::from_str_radix(b, 16).unwrap(),
        );
        if b - a < size {
            continue;
        }
        for base in [a, b - size] {
            let mut buf = vec![0u8; probe.len()];
            if read_at(pid, base + probe_gpa, &mut buf) && buf == probe && !found.contains(&base) {
                found.push(base);
            }
        }
    }
    assert_eq!(found.len(), 1, "guest RAM ({size} bytes) in\n{maps}");
    found[0]
}

/// Read the u64 at guest-physical `gpa`.
pub fn read_u64(pid: u32, base: u64, gpa: u64) -> u64 {
    let mut b = [0u8; 8];
    assert!(read_at(pid, base + gpa, &mut b), "read guest {gpa:#x}");
    u64::from_le_bytes(b)
}
