//! Where a migration stream goes: `tcp:HOST:PORT` or `unix:PATH`.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::Duration;

use vmm_sys_util::sock_ctrl_msg::ScmSocket;

use super::MigrationError;

/// A parsed migration address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    Tcp(String),
    Unix(PathBuf),
}

impl Address {
    pub fn parse(s: &str) -> Result<Address, MigrationError> {
        if let Some(hp) = s.strip_prefix("tcp:") {
            let ok = hp
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
            if ok {
                return Ok(Address::Tcp(hp.to_string()));
            }
        } else if let Some(p) = s.strip_prefix("unix:") {
            if !p.is_empty() {
                return Ok(Address::Unix(PathBuf::from(p)));
            }
        }
        Err(MigrationError::Address(format!(
            "{s:?}: expected tcp:HOST:PORT or unix:PATH"
        )))
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Address::Tcp(hp) => write!(f, "tcp:{hp}"),
            Address::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// A connected byte stream of either kind.
pub trait Stream: Read + Write + Send {
    fn set_timeout(&self, t: Option<Duration>) -> std::io::Result<()>;

    /// Pass `file` to the peer (SCM_RIGHTS, with one marker byte): Unix sockets only.
    fn send_file(&self, _file: &File) -> std::io::Result<()> {
        Err(no_fd_passing())
    }

    /// Take the file the peer passed with [`Stream::send_file`].
    fn recv_file(&self) -> std::io::Result<File> {
        Err(no_fd_passing())
    }
}

fn no_fd_passing() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "file descriptors travel over unix: connections only",
    )
}

/// The byte that carries a passed file descriptor.
const FD_MARKER: u8 = 0xfd;

impl Stream for TcpStream {
    fn set_timeout(&self, t: Option<Duration>) -> std::io::Result<()> {
        self.set_read_timeout(t)?;
        self.set_write_timeout(t)
    }
}

impl Stream for UnixStream {
    fn set_timeout(&self, t: Option<Duration>) -> std::io::Result<()> {
        self.set_read_timeout(t)?;
        self.set_write_timeout(t)
    }

    fn send_file(&self, file: &File) -> std::io::Result<()> {
        let sent = self
            .send_with_fd(&[FD_MARKER][..], file.as_raw_fd())
            .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))?;
        if sent != 1 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::WriteZero,
                "the file descriptor's marker byte was not sent",
            ));
        }
        Ok(())
    }

    fn recv_file(&self) -> std::io::Result<File> {
        let mut byte = [0u8; 1];
        let (n, file) = self
            .recv_with_fd(&mut byte)
            .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))?;
        match (n, byte[0], file) {
            (1, FD_MARKER, Some(f)) => Ok(f),
            _ => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "expected a file descriptor from the peer",
            )),
        }
    }
}

fn io(addr: &Address, what: &'static str) -> impl FnOnce(std::io::Error) -> MigrationError {
    let what = format!("{what} {addr}");
    move |source| MigrationError::Io { what, source }
}

pub fn connect(addr: &Address) -> Result<Box<dyn Stream>, MigrationError> {
    Ok(match addr {
        Address::Tcp(hp) => {
            let s = TcpStream::connect(hp).map_err(io(addr, "connect to"))?;
            // Page messages are large; small control messages must not wait for Nagle.
            let _ = s.set_nodelay(true);
            Box::new(s)
        }
        Address::Unix(p) => Box::new(UnixStream::connect(p).map_err(io(addr, "connect to"))?),
    })
}

/// A bound listener; `accept` takes the one incoming migration.
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
}

impl Listener {
    pub fn bind(addr: &Address) -> Result<Listener, MigrationError> {
        Ok(match addr {
            Address::Tcp(hp) => {
                Listener::Tcp(TcpListener::bind(hp).map_err(io(addr, "listen on"))?)
            }
            Address::Unix(p) => {
                let l = UnixListener::bind(p).map_err(io(addr, "listen on"))?;
                // Whoever connects first hands this process a VM: owner only, like the
                // API socket.
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600))
                    .map_err(io(addr, "restrict the permissions of"))?;
                Listener::Unix(l, p.clone())
            }
        })
    }

    pub fn is_unix(&self) -> bool {
        matches!(self, Listener::Unix(..))
    }

    pub fn set_nonblocking(&self, on: bool) -> std::io::Result<()> {
        match self {
            Listener::Tcp(l) => l.set_nonblocking(on),
            Listener::Unix(l, _) => l.set_nonblocking(on),
        }
    }

    /// Accept one connection; the stream itself is blocking.
    pub fn accept(&self) -> std::io::Result<Box<dyn Stream>> {
        Ok(match self {
            Listener::Tcp(l) => {
                let (s, _) = l.accept()?;
                s.set_nonblocking(false)?;
                let _ = s.set_nodelay(true);
                Box::new(s)
            }
            Listener::Unix(l, _) => {
                let (s, _) = l.accept()?;
                s.set_nonblocking(false)?;
                Box::new(s)
            }
        })
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, p) = self {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_or_name_the_expected_forms() {
        assert_eq!(
            Address::parse("tcp:127.0.0.1:4444").unwrap(),
            Address::Tcp("127.0.0.1:4444".into())
        );
        assert_eq!(
            Address::parse("unix:/tmp/m.sock").unwrap(),
            Address::Unix("/tmp/m.sock".into())
        );
        for bad in ["tcp:host", "tcp::1", "udp:1.2.3.4:5", "unix:", "host:5"] {
            let e = Address::parse(bad).unwrap_err().to_string();
            assert!(e.contains("tcp:HOST:PORT"), "{bad}: {e}");
        }
    }

    #[test]
    fn files_pass_over_unix_sockets_only() {
        use std::io::{Seek, SeekFrom};
        let (a, b) = UnixStream::pair().unwrap();
        let mut tmp = vmm_sys_util::tempfile::TempFile::new().unwrap().into_file();
        tmp.write_all(b"handed over").unwrap();
        a.send_file(&tmp).unwrap();
        let mut got = b.recv_file().unwrap();
        got.seek(SeekFrom::Start(0)).unwrap();
        let mut text = String::new();
        got.read_to_string(&mut text).unwrap();
        assert_eq!(text, "handed over");
        // A plain byte is not a file.
        (&a).write_all(&[1]).unwrap();
        assert_eq!(
            b.recv_file().unwrap_err().kind(),
            std::io::ErrorKind::InvalidData
        );
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let t = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        assert_eq!(
            t.send_file(&tmp).unwrap_err().kind(),
            std::io::ErrorKind::Unsupported
        );
    }
}
