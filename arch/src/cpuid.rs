//! Per-vCPU CPUID: the host's KVM_GET_SUPPORTED_CPUID with this vCPU's APIC ID, the VM's
//! topology (one socket, one thread per core, `vcpus` cores) and the KVM leaves.

use kvm_bindings::{kvm_cpuid_entry2, CpuId, KVM_CPUID_FLAG_SIGNIFCANT_INDEX};

const LEAF_FEATURES: u32 = 0x1;
const LEAF_CACHE_PARAMS: u32 = 0x4;
const LEAF_EXT_TOPOLOGY: u32 = 0xb;
const LEAF_V2_EXT_TOPOLOGY: u32 = 0x1f;
const LEAF_KVM_SIGNATURE: u32 = 0x4000_0000;
const LEAF_KVM_FEATURES: u32 = 0x4000_0001;
const LEAF_AMD_SIZE_IDS: u32 = 0x8000_0008;

const ECX_HYPERVISOR: u32 = 1 << 31;
const EDX_HTT: u32 = 1 << 28;

/// "KVMKVMKVM\0\0\0" as EBX, ECX, EDX.
const KVM_SIGNATURE: [u32; 3] = [0x4b4d_564b, 0x564b_4d56, 0x0000_004d];

/// Bits needed to number `n` cores (the x2APIC ID shift of the core level).
fn id_bits(n: u32) -> u32 {
    if n <= 1 {
        0
    } else {
        32 - (n - 1).leading_zeros()
    }
}

/// Leaf 0xB / 0x1F for one vCPU: an SMT level (one thread per core), a core level
/// (`count` cores, `core_bits` wide), and the terminating invalid level. Every
/// subleaf carries the vCPU's x2APIC ID in EDX.
fn topology_leaf(leaf: u32, apic_id: u32, count: u32, core_bits: u32) -> [kvm_cpuid_entry2; 3] {
    let e = |index: u32, eax: u32, ebx: u32, ecx: u32| kvm_cpuid_entry2 {
        function: leaf,
        index,
        flags: KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
        eax,
        ebx,
        ecx,
        edx: apic_id,
        ..Default::default()
    };
    [
        e(0, 0, 1, 1 << 8),
        e(1, core_bits, count, (2 << 8) | 1),
        e(2, 0, 0, 2),
    ]
}

/// Host bits offered by KVM in leaf 0x40000001 EAX (0 when the leaf is missing).
pub fn host_kvm_pv_features(supported: &CpuId) -> u32 {
    supported
        .as_slice()
        .iter()
        .find(|e| e.function == LEAF_KVM_FEATURES)
        .map(|e| e.eax)
        .unwrap_or(0)
}

