//! Linux guest with real disks and a NIC, driven by Linux's own virtio-blk,
//! virtio-scsi/sd and virtio-net drivers (the in-kernel selftest checks `blk`, `scsi`,
//! `net`), verified again from the host: patterns in the images (qcow2 through
//! qemu-img), blocks freed by discard, a read-only image untouched, UDP echo traffic
//! and the MAC the guest saw. Also the `blkbench` workload (pattern checked in the
//! images) and a throttled disk.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use common::linux::{cmdline, detail, guest_file, selftest_result};
use common::netns::NetNs;
use common::qemu_img::qemu_img;
use common::vm::{RunningVm, Scratch};
use serde_json::json;

const BOOT_TIMEOUT: Duration = Duration::from_secs(1200);
const MIB: u64 = 1 << 20;
const GUEST_MAC: &str = "52:54:00:12:34:56";

/// The pattern the selftest writes at 1 MiB (see resources/guest/oxvm_selftest_disk.c).
fn expected_pattern(disk: &str) -> Vec<u8> {
    let mut b = vec![b' '; 4096];
    let head = format!("OXVM-PATTERN {disk}\n");
    b[..head.len()].copy_from_slice(head.as_bytes());
    b[63] = b'\n';
    for (j, v) in b.iter_mut().enumerate().skip(64) {
        *v = ((j * 7 + 3) & 0xff) as u8;
    }
    b
}

fn read_at(path: &Path, off: u64, len: usize) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(path).unwrap();
    let mut b = vec![0u8; len];
    f.read_exact_at(&mut b, off).unwrap();
    b
}

/// A sparse raw image with 4 MiB of data at 8 MiB (what the guest will discard).
fn raw_image(path: &Path, size: u64, head: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::create(path).unwrap();
    f.set_len(size).unwrap();
    f.write_all_at(head, 0).unwrap();
    f.write_all_at(&vec![0xab; (4 * MIB) as usize], 8 * MIB)
        .unwrap();
    f.sync_all().unwrap();
}

fn blocks(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().blocks()
}

/// `<disk>:k=v,k=v` entries of a selftest details string, as (disk, fields).
fn disk_entries(details: &str) -> Vec<(String, String)> {
    details
        .split_whitespace()
        .filter_map(|e| e.split_once(':'))
        .map(|(d, f)| (d.to_string(), f.to_string()))
        .collect()
}

