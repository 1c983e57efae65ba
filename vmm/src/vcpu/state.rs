//! A vCPU's architectural state as KVM holds it, for save/restore and migration.
//! Taken on the vCPU's own thread while it is parked (between two exits), applied to a
//! freshly created vCPU before its thread starts.

use kvm_bindings::{
    kvm_cpuid_entry2, kvm_debugregs, kvm_lapic_state, kvm_mp_state, kvm_msr_entry, kvm_regs,
    kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave, Msrs,
};
use kvm_ioctls::VcpuFd;
use serde::{Deserialize, Serialize};

use crate::error::{kvm_err, VmmError};

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VcpuState {
    pub index: u32,
    /// The CPUID the guest saw; a restoring host must offer at least these features.
    pub cpuid: Vec<kvm_cpuid_entry2>,
    pub mp_state: kvm_mp_state,
    pub regs: kvm_regs,
    pub sregs: kvm_sregs,
    /// The 4 KiB legacy XSAVE area: oxvm never enables dynamic XSAVE features (AMX)
    /// for its guests, so this holds all of the FPU/SSE/AVX state.
    pub xsave: kvm_xsave,
    pub xcrs: kvm_xcrs,
    pub debugregs: kvm_debugregs,
    pub lapic: kvm_lapic_state,
    pub msrs: Vec<kvm_msr_entry>,
    pub events: kvm_vcpu_events,
    /// The guest TSC frequency; restored when the host's differs.
    pub tsc_khz: Option<u32>,
}

/// Read every MSR of `list` that this vCPU has; KVM stops at the first one it cannot
/// read, so that one is skipped and the rest read again.
fn read_msrs(vcpu: &VcpuFd, list: &[u32]) -> Result<Vec<kvm_msr_entry>, VmmError> {
    let mut out = Vec::with_capacity(list.len());
    let mut rest = list;
    while !rest.is_empty() {
        let chunk: Vec<kvm_msr_entry> = rest
            .iter()
            .map(|&index| kvm_msr_entry {
                index,
                ..Default::default()
            })
            .collect();
        let mut msrs =
            Msrs::from_entries(&chunk).map_err(|e| VmmError::Device(format!("MSR list: {e:?}")))?;
        let n = vcpu.get_msrs(&mut msrs).map_err(kvm_err("KVM_GET_MSRS"))?;
        out.extend_from_slice(&msrs.as_slice()[..n]);
        rest = &rest[(n + 1).min(rest.len())..];
    }
    Ok(out)
}

