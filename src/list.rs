//! `oxvm list`: the VMs registered in the runtime directory, like `virsh list`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use oxvm_api::control::VmInfo;
use oxvm_api::runtime_dir;
use oxvm_api::Client;

use crate::ctl::print;

const LIST_HELP: &str = r#"Every VM process serving an API socket registers it in the runtime
directory: $OXVM_RUNTIME_DIR, else /run/oxvm for root, else
$XDG_RUNTIME_DIR/oxvm, else /tmp/oxvm-<uid>. VMs that do not answer within
2 s are left out.

Examples:
  oxvm list
  oxvm list --json | jq -r '.[].socket'"#;

/// A VM that answered too slowly is left out rather than holding up the list.
const TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Args)]
#[command(after_help = LIST_HELP)]
pub struct ListArgs {
    /// Print a JSON array of {"socket": ..., "vm": <GET /v1/vm answer>}.
    #[arg(long)]
    json: bool,
}

#[derive(serde::Serialize)]
struct Entry {
    socket: PathBuf,
    vm: VmInfo,
}

pub fn main(args: ListArgs) -> ExitCode {
    let mut entries: Vec<Entry> = runtime_dir::registered_sockets()
        .into_iter()
        .filter_map(
            |socket| match Client::new(&socket).with_timeout(TIMEOUT).info() {
                Ok(vm) => Some(Entry { socket, vm }),
                Err(e) => {
                    tracing::debug!("skipping {}: {e}", socket.display());
                    None
                }
            },
        )
        .collect();
    entries.sort_by(|a, b| (&a.vm.name, a.vm.pid).cmp(&(&b.vm.name, b.vm.pid)));
    if args.json {
        match serde_json::to_string_pretty(&entries) {
            Ok(json) => println!("{json}"),
            Err(e) => {
                eprintln!("oxvm: encoding the list: {e}");
                return ExitCode::from(1);
            }
        }
        return ExitCode::SUCCESS;
    }
    let rows = entries
        .iter()
        .map(|e| {
            vec![
                e.vm.name.clone().unwrap_or_else(|| "-".to_string()),
                e.vm.pid.to_string(),
                e.vm.state.to_string(),
                print::uptime(e.vm.uptime_s),
                e.socket.display().to_string(),
            ]
        })
        .collect();
    print!(
        "{}",
        print::table(&["NAME", "PID", "STATE", "UPTIME", "SOCKET"], rows)
    );
    ExitCode::SUCCESS
}
