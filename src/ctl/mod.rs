//! `oxvm ctl`: one API request per invocation (plus polling for `shutdown` and
//! `wait-state`), with text or JSON output and exit codes a script can act on.

mod migrate;
pub(crate) mod print;
mod wait;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use oxvm_api::control::{
    IncomingParams, MemoryMode, MigrateParams, RestoreParams, RevertParams, SaveParams,
    ShutdownParams, SnapshotParams, VmAction, VmState,
};
use oxvm_api::{load_vm_file, Client, ClientError, VmConfig};
use serde::Serialize;

const CTL_HELP: &str = r#"Examples:
  oxvm ctl --api-socket /run/demo.sock info
  oxvm ctl --api-socket /run/demo.sock info --json | jq .vcpu_threads
  oxvm ctl --api-socket /run/demo.sock counters
  oxvm ctl --api-socket /run/demo.sock pause
  oxvm ctl --api-socket /run/demo.sock resume
  oxvm ctl --api-socket /run/demo.sock shutdown --timeout 60 --no-force
  oxvm ctl --api-socket /run/demo.sock reboot
  oxvm ctl --api-socket /run/new.sock deploy vm.json     (an `oxvm serve` process)
  oxvm ctl --api-socket /run/demo.sock wait-state running --timeout 30
  oxvm ctl --api-socket /run/demo.sock migrate --to unix:/run/new.mig --local
  oxvm ctl --api-socket /run/demo.sock snapshot-create before-upgrade
  oxvm ctl --api-socket /run/demo.sock snapshot-list
  oxvm ctl --api-socket /run/demo.sock snapshot-revert before-upgrade
  oxvm ctl --api-socket /run/demo.sock snapshot-delete before-upgrade

`shutdown` presses the ACPI power button and waits until the VM is stopped
(its process exits); --no-wait returns once the request is accepted.
The routes behind each command are in docs/api.md.

Exit status:
  0  done
  1  cannot reach the VM, I/O error, or a VM file that cannot be loaded
  2  usage error
  3  the VM refused the request (its message is printed), e.g. pause while paused
  4  timeout: shutdown or wait-state did not get there in time"#;

#[derive(Args)]
#[command(after_help = CTL_HELP)]
pub struct CtlArgs {
    /// The VM's API socket (`oxvm run --api-socket`, `oxvm serve --api-socket`).
    #[arg(long, value_name = "PATH")]
    api_socket: PathBuf,
    /// Print the JSON answer instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: CtlCommand,
}

