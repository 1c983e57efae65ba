//! From the VM file's values to what the cgroup files take.
//!
//! CPU weight follows OpenNebula's KVM driver: `cpu.shares = ceil(CPU × 1024)` clamped to
//! 2..=262144 on cgroup v1, `cpu.weight = ceil(CPU × 100)` clamped to 1..=10000 on v2.
//! So CPU=1.0 is each version's default (1024, 100) and CPU=0.5 gets half of it.

pub const V1_SHARES_PER_CPU: f64 = 1024.0;
pub const V1_SHARES_MIN: u64 = 2;
pub const V1_SHARES_MAX: u64 = 262_144;
pub const V2_WEIGHT_PER_CPU: f64 = 100.0;
pub const V2_WEIGHT_MIN: u64 = 1;
pub const V2_WEIGHT_MAX: u64 = 10_000;

/// `ceil(x)`, ignoring floating-point noise (0.3 × 100 is 30.000000000000004, which
/// must give 30 as the decimal value says).
fn ceil_decimal(x: f64) -> u64 {
    let c = (x - 1e-6).ceil();
    if c <= 0.0 {
        0
    } else if c >= u64::MAX as f64 {
        u64::MAX
    } else {
        c as u64
    }
}

/// cgroup v1 `cpu.shares` for an OpenNebula CPU value.
pub fn v1_shares(cpu: f64) -> u64 {
    ceil_decimal(cpu * V1_SHARES_PER_CPU).clamp(V1_SHARES_MIN, V1_SHARES_MAX)
}

/// cgroup v2 `cpu.weight` for an OpenNebula CPU value.
pub fn v2_weight(cpu: f64) -> u64 {
    ceil_decimal(cpu * V2_WEIGHT_PER_CPU).clamp(V2_WEIGHT_MIN, V2_WEIGHT_MAX)
}

/// Bytes for a MiB limit (validated not to overflow when the VM file was read).
pub fn mib_to_bytes(mib: u64) -> u64 {
    mib.saturating_mul(1 << 20)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opennebula_seed_values() {
        assert_eq!(v1_shares(0.5), 512);
        assert_eq!(v1_shares(1.0), 1024);
        assert_eq!(v1_shares(2.0), 2048);
        assert_eq!(v2_weight(0.5), 50);
        assert_eq!(v2_weight(1.0), 100);
        assert_eq!(v2_weight(4.0), 400);
    }

    #[test]
    fn rounds_up_like_opennebula_without_float_noise() {
        assert_eq!(v1_shares(0.1), 103); // 102.4
        assert_eq!(v2_weight(0.3), 30); // 30.000000000000004
        assert_eq!(v2_weight(0.333), 34); // 33.3
        assert_eq!(v1_shares(0.25), 256);
    }

    #[test]
    fn clamped_to_the_kernel_ranges() {
        assert_eq!(v1_shares(0.0001), V1_SHARES_MIN);
        assert_eq!(v1_shares(1e6), V1_SHARES_MAX);
        assert_eq!(v1_shares(f64::MAX), V1_SHARES_MAX);
        assert_eq!(v2_weight(0.001), V2_WEIGHT_MIN);
        assert_eq!(v2_weight(1e6), V2_WEIGHT_MAX);
    }

    #[test]
    fn memory_in_bytes() {
        assert_eq!(mib_to_bytes(64), 64 << 20);
    }
}
