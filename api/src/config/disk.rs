use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A disk: an image file or block device exposed as virtio-blk or as a LUN of the VM's
/// virtio-scsi controller. Attribute names follow QEMU/libvirt (and OpenNebula's DISK
/// attributes map onto them one to one: CACHE, IO, DISCARD, DRIVER, READONLY, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskConfig {
    /// Unique among the VM's disks; names the disk in errors, counters and the API.
    pub id: String,
    pub path: PathBuf,
    /// Image format; detected from the file's header when absent.
    #[serde(default)]
    pub format: Option<DiskFormat>,
    #[serde(default)]
    pub bus: DiskBus,
    #[serde(default)]
    pub readonly: bool,
    #[serde(default)]
    pub cache: CacheMode,
    #[serde(default)]
    pub io: IoMode,
    #[serde(default)]
    pub discard: DiscardMode,
    /// Serial number the guest sees (virtio-blk GET_ID, SCSI VPD page 0x80); at most
    /// 20 bytes for virtio-blk.
    #[serde(default)]
    pub serial: Option<String>,
    #[serde(default)]
    pub iotune: Option<IoTune>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskFormat {
    Raw,
    Qcow2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskBus {
    #[default]
    Virtio,
    Scsi,
}

/// Host page cache use, with QEMU's meanings. In every mode a guest FLUSH completes
/// only after the data is on stable storage (fdatasync); `writethrough` also syncs each
/// write before completing it and tells the guest there is no volatile write cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheMode {
    /// O_DIRECT: bypass the host page cache.
    None,
    #[default]
    Writeback,
    Writethrough,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IoMode {
    /// Requests are served by the device's worker thread(s).
    #[default]
    Threads,
    /// Asynchronous submission where the backend supports it.
    Native,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiscardMode {
    /// Discard requests succeed without freeing anything (QEMU's default).
    #[default]
    Ignore,
    /// Discard punches holes in the image (raw) or discards clusters (qcow2).
    Unmap,
}

/// IO throttling: sustained rates and bursts, as token buckets. Names follow
/// libvirt's `<iotune>` and OpenNebula's DISK attributes (lower-cased). Zero or absent
/// means unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IoTune {
    #[serde(default)]
    pub total_bytes_sec: u64,
    #[serde(default)]
    pub read_bytes_sec: u64,
    #[serde(default)]
    pub write_bytes_sec: u64,
    #[serde(default)]
    pub total_iops_sec: u64,
    #[serde(default)]
    pub read_iops_sec: u64,
    #[serde(default)]
    pub write_iops_sec: u64,
    /// Burst ceilings (bucket sizes per second of burst).
    #[serde(default)]
    pub total_bytes_sec_max: u64,
    #[serde(default)]
    pub read_bytes_sec_max: u64,
    #[serde(default)]
    pub write_bytes_sec_max: u64,
    #[serde(default)]
    pub total_iops_sec_max: u64,
    #[serde(default)]
    pub read_iops_sec_max: u64,
    #[serde(default)]
    pub write_iops_sec_max: u64,
    /// How long (seconds) a burst may last at the `_max` rate; default 1.
    #[serde(default)]
    pub total_bytes_sec_max_length: u64,
    #[serde(default)]
    pub read_bytes_sec_max_length: u64,
    #[serde(default)]
    pub write_bytes_sec_max_length: u64,
    #[serde(default)]
    pub total_iops_sec_max_length: u64,
    #[serde(default)]
    pub read_iops_sec_max_length: u64,
    #[serde(default)]
    pub write_iops_sec_max_length: u64,
    /// Size that counts as one IO for the IOPS limits (0: every request is one IO).
    #[serde(default)]
    pub size_iops_sec: u64,
}
