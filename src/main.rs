//! `oxvm`: run a VM from a VM file. The process is the VM: one thread per vCPU.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use oxvm_api::VmConfig;
use oxvm_vmm::VmExit;

const RUN_EXAMPLES: &str = r#"Examples:
  oxvm run resources/examples/linux-selftest.json
  RUST_LOG=info oxvm run --log-level debug vm.json

A complete VM file (JSON; relative paths resolve against the file's folder;
unknown fields are an error):
  {
    "name": "demo",
    "vcpus": 2,
    "memory_mib": 256,
    "boot": {
      "kernel": "vmlinux",
      "initrd": null,
      "cmdline": "console=ttyS0 reboot=k panic=-1",
      "entry": "auto"
    },
    "serial": { "mode": "stdout" },
    "on_reboot": "restart",
    "cpu": { "kvm_pv_features": "safe" }
  }

  boot.kernel       ELF vmlinux or bzImage (detected from the file)
  boot.entry        auto (PVH if the ELF has the note, else 64-bit) | linux64 | pvh
  serial.mode       stdout | file (with "path") | off
  on_reboot         restart (reboot in place) | exit (end the process)
  cpu.kvm_pv_features  "safe" (default) | "host" | "none" | ["clocksource2", ...]

Exit status: 0 when the guest powers off (or reboots with on_reboot=exit),
1 on an error (bad VM file, KVM failure, a vCPU that failed: registers are
dumped to stderr), 128+N when stopped by signal N (SIGTERM, SIGINT, SIGHUP)."#;

#[derive(Parser)]
#[command(
    name = "oxvm",
    version,
    about = "A direct /dev/kvm micro-hypervisor: one process per VM, one thread per vCPU"
)]
struct Cli {
    /// Log level for messages on stderr (error, warn, info, debug, trace); RUST_LOG wins.
    #[arg(long, global = true, default_value = "warn")]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Boot the VM described by a VM file and run it in the foreground.
    #[command(after_help = RUN_EXAMPLES)]
    Run {
        /// The VM file (JSON).
        vm_file: PathBuf,
    },
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log_level);
    match cli.command {
        Command::Run { vm_file } => run(&vm_file),
    }
}

fn run(vm_file: &std::path::Path) -> ExitCode {
    let cfg = match VmConfig::from_file(vm_file) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("oxvm: {e}");
            return ExitCode::from(1);
        }
    };
    match oxvm_vmm::run_vm(&cfg) {
        Ok(VmExit::PowerOff | VmExit::Reboot) => ExitCode::SUCCESS,
        Ok(VmExit::Signal(s)) => ExitCode::from((128 + s) as u8),
        Err(e) => {
            eprintln!("oxvm: {e}");
            ExitCode::from(1)
        }
    }
}
