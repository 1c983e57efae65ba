//! The listening socket: refuse a path another process serves on, replace a stale
//! socket file, and bind so that the socket is mode 0600 before anyone can connect.

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use super::ServerError;

/// Pending connections the kernel queues for us.
const BACKLOG: libc::c_int = 128;

/// Make `path` free (or fail naming why it is not) and listen on it.
pub(crate) fn listen(path: &Path) -> Result<UnixListener, ServerError> {
    clear_stale(path)?;
    bind_private(path)
}

/// An existing socket file is either served (refuse: two VMs on one socket would be a
/// mix-up) or stale, left by a process that died (replace it). Anything that is not a
/// socket is never deleted: the path is probably a mistake.
fn clear_stale(path: &Path) -> Result<(), ServerError> {
    let io_err = |source| ServerError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(e)),
    };
    if !meta.file_type().is_socket() {
        return Err(ServerError::NotASocket {
            path: path.to_path_buf(),
        });
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(ServerError::InUse {
            path: path.to_path_buf(),
        }),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            tracing::info!("replacing the stale socket {}", path.display());
            fs::remove_file(path).map_err(io_err)
        }
        Err(e) => Err(io_err(e)),
    }
}

/// socket, bind, chmod 0600, listen — in that order. Until `listen` the kernel refuses
/// every connection, so there is no moment when a wider-moded socket accepts one.
/// (`UnixListener::bind` binds and listens in one call; changing the process umask
/// around it instead would also affect files other threads create meanwhile.)
fn bind_private(path: &Path) -> Result<UnixListener, ServerError> {
    let io_err = |source| ServerError::Io {
        path: path.to_path_buf(),
        source,
    };
    let bytes = path.as_os_str().as_bytes();
    let mut addr = libc::sockaddr_un {
        sun_family: libc::AF_UNIX as libc::sa_family_t,
        sun_path: [0; 108],
    };
    // One byte stays for the terminating NUL.
    if bytes.len() >= addr.sun_path.len() {
        return Err(ServerError::PathTooLong {
            path: path.to_path_buf(),
            max: addr.sun_path.len() - 1,
        });
    }
    for (dst, src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }

    // SAFETY: plain syscall with constant arguments; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io_err(io::Error::last_os_error()));
    }
    // SAFETY: `fd` was just returned by socket() and is owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };

    let len = std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
    // SAFETY: `addr` is a valid, initialized sockaddr_un that outlives the call, and
    // `len` does not exceed its size (checked above).
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_un).cast::<libc::sockaddr>(),
            len as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io_err(io::Error::last_os_error()));
    }
    // From here on the socket file exists: remove it again on any failure.
    let fail = |e: io::Error| {
        let _ = fs::remove_file(path);
        io_err(e)
    };
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(fail)?;
    // SAFETY: `fd` is a bound socket we own; the result is checked.
    if unsafe { libc::listen(fd.as_raw_fd(), BACKLOG) } < 0 {
        return Err(fail(io::Error::last_os_error()));
    }
    Ok(UnixListener::from(fd))
}
