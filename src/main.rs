//! `oxvm`: run a VM from a VM file. The process is the VM: one thread per vCPU.
//! `oxvm ctl` and `oxvm list` drive running VMs through their API sockets.

mod ctl;
mod help;
mod list;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use oxvm_api::control::{MemoryMode, RestoreParams};
use oxvm_api::{load_vm_file, read_vm_file, Paths};
use oxvm_vmm::{RunOptions, VmExit, VmmError};

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
    #[command(after_help = help::RUN_EXAMPLES)]
    Run {
        /// Serve the control API on this Unix socket (overrides the VM file's
        /// `api_socket`).
        #[arg(long, value_name = "PATH")]
        api_socket: Option<PathBuf>,
        /// The VM file: JSON, or an OpenNebula template (detected from the content).
        vm_file: PathBuf,
    },
    /// Start a VM process without a VM and wait for one over the API.
    #[command(after_help = help::SERVE_EXAMPLES)]
    Serve {
        /// The Unix socket to serve the control API on.
        #[arg(long, value_name = "PATH")]
        api_socket: PathBuf,
    },
    /// Restore a VM saved with `oxvm ctl save` in this new process and resume it.
    #[command(after_help = help::RESTORE_EXAMPLES)]
    Restore {
        /// Serve the control API on this Unix socket.
        #[arg(long, value_name = "PATH")]
        api_socket: Option<PathBuf>,
        /// lazy: map memory.raw privately, pages load on first touch; copy: read it all
        /// before the guest runs.
        #[arg(long, value_enum, default_value = "lazy")]
        memory: MemoryArg,
        /// Use another file for a disk: ID=PATH (repeatable).
        #[arg(long = "disk", value_name = "ID=PATH", value_parser = ctl::parse_override)]
        disks: Vec<(String, String)>,
        /// Use another tap for a NIC: ID=NAME (repeatable).
        #[arg(long = "tap", value_name = "ID=NAME", value_parser = ctl::parse_override)]
        taps: Vec<(String, String)>,
        /// Stay paused after the restore.
        #[arg(long)]
        paused: bool,
        /// The directory a save wrote (state.oxvm, memory.raw).
        dir: PathBuf,
    },
    /// Drive a running VM through its API socket.
    Ctl(ctl::CtlArgs),
    /// List the VMs of this user that serve an API socket.
    List(list::ListArgs),
    /// Work with VM files.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum MemoryArg {
    Lazy,
    Copy,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print a VM file (OpenNebula template or JSON) as the equivalent JSON VM file.
    #[command(after_help = help::CONVERT_EXAMPLES)]
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
        Command::Run {
            api_socket,
            vm_file,
        } => run(&vm_file, api_socket),
        Command::Serve { api_socket } => exit_status(oxvm_vmm::run(RunOptions {
            config: None,
            api_socket: Some(api_socket),
            restore: None,
        })),
        Command::Restore {
            api_socket,
            memory,
            disks,
            taps,
            paused,
            dir,
        } => {
            let restore = RestoreParams {
                dir: std::path::absolute(&dir).unwrap_or(dir),
                memory: match memory {
                    MemoryArg::Lazy => MemoryMode::Lazy,
                    MemoryArg::Copy => MemoryMode::Copy,
                },
                disks: disks.into_iter().map(|(k, v)| (k, v.into())).collect(),
                taps: taps.into_iter().collect(),
                paused,
            };
            exit_status(oxvm_vmm::run(RunOptions {
                config: None,
                api_socket,
                restore: Some(restore),
            }))
        }
        Command::Ctl(args) => ctl::main(args),
        Command::List(args) => list::main(args),
        Command::Config {
            command: ConfigCommand::Convert { file },
        } => convert(&file),
    }
}

fn run(vm_file: &Path, api_socket: Option<PathBuf>) -> ExitCode {
    let mut cfg = match load_vm_file(vm_file) {
        Ok((c, warnings)) => {
            print_warnings(&warnings);
            c
        }
        Err(e) => {
            eprintln!("oxvm: {e}");
            return ExitCode::from(1);
        }
    };
    if let Some(socket) = &api_socket {
        cfg.api_socket = Some(socket.clone());
    }
    exit_status(oxvm_vmm::run(RunOptions {
        config: Some(cfg),
        api_socket,
        restore: None,
    }))
}

/// 0 when the guest powered off, reset with `on_reboot: exit`, or was destroyed
/// through the API; 1 on an error; 128+N for signal N (shell convention).
fn exit_status(result: Result<VmExit, VmmError>) -> ExitCode {
    match result {
        Ok(
            VmExit::PowerOff
            | VmExit::Reboot
            | VmExit::Destroyed
            | VmExit::Saved
            | VmExit::Migrated,
        ) => ExitCode::SUCCESS,
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
