//! The file side of named snapshots without a VM: planning layers, the store's
//! layout, and which layers garbage collection removes.

use std::path::Path;

use oxvm_api::control::VmState;
use oxvm_api::{DiskFormat, VmConfig};
use oxvm_devices::block::Qcow2Disk;

use super::*;
use crate::snapshot::test_dir::TestDir;

fn config(dir: &Path, disks: &str) -> VmConfig {
    let json = format!(
        r#"{{ "name": "t", "memory_mib": 16, "boot": {{ "kernel": "/k" }},
             "disks": [{disks}], "snapshots_dir": "snaps" }}"#
    );
    VmConfig::from_json(&json, dir).unwrap()
}

fn qcow2(path: &Path, backing: Option<&str>) {
    Qcow2Disk::create(path, 1 << 20, backing.map(|b| (b, DiskFormat::Qcow2))).unwrap();
}

fn meta(name: &str, ms: u64, layer: Option<&str>) -> SnapshotMeta {
    SnapshotMeta {
        name: name.into(),
        description: None,
        created_unix_ms: ms,
        vm_state: VmState::Running,
        oxvm_version: "test".into(),
        disks: vec![MetaDisk {
            id: "d0".into(),
            layer: layer.map(str::to_string),
        }],
    }
}

/// Commit `m` as a finished snapshot in the store.
fn commit(store: &SnapshotStore, m: &SnapshotMeta) {
    let staging = store.stage(&m.name).unwrap();
    store.commit(&staging, m).unwrap();
}

