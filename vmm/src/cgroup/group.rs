//! Creating the VM's groups, moving the process into them, and undoing both.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::layout::GroupPlan;
use super::CgroupError;

/// The VM process's cgroups. Dropping it moves the process back to the groups it came
/// from and removes the VM's groups (their parents stay: other VMs may share them).
#[derive(Debug)]
pub(crate) struct CgroupGuard {
    pid: u32,
    entered: Vec<Entered>,
}

#[derive(Debug)]
struct Entered {
    leaf: PathBuf,
    original: PathBuf,
    moved: bool,
}

impl CgroupGuard {
    /// No cgroup: nothing to undo.
    pub fn none() -> CgroupGuard {
        CgroupGuard {
            pid: std::process::id(),
            entered: Vec::new(),
        }
    }
}

/// Create the groups of `plans` and move this whole process (all threads) into them.
/// On error everything done so far is undone.
pub(super) fn enter(plans: Vec<GroupPlan>, name: &str) -> Result<CgroupGuard, CgroupError> {
    let mut guard = CgroupGuard::none();
    for plan in &plans {
        enter_one(&mut guard, plan, name)?;
    }
    Ok(guard)
}

fn host_err<'a>(
    field: &'static str,
    action: &'a str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> CgroupError + 'a {
    move |source| CgroupError::Host {
        field,
        action: action.to_string(),
        path: path.to_path_buf(),
        source,
    }
}

fn enter_one(guard: &mut CgroupGuard, plan: &GroupPlan, name: &str) -> Result<(), CgroupError> {
    let field = plan.field();
    // A group of this name in use is refused before anything is touched.
    if plan.leaf.exists() {
        check_unused(&plan.leaf, name)?;
    }
    // The first ancestor is the hierarchy's mount point; the others are created when
    // missing. On v2 each one passes the controllers down to its children.
    for (i, dir) in plan.ancestors.iter().enumerate() {
        if i > 0 {
            match std::fs::create_dir(dir) {
                Ok(()) => tracing::debug!("created cgroup {}", dir.display()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(host_err(field, "create cgroup", dir)(e)),
            }
        }
        if plan.v2 {
            enable_controllers(dir, &plan.controllers, field)?;
        }
    }
    match std::fs::create_dir(&plan.leaf) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            check_unused(&plan.leaf, name)?; // again: it may have appeared meanwhile
            tracing::info!("reusing the empty cgroup {}", plan.leaf.display());
        }
        Err(e) => return Err(host_err(field, "create cgroup", &plan.leaf)(e)),
    }
    guard.entered.push(Entered {
        leaf: plan.leaf.clone(),
        original: plan.original.clone(),
        moved: false,
    });
    // Limits first, then the move: the process never runs in the group unlimited.
    for s in &plan.settings {
        let path = plan.leaf.join(s.file);
        let action = format!("write {} to", s.value);
        write_value(&path, &s.value).map_err(host_err(s.field, &action, &path))?;
    }
    let procs = plan.leaf.join("cgroup.procs");
    write_value(&procs, &guard.pid.to_string()).map_err(host_err(
        field,
        "move the VM process into",
        &procs,
    ))?;
    if let Some(e) = guard.entered.last_mut() {
        e.moved = true;
    }
    let what: Vec<String> = plan
        .settings
        .iter()
        .map(|s| format!("{}={}", s.file, s.value))
        .collect();
    tracing::info!(
        "VM process in cgroup {} ({})",
        plan.leaf.display(),
        what.join(", ")
    );
    Ok(())
}

/// Write a whole value in one write(2), as cgroup files expect; never create the file.
fn write_value(path: &Path, value: &str) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
    f.write_all(value.as_bytes())
}

/// cgroup v2: make sure `dir` passes `controllers` to its children.
fn enable_controllers(
    dir: &Path,
    controllers: &[&'static str],
    field: &'static str,
) -> Result<(), CgroupError> {
    let path = dir.join("cgroup.subtree_control");
    let enabled = std::fs::read_to_string(&path).map_err(host_err(field, "read", &path))?;
    let missing: Vec<&str> = controllers
        .iter()
        .copied()
        .filter(|c| !enabled.split_whitespace().any(|e| e == *c))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let request: Vec<String> = missing.iter().map(|c| format!("+{c}")).collect();
    write_value(&path, &request.join(" ")).map_err(|source| CgroupError::Enable {
        field,
        controllers: missing.join(", "),
        path: path.clone(),
        source,
    })
}

/// An existing group of the VM's name is reused only when nothing is in it (a VM that
/// was killed before it could clean up leaves such an empty group behind).
fn check_unused(dir: &Path, name: &str) -> Result<(), CgroupError> {
    let procs_path = dir.join("cgroup.procs");
    let procs = std::fs::read_to_string(&procs_path).map_err(|source| CgroupError::ReadHost {
        path: procs_path.clone(),
        source,
    })?;
    let pids: Vec<&str> = procs.split_whitespace().collect();
    let holds = if !pids.is_empty() {
        Some(format!("holds process(es) {}", pids.join(" ")))
    } else {
        let children = std::fs::read_dir(dir)
            .map_err(|source| CgroupError::ReadHost {
                path: dir.to_path_buf(),
                source,
            })?
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .count();
        (children > 0).then(|| format!("has {children} child group(s)"))
    };
    match holds {
        Some(holds) => Err(CgroupError::InUse {
            path: dir.to_path_buf(),
            holds,
            name: name.to_string(),
        }),
        None => Ok(()),
    }
}

/// Remove a group. A thread that has just exited can still count as a member for a
/// moment (the kernel detaches it from its cgroup late in exit), so EBUSY is retried
/// briefly before giving up with a warning.
fn remove_group(dir: &Path) {
    const TRIES: u32 = 100;
    for attempt in 1..=TRIES {
        match std::fs::remove_dir(dir) {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && attempt < TRIES => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => {
                tracing::warn!("cannot remove cgroup {}: {e}", dir.display());
                return;
            }
        }
    }
}

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        for e in self.entered.drain(..).rev() {
            if e.moved {
                let procs = e.original.join("cgroup.procs");
                if let Err(err) = write_value(&procs, &self.pid.to_string()) {
                    tracing::warn!(
                        "cannot move the VM process back to {}: {err}",
                        e.original.display()
                    );
                }
            }
            remove_group(&e.leaf);
        }
    }
}

