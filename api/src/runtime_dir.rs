//! The runtime directory: where every VM process that serves the API registers its
//! socket, so `oxvm list` can find the VMs of this user without being told their paths.
//!
//! Registration is one scheme whatever the socket's own path: a symlink
//! `<dir>/<pid>.sock` → the socket's absolute path. It is removed when the server stops;
//! a process killed with SIGKILL leaves a dangling or refusing link, which
//! [`registered_sockets`] skips (dangling) or `oxvm list` skips (refused).

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Overrides the runtime directory (tests, several users' conventions, containers).
pub const RUNTIME_DIR_ENV: &str = "OXVM_RUNTIME_DIR";

/// The runtime directory for this user: `$OXVM_RUNTIME_DIR` if set, else `/run/oxvm`
/// for root, else `$XDG_RUNTIME_DIR/oxvm`, else `/tmp/oxvm-<uid>`. Not created here.
pub fn runtime_dir() -> PathBuf {
    choose_dir(|name| std::env::var_os(name), current_uid())
}

/// [`runtime_dir`]'s rules over a given environment (empty variables count as unset).
fn choose_dir(env: impl Fn(&str) -> Option<OsString>, uid: u32) -> PathBuf {
    let env = |name: &str| env(name).filter(|v| !v.is_empty());
    if let Some(dir) = env(RUNTIME_DIR_ENV) {
        return PathBuf::from(dir);
    }
    if uid == 0 {
        return PathBuf::from("/run/oxvm");
    }
    if let Some(xdg) = env("XDG_RUNTIME_DIR") {
        return Path::new(&xdg).join("oxvm");
    }
    PathBuf::from(format!("/tmp/oxvm-{uid}"))
}

/// Create `dir` (mode 0700) if it is missing, and check it is a private directory of
/// ours: in a shared place like `/tmp` another user could have created it first and
/// would then see (and could plant) registrations.
pub fn ensure_private_dir(dir: &Path) -> io::Result<()> {
    match fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let meta = fs::symlink_metadata(dir)?;
    if !meta.is_dir() {
        return Err(io::Error::other(format!(
            "{} is not a directory",
            dir.display()
        )));
    }
    if meta.uid() != current_uid() {
        return Err(io::Error::other(format!(
            "{} belongs to uid {}, not to us",
            dir.display(),
            meta.uid()
        )));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        // Ours, so tightening it is safe (an older version, or a user's mkdir).
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// The sockets registered in the runtime directory (absolute paths, sorted, without
/// duplicates). Links whose socket file is gone are skipped; a missing directory is an
/// empty list.
pub fn registered_sockets() -> Vec<PathBuf> {
    registered_in(&runtime_dir())
}

/// [`registered_sockets`] for a given directory.
pub fn registered_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut sockets: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension() == Some(OsStr::new("sock")))
        .filter_map(|p| fs::read_link(&p).ok())
        // Dangling: the socket file was removed (or never existed).
        .filter(|target| target.is_absolute() && fs::metadata(target).is_ok())
        .collect();
    sockets.sort();
    sockets.dedup();
    sockets
}

/// One registration link; [`Registration::remove`] deletes it.
#[derive(Debug)]
pub(crate) struct Registration {
    link: PathBuf,
}

impl Registration {
    /// Register `socket` (absolute) in `dir` as `<pid>.sock`. A link of that name left
    /// by a dead process whose pid was reused is replaced; when a live server of this
    /// same process already holds the name (several servers in one process, as in
    /// tests), `<pid>-<n>.sock` is used.
    pub(crate) fn create(dir: &Path, socket: &Path) -> io::Result<Registration> {
        ensure_private_dir(dir)?;
        let pid = std::process::id();
        for n in 1..=64u32 {
            let name = match n {
                1 => format!("{pid}.sock"),
                n => format!("{pid}-{n}.sock"),
            };
            let link = dir.join(name);
            match std::os::unix::fs::symlink(socket, &link) {
                Ok(()) => return Ok(Registration { link }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    if is_live_socket(&link) {
                        continue;
                    }
                    fs::remove_file(&link)?;
                    std::os::unix::fs::symlink(socket, &link)?;
                    return Ok(Registration { link });
                }
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::other(format!(
            "{}: too many registrations for pid {pid}",
            dir.display()
        )))
    }

    pub(crate) fn link(&self) -> &Path {
        &self.link
    }

    pub(crate) fn remove(self) {
        if let Err(e) = fs::remove_file(&self.link) {
            tracing::warn!("removing {}: {e}", self.link.display());
        }
    }
}

/// Whether a server answers on `path` (a connection is accepted).
pub(crate) fn is_live_socket(path: &Path) -> bool {
    std::os::unix::net::UnixStream::connect(path).is_ok()
}

fn current_uid() -> u32 {
    // SAFETY: getuid has no preconditions, touches no memory and cannot fail.
    unsafe { libc::getuid() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_directory_follows_the_documented_order() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| OsString::from(v))
            }
        };
        let all = &[
            (RUNTIME_DIR_ENV, "/srv/oxvm"),
            ("XDG_RUNTIME_DIR", "/run/user/1000"),
        ];
        assert_eq!(choose_dir(env(all), 1000), Path::new("/srv/oxvm"));
        let xdg = &[("XDG_RUNTIME_DIR", "/run/user/1000")];
        assert_eq!(choose_dir(env(xdg), 0), Path::new("/run/oxvm"));
        assert_eq!(choose_dir(env(xdg), 1000), Path::new("/run/user/1000/oxvm"));
        let empty = &[(RUNTIME_DIR_ENV, ""), ("XDG_RUNTIME_DIR", "")];
        assert_eq!(choose_dir(env(empty), 1000), Path::new("/tmp/oxvm-1000"));
    }

    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("oxvm-rtdir-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn listing_skips_dangling_links_and_other_files() {
        let dir = scratch("list");
        ensure_private_dir(&dir).unwrap();
        let mode = fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "{mode:o}");
        let live = dir.join("target");
        fs::write(&live, "").unwrap();
        std::os::unix::fs::symlink(&live, dir.join("1.sock")).unwrap();
        std::os::unix::fs::symlink(&live, dir.join("2.sock")).unwrap();
        std::os::unix::fs::symlink(dir.join("gone"), dir.join("3.sock")).unwrap();
        std::os::unix::fs::symlink(&live, dir.join("4.txt")).unwrap();
        let listed = registered_in(&dir);
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(listed, vec![live], "one live target, listed once");
        assert!(
            registered_in(&dir).is_empty(),
            "a missing directory is an empty list"
        );
    }

    #[test]
    fn a_dead_registration_of_our_pid_is_replaced() {
        let dir = scratch("reuse");
        ensure_private_dir(&dir).unwrap();
        // As left by a killed process whose pid we got: nobody serves its target.
        let ours = dir.join(format!("{}.sock", std::process::id()));
        std::os::unix::fs::symlink(dir.join("old.sock"), &ours).unwrap();
        let r = Registration::create(&dir, Path::new("/run/new.sock")).unwrap();
        let target = fs::read_link(r.link()).unwrap();
        let link = r.link().to_path_buf();
        r.remove();
        let left = fs::symlink_metadata(&link).is_ok();
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(link, ours);
        assert_eq!(target, Path::new("/run/new.sock"));
        assert!(!left, "remove() left the link");
    }

    #[test]
    fn a_directory_of_another_shape_is_refused() {
        let file = scratch("notadir");
        fs::write(&file, "").unwrap();
        let e = ensure_private_dir(&file).unwrap_err();
        fs::remove_file(&file).unwrap();
        assert!(e.to_string().contains("not a directory"), "{e}");
    }
}
