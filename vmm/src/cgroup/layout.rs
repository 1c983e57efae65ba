//! Which cgroup hierarchy carries which controller on this host, and what to create
//! there: parsed from /proc/self/mountinfo, /proc/self/cgroup and the v2 root's
//! `cgroup.controllers` (pure functions of those texts, so every layout can be tested).

use std::path::{Path, PathBuf};

use oxvm_api::config::Resources;

use super::values::{mib_to_bytes, v1_shares, v2_weight};
use super::CgroupError;

const MOUNTINFO: &str = "/proc/self/mountinfo";
const PROC_CGROUP: &str = "/proc/self/cgroup";

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Kind {
    /// cgroup v1: the super options name the controllers bound to this hierarchy.
    V1 {
        options: Vec<String>,
    },
    V2,
}

/// One cgroup filesystem mount.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Mount {
    /// The cgroup path this mount shows at its mount point (usually `/`).
    pub root: String,
    pub point: PathBuf,
    pub kind: Kind,
}

impl Mount {
    fn has_v1(&self, controller: &str) -> bool {
        matches!(&self.kind, Kind::V1 { options } if options.iter().any(|o| o == controller))
    }

    /// The directory of cgroup `path` (absolute from the hierarchy root) in this mount,
    /// or None when the mount does not show that part of the hierarchy.
    pub fn dir_of(&self, path: &str) -> Option<PathBuf> {
        let rel = if self.root == "/" {
            path
        } else {
            let rest = path.strip_prefix(self.root.as_str())?;
            if !(rest.is_empty() || rest.starts_with('/')) {
                return None;
            }
            rest
        };
        let rel = rel.trim_matches('/');
        Some(if rel.is_empty() {
            self.point.clone()
        } else {
            self.point.join(rel)
        })
    }
}

/// Undo mountinfo's octal escapes (`\040` for a space, …).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 4 <= b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cgroup mounts in a /proc/self/mountinfo text:
/// `id parent maj:min root mount-point options [optional…] - fstype source super-options`.
pub(super) fn parse_mountinfo(text: &str) -> Vec<Mount> {
    let mut mounts = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(sep) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        if sep < 6 || fields.len() < sep + 4 {
            continue;
        }
        let kind = match fields[sep + 1] {
            "cgroup2" => Kind::V2,
            "cgroup" => Kind::V1 {
                options: fields[sep + 3].split(',').map(str::to_string).collect(),
            },
            _ => continue,
        };
        mounts.push(Mount {
            root: unescape(fields[3]),
            point: PathBuf::from(unescape(fields[4])),
            kind,
        });
    }
    mounts
}

/// One line of /proc/self/cgroup: `hierarchy-id:controllers:path` (v2: `0::path`).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Membership {
    pub id: u32,
    pub controllers: Vec<String>,
    pub path: String,
}

pub(super) fn parse_proc_cgroup(text: &str) -> Vec<Membership> {
    text.lines()
        .filter_map(|line| {
            let mut it = line.splitn(3, ':');
            let id = it.next()?.parse().ok()?;
            let controllers = it.next()?;
            let path = it.next()?.to_string();
            Some(Membership {
                id,
                controllers: controllers
                    .split(',')
                    .filter(|c| !c.is_empty())
                    .map(str::to_string)
                    .collect(),
                path,
            })
        })
        .collect()
}

/// The host's cgroup layout as seen by this process.
#[derive(Debug, Clone)]
pub(super) struct Layout {
    mounts: Vec<Mount>,
    member: Vec<Membership>,
    /// Controllers the v2 hierarchy offers at its mount point (`cgroup.controllers`).
    v2_controllers: Vec<String>,
}

/// Where one controller lives for this process.
struct Placement<'a> {
    v2: bool,
    mount: &'a Mount,
    /// This process's cgroup in that hierarchy.
    current: &'a str,
}

/// One value to write into the VM's group.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Setting {
    pub file: &'static str,
    pub value: String,
    pub field: &'static str,
}

