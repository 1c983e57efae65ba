use super::{
    ActionReply, ApiError, ApiRequest, Counters, MigrationStatus, SnapshotInfo, SnapshotList,
    VmInfo,
};

/// The reply to an [`ApiRequest`], by request kind.
#[derive(Debug, Clone, PartialEq)]
pub enum ApiReply {
    Info(Box<VmInfo>),
    Counters(Box<Counters>),
    /// Create, deploy and every action.
    Action(ActionReply),
    Migration(Box<MigrationStatus>),
    /// Snapshot create and get.
    Snapshot(Box<SnapshotInfo>),
    Snapshots(SnapshotList),
}

/// What the API server calls for every parsed request. Implemented by the VMM; the
/// server calls it from many connection threads at once.
pub trait VmController: Send + Sync {
    fn handle(&self, request: ApiRequest) -> Result<ApiReply, ApiError>;
}