#[test]
fn plans_name_layers_next_to_each_disk_and_refuse_raw_images() {
    let d = TestDir::new("plan");
    qcow2(&d.join("a.qcow2"), None);
    std::fs::write(d.join("b.raw"), [0u8; 512]).unwrap();
    let cfg = config(
        d.path(),
        r#"{ "id": "a", "path": "a.qcow2" }, { "id": "b", "path": "b.raw", "readonly": true }"#,
    );
    let plans = plan(&cfg, "s1").unwrap();
    assert_eq!(
        plans[0].layer.as_deref(),
        Some(d.join("a.qcow2.s1").as_path())
    );
    assert_eq!(plans[0].layer_name().as_deref(), Some("a.qcow2.s1"));
    assert_eq!(plans[1].layer, None, "read-only disks are not layered");
    // A taken layer name gets a suffix.
    std::fs::write(d.join("a.qcow2.s1"), b"x").unwrap();
    let plans = plan(&cfg, "s1").unwrap();
    assert_eq!(plans[0].layer_name().as_deref(), Some("a.qcow2.s1.1"));

    // A symbolic link (OpenNebula's disk.N to a datastore image) is refused: renaming
    // it would leave the image behind.
    std::os::unix::fs::symlink(d.join("a.qcow2"), d.join("link.qcow2")).unwrap();
    let linked = config(d.path(), r#"{ "id": "l", "path": "link.qcow2" }"#);
    let e = plan(&linked, "s1").unwrap_err();
    assert_eq!(e.status(), 400);
    assert!(e.to_string().contains("symbolic link"), "{e}");

    // A writable raw disk is refused, naming it; auto-detected raw too.
    for format in [r#", "format": "raw""#, ""] {
        let cfg = config(
            d.path(),
            &format!(
                r#"{{ "id": "a", "path": "a.qcow2" }}, {{ "id": "b", "path": "b.raw"{format} }}"#
            ),
        );
        let e = plan(&cfg, "s1").unwrap_err();
        assert_eq!(e.status(), 400);
        let msg = e.to_string();
        assert!(msg.contains("disks[1]") && msg.contains("raw"), "{msg}");
    }
}

#[test]
fn the_store_lists_finished_snapshots_oldest_first() {
    let d = TestDir::new("store");
    let cfg = config(d.path(), "");
    let store = SnapshotStore::of(&cfg).unwrap();
    assert!(
        store.list().unwrap().is_empty(),
        "no directory yet: no snapshots"
    );
    commit(&store, &meta("late", 20, None));
    commit(&store, &meta("early", 10, None));
    // An unfinished one (no snapshot.json) is not a snapshot.
    std::fs::create_dir_all(d.join("snaps/broken")).unwrap();
    let _leftover = store.stage("half").unwrap();
    let names: Vec<_> = store.list().unwrap().into_iter().map(|m| m.name).collect();
    assert_eq!(names, ["early", "late"]);
    assert!(store.taken("broken") && store.taken("early") && !store.taken("x"));
    assert_eq!(store.read("x").unwrap_err().status(), 404);
    assert_eq!(store.read("late").unwrap(), meta("late", 20, None));

    // Without layers nothing is retired.
    store.remove(&meta("late", 20, None)).unwrap();
    assert!(!d.join("snaps/late").exists());
    assert!(store.retired().unwrap().is_empty());

    // A snapshot.json naming another snapshot, or a layer outside the disk's
    // directory, is refused.
    std::fs::rename(d.join("snaps/early"), d.join("snaps/moved")).unwrap();
    assert_eq!(store.read("moved").unwrap_err().status(), 409);
    assert!(store.list().is_err());
    std::fs::remove_dir_all(d.join("snaps/moved")).unwrap();
    commit(&store, &meta("evil", 30, Some("../../etc/passwd")));
    let e = store.read("evil").unwrap_err();
    assert!(e.to_string().contains("plain file name"), "{e}");
    std::fs::remove_dir_all(d.join("snaps/evil")).unwrap();

    let mut no_dir = cfg.clone();
    no_dir.snapshots_dir = None;
    let e = SnapshotStore::of(&no_dir).err().unwrap();
    assert!(e.to_string().starts_with("snapshots_dir:"), "{e}");
}

#[test]
fn garbage_collection_removes_only_layers_nothing_is_built_on() {
    let d = TestDir::new("gc");
    // live -> d0.s2 -> d0.s1 -> base; s3's layer is a branch off s1 left by a revert.
    qcow2(&d.join("base.qcow2"), None);
    qcow2(&d.join("d0.s1"), Some("base.qcow2"));
    qcow2(&d.join("d0.s2"), Some("d0.s1"));
    qcow2(&d.join("d0.s3"), Some("d0.s1"));
    qcow2(&d.join("d0"), Some("d0.s2"));
    let cfg = config(d.path(), r#"{ "id": "d0", "path": "d0" }"#);
    let store = SnapshotStore::of(&cfg).unwrap();
    for (name, ms) in [("s1", 1), ("s2", 2), ("s3", 3)] {
        commit(&store, &meta(name, ms, Some(&format!("d0.{name}"))));
    }

    // s1's layer is under the live disk: it stays, recorded as retired.
    store.remove(&store.read("s1").unwrap()).unwrap();
    assert!(collect_garbage(&cfg, &store).unwrap().is_empty());
    assert!(d.join("d0.s1").exists());
    assert_eq!(store.retired().unwrap().len(), 1);
    // s3's layer is on no chain but its own: it goes at once.
    store.remove(&store.read("s3").unwrap()).unwrap();
    assert_eq!(
        collect_garbage(&cfg, &store).unwrap(),
        vec![d.join("d0.s3")]
    );
    // After a "revert" onto base, s1's layer is still s2's backing file...
    qcow2(&d.join("d0"), Some("base.qcow2"));
    assert!(collect_garbage(&cfg, &store).unwrap().is_empty());
    // ...until s2 goes: then both layers go, and the records with them.
    store.remove(&store.read("s2").unwrap()).unwrap();
    let mut removed = collect_garbage(&cfg, &store).unwrap();
    removed.sort();
    assert_eq!(removed, vec![d.join("d0.s1"), d.join("d0.s2")]);
    assert!(store.retired().unwrap().is_empty());
    assert!(d.join("base.qcow2").exists(), "not a layer: never touched");
}

#[test]
fn garbage_collection_removes_nothing_when_a_chain_cannot_be_read() {
    let d = TestDir::new("gcbroken");
    qcow2(&d.join("d0.s1"), Some("gone.qcow2"));
    qcow2(&d.join("d0"), Some("d0.s1"));
    let cfg = config(d.path(), r#"{ "id": "d0", "path": "d0" }"#);
    let store = SnapshotStore::of(&cfg).unwrap();
    commit(&store, &meta("s1", 1, Some("d0.s1")));
    commit(&store, &meta("s2", 2, Some("d0.s2")));
    qcow2(&d.join("d0.s2"), Some("d0.s1"));
    store.remove(&store.read("s2").unwrap()).unwrap();
    // d0.s2 is used by nothing, but d0's chain breaks below d0.s1: stop, keep all.
    let e = collect_garbage(&cfg, &store).unwrap_err();
    assert!(e.to_string().contains("gone.qcow2"), "{e}");
    assert!(d.join("d0.s2").exists());
}
