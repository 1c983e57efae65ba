//! Checks that need no host access. Checks against the host (files exist, KVM's vCPU
//! limit, memory that can be mapped) happen when the VM is built.

use super::{ConfigError, SerialMode, VmConfig, MAX_SHUTDOWN_TIMEOUT_S};

/// Upper bound for vCPUs while APIC IDs are 8-bit xAPIC IDs (the IOAPIC and MADT
/// entries used here cannot address more).
pub const MAX_VCPUS: u32 = 254;
/// Largest guest RAM accepted, in MiB (1 TiB): far above what this VMM is tested with,
/// low enough that a typo (an extra zero or two) is caught before mmap.
pub const MAX_MEMORY_MIB: u64 = 1 << 20;
const MAX_NAME_LEN: usize = 64;

impl VmConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate_name(&self.name)?;
        if self.vcpus == 0 {
            return Err(ConfigError::invalid("vcpus", "must be at least 1"));
        }
        if self.vcpus > MAX_VCPUS {
            return Err(ConfigError::invalid(
                "vcpus",
                format!("{} is above the limit of {MAX_VCPUS}", self.vcpus),
            ));
        }
        if self.memory_mib == 0 {
            return Err(ConfigError::invalid("memory_mib", "must be at least 1"));
        }
        if self.memory_mib > MAX_MEMORY_MIB {
            return Err(ConfigError::invalid(
                "memory_mib",
                format!(
                    "{} MiB is above the limit of {MAX_MEMORY_MIB} MiB",
                    self.memory_mib
                ),
            ));
        }
        match (&self.boot.kernel, &self.boot.raw) {
            (None, None) => {
                return Err(ConfigError::invalid(
                    "boot.kernel",
                    "missing: give a kernel (or boot.raw for a raw payload)",
                ))
            }
            (Some(_), Some(_)) => {
                return Err(ConfigError::invalid(
                    "boot.raw",
                    "cannot be combined with boot.kernel",
                ))
            }
            _ => {}
        }
        if self.boot.raw.is_some() && self.boot.initrd.is_some() {
            return Err(ConfigError::invalid(
                "boot.initrd",
                "only a kernel can take an initrd",
            ));
        }
        if self.boot.cmdline.contains('\0') {
            return Err(ConfigError::invalid("boot.cmdline", "contains a NUL byte"));
        }
        self.validate_devices()?;
        if let Some(r) = &self.resources {
            r.validate(self.vcpus, self.memory_mib)?;
        }
        self.cpu
            .kvm_pv_features
            .resolve(u32::MAX)
            .map_err(|e| ConfigError::invalid("cpu.kvm_pv_features", e))?;
        if self.shutdown.timeout_s > MAX_SHUTDOWN_TIMEOUT_S {
            return Err(ConfigError::invalid(
                "shutdown.timeout_s",
                format!(
                    "{} s is above the limit of {MAX_SHUTDOWN_TIMEOUT_S} s",
                    self.shutdown.timeout_s
                ),
            ));
        }
        match (self.serial.mode, &self.serial.path) {
            (SerialMode::File, None) => Err(ConfigError::invalid(
                "serial.path",
                "required when serial.mode is \"file\"",
            )),
            (SerialMode::Stdout | SerialMode::Off, Some(_)) => Err(ConfigError::invalid(
                "serial.path",
                "only used when serial.mode is \"file\"",
            )),
            _ => Ok(()),
        }
    }
}

fn validate_name(name: &str) -> Result<(), ConfigError> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(ConfigError::invalid(
            "name",
            format!("must be 1 to {MAX_NAME_LEN} characters"),
        ));
    }
    // The name becomes a thread name, a cgroup and a socket file name: keep it to
    // characters that are safe in all three.
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(ConfigError::invalid(
            "name",
            format!("character {c:?} not allowed (use letters, digits, '-', '_', '.')"),
        ));
    }
    Ok(())
}

/// virtio-blk's GET_ID answer holds 20 bytes.
pub const MAX_DISK_SERIAL: usize = 20;
/// Linux interface names hold 15 bytes.
const IFNAMSIZ_MAX: usize = 15;
/// A virtio-net device here has at most this many queue pairs.
pub const MAX_NIC_QUEUES: u16 = 16;

impl VmConfig {
    pub(super) fn validate_devices(&self) -> Result<(), ConfigError> {
        let mut ids = std::collections::HashSet::new();
        for (i, d) in self.disks.iter().enumerate() {
            let f = |name: &str| format!("disks[{i}].{name}");
            if d.id.is_empty() || !ids.insert(d.id.as_str()) {
                return Err(ConfigError::invalid(
                    f("id"),
                    "must be non-empty and unique",
                ));
            }
            if d.path.as_os_str().is_empty() {
                return Err(ConfigError::invalid(f("path"), "must not be empty"));
            }
            if let Some(s) = &d.serial {
                if s.len() > MAX_DISK_SERIAL || !s.is_ascii() {
                    return Err(ConfigError::invalid(
                        f("serial"),
                        format!("at most {MAX_DISK_SERIAL} ASCII characters"),
                    ));
                }
            }
        }
        let mut ids = std::collections::HashSet::new();
        for (i, n) in self.nics.iter().enumerate() {
            let f = |name: &str| format!("nics[{i}].{name}");
            if n.id.is_empty() || !ids.insert(n.id.as_str()) {
                return Err(ConfigError::invalid(
                    f("id"),
                    "must be non-empty and unique",
                ));
            }
            if n.tap.is_empty() || n.tap.len() > IFNAMSIZ_MAX || n.tap.contains('/') {
                return Err(ConfigError::invalid(
                    f("tap"),
                    format!("must be 1 to {IFNAMSIZ_MAX} bytes, without '/'"),
                ));
            }
            if let Some(m) = &n.mac {
                match super::parse_mac(m) {
                    Some(mac) if mac[0] & 1 == 0 => {}
                    Some(_) => {
                        return Err(ConfigError::invalid(f("mac"), "is a multicast address"))
                    }
                    None => {
                        return Err(ConfigError::invalid(
                            f("mac"),
                            format!("{m:?} is not of the form xx:xx:xx:xx:xx:xx"),
                        ))
                    }
                }
            }
            if n.queues == 0 || n.queues > MAX_NIC_QUEUES {
                return Err(ConfigError::invalid(
                    f("queues"),
                    format!("must be 1 to {MAX_NIC_QUEUES}"),
                ));
            }
        }
        Ok(())
    }
}
