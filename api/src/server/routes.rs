//! The route table: the one list of what the API answers. The router looks requests up
//! here, and a test checks it against `api/openapi.json` in both directions, so the
//! documented API and the served one cannot drift apart.

/// What a route does once matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Answered by the server itself (no VM involved).
    Version,
    Info,
    Counters,
    Create,
    Deploy,
    /// `POST /v1/vm/actions/<name>`, by [`crate::control::VmAction::NAMES`] name.
    Action(&'static str),
    Save,
    Restore,
    MigrationStatus,
    Migrate,
    Incoming,
    SnapshotList,
    SnapshotGet,
    SnapshotCreate,
    SnapshotRevert,
    SnapshotDelete,
    /// Reserved for a later release: answered 501 naming the feature.
    Reserved(&'static str),
}

/// One route: method, path pattern (`{name}` matches one path segment) and summary.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    pub target: Target,
}

const fn route(
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    target: Target,
) -> Route {
    Route {
        method,
        path,
        summary,
        target,
    }
}

const HOTPLUG: &str = "disk and NIC hotplug";

/// Every route, in documentation order. (Kept as a one-line-per-route table.)
#[rustfmt::skip]
pub const ROUTES: &[Route] = &[
    route("GET", "/v1/version", "oxvm and API version", Target::Version),
    route("GET", "/v1/vm", "The VM: state, pid, uptime, vCPU threads, config", Target::Info),
    route("PUT", "/v1/vm", "Create the VM from a VM config (state created)", Target::Create),
    route("GET", "/v1/vm/counters", "Disk, NIC, vCPU exit and memory counters", Target::Counters),
    route("POST", "/v1/vm/deploy", "Create the VM and boot it", Target::Deploy),
    route("POST", "/v1/vm/actions/boot", "Start a created VM", Target::Action("boot")),
    route("POST", "/v1/vm/actions/shutdown", "ACPI power button; the guest powers off", Target::Action("shutdown")),
    route("POST", "/v1/vm/actions/destroy", "Stop at once", Target::Action("destroy")),
    route("POST", "/v1/vm/actions/reboot", "Graceful reboot (power button, then boot again)", Target::Action("reboot")),
    route("POST", "/v1/vm/actions/reset", "Hard reset in place", Target::Action("reset")),
    route("POST", "/v1/vm/actions/pause", "Stop the vCPUs", Target::Action("pause")),
    route("POST", "/v1/vm/actions/resume", "Run the vCPUs again", Target::Action("resume")),
    route("GET", "/v1/vm/snapshots", "List the named snapshots, oldest first", Target::SnapshotList),
    route("POST", "/v1/vm/snapshots", "Take a named snapshot (VM state, memory, every disk)", Target::SnapshotCreate),
    route("GET", "/v1/vm/snapshots/{name}", "One named snapshot", Target::SnapshotGet),
    route("DELETE", "/v1/vm/snapshots/{name}", "Delete a named snapshot", Target::SnapshotDelete),
    route("POST", "/v1/vm/snapshots/{name}/revert", "Revert the VM to a named snapshot", Target::SnapshotRevert),
    route("POST", "/v1/vm/save", "Save state and memory to a directory; stop or go on", Target::Save),
    route("POST", "/v1/vm/restore", "Restore a saved VM into an empty serve process", Target::Restore),
    route("GET", "/v1/vm/migration", "Migration progress", Target::MigrationStatus),
    route("POST", "/v1/vm/migration", "Send this VM to a receiving oxvm (live)", Target::Migrate),
    route("POST", "/v1/vm/migration/incoming", "Receive a migrating VM (empty serve process)", Target::Incoming),
    route("POST", "/v1/vm/disks", "Hot-add a disk (not yet: 501)", Target::Reserved(HOTPLUG)),
    route("DELETE", "/v1/vm/disks/{id}", "Hot-remove a disk (not yet: 501)", Target::Reserved(HOTPLUG)),
    route("POST", "/v1/vm/nics", "Hot-add a NIC (not yet: 501)", Target::Reserved(HOTPLUG)),
    route("DELETE", "/v1/vm/nics/{id}", "Hot-remove a NIC (not yet: 501)", Target::Reserved(HOTPLUG)),
];

/// Why no route matched.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Miss {
    /// No route has this path.
    NotFound,
    /// The path exists with other methods (for the 405 `Allow` header).
    WrongMethod(Vec<&'static str>),
}

/// The route for `method` and `path` (the path without its query string).
pub(crate) fn find(method: &str, path: &str) -> Result<&'static Route, Miss> {
    let mut allowed = Vec::new();
    for r in ROUTES.iter().filter(|r| path_matches(r.path, path)) {
        if r.method == method {
            return Ok(r);
        }
        allowed.push(r.method);
    }
    if allowed.is_empty() {
        Err(Miss::NotFound)
    } else {
        Err(Miss::WrongMethod(allowed))
    }
}

/// The segment of `path` that stands where `pattern` has `placeholder` (`{name}`);
/// `None` if the pattern has no such placeholder or the path does not match.
pub(crate) fn segment<'a>(pattern: &str, path: &'a str, placeholder: &str) -> Option<&'a str> {
    if !path_matches(pattern, path) {
        return None;
    }
    let i = pattern.split('/').position(|w| w == placeholder)?;
    path.split('/').nth(i)
}

/// Segment by segment; `{x}` matches any one non-empty segment.
fn path_matches(pattern: &str, path: &str) -> bool {
    let mut want = pattern.split('/');
    let mut got = path.split('/');
    loop {
        match (want.next(), got.next()) {
            (None, None) => return true,
            (Some(w), Some(g)) => {
                let wildcard = w.starts_with('{') && w.ends_with('}');
                if !(w == g || wildcard && !g.is_empty()) {
                    return false;
                }
            }
            _ => return false,
        }
    }
}