/// What to create and write in one hierarchy.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct GroupPlan {
    pub v2: bool,
    pub controllers: Vec<&'static str>,
    /// Directories from the hierarchy's mount point down to the VM group's parent.
    pub ancestors: Vec<PathBuf>,
    /// The VM's group.
    pub leaf: PathBuf,
    /// Where this process is now (and goes back to when the VM ends).
    pub original: PathBuf,
    pub settings: Vec<Setting>,
}

impl GroupPlan {
    /// The VM file field errors about this group's directories name.
    pub fn field(&self) -> &'static str {
        self.settings.first().map_or("resources", |s| s.field)
    }
}

/// What each resource needs: controller, field, v1 file, v2 file, value per version.
struct Need {
    controller: &'static str,
    field: &'static str,
    v1_file: &'static str,
    v2_file: &'static str,
    v1_value: String,
    v2_value: String,
}

fn needs(res: &Resources) -> Vec<Need> {
    let mut v = Vec::new();
    if let Some(w) = res.cpu_weight {
        v.push(Need {
            controller: "cpu",
            field: "resources.cpu_weight",
            v1_file: "cpu.shares",
            v2_file: "cpu.weight",
            v1_value: v1_shares(w).to_string(),
            v2_value: v2_weight(w).to_string(),
        });
    }
    if let Some(m) = res.memory_max_mib {
        let bytes = mib_to_bytes(m).to_string();
        v.push(Need {
            controller: "memory",
            field: "resources.memory_max_mib",
            v1_file: "memory.limit_in_bytes",
            v2_file: "memory.max",
            v1_value: bytes.clone(),
            v2_value: bytes,
        });
    }
    v
}

fn read(path: &Path) -> Result<String, CgroupError> {
    std::fs::read_to_string(path).map_err(|source| CgroupError::ReadHost {
        path: path.to_path_buf(),
        source,
    })
}

impl Layout {
    pub fn read_host() -> Result<Layout, CgroupError> {
        let mounts = parse_mountinfo(&read(Path::new(MOUNTINFO))?);
        let member = parse_proc_cgroup(&read(Path::new(PROC_CGROUP))?);
        let v2_controllers = mounts
            .iter()
            .find(|m| m.kind == Kind::V2)
            .and_then(|m| std::fs::read_to_string(m.point.join("cgroup.controllers")).ok())
            .unwrap_or_default();
        Ok(Layout::new(mounts, member, &v2_controllers))
    }

    pub fn new(mounts: Vec<Mount>, member: Vec<Membership>, v2_controllers: &str) -> Layout {
        Layout {
            mounts,
            member,
            v2_controllers: v2_controllers
                .split_whitespace()
                .map(str::to_string)
                .collect(),
        }
    }

