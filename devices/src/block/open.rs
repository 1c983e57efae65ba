//! From a disk's configuration to a backend: format detection, the raw or qcow2 driver,
//! io=native where it applies, and the throttle when `iotune` sets limits.
//!
//! io=native applies to raw images and block devices with cache=none on virtio-blk.
//! Elsewhere it falls back to io=threads with a warning rather than failing: QEMU
//! refuses aio=native without cache.direct, but OpenNebula and libvirt templates often
//! say IO=native for every disk, and such a VM should still start.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use oxvm_api::{CacheMode, DiskBus, DiskConfig, DiskFormat, IoMode};

use super::backend::DiskBackend;
use super::options::DiskOptions;
use super::qcow2::Qcow2Disk;
use super::raw::RawDisk;
use super::throttle::{Throttle, ThrottleError, Throttled};

/// The first four bytes of every qcow2 image.
pub const QCOW2_MAGIC: [u8; 4] = *b"QFI\xfb";

/// Why one image could not be opened (the disk id and path are added by [`DiskError`]).
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot open: {0}")]
    Open(#[source] io::Error),
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error(
        "cache=none needs O_DIRECT, which the filesystem holding {path} refuses ({source}); \
         use cache=writeback or cache=writethrough for this disk"
    )]
    DirectIoUnsupported {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("not a regular file or block device")]
    NotADisk,
    #[error("backing file {backing} not found ({source})")]
    MissingBacking {
        backing: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot open backing file {backing}: {source}")]
    Backing {
        backing: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("format is qcow2 but the file does not start with the qcow2 magic")]
    NotQcow2,
    #[error("qcow2: {0}")]
    Qcow2(#[source] io::Error),
}

impl OpenError {
    pub(crate) fn io(what: &'static str) -> impl FnOnce(io::Error) -> OpenError {
        move |source| OpenError::Io { what, source }
    }

    pub(crate) fn direct_io(path: &Path, source: io::Error) -> OpenError {
        OpenError::DirectIoUnsupported {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Why a configured disk could not be set up; names the disk and its image.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("disk {id}: {path}: {source}")]
    Open {
        id: String,
        path: PathBuf,
        #[source]
        source: OpenError,
    },
    #[error("disk {id}: {source}")]
    IoTune {
        id: String,
        #[source]
        source: ThrottleError,
    },
}

/// Open the disk `cfg` describes: detect the format when it is not given, open the raw or
/// qcow2 backend with the configured read-only, cache and discard modes, and put it behind
/// a throttle when `iotune` limits anything.
pub fn open_disk(cfg: &DiskConfig) -> Result<Box<dyn DiskBackend>, DiskError> {
    let open_err = |source| DiskError::Open {
        id: cfg.id.clone(),
        path: cfg.path.clone(),
        source,
    };
    // Validate the limits before touching the image.
    let throttle = match &cfg.iotune {
        Some(tune) => Throttle::new(tune).map_err(|source| DiskError::IoTune {
            id: cfg.id.clone(),
            source,
        })?,
        None => None,
    };
    let opts = DiskOptions::from(cfg);
    let detected = detect_format(&cfg.path).map_err(open_err)?;
    let backend: Box<dyn DiskBackend> = match (cfg.format, detected) {
        (Some(DiskFormat::Qcow2), DiskFormat::Raw) => return Err(open_err(OpenError::NotQcow2)),
        (Some(DiskFormat::Qcow2), _) | (None, DiskFormat::Qcow2) => {
            if cfg.format.is_none() {
                tracing::warn!(
                    "disk {}: {} detected as qcow2; configure the format to avoid probing",
                    cfg.id,
                    cfg.path.display()
                );
            }
            native_fallback(cfg, "qcow2 images are served by their own driver");
            Box::new(Qcow2Disk::open(&cfg.path, opts).map_err(open_err)?)
        }
        (Some(DiskFormat::Raw), _) => {
            raw_native(cfg, RawDisk::open(&cfg.path, opts).map_err(open_err)?)
        }
        (None, DiskFormat::Raw) => raw_native(
            cfg,
            RawDisk::open(&cfg.path, opts)
                .map_err(open_err)?
                .guard_format_probe(),
        ),
    };
    tracing::info!(
        "disk {}: {} ({} bytes{}{})",
        cfg.id,
        cfg.path.display(),
        backend.size(),
        if backend.is_read_only() {
            ", read-only"
        } else {
            ""
        },
        if throttle.is_some() {
            ", throttled"
        } else {
            ""
        },
    );
    Ok(match throttle {
        Some(t) => Box::new(Throttled::new(backend, t)),
        None => backend,
    })
}

/// A raw disk with io=native when the configuration allows it (module comment).
fn raw_native(cfg: &DiskConfig, disk: RawDisk) -> Box<dyn DiskBackend> {
    if cfg.io != IoMode::Native {
        return Box::new(disk);
    }
    if cfg.cache != CacheMode::None {
        native_fallback(cfg, "it needs cache=none (O_DIRECT), as in QEMU");
        return Box::new(disk);
    }
    if cfg.bus == DiskBus::Scsi {
        native_fallback(cfg, "virtio-scsi serves its disks on its worker thread");
        return Box::new(disk);
    }
    Box::new(disk.with_native_io())
}

/// Log that io=native does not apply to `cfg` (when it was asked for) and why.
fn native_fallback(cfg: &DiskConfig, why: &str) {
    if cfg.io == IoMode::Native {
        tracing::warn!(
            "disk {}: io=native does not apply ({why}); serving it as io=threads",
            cfg.id
        );
    }
}

/// The image format as its first bytes tell: qcow2 when it starts with the qcow2 magic,
/// raw otherwise (including files shorter than the magic).
pub fn detect_format(path: &Path) -> Result<DiskFormat, OpenError> {
    let mut file = File::open(path).map_err(OpenError::Open)?;
    let mut magic = [0u8; 4];
    let mut got = 0;
    while got < magic.len() {
        match file.read(&mut magic[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(OpenError::io("cannot read the image header")(e)),
        }
    }
    Ok(if got == magic.len() && magic == QCOW2_MAGIC {
        DiskFormat::Qcow2
    } else {
        DiskFormat::Raw
    })
}

#[cfg(test)]
mod tests {
    use std::fs;

    use oxvm_api::{CacheMode, DiscardMode, DiskBus};
    use vmm_sys_util::tempdir::TempDir;

    use super::*;

    fn cfg(path: PathBuf, format: Option<DiskFormat>) -> DiskConfig {
        DiskConfig {
            id: "d0".into(),
            path,
            format,
            bus: DiskBus::Virtio,
            readonly: false,
            cache: CacheMode::Writeback,
            io: IoMode::Threads,
            discard: DiscardMode::Unmap,
            serial: None,
            iotune: None,
        }
    }

    #[test]
    fn detects_qcow2_by_its_magic() {
        let dir = TempDir::new().unwrap();
        let q = dir.as_path().join("a.qcow2");
        Qcow2Disk::create(&q, 1 << 20, None).unwrap();
        assert_eq!(detect_format(&q).unwrap(), DiskFormat::Qcow2);
        let r = dir.as_path().join("a.raw");
        fs::write(&r, [0u8; 4096]).unwrap();
        assert_eq!(detect_format(&r).unwrap(), DiskFormat::Raw);
        let short = dir.as_path().join("short");
        fs::write(&short, b"QF").unwrap();
        assert_eq!(detect_format(&short).unwrap(), DiskFormat::Raw);
        assert!(detect_format(&dir.as_path().join("none")).is_err());
    }

    #[test]
    fn auto_detected_raw_refuses_becoming_qcow2_configured_raw_does_not() {
        let dir = TempDir::new().unwrap();
        let r = dir.as_path().join("a.raw");
        fs::write(&r, [0u8; 8192]).unwrap();
        let mut sector = [0u8; 512];
        sector[..4].copy_from_slice(&QCOW2_MAGIC);

        let mut auto = open_disk(&cfg(r.clone(), None)).unwrap();
        assert!(auto.discard_enabled());
        assert!(auto.write_at(0, &sector).is_err());
        drop(auto);

        let mut explicit = open_disk(&cfg(r.clone(), Some(DiskFormat::Raw))).unwrap();
        explicit.write_at(0, &sector).unwrap();
        explicit.flush().unwrap();
        assert_eq!(detect_format(&r).unwrap(), DiskFormat::Qcow2);
    }

    #[test]
    fn iotune_wraps_the_backend_in_a_throttle() {
        let dir = TempDir::new().unwrap();
        let r = dir.as_path().join("t.raw");
        fs::write(&r, [0u8; 4096]).unwrap();
        let plain = open_disk(&cfg(r.clone(), None)).unwrap();
        assert!(plain.wait_canceller().is_none());
        let mut c = cfg(r.clone(), None);
        c.iotune = Some(oxvm_api::IoTune::default());
        assert!(
            open_disk(&c).unwrap().wait_canceller().is_none(),
            "nothing limited"
        );
        c.iotune = Some(oxvm_api::IoTune {
            write_iops_sec: 100,
            ..Default::default()
        });
        assert!(open_disk(&c).unwrap().wait_canceller().is_some());
    }

    #[test]
    fn io_native_applies_to_raw_cache_none_on_virtio_only() {
        let dir = crate::block::aio::direct_io_dir();
        let r = dir.as_path().join("n.raw");
        fs::write(&r, [0u8; 8192]).unwrap();
        let q = dir.as_path().join("n.qcow2");
        Qcow2Disk::create(&q, 1 << 20, None).unwrap();
        let with = |path: &PathBuf, cache, io, bus| {
            let mut c = cfg(path.clone(), None);
            (c.cache, c.io, c.bus) = (cache, io, bus);
            open_disk(&c).unwrap().native_io().is_some()
        };
        use {CacheMode as C, DiskBus as B, IoMode as I};
        assert!(with(&r, C::None, I::Native, B::Virtio));
        // Behind a throttle too.
        let mut c = cfg(r.clone(), None);
        (c.cache, c.io) = (C::None, I::Native);
        c.iotune = Some(oxvm_api::IoTune {
            total_iops_sec: 100,
            ..Default::default()
        });
        assert!(open_disk(&c).unwrap().native_io().is_some());
        // Falls back (with a warning) everywhere else.
        assert!(!with(&r, C::None, I::Threads, B::Virtio));
        assert!(!with(&r, C::Writeback, I::Native, B::Virtio));
        assert!(!with(&r, C::Writethrough, I::Native, B::Virtio));
        assert!(!with(&r, C::None, I::Native, B::Scsi));
        assert!(!with(&q, C::None, I::Native, B::Virtio));
    }
}
