//! A host tap device: the host end of a virtio-net NIC.
//!
//! Opening a tap by name attaches to an existing tap device or, if none of that name
//! exists, creates one. A created tap is *not* made persistent: the kernel removes it when
//! its last file descriptor closes, i.e. when the VM ends (or the VMM dies), so nothing is
//! left behind. A tap that existed before (e.g. made with `ip tuntap add`) is left alone.
//!
//! Every frame read from or written to the tap starts with a 12-byte virtio-net header
//! (`IFF_VNET_HDR` + `TUNSETVNETHDRSZ`), the same `virtio_net_hdr_v1` a VERSION_1 driver
//! uses, so frames pass between guest and tap without rewriting and checksum/TSO offloads
//! survive. With more than one queue the tap is opened `IFF_MULTI_QUEUE`: one file
//! descriptor per queue pair, each served by its own worker thread.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_ECN, VIRTIO_NET_F_GUEST_TSO4,
    VIRTIO_NET_F_GUEST_TSO6, VIRTIO_NET_F_GUEST_UFO,
};

/// Size of the virtio-net header in front of every frame on the tap: `virtio_net_hdr_v1`
/// (with `num_buffers`), the only header layout a VERSION_1 driver uses.
pub const VNET_HDR_LEN: usize = 12;

const TUN_PATH: &str = "/dev/net/tun";
/// `<linux/sockios.h>`; the libc crate only defines it for Android.
const SIOCBRADDIF: libc::c_ulong = 0x89a2;

/// Why a tap could not be opened or configured. Every variant names the tap and the
/// failing step, because the operator sees these messages, not the code.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error("invalid tap name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("cannot open tap {name}: need at least one queue")]
    NoQueues { name: String },
    #[error("cannot open tap {name}: {step}: {}", os_message(.error))]
    Open {
        name: String,
        step: &'static str,
        error: io::Error,
    },
    #[error("cannot configure tap {name}: {step}: {}", os_message(.error))]
    Configure {
        name: String,
        step: &'static str,
        error: io::Error,
    },
    #[error("cannot attach tap {name} to bridge {bridge}: bridge {bridge} does not exist")]
    NoBridge { name: String, bridge: String },
    #[error("cannot attach tap {name} to bridge {bridge}: {step}: {}", os_message(.error))]
    Bridge {
        name: String,
        bridge: String,
        step: &'static str,
        error: io::Error,
    },
}

/// "Device or resource busy" rather than "Device or resource busy (os error 16)".
fn os_message(e: &io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// One queue of a tap: a non-blocking file descriptor frames are read from and written
/// to, whole frames (header included) per call.
#[derive(Debug)]
pub struct TapQueue {
    file: File,
    /// Attached to the device (`TUNSETQUEUE`); a detached queue gets no frames.
    enabled: AtomicBool,
}

impl TapQueue {
    /// Read one frame (virtio-net header + Ethernet frame). `WouldBlock` when none is
    /// queued.
    pub fn read_frame(&self, buf: &mut [u8]) -> io::Result<usize> {
        (&self.file).read(buf)
    }

    /// Write one frame (virtio-net header + Ethernet frame).
    pub fn write_frame(&self, frame: &[u8]) -> io::Result<usize> {
        (&self.file).write(frame)
    }

    /// Whether the kernel currently steers frames to this queue.
    pub fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Acquire)
    }
}