    /// A controller is bound to at most one hierarchy: the v2 one when its root offers
    /// it, else the v1 mount that names it.
    fn place(&self, controller: &str) -> Option<Placement<'_>> {
        if self.v2_controllers.iter().any(|c| c == controller) {
            let mount = self.mounts.iter().find(|m| m.kind == Kind::V2)?;
            let current = self.member.iter().find(|m| m.id == 0)?;
            return Some(Placement {
                v2: true,
                mount,
                current: &current.path,
            });
        }
        let current = self
            .member
            .iter()
            .find(|m| m.id != 0 && m.controllers.iter().any(|c| c == controller))?;
        let candidates = || self.mounts.iter().filter(|m| m.has_v1(controller));
        // Of several mounts of the same hierarchy, prefer one that shows our group.
        let mount = candidates()
            .find(|m| m.dir_of(&current.path).is_some())
            .or_else(|| candidates().next())?;
        Some(Placement {
            v2: false,
            mount,
            current: &current.path,
        })
    }

    /// What the host offers, for "no such controller" messages.
    fn describe(&self) -> String {
        let mut v1: Vec<&str> = Vec::new();
        for m in &self.mounts {
            if let Kind::V1 { options } = &m.kind {
                v1.extend(
                    options
                        .iter()
                        .filter(|o| KNOWN_V1.contains(&o.as_str()))
                        .map(String::as_str),
                );
            }
        }
        let v1 = if v1.is_empty() {
            "no cgroup v1 controllers".to_string()
        } else {
            format!("cgroup v1 controllers: {}", v1.join(", "))
        };
        match self.mounts.iter().find(|m| m.kind == Kind::V2) {
            Some(m) if self.v2_controllers.is_empty() => {
                format!("{v1}; cgroup v2 at {} offers none", m.point.display())
            }
            Some(m) => format!(
                "{v1}; cgroup v2 at {} offers {}",
                m.point.display(),
                self.v2_controllers.join(", ")
            ),
            None => format!("{v1}; no cgroup v2 mount"),
        }
    }

    /// The groups to create for `res` and VM `name`, one per hierarchy involved.
    pub fn plan(&self, res: &Resources, name: &str) -> Result<Vec<GroupPlan>, CgroupError> {
        let target = res.cgroup_path(name);
        let mut plans: Vec<GroupPlan> = Vec::new();
        for need in needs(res) {
            let p = self
                .place(need.controller)
                .ok_or_else(|| CgroupError::NoController {
                    field: need.field,
                    controller: need.controller,
                    found: self.describe(),
                })?;
            let not_visible = |cgroup: &str| CgroupError::NotVisible {
                field: need.field,
                cgroup: cgroup.to_string(),
                mount: p.mount.point.clone(),
            };
            let leaf = p
                .mount
                .dir_of(&target)
                .ok_or_else(|| not_visible(&target))?;
            let original = p
                .mount
                .dir_of(p.current)
                .ok_or_else(|| not_visible(p.current))?;
            let setting = Setting {
                file: if p.v2 { need.v2_file } else { need.v1_file },
                value: if p.v2 { need.v2_value } else { need.v1_value },
                field: need.field,
            };
            if let Some(g) = plans.iter_mut().find(|g| g.leaf == leaf) {
                g.controllers.push(need.controller);
                g.settings.push(setting);
                continue;
            }
            let mut ancestors: Vec<PathBuf> = leaf
                .ancestors()
                .skip(1)
                .take_while(|a| a.starts_with(&p.mount.point))
                .map(Path::to_path_buf)
                .collect();
            ancestors.reverse();
            plans.push(GroupPlan {
                v2: p.v2,
                controllers: vec![need.controller],
                ancestors,
                leaf,
                original,
                settings: vec![setting],
            });
        }
        Ok(plans)
    }
}

/// cgroup v1 controller names (to tell them from mount options in messages).
const KNOWN_V1: &[&str] = &[
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "pids",
    "blkio",
    "devices",
    "freezer",
    "net_cls",
    "net_prio",
    "perf_event",
    "hugetlb",
    "rdma",
    "misc",
];

#[cfg(test)]
mod tests {
    use super::*;

    /// This development host: v1 controllers each at /sys/fs/cgroup/<name>, an empty v2
    /// hierarchy at /sys/fs/cgroup/unified; the process's memory group is nested.
    const HYBRID_MOUNTINFO: &str = "\
24 29 0:22 / /proc rw,nosuid,nodev,noexec,relatime shared:13 - proc proc rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const HYBRID_CGROUP: &str = "\
9:name=systemd:/
8:pids:/
4:memory:/process_api/ade89d23
3:cpuset:/
2:cpuacct:/
1:cpu:/
0::/
";

    /// A classic systemd v1 host: cpu and cpuacct co-mounted, optional fields present.
    const V1_MOUNTINFO: &str = "\
25 18 0:21 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:8 - tmpfs tmpfs ro,mode=755
30 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:12 - cgroup cgroup rw,cpu,cpuacct
31 25 0:27 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:13 - cgroup cgroup rw,memory
";
    const V1_CGROUP: &str = "\
5:memory:/system.slice/oxvm.service
3:cpu,cpuacct:/system.slice/oxvm.service
1:name=systemd:/system.slice/oxvm.service
";

