//! The counting guest the API, snapshot and migration tests share, and the oxvm
//! process they drive through its API socket.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::asm::Asm;
use super::guest_mem;
use super::vm::{oxvm_bin, RunningVm, Scratch, RAW_LOAD};

/// Where the counting guest keeps its counter (guest-physical).
pub const COUNTER_GPA: u32 = 0x5000;
/// Guest RAM of `vm::raw_vm` guests.
pub const GUEST_RAM: u64 = 32 << 20;
const T: Duration = Duration::from_secs(30);

/// Prints "up" once, then forever: increment the counter in memory and write port
/// 0x80 (so the loop also exits to the VMM and shows in the exit counters).
pub fn counting_guest() -> Vec<u8> {
    Asm::new()
        .puts("up\n")
        .mov_ebx(COUNTER_GPA)
        .mov_dx(0x80)
        .label("loop")
        .lock_inc_rbx()
        .out_dx_al()
        .jmp("loop")
        .finish()
}

/// An oxvm process and its API socket.
pub struct ApiProc {
    pub run: RunningVm,
    pub sock: PathBuf,
}

/// `oxvm <args> --api-socket <sock>` with the runtime directory inside the scratch.
pub fn api_command(s: &Scratch, args: &[&str], sock: &Path) -> Command {
    let mut cmd = Command::new(oxvm_bin());
    cmd.args(args)
        .arg("--api-socket")
        .arg(sock)
        .env("OXVM_RUNTIME_DIR", s.path().join("run"));
    cmd
}

/// The counting guest's counter, read from the host through /proc/<pid>/mem.
pub fn counter(run: &RunningVm) -> u64 {
    let base = guest_mem::ram_base(run.pid(), GUEST_RAM, RAW_LOAD, &counting_guest());
    guest_mem::read_u64(run.pid(), base, u64::from(COUNTER_GPA))
}

/// Wait until the counter is above `floor`; returns it.
pub fn wait_counter_above(run: &RunningVm, floor: u64) -> u64 {
    let deadline = Instant::now() + T;
    loop {
        let c = counter(run);
        if c > floor {
            return c;
        }
        assert!(
            Instant::now() < deadline,
            "counter stuck at {c} (floor {floor})"
        );
        // Polling another process's memory: there is nothing to block on.
        std::thread::sleep(Duration::from_millis(10));
    }
}