impl AsRawFd for TapQueue {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

/// An open tap device with one [`TapQueue`] per queue pair.
#[derive(Debug)]
pub struct Tap {
    name: String,
    queues: Vec<TapQueue>,
    created: bool,
    multiqueue: bool,
}

impl Tap {
    /// Open tap `name` with `queues` file descriptors, creating the tap if it does not
    /// exist, and set its link up.
    ///
    /// The flags are `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`, plus `IFF_MULTI_QUEUE` when
    /// `queues > 1`. An existing single-queue tap (or one already in use by another
    /// process) cannot be opened with several queues; the kernel's refusal is reported.
    pub fn open(name: &str, queues: u16) -> Result<Tap, TapError> {
        check_ifname(name)?;
        if queues == 0 {
            return Err(TapError::NoQueues { name: name.into() });
        }
        let existed = if_index(name).is_some();
        let mut multiqueue = queues > 1;
        let mut files = Vec::with_capacity(usize::from(queues));
        for _ in 0..queues {
            let file = open_tun(name)?;
            match tun_set_iff(&file, name, multiqueue) {
                Ok(()) => {}
                // An existing multi-queue tap refuses a single-queue open (EINVAL); one
                // queue of it serves us just as well.
                Err(e) if existed && !multiqueue && e.raw_os_error() == Some(libc::EINVAL) => {
                    multiqueue = true;
                    tun_set_iff(&file, name, true).map_err(|error| TapError::Open {
                        name: name.into(),
                        step: "TUNSETIFF",
                        error,
                    })?;
                }
                Err(error) => {
                    return Err(TapError::Open {
                        name: name.into(),
                        step: "TUNSETIFF",
                        error,
                    })
                }
            }
            files.push(file);
        }
        let tap = Tap {
            name: name.to_string(),
            queues: files
                .into_iter()
                .map(|file| TapQueue {
                    file,
                    enabled: AtomicBool::new(true),
                })
                .collect(),
            created: !existed,
            multiqueue,
        };
        tap.set_vnet_hdr_len()?;
        tap.set_up()?;
        tracing::debug!(
            tap = %tap.name,
            queues,
            created = tap.created,
            "tap opened"
        );
        Ok(tap)
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether [`Tap::open`] created the device. A created tap is not persistent: it
    /// disappears (and leaves its bridge) when this `Tap` is dropped.
    pub fn created(&self) -> bool {
        self.created
    }

    /// One queue per queue pair, in order.
    pub fn queues(&self) -> &[TapQueue] {
        &self.queues
    }

    /// The host interface index.
    pub fn if_index(&self) -> Result<u32, TapError> {
        if_index(&self.name).ok_or_else(|| TapError::Configure {
            name: self.name.clone(),
            step: "if_nametoindex",
            error: io::Error::from_raw_os_error(libc::ENODEV),
        })
    }

    /// The MAC address of the host side of the tap (not the guest's).
    pub fn host_mac(&self) -> Result<[u8; 6], TapError> {
        let mut ifr = ifreq_for(&self.name);
        self.sock_ioctl(libc::SIOCGIFHWADDR, &mut ifr, "SIOCGIFHWADDR")?;
        // SAFETY: SIOCGIFHWADDR filled the `ifru_hwaddr` member of the union.
        let data = unsafe { ifr.ifr_ifru.ifru_hwaddr.sa_data };
        let mut mac = [0u8; 6];
        for (m, d) in mac.iter_mut().zip(data) {
            *m = d as u8;
        }
        Ok(mac)
    }

    /// Tell the kernel which offloads the reader (the guest) accepts: `TUN_F_*` flags,
    /// see [`offload_flags`]. Without `TUN_F_CSUM` the kernel checksums every frame and
    /// segments every GSO packet before we read it.
    pub fn set_offload(&self, flags: u32) -> Result<(), TapError> {
        // SAFETY: TUNSETOFFLOAD takes its argument by value; the fd is a tap we own.
        let ret = unsafe {
            libc::ioctl(
                self.queues[0].as_raw_fd(),
                libc::TUNSETOFFLOAD,
                libc::c_ulong::from(flags),
            )
        };
        if ret < 0 {
            return Err(self.configure_error("TUNSETOFFLOAD"));
        }
        Ok(())
    }

    /// Attach (`enabled`) or detach queue `index` (`TUNSETQUEUE`), so the kernel steers
    /// frames only to queues the guest services. A no-op for a single-queue tap and when
    /// the queue is already in that state.
    pub fn set_queue_enabled(&self, index: usize, enabled: bool) -> Result<(), TapError> {
        let Some(queue) = self.queues.get(index) else {
            return Err(TapError::Configure {
                name: self.name.clone(),
                step: "TUNSETQUEUE",
                error: io::Error::from_raw_os_error(libc::EINVAL),
            });
        };
        if !self.multiqueue || queue.is_enabled() == enabled {
            return Ok(());
        }
        let mut ifr = ifreq_for("");
        let flag = if enabled {
            libc::IFF_ATTACH_QUEUE
        } else {
            libc::IFF_DETACH_QUEUE
        };
        ifr.ifr_ifru.ifru_flags = flag as libc::c_short;
        // SAFETY: TUNSETQUEUE reads a `struct ifreq`, which `ifr` is and outlives the call.
        let ret = unsafe { libc::ioctl(queue.as_raw_fd(), libc::TUNSETQUEUE, &mut ifr) };
        if ret < 0 {
            return Err(self.configure_error("TUNSETQUEUE"));
        }
        queue.enabled.store(enabled, Ordering::Release);
        Ok(())
    }

    /// Set the link up (`IFF_UP`), as a NIC whose guest is running should be.
    pub fn set_up(&self) -> Result<(), TapError> {
        let mut ifr = ifreq_for(&self.name);
        self.sock_ioctl(libc::SIOCGIFFLAGS, &mut ifr, "SIOCGIFFLAGS")?;
        // SAFETY: SIOCGIFFLAGS filled the `ifru_flags` member of the union.
        let flags = unsafe { ifr.ifr_ifru.ifru_flags };
        if flags & libc::IFF_UP as libc::c_short != 0 {
            return Ok(());
        }
        ifr.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
        self.sock_ioctl(libc::SIOCSIFFLAGS, &mut ifr, "SIOCSIFFLAGS")
    }

    /// Make the tap a port of Linux bridge `bridge` (OpenNebula's `BRIDGE`). Already being
    /// a port of that bridge is fine.
    pub fn attach_to_bridge(&self, bridge: &str) -> Result<(), TapError> {
        let bridge_error = |step, error| TapError::Bridge {
            name: self.name.clone(),
            bridge: bridge.into(),
            step,
            error,
        };
        let no_bridge = || TapError::NoBridge {
            name: self.name.clone(),
            bridge: bridge.into(),
        };
        if check_ifname(bridge).is_err() || if_index(bridge).is_none() {
            return Err(no_bridge());
        }
        if self.bridge().as_deref() == Some(bridge) {
            return Ok(());
        }
        let index = self.if_index()?;
        let mut ifr = ifreq_for(bridge);
        ifr.ifr_ifru.ifru_ifindex = index as libc::c_int;
        let sock = control_socket().map_err(|e| bridge_error("socket", e))?;
        // SAFETY: SIOCBRADDIF reads a `struct ifreq` (bridge name + port ifindex), which
        // `ifr` is and outlives the call; the socket is ours.
        let ret = unsafe { libc::ioctl(sock.as_raw_fd(), SIOCBRADDIF, &mut ifr) };
        if ret < 0 {
            let error = io::Error::last_os_error();
            return Err(match error.raw_os_error() {
                Some(libc::ENODEV) => no_bridge(),
                _ => bridge_error("SIOCBRADDIF", error),
            });
        }
        tracing::debug!(tap = %self.name, bridge, "tap attached to bridge");
        Ok(())
    }

    /// The bridge the tap is a port of, if any (from `/sys/class/net/<tap>/master`).
    pub fn bridge(&self) -> Option<String> {
        let link = std::fs::read_link(Path::new("/sys/class/net").join(&self.name).join("master"));
        link.ok()?
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
    }

    fn set_vnet_hdr_len(&self) -> Result<(), TapError> {
        let len = VNET_HDR_LEN as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer, which is valid for
        // the call. The header size is per device, so one queue suffices.
        let ret = unsafe {
            libc::ioctl(
                self.queues[0].as_raw_fd(),
                libc::TUNSETVNETHDRSZ,
                &len as *const libc::c_int,
            )
        };
        if ret < 0 {
            return Err(self.configure_error("TUNSETVNETHDRSZ"));
        }
        Ok(())
    }

    fn sock_ioctl(
        &self,
        request: libc::c_ulong,
        ifr: &mut libc::ifreq,
        step: &'static str,
    ) -> Result<(), TapError> {
        let sock = control_socket().map_err(|error| TapError::Configure {
            name: self.name.clone(),
            step: "socket",
            error,
        })?;
        // SAFETY: the SIOC[GS]IF* requests used here read/write one `struct ifreq`, which
        // `ifr` is and outlives the call; the socket is ours.
        let ret = unsafe { libc::ioctl(sock.as_raw_fd(), request, ifr as *mut libc::ifreq) };
        if ret < 0 {
            return Err(self.configure_error(step));
        }
        Ok(())
    }

    fn configure_error(&self, step: &'static str) -> TapError {
        TapError::Configure {
            name: self.name.clone(),
            step,
            error: io::Error::last_os_error(),
        }
    }
}

/// Map the virtio-net features the guest accepted to `TUN_F_*` offload flags for
/// [`Tap::set_offload`]: what the guest can receive is what the tap may hand us.
/// The kernel rejects TSO/UFO without checksum offload, and so does the spec.
pub fn offload_flags(guest_features: u64) -> u32 {
    let has = |bit: u32| guest_features & (1u64 << bit) != 0;
    if !has(VIRTIO_NET_F_GUEST_CSUM) {
        return 0;
    }
    let mut flags = libc::TUN_F_CSUM;
    if has(VIRTIO_NET_F_GUEST_TSO4) {
        flags |= libc::TUN_F_TSO4;
    }
    if has(VIRTIO_NET_F_GUEST_TSO6) {
        flags |= libc::TUN_F_TSO6;
    }
    if has(VIRTIO_NET_F_GUEST_ECN) && flags & (libc::TUN_F_TSO4 | libc::TUN_F_TSO6) != 0 {
        flags |= libc::TUN_F_TSO_ECN;
    }
    if has(VIRTIO_NET_F_GUEST_UFO) {
        flags |= libc::TUN_F_UFO;
    }
    flags
}

/// Linux interface names: 1..=15 bytes, no '/', whitespace, ':' or '%' (which the kernel
/// would expand as a template), not "." or "..".
fn check_ifname(name: &str) -> Result<(), TapError> {
    let reason = if name.is_empty() {
        Some("empty")
    } else if name.len() >= libc::IFNAMSIZ {
        Some("longer than 15 bytes")
    } else if name == "." || name == ".." {
        Some("reserved name")
    } else if name
        .bytes()
        .any(|b| b == b'/' || b == b':' || b == b'%' || b == 0 || b.is_ascii_whitespace())
    {
        Some("contains '/', ':', '%', NUL or whitespace")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(TapError::InvalidName {
            name: name.into(),
            reason,
        }),
        None => Ok(()),
    }
}

fn if_index(name: &str) -> Option<u32> {
    let cname = CString::new(name).ok()?;
    // SAFETY: `cname` is a valid NUL-terminated string for the duration of the call.
    let index = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    (index != 0).then_some(index)
}

fn open_tun(name: &str) -> Result<File, TapError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        // Workers multiplex the tap with eventfds in epoll: reads must never block.
        .custom_flags(libc::O_NONBLOCK)
        .open(TUN_PATH)
        .map_err(|error| TapError::Open {
            name: name.into(),
            step: "open /dev/net/tun",
            error,
        })
}

fn tun_set_iff(file: &File, name: &str, multiqueue: bool) -> io::Result<()> {
    let mut ifr = ifreq_for(name);
    let mut flags = libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR;
    if multiqueue {
        flags |= libc::IFF_MULTI_QUEUE;
    }
    ifr.ifr_ifru.ifru_flags = flags as libc::c_short;
    // SAFETY: TUNSETIFF reads and updates a `struct ifreq`, which `ifr` is and outlives
    // the call; the fd is a freshly opened /dev/net/tun.
    let ret = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut ifr) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A `struct ifreq` naming `name` (already checked to fit), everything else zero.
fn ifreq_for(name: &str) -> libc::ifreq {
    // SAFETY: `ifreq` is plain old data (a name array and a union of integers, sockaddrs
    // and a pointer), for which all-zero bytes are a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr
        .ifr_name
        .iter_mut()
        .zip(name.bytes().take(libc::IFNAMSIZ - 1))
    {
        *dst = src as libc::c_char;
    }
    ifr
}

/// Interface ioctls (flags, hardware address, bridge ports) go through any socket.
fn control_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
