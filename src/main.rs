//! `oxvm`: run a VM from a VM file. The process is the VM: one thread per vCPU.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use oxvm_api::{load_vm_file, read_vm_file, Paths};
use oxvm_vmm::VmExit;

const RUN_EXAMPLES: &str = r#"Examples:
  oxvm run resources/examples/linux-selftest.json
  oxvm run resources/examples/linux-selftest.tmpl     (an OpenNebula template)
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
        /// The VM file: JSON, or an OpenNebula template (detected from the content).
        vm_file: PathBuf,
    },
    /// Work with VM files.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

const CONVERT_EXAMPLES: &str = r#"Examples:
  oxvm config convert resources/examples/opennebula-vm.tmpl
  oxvm config convert vm.tmpl > vm.json

An OpenNebula template (names are case-insensitive; every attribute and how it
maps is in docs/opennebula-templates.md):
  NAME   = "web 1"
  MEMORY = 512                  # MiB
  VCPU   = 2
  OS     = [ KERNEL = "vmlinux", KERNEL_CMD = "console=ttyS0", ROOT = "vda" ]
  DISK   = [ SOURCE = "root.qcow2", DRIVER = "qcow2", CACHE = "none",
             DISCARD = "unmap", TOTAL_BYTES_SEC = 104857600 ]
  DISK   = [ SOURCE = "context.iso", TYPE = "CDROM" ]
  NIC    = [ TARGET = "one-7-0", BRIDGE = "br0", MAC = "02:00:c0:a8:01:05",
             MODEL = "virtio" ]
  RAW    = [ TYPE = "oxvm", DATA = "{ \"on_reboot\": \"exit\" }" ]

The JSON VM file goes to stdout with relative paths as written (both formats
resolve them against the file's folder, so save the JSON next to the template).
Each attribute that is not supported is named on stderr as
"oxvm: warning: line N: ATTRIBUTE: ...". A JSON VM file is accepted too and
printed with every default filled in.
Exit status: 0 when converted (warnings or not), 1 when the file is refused."#;

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print a VM file (OpenNebula template or JSON) as the equivalent JSON VM file.
    #[command(after_help = CONVERT_EXAMPLES)]
    Convert {
        /// The VM file to convert.
        file: PathBuf,
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
        Command::Config {
            command: ConfigCommand::Convert { file },
        } => convert(&file),
    }
}

fn run(vm_file: &Path) -> ExitCode {
    let cfg = match load_vm_file(vm_file) {
        Ok((c, warnings)) => {
            print_warnings(&warnings);
            c
        }
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

/// Template attributes that were not mapped: the user must hear about each one.
fn print_warnings(warnings: &[String]) {
    for w in warnings {
        eprintln!("oxvm: warning: {w}");
    }
}

fn convert(file: &Path) -> ExitCode {
    let f = match read_vm_file(file, Paths::AsWritten) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("oxvm: {e}");
            return ExitCode::from(1);
        }
    };
    print_warnings(&f.warnings);
    match f.to_json_pretty() {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("oxvm: {}: {e}", file.display());
            ExitCode::from(1)
        }
    }
}