    /// A pure v2 host (systemd, unified), the process in a service's group.
    const V2_MOUNTINFO: &str = "\
26 21 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";
    const V2_CGROUP: &str = "0::/system.slice/oxvm@web.service\n";
    const V2_CONTROLLERS: &str = "cpuset cpu io memory hugetlb pids rdma misc\n";

    fn layout(mi: &str, cg: &str, v2: &str) -> Layout {
        Layout::new(parse_mountinfo(mi), parse_proc_cgroup(cg), v2)
    }

    fn res(cpu: Option<f64>, mem: Option<u64>) -> Resources {
        Resources {
            cpu_weight: cpu,
            memory_max_mib: mem,
            ..Resources::default()
        }
    }

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    #[test]
    fn parses_mountinfo_with_and_without_optional_fields() {
        let m = parse_mountinfo(V1_MOUNTINFO);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].point, p("/sys/fs/cgroup/cpu,cpuacct"));
        assert!(m[0].has_v1("cpu") && m[0].has_v1("cpuacct") && !m[0].has_v1("memory"));
        let m = parse_mountinfo(HYBRID_MOUNTINFO);
        assert_eq!(m.len(), 7, "{m:?}");
        assert_eq!(m[6].kind, Kind::V2);
        assert!(m[5].has_v1("name=systemd"));
        let m = parse_mountinfo(r"50 31 0:40 /a\040b /mnt/cg\040x rw - cgroup2 none rw");
        assert_eq!(m[0].root, "/a b");
        assert_eq!(m[0].point, p("/mnt/cg x"));
    }

    #[test]
    fn parses_proc_cgroup() {
        let c = parse_proc_cgroup(V1_CGROUP);
        assert_eq!(c[1].controllers, vec!["cpu", "cpuacct"]);
        assert_eq!(c[1].path, "/system.slice/oxvm.service");
        let c = parse_proc_cgroup("0::/a:b\n");
        assert_eq!((c[0].id, c[0].controllers.len()), (0, 0));
        assert_eq!(c[0].path, "/a:b");
    }

    #[test]
    fn hybrid_host_uses_v1_per_controller_mounts() {
        let l = layout(HYBRID_MOUNTINFO, HYBRID_CGROUP, "");
        let plans = l.plan(&res(Some(0.5), Some(64)), "vm1").unwrap();
        assert_eq!(plans.len(), 2);
        let cpu = &plans[0];
        assert!(!cpu.v2);
        assert_eq!(cpu.leaf, p("/sys/fs/cgroup/cpu/oxvm/vm1"));
        assert_eq!(cpu.original, p("/sys/fs/cgroup/cpu"));
        assert_eq!(
            cpu.ancestors,
            vec![p("/sys/fs/cgroup/cpu"), p("/sys/fs/cgroup/cpu/oxvm")]
        );
        assert_eq!(
            cpu.settings,
            vec![Setting {
                file: "cpu.shares",
                value: "512".into(),
                field: "resources.cpu_weight"
            }]
        );
        let mem = &plans[1];
        assert_eq!(mem.leaf, p("/sys/fs/cgroup/memory/oxvm/vm1"));
        assert_eq!(
            mem.original,
            p("/sys/fs/cgroup/memory/process_api/ade89d23")
        );
        assert_eq!(mem.settings[0].file, "memory.limit_in_bytes");
        assert_eq!(mem.settings[0].value, (64u64 << 20).to_string());
        assert_eq!(mem.field(), "resources.memory_max_mib");
    }

    #[test]
    fn comounted_v1_controllers_share_one_group() {
        let l = layout(V1_MOUNTINFO, V1_CGROUP, "");
        let r = Resources {
            cgroup_parent: "/machine.slice".into(),
            ..res(Some(1.0), None)
        };
        let plans = l.plan(&r, "web").unwrap();
        assert_eq!(plans.len(), 1);
        assert_eq!(
            plans[0].leaf,
            p("/sys/fs/cgroup/cpu,cpuacct/machine.slice/web")
        );
        assert_eq!(
            plans[0].original,
            p("/sys/fs/cgroup/cpu,cpuacct/system.slice/oxvm.service")
        );
        assert_eq!(plans[0].settings[0].value, "1024");
    }

    #[test]
    fn pure_v2_host_uses_one_group_with_both_controllers() {
        let l = layout(V2_MOUNTINFO, V2_CGROUP, V2_CONTROLLERS);
        let plans = l.plan(&res(Some(0.5), Some(300)), "vm1").unwrap();
        assert_eq!(plans.len(), 1);
        let g = &plans[0];
        assert!(g.v2);
        assert_eq!(g.controllers, vec!["cpu", "memory"]);
        assert_eq!(g.leaf, p("/sys/fs/cgroup/oxvm/vm1"));
        assert_eq!(
            g.ancestors,
            vec![p("/sys/fs/cgroup"), p("/sys/fs/cgroup/oxvm")]
        );
        assert_eq!(
            g.original,
            p("/sys/fs/cgroup/system.slice/oxvm@web.service")
        );
        let files: Vec<(&str, &str)> = g
            .settings
            .iter()
            .map(|s| (s.file, s.value.as_str()))
            .collect();
        assert_eq!(
            files,
            vec![("cpu.weight", "50"), ("memory.max", "314572800")]
        );
    }

    #[test]
    fn v2_with_controllers_beats_an_empty_v1_and_v1_beats_an_empty_v2() {
        // Hybrid with the memory controller moved to v2 (cgroup_no_v1=memory).
        let mi = "\
32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu
41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
";
        let cg = "1:cpu:/\n0::/user.slice\n";
        let l = layout(mi, cg, "memory pids");
        let plans = l.plan(&res(Some(2.0), Some(64)), "x").unwrap();
        assert_eq!(plans.len(), 2);
        assert_eq!(
            (plans[0].v2, plans[0].settings[0].file),
            (false, "cpu.shares")
        );
        assert_eq!(plans[0].settings[0].value, "2048");
        assert_eq!(
            (plans[1].v2, plans[1].settings[0].file),
            (true, "memory.max")
        );
        assert_eq!(plans[1].leaf, p("/sys/fs/cgroup/unified/oxvm/x"));
        assert_eq!(plans[1].original, p("/sys/fs/cgroup/unified/user.slice"));
    }

    #[test]
    fn a_missing_controller_names_the_field_and_what_the_host_has() {
        let mi = "32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n\
                  41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n";
        let l = layout(mi, "1:cpu:/\n0::/\n", "");
        let e = l.plan(&res(None, Some(64)), "x").unwrap_err().to_string();
        assert!(
            e.contains("`resources.memory_max_mib`")
                && e.contains("no memory cgroup controller mounted")
                && e.contains("cgroup v1 controllers: cpu")
                && e.contains("/sys/fs/cgroup/unified offers none"),
            "{e}"
        );
        // cpu alone is fine
        assert_eq!(l.plan(&res(Some(1.0), None), "x").unwrap().len(), 1);
        let e = layout("", "", "")
            .plan(&res(Some(1.0), None), "x")
            .unwrap_err();
        assert!(e.to_string().contains("no cgroup v2 mount"), "{e}");
    }

    #[test]
    fn namespaced_mount_roots_map_paths_or_refuse() {
        // A mount that shows only the subtree /lxc/c1 of the hierarchy.
        let m = Mount {
            root: "/lxc/c1".into(),
            point: p("/sys/fs/cgroup"),
            kind: Kind::V2,
        };
        assert_eq!(m.dir_of("/lxc/c1"), Some(p("/sys/fs/cgroup")));
        assert_eq!(m.dir_of("/lxc/c1/oxvm/a"), Some(p("/sys/fs/cgroup/oxvm/a")));
        assert_eq!(m.dir_of("/lxc/c10"), None);
        assert_eq!(m.dir_of("/oxvm/a"), None);
        let l = Layout::new(vec![m], parse_proc_cgroup("0::/lxc/c1\n"), "cpu");
        let e = l.plan(&res(Some(1.0), None), "a").unwrap_err().to_string();
        assert!(
            e.contains("\"/oxvm/a\" is not visible under /sys/fs/cgroup"),
            "{e}"
        );
    }
}
