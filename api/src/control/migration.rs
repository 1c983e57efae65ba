use serde::{Deserialize, Serialize};

/// Body of `POST /v1/vm/migration`: send this running VM to a destination that was
/// told to receive (`POST /v1/vm/migration/incoming` on an `oxvm serve` process).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrateParams {
    /// `tcp:HOST:PORT` or `unix:PATH`.
    pub to: String,
    /// Stop-and-copy starts once the remaining dirty pages can be sent within this
    /// (at the bandwidth measured so far).
    #[serde(default = "default_downtime_ms")]
    pub downtime_ms: u64,
    /// Pre-copy rounds before stop-and-copy is forced (a guest dirtying memory faster
    /// than the link would otherwise never converge).
    #[serde(default = "default_max_iterations")]
    pub max_iterations: u32,
    /// Answer only when the migration is over, with its final status (200), or with
    /// the error; otherwise answer at once (202) and report through GET.
    #[serde(default)]
    pub wait: bool,
    /// Local migration (both processes on this host, a `unix:` address, a VM with
    /// `memory_shared`): the destination takes the guest memory over by file
    /// descriptor; nothing is copied and there is no pre-copy.
    #[serde(default)]
    pub local: bool,
}

fn default_downtime_ms() -> u64 {
    300
}

fn default_max_iterations() -> u32 {
    30
}

/// Body of `POST /v1/vm/migration/incoming`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncomingParams {
    /// `tcp:HOST:PORT` or `unix:PATH` to listen on (one connection).
    pub listen: String,
    /// Give up (and end the process) if no source has connected by then.
    #[serde(default = "default_accept_timeout_s")]
    pub timeout_s: u64,
    /// Disk paths by disk id on this host, replacing the source's.
    #[serde(default)]
    pub disks: std::collections::BTreeMap<String, std::path::PathBuf>,
    /// Tap names by NIC id on this host, replacing the source's.
    #[serde(default)]
    pub taps: std::collections::BTreeMap<String, String>,
}

fn default_accept_timeout_s() -> u64 {
    600
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MigrationPhase {
    /// No migration in this process.
    #[default]
    None,
    /// Destination: waiting for the source to connect.
    Listening,
    /// Guest memory is being copied while the guest runs.
    Precopy,
    /// The guest is paused; the last pages and the state are on their way.
    StopAndCopy,
    Completed,
    Failed,
}

/// `GET /v1/vm/migration`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrationStatus {
    pub phase: MigrationPhase,
    /// Pre-copy round (0 = the first full pass).
    pub iteration: u32,
    pub bytes_sent: u64,
    pub pages_sent: u64,
    /// Guest RAM in pages, for a progress figure.
    pub total_pages: u64,
    /// Pages dirtied per second in the last round.
    pub dirty_pages_per_s: u64,
    /// Pages still to send.
    pub remaining_pages: u64,
    /// What stop-and-copy would take now, at the measured bandwidth.
    pub expected_downtime_ms: u64,
    /// Measured downtime (guest paused to destination running), once completed.
    pub downtime_ms: Option<u64>,
    pub error: Option<String>,
}