#[derive(Subcommand)]
enum CtlCommand {
    /// The VM: name, state, pid, uptime, vCPU threads, last error.
    Info,
    /// Disk, NIC, vCPU exit and memory counters.
    Counters,
    /// oxvm's and the API's version, as the VM process reports them.
    Version,
    /// Create the VM of a VM file in an `oxvm serve` process (state created).
    Create {
        /// JSON VM file or OpenNebula template (relative paths are resolved here).
        file: PathBuf,
    },
    /// Create the VM of a VM file and boot it.
    Deploy {
        /// JSON VM file or OpenNebula template (relative paths are resolved here).
        file: PathBuf,
    },
    /// Start a created VM.
    Boot,
    /// Press the power button and wait until the VM has stopped.
    Shutdown {
        #[command(flatten)]
        params: ShutdownArgs,
        /// Return once the VM accepted the request, without waiting.
        #[arg(long)]
        no_wait: bool,
    },
    /// Stop the VM at once (the guest gets no say).
    Destroy,
    /// Graceful reboot: power button, then boot again when the guest is off.
    Reboot {
        #[command(flatten)]
        params: ShutdownArgs,
    },
    /// Hard reset: rebuild the machine and boot from the start.
    Reset,
    /// Stop the vCPUs.
    Pause,
    /// Run the vCPUs again.
    Resume,
    /// Save the VM's state and memory into DIR (state.oxvm, memory.raw).
    Save {
        /// Directory to write (created; must not hold a saved VM already).
        dir: PathBuf,
        /// Stop the VM once saved (otherwise it goes on).
        #[arg(long)]
        stop: bool,
    },
    /// Restore a saved VM into this (empty) `oxvm serve` process.
    Restore {
        /// The directory a save wrote.
        dir: PathBuf,
        /// Copy memory.raw into fresh memory instead of mapping it lazily.
        #[arg(long)]
        copy_memory: bool,
        /// Use another file for a disk: ID=PATH (repeatable).
        #[arg(long = "disk", value_name = "ID=PATH", value_parser = parse_override)]
        disks: Vec<(String, String)>,
        /// Use another tap for a NIC: ID=NAME (repeatable).
        #[arg(long = "tap", value_name = "ID=NAME", value_parser = parse_override)]
        taps: Vec<(String, String)>,
        /// Stay paused after the restore.
        #[arg(long)]
        paused: bool,
    },
    /// Live-migrate the VM to a receiving process; shows progress until it is done.
    Migrate {
        /// tcp:HOST:PORT or unix:PATH (the destination's `migrate-incoming --listen`).
        #[arg(long)]
        to: String,
        /// Stop-and-copy once the rest fits this downtime.
        #[arg(long, value_name = "MS", default_value_t = 300)]
        downtime_ms: u64,
        /// Force stop-and-copy after this many pre-copy rounds.
        #[arg(long, value_name = "N", default_value_t = 30)]
        max_iterations: u32,
        /// Return once started.
        #[arg(long)]
        no_wait: bool,
        /// Same-host migration: hand the guest memory over by file descriptor (needs a
        /// unix: address and a VM with memory_shared); no copy, no pre-copy.
        #[arg(long)]
        local: bool,
    },
    /// Make this empty `oxvm serve` process receive a migrating VM.
    MigrateIncoming {
        /// tcp:HOST:PORT or unix:PATH to listen on.
        #[arg(long)]
        listen: String,
        /// Give up (the process exits) if no source connects in time.
        #[arg(long, value_name = "S", default_value_t = 600)]
        timeout: u64,
        /// This host's file for a disk: ID=PATH (repeatable).
        #[arg(long = "disk", value_name = "ID=PATH", value_parser = parse_override)]
        disks: Vec<(String, String)>,
        /// This host's tap for a NIC: ID=NAME (repeatable).
        #[arg(long = "tap", value_name = "ID=NAME", value_parser = parse_override)]
        taps: Vec<(String, String)>,
    },
    /// The migration's progress.
    MigrateStatus,
    /// Take a named snapshot: VM state and memory, and every disk frozen under a new
    /// qcow2 overlay (the VM file's snapshots_dir must be set; raw disks are refused).
    SnapshotCreate {
        /// 1-64 characters from A-Z a-z 0-9 . _ - (not starting with . or -).
        name: String,
        /// Free text kept with the snapshot.
        #[arg(long)]
        description: Option<String>,
    },
    /// List the named snapshots, oldest first.
    SnapshotList,
    /// Go back to a named snapshot: memory, devices and disks as they were then (what
    /// was written since is dropped).
    SnapshotRevert {
        name: String,
        /// Stay paused after the revert (default: as the VM was when the snapshot was
        /// taken).
        #[arg(long, conflicts_with = "running")]
        paused: bool,
        /// Run after the revert, even if the snapshot was taken of a paused VM.
        #[arg(long)]
        running: bool,
    },
    /// Delete a named snapshot (disk layers the live disk is built on stay).
    SnapshotDelete { name: String },
    /// Wait until the VM is in STATE (a VM whose process ended counts as stopped).
    WaitState {
        /// empty, created, running, paused, shutting-down or stopped.
        #[arg(value_parser = parse_state)]
        state: VmState,
        /// Give up after this many seconds (exit status 4).
        #[arg(long, value_name = "S", default_value_t = 60)]
        timeout: u64,
    },
}

#[derive(Args)]
struct ShutdownArgs {
    /// Seconds the guest gets to power off (default: the VM file's shutdown.timeout_s).
    #[arg(long, value_name = "S")]
    timeout: Option<u64>,
    /// Destroy the VM if the guest is not off in time (default: shutdown.force).
    #[arg(long, conflicts_with = "no_force")]
    force: bool,
    /// Leave the VM running if the guest is not off in time; report it (exit 4).
    #[arg(long)]
    no_force: bool,
}

impl ShutdownArgs {
    fn params(&self) -> ShutdownParams {
        ShutdownParams {
            timeout_s: self.timeout,
            force: match (self.force, self.no_force) {
                (true, _) => Some(true),
                (_, true) => Some(false),
                _ => None,
            },
        }
    }
}

/// `ID=VALUE` of `--disk` and `--tap`.
pub(crate) fn parse_override(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((id, v)) if !id.is_empty() && !v.is_empty() => Ok((id.to_string(), v.to_string())),
        _ => Err(format!("{s:?}: expected ID=VALUE")),
    }
}

fn parse_state(s: &str) -> Result<VmState, String> {
    VmState::parse(s).ok_or_else(|| {
        "expected empty, created, running, paused, shutting-down or stopped".to_string()
    })
}

/// Why a command failed: the exit status and what to print.
pub(crate) struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub(crate) fn new(code: u8, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }

    pub(crate) fn timeout(message: impl Into<String>) -> Failure {
        Failure::new(4, message)
    }
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Failure {
        match e {
            ClientError::Http(e) => Failure::new(3, format!("the VM refused: {e}")),
            other => Failure::new(1, other.to_string()),
        }
    }
}

/// Saving, restoring, snapshotting or reverting a large guest writes or reads
/// gigabytes: allow it an hour.
const PERSIST_TIMEOUT: Duration = Duration::from_secs(3600);