#[test]
fn disks_and_nic_through_linux_drivers() {
    let s = Scratch::new();
    let dir = s.path();
    let (vda, vdb, vdb_base, vdc, sda) = (
        dir.join("vda.raw"),
        dir.join("vdb.qcow2"),
        dir.join("vdb-base.raw"),
        dir.join("vdc.raw"),
        dir.join("sda.raw"),
    );
    raw_image(&vda, 64 * MIB, b"OXVM-VDA");
    raw_image(&sda, 64 * MIB, b"OXVM-SDA");
    raw_image(&vdc, 32 * MIB, b"OXVM-READONLY-01");
    raw_image(&vdb_base, 64 * MIB, b"OXVM-BACKING-000");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-F",
        "raw",
        "-b",
        "vdb-base.raw",
        vdb.to_str().unwrap(),
    ]);
    let vdc_before = std::fs::read(&vdc).unwrap();
    let (vda_blocks, sda_blocks) = (blocks(&vda), blocks(&sda));

    let ns_name = format!("oxvmt{}", std::process::id());
    let mut ns = NetNs::with_tap(&ns_name, "oxtap0", "10.0.2.1");
    let echoes = ns.start_echo("10.0.2.1", 7777);

    let cl = format!(
        "{} ip=10.0.2.2::10.0.2.1:255.255.255.0::eth0:off oxvm.net=10.0.2.1:7777",
        cmdline("blk,scsi,net,idle")
    );
    let vm = json!({
        "name": "devices",
        "vcpus": 2,
        "memory_mib": 256,
        "boot": { "kernel": guest_file("vmlinux"), "cmdline": cl },
        "serial": { "mode": "stdout" },
        "on_reboot": "exit",
        "disks": [
            { "id": "root", "path": "vda.raw", "cache": "none", "io": "native",
              "discard": "unmap", "serial": "OXVMDISK0" },
            { "id": "data", "path": "vdb.qcow2" },
            { "id": "ro", "path": "vdc.raw", "readonly": true },
            { "id": "scsi0", "path": "sda.raw", "bus": "scsi", "discard": "unmap",
              "serial": "OXVMSCSI0" }
        ],
        "nics": [ { "id": "eth0", "tap": "oxtap0", "mac": GUEST_MAC } ]
    });
    let file = s.write_json("vm.json", &vm);
    let mut cmd = ns.command(common::vm::oxvm_bin());
    cmd.arg("run").arg(&file);
    let mut run = RunningVm::start_with(&mut cmd);

    // The guest runs its checks, then idles (it stays up until something outside acts).
    run.expect_stdout(
        BOOT_TIMEOUT,
        |o| o.contains("OXVM-SELFTEST idle ok"),
        "the selftest",
    );
    // Device work runs on named worker threads, not on the vCPUs.
    let threads = run.thread_names();
    for t in ["blk-root", "blk-data", "blk-ro", "scsi-req", "net-eth0-q0"] {
        assert!(threads.iter().any(|n| n == t), "{t} not in {threads:?}");
    }
    let rx: u64 = ns
        .read_sys("/sys/class/net/oxtap0/statistics/rx_packets")
        .parse()
        .unwrap();
    assert!(rx >= 8, "tap rx_packets {rx}");
    // SIGTERM is a graceful shutdown: the ACPI power button, the guest's handler powers
    // off, and the process exits 0 (every write was flushed before the checks reported).
    run.signal(libc::SIGTERM);
    let st = run.wait(Duration::from_secs(300));
    let console = run.stdout.text();
    let err = run.stderr.text();
    assert_eq!(st.code(), Some(0), "{console}\n{err}");
    // vda ran on Linux AIO: oxvm warns when io=native has to fall back to threads.
    assert!(!err.contains("io=native"), "io=native fell back:\n{err}");
    assert!(
        console.contains("OXVM-SELFTEST power-button pressed"),
        "the guest never saw the power button:\n{console}"
    );

    // --- virtio-blk ---
    let (ok, details) = selftest_result(&console, "blk").expect("blk result");
    assert!(ok, "blk: {details}");
    let disks = disk_entries(&details);
    let names: Vec<&str> = disks.iter().map(|(d, _)| d.as_str()).collect();
    assert_eq!(names, ["vda", "vdb", "vdc"], "{details}");
    assert!(
        disks[0]
            .1
            .starts_with("rw,sectors=131072,write=ok,flush=ok,verify=ok,discard=ok"),
        "{details}"
    );
    assert!(disks[0].1.ends_with("serial=OXVMDISK0"), "{details}");
    // discard=ignore (the default) offers no discard to the guest.
    assert!(
        disks[1].1.contains("verify=ok,discard=unsupported"),
        "{details}"
    );
    assert!(
        disks[2].1.starts_with("ro,sectors=65536,write=refused"),
        "{details}"
    );
    assert!(
        disks[2]
            .1
            .contains(&format!("head={}", hex(b"OXVM-READONLY-01"))),
        "{details}"
    );

    // --- virtio-scsi ---
    let (ok, details) = selftest_result(&console, "scsi").expect("scsi result");
    assert!(ok, "scsi: {details}");
    let disks = disk_entries(&details);
    assert_eq!(disks.len(), 1, "{details}");
    assert_eq!(disks[0].0, "sda");
    assert!(
        disks[0]
            .1
            .starts_with("rw,sectors=131072,write=ok,flush=ok,verify=ok,discard=ok"),
        "{details}"
    );
    assert!(disks[0].1.ends_with("serial=OXVMSCSI0"), "{details}");

    // --- host view of the images ---
    assert_eq!(read_at(&vda, MIB, 4096), expected_pattern("vda"));
    assert_eq!(read_at(&sda, MIB, 4096), expected_pattern("sda"));
    // The guest discarded 4 MiB (8192 blocks of 512 bytes) on vda and sda.
    assert!(
        blocks(&vda) + 8000 <= vda_blocks,
        "vda blocks {} -> {}",
        vda_blocks,
        blocks(&vda)
    );
    assert!(
        blocks(&sda) + 8000 <= sda_blocks,
        "sda blocks {} -> {}",
        sda_blocks,
        blocks(&sda)
    );
    assert_eq!(
        std::fs::read(&vdc).unwrap(),
        vdc_before,
        "read-only image changed"
    );
    let check = qemu_img(&["check", vdb.to_str().unwrap()]);
    assert!(check.contains("No errors"), "{check}");
    let flat = dir.join("vdb-flat.raw");
    qemu_img(&[
        "convert",
        "-f",
        "qcow2",
        "-O",
        "raw",
        vdb.to_str().unwrap(),
        flat.to_str().unwrap(),
    ]);
    assert_eq!(read_at(&flat, MIB, 4096), expected_pattern("vdb"));
    assert_eq!(
        read_at(&flat, 0, 16),
        b"OXVM-BACKING-000",
        "backing data seen through the overlay"
    );
    assert_eq!(
        read_at(&vdb_base, MIB, 16),
        vec![0u8; 16],
        "the backing file was written"
    );

    // --- virtio-net ---
    let (ok, details) = selftest_result(&console, "net").expect("net result");
    assert!(ok, "net: {details}");
    assert!(details.contains(&format!("mac={GUEST_MAC}")), "{details}");
    assert!(details.contains("ip=10.0.2.2 echoed=8/8"), "{details}");
    let seen: Vec<String> = echoes.try_iter().collect();
    assert!(
        seen.iter().filter(|l| l.starts_with("10.0.2.2 ")).count() >= 8,
        "{seen:?}"
    );
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// With MSI disabled in the guest (`pci=nomsi`), virtio-pci falls back to the legacy
/// INTx line (level-triggered, deasserted when the driver reads ISR): the disk must
/// still work.
#[test]
fn virtio_blk_on_legacy_intx() {
    let s = Scratch::new();
    let vda = s.path().join("vda.raw");
    raw_image(&vda, 64 * MIB, b"OXVM-INTX");
    let vm = json!({
        "name": "intx",
        "vcpus": 1,
        "memory_mib": 256,
        "boot": { "kernel": guest_file("vmlinux"), "cmdline": format!("{} pci=nomsi", cmdline("blk")) },
        "serial": { "mode": "stdout" },
        "on_reboot": "exit",
        "disks": [ { "id": "root", "path": "vda.raw" } ]
    });
    let mut run = RunningVm::start(&s.write_json("vm.json", &vm));
    let st = run.wait(BOOT_TIMEOUT);
    let console = run.stdout.text();
    assert_eq!(st.code(), Some(0), "{console}\n{}", run.stderr.text());
    let (ok, details) = selftest_result(&console, "blk").expect("blk result");
    assert!(ok, "blk over INTx: {details}");
    assert!(
        details.starts_with("vda:rw,sectors=131072,write=ok,flush=ok,verify=ok"),
        "{details}"
    );
    assert_eq!(read_at(&vda, MIB, 4096), expected_pattern("vda"));
}

