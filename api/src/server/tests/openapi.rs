//! `api/openapi.json` against what the server really serves and sends.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::control::{
    ActionReply, ApiError, Counters, DiskCounters, MemoryCounters, NicCounters, RevertParams,
    ShutdownParams, SnapshotDisk, SnapshotInfo, SnapshotList, SnapshotParams, VcpuCounters,
    VcpuThread, VersionInfo, VmInfo, VmState,
};
use crate::server::routes::ROUTES;

const METHODS: [&str; 5] = ["get", "put", "post", "delete", "patch"];

fn spec() -> Value {
    serde_json::from_str(include_str!("../../../openapi.json")).expect("openapi.json parses")
}

fn schema<'a>(spec: &'a Value, name: &str) -> &'a Value {
    &spec["components"]["schemas"][name]
}

#[test]
fn routes_and_openapi_paths_match_both_ways() {
    let spec = spec();
    assert!(spec["openapi"].as_str().unwrap().starts_with("3.0"));
    let mut documented = BTreeMap::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if METHODS.contains(&method.as_str()) {
                let summary = op["summary"].as_str().unwrap_or_default().to_string();
                documented.insert((method.to_uppercase(), path.clone()), summary);
            }
        }
    }
    let served: BTreeMap<_, _> = ROUTES
        .iter()
        .map(|r| {
            (
                (r.method.to_string(), r.path.to_string()),
                r.summary.to_string(),
            )
        })
        .collect();
    assert_eq!(served.len(), ROUTES.len(), "a route is listed twice");
    for key in served.keys() {
        assert!(
            documented.contains_key(key),
            "{key:?} is served but not in openapi.json"
        );
    }
    for key in documented.keys() {
        assert!(
            served.contains_key(key),
            "{key:?} is in openapi.json but not served"
        );
    }
    assert_eq!(served, documented, "summaries differ");
}

/// Every variant, by an exhaustive match: a new state fails to compile here until it
/// is added (and then this test checks the file lists it).
fn all_states() -> Vec<VmState> {
    use VmState::*;
    let all = vec![Empty, Created, Running, Paused, ShuttingDown, Stopped];
    for s in &all {
        match s {
            Empty | Created | Running | Paused | ShuttingDown | Stopped => {}
        }
    }
    all
}

#[test]
fn the_vm_state_enum_matches_the_serde_names() {
    let spec = spec();
    let documented: Vec<&str> = schema(&spec, "VmState")["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let serde_names: Vec<String> = all_states()
        .into_iter()
        .map(|s| {
            serde_json::to_value(s)
                .unwrap()
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(documented, serde_names);
}

/// The documented properties of an object schema equal the keys serde writes for a
/// value with every optional field set.
fn assert_fields<T: serde::Serialize>(spec: &Value, name: &str, sample: &T) {
    let documented: BTreeSet<&str> = schema(spec, name)["properties"]
        .as_object()
        .unwrap_or_else(|| panic!("schema {name} has no properties"))
        .keys()
        .map(String::as_str)
        .collect();
    let value = serde_json::to_value(sample).unwrap();
    let sent: BTreeSet<&str> = value
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(documented, sent, "schema {name}");
}

#[test]
fn object_schemas_list_the_fields_serde_writes() {
    let spec = spec();
    let info = VmInfo {
        name: Some("demo".into()),
        state: VmState::Running,
        pid: 1,
        uptime_s: Some(1.0),
        boots: 1,
        vcpu_threads: vec![],
        last_error: Some("x".into()),
        config: None,
    };
    assert_fields(&spec, "VmInfo", &info);
    assert_fields(&spec, "VcpuThread", &VcpuThread { index: 0, tid: 1 });
    assert_fields(&spec, "Counters", &Counters::default());
    assert_fields(&spec, "DiskCounters", &DiskCounters::default());
    assert_fields(&spec, "NicCounters", &NicCounters::default());
    assert_fields(&spec, "VcpuCounters", &VcpuCounters::default());
    assert_fields(&spec, "MemoryCounters", &MemoryCounters::default());
    let reply = ActionReply {
        state: VmState::Paused,
    };
    assert_fields(&spec, "ActionReply", &reply);
    let version = VersionInfo {
        version: "0".into(),
        api: 1,
    };
    assert_fields(&spec, "VersionInfo", &version);
    let params = ShutdownParams {
        timeout_s: Some(1),
        force: Some(true),
    };
    assert_fields(&spec, "ShutdownParams", &params);
    assert_fields(&spec, "ApiError", &ApiError::conflict("x"));
    let snapshot = SnapshotInfo {
        name: "s1".into(),
        description: Some("x".into()),
        created_unix_ms: 1,
        vm_state: VmState::Running,
        dir: "/s/s1".into(),
        disks: vec![],
    };
    assert_fields(&spec, "SnapshotInfo", &snapshot);
    let disk = SnapshotDisk {
        id: "d0".into(),
        layer: None,
    };
    assert_fields(&spec, "SnapshotDisk", &disk);
    assert_fields(&spec, "SnapshotList", &SnapshotList::default());
    let params = SnapshotParams {
        name: "s1".into(),
        description: Some("x".into()),
    };
    assert_fields(&spec, "SnapshotParams", &params);
    assert_fields(&spec, "RevertParams", &RevertParams { paused: Some(true) });
    let migrate = crate::control::MigrateParams {
        to: "unix:/m".into(),
        downtime_ms: 1,
        max_iterations: 1,
        wait: true,
        local: true,
    };
    assert_fields(&spec, "MigrateParams", &migrate);
}