pub fn main(args: CtlArgs) -> ExitCode {
    let mut client = Client::new(&args.api_socket);
    if matches!(
        args.command,
        CtlCommand::Save { .. }
            | CtlCommand::Restore { .. }
            | CtlCommand::SnapshotCreate { .. }
            | CtlCommand::SnapshotRevert { .. }
    ) {
        client = client.with_timeout(PERSIST_TIMEOUT);
    }
    match execute(&client, args.command, args.json) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("oxvm: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

fn execute(client: &Client, command: CtlCommand, json: bool) -> Result<(), Failure> {
    let out = Output { json };
    let act = |action: VmAction| out.show(&client.action(&action)?, print::state);
    match command {
        CtlCommand::Info => out.show(&client.info()?, print::info),
        CtlCommand::Counters => out.show(&client.counters()?, print::counters),
        CtlCommand::Version => out.show(&client.version()?, print::version),
        CtlCommand::Create { file } => {
            let reply = client.create(&load(&file)?)?;
            out.show(&reply, print::state)
        }
        CtlCommand::Deploy { file } => {
            let reply = client.deploy(&load(&file)?)?;
            out.show(&reply, print::state)
        }
        CtlCommand::Shutdown { params, no_wait } => {
            if no_wait {
                let reply = client.action(&VmAction::Shutdown(params.params()))?;
                return out.show(&reply, print::state);
            }
            let reply = wait::shutdown(client, params.params())?;
            out.show(&reply, print::state)
        }
        CtlCommand::Reboot { params } => out.show(
            &client.action(&VmAction::Reboot(params.params()))?,
            print::state,
        ),
        CtlCommand::WaitState { state, timeout } => {
            let reply = wait::state(client, state, Duration::from_secs(timeout))?;
            out.show(&reply, print::state)
        }
        CtlCommand::Save { dir, stop } => {
            let dir = absolute(&dir)?;
            out.show(&client.save(&SaveParams { dir, stop })?, print::state)
        }
        CtlCommand::Restore {
            dir,
            copy_memory,
            disks,
            taps,
            paused,
        } => {
            let params = RestoreParams {
                dir: absolute(&dir)?,
                memory: if copy_memory {
                    MemoryMode::Copy
                } else {
                    MemoryMode::Lazy
                },
                disks: disks.into_iter().map(|(k, v)| (k, v.into())).collect(),
                taps: taps.into_iter().collect(),
                paused,
            };
            out.show(&client.restore(&params)?, print::state)
        }
        CtlCommand::Migrate {
            to,
            downtime_ms,
            max_iterations,
            no_wait,
            local,
        } => {
            let params = MigrateParams {
                to,
                downtime_ms,
                max_iterations,
                wait: !no_wait,
                local,
            };
            if no_wait {
                return out.show(&client.migrate(&params)?, print::state);
            }
            let status = migrate::run(client, &params, !json)?;
            out.show(&status, print::migration)
        }
        CtlCommand::MigrateIncoming {
            listen,
            timeout,
            disks,
            taps,
        } => out.show(
            &client.migrate_incoming(&IncomingParams {
                listen,
                timeout_s: timeout,
                disks: disks.into_iter().map(|(k, v)| (k, v.into())).collect(),
                taps: taps.into_iter().collect(),
            })?,
            print::state,
        ),
        CtlCommand::MigrateStatus => out.show(&client.migration_status()?, print::migration),
        CtlCommand::SnapshotCreate { name, description } => out.show(
            &client.snapshot_create(&SnapshotParams { name, description })?,
            print::snapshot,
        ),
        CtlCommand::SnapshotList => out.show(&client.snapshots()?, print::snapshots),
        CtlCommand::SnapshotRevert {
            name,
            paused,
            running,
        } => {
            let paused = match (paused, running) {
                (true, _) => Some(true),
                (_, true) => Some(false),
                _ => None,
            };
            let reply = client.snapshot_revert(&name, &RevertParams { paused })?;
            out.show(&reply, print::state)
        }
        CtlCommand::SnapshotDelete { name } => {
            out.show(&client.snapshot_delete(&name)?, print::snapshots)
        }
        CtlCommand::Boot => act(VmAction::Boot),
        CtlCommand::Destroy => act(VmAction::Destroy),
        CtlCommand::Reset => act(VmAction::Reset),
        CtlCommand::Pause => act(VmAction::Pause),
        CtlCommand::Resume => act(VmAction::Resume),
    }
}

fn absolute(p: &Path) -> Result<PathBuf, Failure> {
    std::path::absolute(p).map_err(|e| Failure::new(1, format!("{}: {e}", p.display())))
}

/// Load a VM file here, with relative paths made absolute: the VM process may run in
/// another directory.
fn load(file: &Path) -> Result<VmConfig, Failure> {
    let file = std::path::absolute(file)
        .map_err(|e| Failure::new(1, format!("{}: {e}", file.display())))?;
    let (config, warnings) = load_vm_file(&file).map_err(|e| Failure::new(1, e.to_string()))?;
    for w in warnings {
        eprintln!("oxvm: warning: {w}");
    }
    Ok(config)
}

struct Output {
    json: bool,
}

impl Output {
    /// The JSON of `value` with `--json`, else its text form.
    fn show<T: Serialize>(&self, value: &T, text: fn(&T) -> String) -> Result<(), Failure> {
        if self.json {
            let json = serde_json::to_string_pretty(value)
                .map_err(|e| Failure::new(1, format!("encoding the answer: {e}")))?;
            println!("{json}");
        } else {
            print!("{}", text(value));
        }
        Ok(())
    }
}