#[cfg(test)]
mod tests {
    //! The v2 sequence on a fake cgroup tree (plain files in a temp dir): which
    //! `cgroup.subtree_control` writes happen, in which order values and the move land.
    //! Real cgroup v1 is exercised by tests/cgroup.rs; no real v2 host is available.

    use std::fs;

    use vmm_sys_util::tempdir::TempDir;

    use super::super::layout::{GroupPlan, Setting};
    use super::*;

    /// root (mount point) and root/oxvm exist with the interface files; the leaf is
    /// pre-made (a plain mkdir here would have no interface files) and so is "reused".
    fn fake_v2(root_enabled: &str, leaf_files: &[&str]) -> (TempDir, GroupPlan) {
        let t = TempDir::new_with_prefix("/tmp/oxvm-cgfake-").unwrap();
        let root = t.as_path().to_path_buf();
        let parent = root.join("oxvm");
        let leaf = parent.join("vm1");
        let orig = root.join("user.slice");
        for d in [&parent, &leaf, &orig] {
            fs::create_dir_all(d).unwrap();
        }
        fs::write(root.join("cgroup.subtree_control"), root_enabled).unwrap();
        fs::write(parent.join("cgroup.subtree_control"), "").unwrap();
        fs::write(orig.join("cgroup.procs"), "").unwrap();
        fs::write(leaf.join("cgroup.procs"), "").unwrap();
        for f in leaf_files {
            fs::write(leaf.join(f), "").unwrap();
        }
        let plan = GroupPlan {
            v2: true,
            controllers: vec!["cpu", "memory"],
            ancestors: vec![root.clone(), parent],
            leaf,
            original: orig,
            settings: vec![
                Setting {
                    file: "cpu.weight",
                    value: "50".into(),
                    field: "resources.cpu_weight",
                },
                Setting {
                    file: "memory.max",
                    value: "67108864".into(),
                    field: "resources.memory_max_mib",
                },
            ],
        };
        (t, plan)
    }

    fn read(p: &Path) -> String {
        fs::read_to_string(p).unwrap()
    }

    #[test]
    fn v2_enables_controllers_down_the_chain_then_writes_and_moves() {
        let (t, plan) = fake_v2("cpu memory", &["cpu.weight", "memory.max"]);
        let pid = std::process::id().to_string();
        let guard = enter(vec![plan.clone()], "vm1").unwrap();
        // Already enabled at the root: left alone; missing in oxvm/: requested.
        assert_eq!(
            read(&t.as_path().join("cgroup.subtree_control")),
            "cpu memory"
        );
        assert_eq!(
            read(&plan.ancestors[1].join("cgroup.subtree_control")),
            "+cpu +memory"
        );
        assert_eq!(read(&plan.leaf.join("cpu.weight")), "50");
        assert_eq!(read(&plan.leaf.join("memory.max")), "67108864");
        assert_eq!(read(&plan.leaf.join("cgroup.procs")), pid);
        assert_eq!(read(&plan.original.join("cgroup.procs")), "");
        drop(guard);
        // Back to where it was (removing the fake leaf fails: it holds plain files).
        assert_eq!(read(&plan.original.join("cgroup.procs")), pid);
    }

    #[test]
    fn a_failed_write_names_field_and_path_and_never_moves_the_process() {
        let (t, plan) = fake_v2("", &["cpu.weight"]); // no memory.max
        let e = enter(vec![plan.clone()], "vm1").unwrap_err().to_string();
        assert!(
            e.contains("`resources.memory_max_mib`")
                && e.contains("write 67108864 to")
                && e.contains(&plan.leaf.join("memory.max").display().to_string()),
            "{e}"
        );
        assert_eq!(
            read(&t.as_path().join("cgroup.subtree_control")),
            "+cpu +memory"
        );
        assert_eq!(read(&plan.leaf.join("cgroup.procs")), "");
        assert_eq!(read(&plan.original.join("cgroup.procs")), "");
    }

    #[test]
    fn a_group_holding_a_process_is_refused_by_name() {
        let (_t, plan) = fake_v2("", &["cpu.weight", "memory.max"]);
        fs::write(plan.leaf.join("cgroup.procs"), "4242\n").unwrap();
        let e = enter(vec![plan.clone()], "vm1").unwrap_err().to_string();
        assert!(
            e.contains(&plan.leaf.display().to_string())
                && e.contains("holds process(es) 4242")
                && e.contains("\"vm1\""),
            "{e}"
        );
        // Nothing was written before the refusal.
        assert_eq!(read(&plan.leaf.join("cpu.weight")), "");
        assert_eq!(read(&plan.ancestors[1].join("cgroup.subtree_control")), "");
    }
}
