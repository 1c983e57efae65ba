//! vCPU pinning: CPU affinity of the vCPU threads (`resources.vcpu_pinning`).

use super::CgroupError;

/// Highest CPU number + 1 that a `cpu_set_t` holds (glibc's CPU_SETSIZE).
const MAX_CPUS: usize = libc::CPU_SETSIZE as usize;

fn empty_set() -> libc::cpu_set_t {
    // SAFETY: cpu_set_t is a plain bit array; all zeroes is the empty set.
    unsafe { std::mem::zeroed() }
}

/// The host CPUs the calling thread may run on (offline CPUs and CPUs outside this
/// process's cpuset are not in it).
pub(crate) fn allowed_cpus() -> std::io::Result<Vec<usize>> {
    let mut set = empty_set();
    // SAFETY: the kernel writes at most size_of::<cpu_set_t>() bytes into `set`.
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: CPU_ISSET only reads `set`; every index is below CPU_SETSIZE.
    Ok((0..MAX_CPUS)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect())
}

/// `0-3,6` style list.
fn cpu_list(cpus: &[usize]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let start = cpus[i];
        let mut end = start;
        while i + 1 < cpus.len() && cpus[i + 1] == end + 1 {
            i += 1;
            end = cpus[i];
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    parts.join(",")
}

/// Check every vCPU's CPU list against what this process may use, before anything is
/// started. Errors name `resources.vcpu_pinning[i]`.
pub(super) fn check_pinning(pinning: &[Vec<usize>]) -> Result<(), CgroupError> {
    let allowed = allowed_cpus().map_err(|source| CgroupError::Affinity {
        cpus: Vec::new(),
        source,
    })?;
    check_against(pinning, &allowed)
}

fn check_against(pinning: &[Vec<usize>], allowed: &[usize]) -> Result<(), CgroupError> {
    for (index, cpus) in pinning.iter().enumerate() {
        for &c in cpus {
            if c >= MAX_CPUS {
                return Err(CgroupError::Pinning {
                    index,
                    reason: format!(
                        "host CPU {c} is above the highest CPU number oxvm can pin to ({})",
                        MAX_CPUS - 1
                    ),
                });
            }
            if !allowed.contains(&c) {
                return Err(CgroupError::Pinning {
                    index,
                    reason: format!(
                        "host CPU {c} does not exist or is not available to this process \
                         (available: {})",
                        cpu_list(allowed)
                    ),
                });
            }
        }
    }
    Ok(())
}

/// Restrict the calling thread to the host CPUs `cpus`.
pub fn pin_current_thread(cpus: &[usize]) -> Result<(), CgroupError> {
    let err = |source| CgroupError::Affinity {
        cpus: cpus.to_vec(),
        source,
    };
    let mut set = empty_set();
    for &c in cpus {
        if c >= MAX_CPUS {
            return Err(err(std::io::Error::from_raw_os_error(libc::EINVAL)));
        }
        // SAFETY: CPU_SET writes one bit of `set`; `c` is below CPU_SETSIZE.
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    // SAFETY: `set` is a valid cpu_set_t of the size passed; pid 0 is the calling thread.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        return Err(err(std::io::Error::last_os_error()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_read_like_the_kernel_writes_them() {
        assert_eq!(cpu_list(&[0, 1, 2, 3, 6, 8, 9]), "0-3,6,8-9");
        assert_eq!(cpu_list(&[5]), "5");
        assert_eq!(cpu_list(&[]), "");
    }

    #[test]
    fn pinning_is_checked_against_the_allowed_cpus() {
        let allowed = [0, 1];
        assert!(check_against(&[vec![0], vec![1, 0]], &allowed).is_ok());
        let e = check_against(&[vec![0], vec![999]], &allowed)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`resources.vcpu_pinning[1]`") && e.contains("999") && e.contains("0-1"),
            "{e}"
        );
        let e = check_against(&[vec![5000]], &allowed)
            .unwrap_err()
            .to_string();
        assert!(e.contains("[0]") && e.contains("1023"), "{e}");
    }

    #[test]
    fn a_thread_pins_itself() {
        let allowed = allowed_cpus().unwrap();
        assert!(!allowed.is_empty());
        let want = vec![*allowed.last().unwrap()];
        let w = want.clone();
        let got = std::thread::spawn(move || {
            pin_current_thread(&w).unwrap();
            allowed_cpus().unwrap()
        })
        .join()
        .unwrap();
        assert_eq!(got, want);
        // The test thread itself is unaffected.
        assert_eq!(allowed_cpus().unwrap(), allowed);
        let e = std::thread::spawn(|| pin_current_thread(&[MAX_CPUS]).unwrap_err())
            .join()
            .unwrap();
        assert!(e.to_string().contains("cannot pin"), "{e}");
    }
}
