//! Named snapshots (create / list / revert / delete): the VM state and memory in the
//! config's `snapshots_dir` (`store`, `meta`), and a point in time of every disk as
//! a frozen qcow2 layer under a new overlay (`layers`); layers nothing is built on any
//! more are removed (`gc`). The lifecycle side (pausing, quiescing, rebuilding the
//! machine) is `control/snapshots.rs`. Operator documentation: docs/snapshots.md.

mod error;
mod gc;
mod layers;
mod meta;
mod store;
#[cfg(test)]
mod tests;

pub use error::NamedSnapshotError;
pub use gc::collect_garbage;
pub use layers::{
    commit_revert, finish_revert, freeze, layer_path, plan, plan_revert, prepare_revert, thaw,
    undo_revert,
};
pub use meta::{MetaDisk, SnapshotMeta};
pub use store::SnapshotStore;