/// Take vCPU `index`'s state. The vCPU must be outside KVM_RUN (parked).
pub fn save_vcpu(vcpu: &VcpuFd, index: u32, msr_list: &[u32]) -> Result<VcpuState, VmmError> {
    // KVM_GET_MP_STATE first: it folds pending LAPIC events into the state it reports.
    let mp_state = vcpu.get_mp_state().map_err(kvm_err("KVM_GET_MP_STATE"))?;
    let cpuid = vcpu
        .get_cpuid2(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
        .map_err(kvm_err("KVM_GET_CPUID2"))?
        .as_slice()
        .to_vec();
    Ok(VcpuState {
        index,
        cpuid,
        mp_state,
        regs: vcpu.get_regs().map_err(kvm_err("KVM_GET_REGS"))?,
        sregs: vcpu.get_sregs().map_err(kvm_err("KVM_GET_SREGS"))?,
        xsave: vcpu.get_xsave().map_err(kvm_err("KVM_GET_XSAVE"))?,
        xcrs: vcpu.get_xcrs().map_err(kvm_err("KVM_GET_XCRS"))?,
        debugregs: vcpu
            .get_debug_regs()
            .map_err(kvm_err("KVM_GET_DEBUGREGS"))?,
        lapic: vcpu.get_lapic().map_err(kvm_err("KVM_GET_LAPIC"))?,
        msrs: read_msrs(vcpu, msr_list)?,
        events: vcpu
            .get_vcpu_events()
            .map_err(kvm_err("KVM_GET_VCPU_EVENTS"))?,
        tsc_khz: vcpu.get_tsc_khz().ok(),
    })
}

/// Apply `state` to a vCPU created for the restore (its CPUID already set from the
/// host, see `check_cpuid`). Order as KVM needs it: MSRs (the TSC among them) before
/// the registers, the LAPIC before the events that may inject into it.
pub fn restore_vcpu(vcpu: &VcpuFd, state: &VcpuState) -> Result<(), VmmError> {
    if let Some(khz) = state.tsc_khz {
        if vcpu.get_tsc_khz().ok() != Some(khz) {
            vcpu.set_tsc_khz(khz).map_err(kvm_err("KVM_SET_TSC_KHZ"))?;
        }
    }
    let msrs = Msrs::from_entries(&state.msrs)
        .map_err(|e| VmmError::Device(format!("vcpus[{}].msrs: {e:?}", state.index)))?;
    let n = vcpu.set_msrs(&msrs).map_err(kvm_err("KVM_SET_MSRS"))?;
    if n != state.msrs.len() {
        return Err(VmmError::Device(format!(
            "vcpus[{}].msrs: this host refuses MSR {:#x}",
            state.index, state.msrs[n].index
        )));
    }
    vcpu.set_regs(&state.regs)
        .map_err(kvm_err("KVM_SET_REGS"))?;
    vcpu.set_sregs(&state.sregs)
        .map_err(kvm_err("KVM_SET_SREGS"))?;
    // SAFETY: oxvm never asks for dynamic XSAVE features (arch_prctl
    // ARCH_REQ_XCOMP_GUEST_PERM), so the vCPU's XSAVE state fits the 4 KiB kvm_xsave
    // that KVM_SET_XSAVE reads.
    unsafe { vcpu.set_xsave(&state.xsave) }.map_err(kvm_err("KVM_SET_XSAVE"))?;
    vcpu.set_xcrs(&state.xcrs)
        .map_err(kvm_err("KVM_SET_XCRS"))?;
    vcpu.set_debug_regs(&state.debugregs)
        .map_err(kvm_err("KVM_SET_DEBUGREGS"))?;
    vcpu.set_lapic(&state.lapic)
        .map_err(kvm_err("KVM_SET_LAPIC"))?;
    vcpu.set_mp_state(state.mp_state)
        .map_err(kvm_err("KVM_SET_MP_STATE"))?;
    vcpu.set_vcpu_events(&state.events)
        .map_err(kvm_err("KVM_SET_VCPU_EVENTS"))?;
    Ok(())
}

/// Refuse a restore (or an incoming migration) onto a host that cannot offer a CPU
/// feature the guest already saw: `host` is this host's KVM_GET_SUPPORTED_CPUID.
/// Feature leaves 1 and 7 (ECX/EDX, EBX/ECX/EDX), 0xD (XSAVE components) and
/// 0x80000001 are compared bit by bit.
pub fn check_cpuid(saved: &[kvm_cpuid_entry2], host: &[kvm_cpuid_entry2]) -> Result<(), String> {
    // Leaves 1 and 0x80000001 have no subleaves: KVM need not report index 0 for them.
    let find = |set: &[kvm_cpuid_entry2], f: u32, i: u32| {
        let indexed = matches!(f, 7 | 0xd);
        set.iter()
            .find(|e| e.function == f && (!indexed || e.index == i))
            .copied()
    };
    let checks: [(u32, u32, &str); 6] = [
        (1, 0, "1"),
        (7, 0, "7.0"),
        (0xd, 0, "0xd.0"),
        (0xd, 1, "0xd.1"),
        (0x8000_0001, 0, "0x80000001"),
        (7, 1, "7.1"),
    ];
    for (f, i, name) in checks {
        let Some(g) = find(saved, f, i) else { continue };
        let h = find(host, f, i).unwrap_or_default();
        // Leaf 1 EBX (APIC ID, counts) and ECX bit 27 (OSXSAVE, set by the guest OS)
        // are not host features.
        // Which registers hold feature bits in each leaf (leaf 0xd EBX/ECX are sizes).
        let regs = [
            ("eax", g.eax, h.eax, f == 0xd),
            ("ebx", g.ebx, h.ebx, f == 7),
            (
                "ecx",
                g.ecx & !if f == 1 { 1 << 27 } else { 0 },
                h.ecx,
                f != 0xd,
            ),
            ("edx", g.edx, h.edx, true),
        ];
        for (reg, gv, hv, compare) in regs {
            let missing = gv & !hv;
            if compare && missing != 0 {
                return Err(format!(
                    "the guest uses CPU features this host lacks: CPUID leaf {name} {reg} bits {missing:#x}"
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(function: u32, index: u32, ecx: u32, edx: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            ecx,
            edx,
            ..Default::default()
        }
    }

    #[test]
    fn a_host_with_every_feature_passes_and_a_missing_bit_is_named() {
        let guest = [leaf(1, 0, 0b1010 | 1 << 27, 0x10), leaf(7, 0, 0, 0)];
        let host = [leaf(1, 0, 0b1110, 0x10), leaf(7, 0, 0, 0)];
        assert!(check_cpuid(&guest, &host).is_ok());
        let poorer = [leaf(1, 0, 0b0010, 0x10)];
        let e = check_cpuid(&guest, &poorer).unwrap_err();
        assert!(e.contains("leaf 1 ecx bits 0x8"), "{e}");
    }

    #[test]
    fn state_round_trips_through_serde() {
        let s = VcpuState {
            index: 1,
            cpuid: vec![leaf(1, 0, 3, 4)],
            mp_state: Default::default(),
            regs: kvm_regs {
                rip: 0x1234,
                ..Default::default()
            },
            sregs: Default::default(),
            xsave: Default::default(),
            xcrs: Default::default(),
            debugregs: Default::default(),
            lapic: Default::default(),
            msrs: vec![kvm_msr_entry {
                index: 0x10,
                data: 99,
                ..Default::default()
            }],
            events: Default::default(),
            tsc_khz: Some(2_000_000),
        };
        let json = serde_json::to_string(&s).unwrap();
        let back: VcpuState = serde_json::from_str(&json).unwrap();
        assert_eq!(back.regs.rip, 0x1234);
        assert_eq!(back.msrs[0].data, 99);
        assert_eq!(back.cpuid[0].edx, 4);
    }
}
