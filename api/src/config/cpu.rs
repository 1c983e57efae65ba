use serde::{Deserialize, Serialize};

/// vCPU model options.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CpuConfig {
    #[serde(default)]
    pub kvm_pv_features: KvmPvFeatures,
}

/// Which KVM paravirtual features (CPUID leaf 0x40000001 EAX) the guest is offered.
///
/// The default, `safe`, is everything the host supports except the hypercall-based
/// features `pv_send_ipi`, `pv_unhalt` and `pv_sched_yield`: on PVM hosts the guest's
/// hypercall never returns and Linux hangs in SMP bring-up (see docs/config.md). On a
/// VT-x/SVM host `host` offers all of them; a list names exactly the features offered
/// (each must be one the host supports).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum KvmPvFeatures {
    Preset(String),
    List(Vec<String>),
}

/// Names of the bits of CPUID 0x40000001 EAX (Linux `arch/x86/include/uapi/asm/kvm_para.h`).
pub const KVM_PV_FEATURE_NAMES: &[(&str, u32)] = &[
    ("clocksource", 0),
    ("nop_io_delay", 1),
    ("mmu_op", 2),
    ("clocksource2", 3),
    ("async_pf", 4),
    ("steal_time", 5),
    ("pv_eoi", 6),
    ("pv_unhalt", 7),
    ("pv_tlb_flush", 9),
    ("async_pf_vmexit", 10),
    ("pv_send_ipi", 11),
    ("poll_control", 12),
    ("pv_sched_yield", 13),
    ("async_pf_int", 14),
    ("msi_ext_dest_id", 15),
    ("hc_map_gpa_range", 16),
    ("migration_control", 17),
    ("clocksource_stable_bit", 24),
];

/// Features left out of the `safe` preset: their hypercalls hang on PVM hosts.
pub const KVM_PV_UNSAFE: &[&str] = &["pv_unhalt", "pv_send_ipi", "pv_sched_yield"];

impl Default for KvmPvFeatures {
    fn default() -> Self {
        KvmPvFeatures::Preset("safe".into())
    }
}

impl KvmPvFeatures {
    /// The feature bits to offer, given the bits the host supports. Errors name the field
    /// and the unknown feature.
    pub fn resolve(&self, host: u32) -> Result<u32, String> {
        match self {
            KvmPvFeatures::Preset(p) if p == "safe" => {
                Ok(host & !mask_of(KVM_PV_UNSAFE.iter().copied())?)
            }
            KvmPvFeatures::Preset(p) if p == "host" => Ok(host),
            KvmPvFeatures::Preset(p) if p == "none" => Ok(0),
            KvmPvFeatures::Preset(p) => Err(format!(
                "unknown preset `{p}` (expected \"safe\", \"host\", \"none\" or a list of feature names)"
            )),
            KvmPvFeatures::List(names) => {
                let want = mask_of(names.iter().map(String::as_str))?;
                let missing = want & !host;
                if missing != 0 {
                    return Err(format!(
                        "the host does not support {}",
                        names_of(missing).join(", ")
                    ));
                }
                Ok(want)
            }
        }
    }
}

fn mask_of<'a>(names: impl Iterator<Item = &'a str>) -> Result<u32, String> {
    let mut mask = 0;
    for name in names {
        let bit = KVM_PV_FEATURE_NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, b)| *b)
            .ok_or_else(|| format!("unknown KVM PV feature `{name}`"))?;
        mask |= 1 << bit;
    }
    Ok(mask)
}

/// Feature names for the set bits of `mask` (unnamed bits as `bitN`).
pub fn names_of(mask: u32) -> Vec<String> {
    (0..32)
        .filter(|b| mask & (1 << b) != 0)
        .map(|b| {
            KVM_PV_FEATURE_NAMES
                .iter()
                .find(|(_, bit)| *bit == b)
                .map(|(n, _)| n.to_string())
                .unwrap_or_else(|| format!("bit{b}"))
        })
        .collect()
}