/// The word the selftest's `blkbench` check writes at absolute byte offset `o` (see
/// resources/guest/oxvm_selftest_bench.c): each 512-byte sector's first word names the
/// sector, the others their offset in it, all XORed with a key from the seed.
fn blkbench_word(o: u64, seed: u64) -> u64 {
    let key = 0x9e37_79b9_7f4a_7c15u64.wrapping_mul(seed + 1);
    (if o % 512 == 0 { o } else { o % 512 }) ^ key
}

fn assert_blkbench_pattern(path: &Path, off: u64, len: u64, seed: u64) {
    let data = read_at(path, off, len as usize);
    for (i, w) in data.chunks_exact(8).enumerate() {
        let o = off + 8 * i as u64;
        let got = u64::from_le_bytes(w.try_into().unwrap());
        assert_eq!(
            got,
            blkbench_word(o, seed),
            "{} at byte {o}",
            path.display()
        );
    }
}

/// The `blkbench` workload (bench/devices.py's, and the data check snapshot tests can
/// reuse): requests one at a time through the guest's block layer reach the image as
/// the pattern says, come back verified, and each is exactly one device request; the
/// write phase's flush reaches the device. A disk limited to 1 MiB/s takes at least 3 s
/// (guest clock) to take 4 MiB.
#[test]
fn blkbench_workload_and_throttle() {
    let s = Scratch::new();
    let (vda, vdb) = (s.path().join("vda.raw"), s.path().join("vdb.raw"));
    for p in [&vda, &vdb] {
        std::fs::File::create(p).unwrap().set_len(16 * MIB).unwrap();
    }
    let cl = format!(
        "{} oxvm.blkbench=vda,4096,1m,rw,seed=7,off=1m;vdb,65536,4m,write,seed=8",
        cmdline("blkbench,blkbench")
    );
    let vm = json!({
        "name": "blkbench",
        "vcpus": 1,
        "memory_mib": 256,
        "boot": { "kernel": guest_file("vmlinux"), "cmdline": cl },
        "serial": { "mode": "stdout" },
        "on_reboot": "exit",
        "disks": [
            { "id": "bench", "path": "vda.raw", "format": "raw", "cache": "none" },
            { "id": "slow", "path": "vdb.raw", "format": "raw", "cache": "none",
              "iotune": { "total_bytes_sec": MIB } }
        ]
    });
    let mut run = RunningVm::start(&s.write_json("vm.json", &vm));
    let st = run.wait(BOOT_TIMEOUT);
    let console = run.stdout.text();
    assert_eq!(st.code(), Some(0), "{console}\n{}", run.stderr.text());
    // One result line per job, in order; markers are not results.
    const RESULT: &str = "OXVM-SELFTEST blkbench ";
    let results: Vec<&str> = console
        .lines()
        .filter_map(|l| Some(&l[l.find(RESULT)? + RESULT.len()..]))
        .collect();
    assert_eq!(results.len(), 2, "{console}");
    assert!(
        console.contains("OXVM-MARK blkbench start dev=vda bs=4096 bytes=1048576 mode=rw"),
        "{console}"
    );

    let bench = results[0]
        .strip_prefix("ok ")
        .unwrap_or_else(|| panic!("vda job: {}", results[0]));
    for (k, v) in [
        ("bs", 4096),
        ("bytes", MIB),
        ("off", MIB),
        ("write_reqs", 256),
        ("read_reqs", 256),
        ("flushes", 1),
        ("dev_writes", 256),
        ("dev_reads", 256),
        ("dev_flushes", 1),
    ] {
        assert_eq!(detail(bench, k), Some(v), "{k}: {bench}");
    }
    assert_blkbench_pattern(&vda, MIB, MIB, 7);
    assert!(
        read_at(&vda, 0, MIB as usize).iter().all(|&b| b == 0),
        "written before the job's range"
    );
    assert!(
        read_at(&vda, 2 * MIB, MIB as usize).iter().all(|&b| b == 0),
        "written after the job's range"
    );

    let slow = results[1]
        .strip_prefix("ok ")
        .unwrap_or_else(|| panic!("vdb job: {}", results[1]));
    assert_eq!(detail(slow, "write_reqs"), Some(64), "{slow}");
    let ns = detail(slow, "write_ns").unwrap();
    assert!(ns >= 3_000_000_000, "4 MiB at 1 MiB/s took {ns} ns: {slow}");
    assert_blkbench_pattern(&vdb, 0, 4 * MIB, 8);
}
