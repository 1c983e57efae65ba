//! Where a migration stream goes: `tcp:HOST:PORT` or `unix:PATH`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::Duration;

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
}

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
            Address::Unix(p) => Listener::Unix(
                UnixListener::bind(p).map_err(io(addr, "listen on"))?,
                p.clone(),
            ),
        })
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
}