/// The CPUID for vCPU `index` of `count`, offering `kvm_pv_features` in the KVM leaf.
pub fn vcpu_cpuid(supported: &CpuId, index: u32, count: u32, kvm_pv_features: u32) -> CpuId {
    let mut cpuid = supported.clone();
    let apic_id = index;
    let core_bits = id_bits(count);
    let mut has_kvm_leaf = false;
    for e in cpuid.as_mut_slice() {
        match e.function {
            LEAF_FEATURES => {
                e.ebx = (e.ebx & 0x0000_ffff) | (apic_id << 24) | ((count.min(255)) << 16);
                e.ecx |= ECX_HYPERVISOR;
                if count > 1 {
                    e.edx |= EDX_HTT;
                } else {
                    e.edx &= !EDX_HTT;
                }
            }
            LEAF_CACHE_PARAMS => {
                // EAX[31:26]: cores per package - 1; EAX[25:14]: threads sharing this
                // cache - 1 (one thread per core here).
                e.eax = (e.eax & 0x3fff) | ((count.saturating_sub(1).min(63)) << 26);
            }
            // Topology leaves are rebuilt whole below: hosts list them with varying
            // subleaves (some only subleaf 0, all zero).
            LEAF_EXT_TOPOLOGY | LEAF_V2_EXT_TOPOLOGY => {}
            LEAF_AMD_SIZE_IDS => {
                e.ecx = (e.ecx & !0xf0ff) | (count.saturating_sub(1) & 0xff) | (core_bits << 12);
            }
            LEAF_KVM_SIGNATURE => {
                e.eax = LEAF_KVM_FEATURES;
                [e.ebx, e.ecx, e.edx] = KVM_SIGNATURE;
            }
            LEAF_KVM_FEATURES => {
                has_kvm_leaf = true;
                e.eax = kvm_pv_features;
            }
            _ => {}
        }
    }
    let mut entries = cpuid.as_slice().to_vec();
    for leaf in [LEAF_EXT_TOPOLOGY, LEAF_V2_EXT_TOPOLOGY] {
        if entries.iter().any(|e| e.function == leaf) {
            entries.retain(|e| e.function != leaf);
            entries.extend(topology_leaf(leaf, apic_id, count, core_bits));
        }
    }
    if let Ok(c) = CpuId::from_entries(&entries) {
        cpuid = c;
    }
    if !has_kvm_leaf {
        // Hosts that do not list the KVM leaves still run KVM: add them so the guest
        // finds kvmclock and the features chosen for it.
        let leaves = [
            kvm_cpuid_entry2 {
                function: LEAF_KVM_SIGNATURE,
                eax: LEAF_KVM_FEATURES,
                ebx: KVM_SIGNATURE[0],
                ecx: KVM_SIGNATURE[1],
                edx: KVM_SIGNATURE[2],
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: LEAF_KVM_FEATURES,
                eax: kvm_pv_features,
                ..Default::default()
            },
        ];
        let mut entries = cpuid.as_slice().to_vec();
        entries.retain(|e| e.function != LEAF_KVM_SIGNATURE);
        entries.extend_from_slice(&leaves);
        if let Ok(c) = CpuId::from_entries(&entries) {
            cpuid = c;
        }
    }
    cpuid
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> CpuId {
        CpuId::from_entries(&[
            kvm_cpuid_entry2 {
                function: 1,
                ebx: 0x0000_0800,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 0xb,
                index: 0,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 0xb,
                index: 1,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: LEAF_KVM_FEATURES,
                eax: 0xffff,
                ..Default::default()
            },
        ])
        .unwrap()
    }

    fn leaf(c: &CpuId, f: u32, i: u32) -> kvm_cpuid_entry2 {
        *c.as_slice()
            .iter()
            .find(|e| e.function == f && e.index == i)
            .unwrap()
    }

    #[test]
    fn apic_ids_and_topology() {
        let c = vcpu_cpuid(&host(), 3, 4, 0x8);
        let l1 = leaf(&c, 1, 0);
        assert_eq!(l1.ebx >> 24, 3);
        assert_eq!((l1.ebx >> 16) & 0xff, 4);
        assert_eq!(l1.ebx & 0xffff, 0x0800);
        assert_ne!(l1.ecx & ECX_HYPERVISOR, 0);
        assert_ne!(l1.edx & EDX_HTT, 0);
        let core = leaf(&c, 0xb, 1);
        assert_eq!((core.eax, core.ebx, core.edx), (2, 4, 3));
        assert_eq!(leaf(&c, LEAF_KVM_FEATURES, 0).eax, 0x8);
    }

    #[test]
    fn topology_leaf_is_complete_when_the_host_lists_only_subleaf_0() {
        // What this project's PVM hosts report: 0xB with subleaf 0 only, all zero.
        let host = CpuId::from_entries(&[
            kvm_cpuid_entry2 {
                function: 1,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 0xb,
                flags: KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
                ..Default::default()
            },
        ])
        .unwrap();
        let c = vcpu_cpuid(&host, 1, 2, 0);
        let smt = leaf(&c, 0xb, 0);
        assert_eq!((smt.ebx, smt.ecx >> 8, smt.edx), (1, 1, 1));
        let core = leaf(&c, 0xb, 1);
        assert_eq!((core.eax, core.ebx, core.ecx >> 8, core.edx), (1, 2, 2, 1));
        assert_eq!(leaf(&c, 0xb, 2).ecx >> 8, 0, "terminating level");
        assert!(
            c.as_slice().iter().all(|e| e.function != 0x1f),
            "0x1f not invented"
        );
    }

    #[test]
    fn kvm_leaves_added_when_missing() {
        let bare = CpuId::from_entries(&[kvm_cpuid_entry2 {
            function: 1,
            ..Default::default()
        }])
        .unwrap();
        let c = vcpu_cpuid(&bare, 0, 1, 0x9);
        assert_eq!(leaf(&c, LEAF_KVM_SIGNATURE, 0).ebx, KVM_SIGNATURE[0]);
        assert_eq!(leaf(&c, LEAF_KVM_FEATURES, 0).eax, 0x9);
    }

    #[test]
    fn id_bits_rounds_up() {
        assert_eq!([1, 2, 3, 4, 5, 8, 9].map(id_bits), [0, 1, 2, 2, 3, 3, 4]);
    }
}
