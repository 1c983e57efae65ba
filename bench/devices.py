#!/usr/bin/env python3
"""Block device benchmark: the VMM's own CPU cost per request, oxvm against QEMU.

On the project's PVM hosts the guest CPU is emulated, so in-guest throughput
mostly measures the emulator. What this script measures is the host CPU time
the VMM spends serving a fixed guest workload, per request and per MiB:

  Guest workload: the test kernel's `blkbench` selftest check
  (resources/guest/oxvm_selftest_bench.c), which issues requests one at a time
  through the block layer (bio + submit_bio_wait; no page cache). One boot per
  VMM and run executes five jobs in order:
    small-write   --small-bs x --small-count writes (default 4 KiB x 512 = 2 MiB)
                  at offset 0 of the bench disk, then one flush
    small-read    the same range read back and verified
    large-write   --large-bs x --large-count writes (default 1 MiB x 16 = 16 MiB)
                  after the small range, then one flush
    large-read    read back and verified
    throttle      --throttle-bytes (4 MiB) written in --throttle-bs (64 KiB) requests to
                  a second disk limited to --throttle-rate bytes/s (1 MiB/s) in total
  Both VMMs: the same ELF vmlinux (PVH entry), 1 vCPU, 256 MiB, raw images on
  the same host file system opened with O_DIRECT (oxvm `cache: "none"`, QEMU
  `cache=none`), virtio-blk over PCI.

  CPU time: for every thread of the VMM process, se.sum_exec_runtime
  (/proc/<pid>/task/<tid>/schedstat, ns) and utime/stime (.../stat, clock
  ticks, for the user/system split), sampled when a console line arrives and
  every 50 ms in between (a thread that exits keeps its last sample). A job's
  window runs from the line printed before the job (the selftest's `running`
  line or the previous job's result) to the job's `OXVM-SELFTEST blkbench ok`
  line; the device is idle at both ends (the guest waits for each request).
  Threads are grouped by name:
    device:   oxvm `blk-<disk id>`; QEMU `IO <iothread>` (virtqueue processing)
              and `worker` (its thread pool, which runs the preadv/pwritev for
              aio=threads)
    vcpu:     oxvm `vcpu<N>`; QEMU `CPU <N>/KVM` (includes the emulated guest)
    kvm:      KVM's own kernel worker in the process (`kvm-nx-lpage-re`), not
              counted as VMM work
    other:    everything else (oxvm main thread; QEMU main loop, RCU thread)
  and reported as device, non-vCPU (= device + other) and vCPU; "process" is
  the sum of all threads. /proc/<pid>/stat (all threads, exited ones too, in
  ticks) is recorded as a cross-check.

  Host upper bound: fio on the same bench image with the same block sizes and
  ranges: direct=1, ioengine=psync (pread/pwrite, the calls both VMMs make),
  iodepth 1, one job, end_fsync=1 for the writes. Its CPU per request is fio's
  own usr_cpu + sys_cpu of the job times its runtime, divided by its I/O count.

The guest verifies what it reads; after each boot the script also checks the
patterns in both image files itself. Ratios are oxvm/QEMU of the medians over
--runs. The machine may be shared: before each boot the script waits until the
CPUs are nearly idle and records what other processes used during the
workload (repeating a boot above --max-others %).

Usage: python3 bench/devices.py [--runs 3] [--kernel target/guest/vmlinux]
           [--oxvm target/release/oxvm] [--qemu qemu-system-x86_64] [--json]
Python 3 standard library only. Needs /dev/kvm (root), fio for the host bound.
"""

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import boot as bootbench  # noqa: E402  (machine facts, quiet-wait, helpers)

REPO = bootbench.REPO
MIB = 1 << 20
VCPUS = 1  # a 2-vCPU guest crawls under host load (lock-holder preemption)
MEM_MIB = 256
QEMU_CPU = bootbench.QEMU_CPU
PATTERN_KEY = 0x9E3779B97F4A7C15
CLK_TCK = os.sysconf("SC_CLK_TCK")
GROUPS = ("device", "other", "vcpu", "kvm")

# Variants: (vmm, io mode)
VARIANTS = {
    "oxvm": ("oxvm", "threads"),
    "oxvm-native": ("oxvm", "native"),
    "qemu": ("qemu", "threads"),
    "qemu-native": ("qemu", "native"),
}
PAIRS = (("oxvm", "qemu"), ("oxvm-native", "qemu-native"))


def log(msg):
    print(f"[devices.py {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class BenchError(Exception):
    pass


# ---------------------------------------------------------------------------
# Workload


def size_arg(s):
    m = re.fullmatch(r"(\d+)([kKmMgG]?)", s)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {s}")
    return int(m.group(1)) << {"": 0, "k": 10, "m": 20, "g": 30}[m.group(2).lower()]


def jobs(args, seed0):
    """The five jobs of one boot: dicts with the blkbench fields."""
    small = args.small_bs * args.small_count
    large = args.large_bs * args.large_count
    return [
        {"name": "small-write", "dev": "vda", "bs": args.small_bs, "bytes": small,
         "mode": "write", "seed": seed0, "off": 0, "image": "bench"},
        {"name": "small-read", "dev": "vda", "bs": args.small_bs, "bytes": small,
         "mode": "verify", "seed": seed0, "off": 0, "image": "bench"},
        {"name": "large-write", "dev": "vda", "bs": args.large_bs, "bytes": large,
         "mode": "write", "seed": seed0 + 1, "off": small, "image": "bench"},
        {"name": "large-read", "dev": "vda", "bs": args.large_bs, "bytes": large,
         "mode": "verify", "seed": seed0 + 1, "off": small, "image": "bench"},
        {"name": "throttle", "dev": "vdb", "bs": args.throttle_bs, "bytes": args.throttle_bytes,
         "mode": "write", "seed": seed0 + 2, "off": 0, "image": "throttle"},
    ]


def job_text(j):
    return f"{j['dev']},{j['bs']},{j['bytes']},{j['mode']},seed={j['seed']},off={j['off']}"


def kernel_cmdline(job_list):
    with open(bootbench.EXAMPLE) as f:
        base = json.load(f)["boot"]["cmdline"]
    kept = [w for w in base.split() if not w.startswith("oxvm.selftest=")]
    checks = ",".join("blkbench" for _ in job_list)
    return " ".join(kept + [f"oxvm.selftest={checks}",
                            "oxvm.blkbench=" + ";".join(job_text(j) for j in job_list)])


def image_sizes(args):
    return {"bench": args.small_bs * args.small_count + args.large_bs * args.large_count + MIB,
            "throttle": args.throttle_bytes + MIB}


def make_image(path, size):
    """A fully written (zero-filled, allocated) raw image."""
    zero = bytes(MIB)
    with open(path, "wb") as f:
        left = size
        while left > 0:
            n = min(left, MIB)
            f.write(zero[:n])
            left -= n
        f.flush()
        os.fsync(f.fileno())


def expected_pattern(pos, n, key):
    """The blkbench pattern for [pos, pos+n) (multiples of 512): the word at offset o is
    o ^ key for the first word of each 512-byte sector, (o % 512) ^ key for the others."""
    sectors = n // 512
    body = _sector_template(key)
    out = bytearray(body * sectors)
    for s in range(sectors):
        out[512 * s:512 * s + 8] = struct.pack("<Q", (pos + 512 * s) ^ key)
    return bytes(out)


_TEMPLATES = {}


def _sector_template(key):
    if key not in _TEMPLATES:
        _TEMPLATES[key] = struct.pack("<64Q", *[(8 * i) ^ key for i in range(64)])
    return _TEMPLATES[key]


def verify_image(path, off, length, seed):
    """None if the blkbench pattern of `seed` is at [off, off+length), else the first bad offset."""
    key = (PATTERN_KEY * (seed + 1)) & 0xFFFFFFFFFFFFFFFF
    with open(path, "rb") as f:
        f.seek(off)
        pos = off
        while pos < off + length:
            n = min(MIB - pos % MIB, off + length - pos)
            data = f.read(n)
            want = expected_pattern(pos, n, key)
            if data != want:
                for i in range(0, n, 8):  # the first differing word
                    if data[i:i + 8] != want[i:i + 8]:
                        return pos + i
                return pos
            pos += n
    return None


# ---------------------------------------------------------------------------
# Command lines


def oxvm_command(args, workdir, cmdline, io):
    disk = {"format": "raw", "cache": "none", "io": io}
    vm = {
        "name": "bench-devices",
        "vcpus": VCPUS,
        "memory_mib": MEM_MIB,
        "boot": {"kernel": args.kernel, "initrd": None, "cmdline": cmdline},
        "serial": {"mode": "stdout"},
        "on_reboot": "exit",
        "disks": [
            dict(disk, id="bench", path=os.path.join(workdir, "bench.raw")),
            dict(disk, id="throttle", path=os.path.join(workdir, "throttle.raw"),
                 iotune={"total_bytes_sec": args.throttle_rate}),
        ],
    }
    path = os.path.join(workdir, f"vm-{io}.json")
    with open(path, "w") as f:
        json.dump(vm, f, indent=2)
    return [args.oxvm, "run", path]


def qemu_command(args, workdir, cmdline, aio):
    drive = f"if=none,format=raw,cache=none,aio={aio}"
    return [
        args.qemu,
        "-M", "microvm,pcie=on,acpi=on",
        "-accel", "kvm",
        "-cpu", args.qemu_cpu,
        "-smp", str(VCPUS),
        "-m", f"{MEM_MIB}M",
        "-kernel", args.kernel,
        "-append", cmdline,
        "-nodefaults", "-no-user-config",
        "-display", "none",
        "-monitor", "none",
        "-serial", "stdio",
        "-no-reboot",
        "-name", "bench-devices,debug-threads=on",
        "-object", "iothread,id=io0",
        "-drive", f"file={os.path.join(workdir, 'bench.raw')},id=d0,{drive}",
        "-device", "virtio-blk-pci,drive=d0,iothread=io0",
        "-drive", f"file={os.path.join(workdir, 'throttle.raw')},id=d1,{drive},"
                  f"throttling.bps-total={args.throttle_rate}",
        "-device", "virtio-blk-pci,drive=d1,iothread=io0",
    ]


# ---------------------------------------------------------------------------
# Per-thread CPU


def thread_group(vmm, comm):
    if comm.startswith("kvm-"):
        return "kvm"
    if vmm == "oxvm":
        if re.fullmatch(r"vcpu\d+", comm):
            return "vcpu"
        if comm.startswith("blk-"):
            return "device"
    else:
        if re.fullmatch(r"CPU \d+/KVM", comm):
            return "vcpu"
        if comm.startswith("IO ") or comm == "worker":
            return "device"
    return "other"


def read_threads(pid):
    """{tid: (comm, runtime_ns, utime_ticks, stime_ticks)} for the live threads."""
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for t in tids:
        base = f"/proc/{pid}/task/{t}"
        try:
            with open(base + "/schedstat") as f:
                ns = int(f.read().split()[0])
            with open(base + "/stat") as f:
                raw = f.read()
        except (OSError, ValueError, IndexError):
            continue
        comm = raw[raw.index("(") + 1:raw.rindex(")")]
        fields = raw.rsplit(")", 1)[1].split()
        out[int(t)] = (comm, ns, int(fields[11]), int(fields[12]))
    return out


class CpuTracker:
    """Samples every thread of a process; threads that exit keep their last values."""

    def __init__(self, vmm, pid):
        self.vmm = vmm
        self.pid = pid
        self.lock = threading.Lock()
        self.latest = {}  # tid -> (comm, ns, ut, st)
        self.stop_evt = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()

    def _poll(self):
        while not self.stop_evt.wait(0.05):
            self.sample()

    def sample(self):
        """A snapshot: {tid: (comm, ns, ut, st)} incl. exited threads, plus machine and process totals."""
        cur = read_threads(self.pid)
        with self.lock:
            self.latest.update(cur)
            snap = dict(self.latest)
        try:
            proc_ticks = bootbench.proc_cpu(self.pid)
        except OSError:
            proc_ticks = None
        return {"t": time.monotonic(), "threads": snap, "proc_ticks": proc_ticks,
                "machine": bootbench.cpu_times()}

    def stop(self):
        self.stop_evt.set()
        self.thread.join(timeout=2)


def window(vmm, a, b):
    """CPU used between snapshots a and b, by group (ns, and user/sys ticks)."""
    res = {g: {"ns": 0, "utime_ticks": 0, "stime_ticks": 0, "threads": []} for g in GROUPS}
    for tid, (comm, ns, ut, st) in b["threads"].items():
        _, ns0, ut0, st0 = a["threads"].get(tid, (comm, 0, 0, 0))
        g = res[thread_group(vmm, comm)]
        g["ns"] += ns - ns0
        g["utime_ticks"] += ut - ut0
        g["stime_ticks"] += st - st0
        if ns - ns0 > 0 and comm not in g["threads"]:
            g["threads"].append(comm)
    out = {g: res[g] for g in GROUPS}
    out["nonvcpu_ns"] = res["device"]["ns"] + res["other"]["ns"]
    out["process_ns"] = sum(res[g]["ns"] for g in GROUPS)
    if a["proc_ticks"] is not None and b["proc_ticks"] is not None:
        out["process_stat_ns"] = (b["proc_ticks"] - a["proc_ticks"]) * 10**9 // CLK_TCK
    busy = (b["machine"][0] - a["machine"][0]) / CLK_TCK
    span = (b["machine"][2] - a["machine"][2]) / CLK_TCK
    out["wall_s"] = b["t"] - a["t"]
    out["others_cpu_pct"] = round(100 * max(0.0, busy - out["process_ns"] / 1e9) / max(span, 1e-9), 1)
    out["steal_pct"] = round(100 * (b["machine"][1] - a["machine"][1]) / CLK_TCK / max(span, 1e-9), 1)
    return out


def speed_probe():
    """CPU time (ms, thread CPU clock) of a fixed pure-Python loop, best of 3.

    The machine is itself a VM on shared hardware: at times the same work takes 2-3x
    the CPU time without any steal or other process showing. This probe grows with
    such a slowdown; boots next to a slow probe are repeated (--max-slowdown)."""
    best = None
    for _ in range(3):
        t = time.thread_time_ns()
        x = 0
        for i in range(300000):
            x += i * i
        d = (time.thread_time_ns() - t) / 1e6
        best = d if best is None else min(best, d)
    return best


# ---------------------------------------------------------------------------
# Console


class Console:
    """Reads the VMM's stdout; takes a CPU snapshot the moment an interesting line arrives."""

    INTERESTING = ("OXVM-SELFTEST", "OXVM-MARK", "oxvm selftest: running")

    def __init__(self, stream, path, t0, tracker):
        self.t0 = t0
        self.lines = []  # (monotonic, text, snapshot or None)
        self.cond = threading.Condition()
        self.eof = False
        self.tracker = tracker
        self.path = path
        self.thread = threading.Thread(target=self._run, args=(stream,), daemon=True)
        self.thread.start()

    def _run(self, stream):
        with open(self.path, "w") as copy:
            for raw in iter(stream.readline, b""):
                t = time.monotonic()
                text = raw.decode("utf-8", "replace").rstrip("\r\n")
                snap = None
                if self.tracker and any(k in text for k in self.INTERESTING):
                    snap = self.tracker.sample()
                with self.cond:
                    self.lines.append((t, text, snap))
                    self.cond.notify_all()
                copy.write(f"{t - self.t0:9.3f} {text}\n")
                copy.flush()
        with self.cond:
            self.eof = True
            self.cond.notify_all()

    def wait_for(self, pred, deadline):
        """Index of the first line for which pred(line); None on EOF or timeout."""
        return self.wait_nth(pred, 0, deadline)

    def wait_nth(self, pred, n, deadline):
        """Index of the n-th (from 0) line matching pred (a callable or a substring)."""
        if isinstance(pred, str):
            needle = pred
            pred = lambda line: needle in line  # noqa: E731
        with self.cond:
            while True:
                seen = 0
                for i, (t, line, snap) in enumerate(self.lines):
                    if pred(line):
                        if seen == n:
                            return i
                        seen += 1
                if self.eof or time.monotonic() >= deadline:
                    return None
                self.cond.wait(timeout=min(1.0, max(0.0, deadline - time.monotonic())))

    def tail(self, n=40):
        with self.cond:
            return "\n".join(line for _, line, _ in self.lines[-n:])


GUEST_KV = re.compile(r"(\w+)=(\S+)")


def parse_kv(text):
    out = {}
    for k, v in GUEST_KV.findall(text):
        out[k] = int(v) if v.isdigit() else v
    return out


def boot_run(variant, cmd, args, workdir, tag, job_list):
    vmm = VARIANTS[variant][0]
    errpath = os.path.join(workdir, f"{tag}.stderr")
    conpath = os.path.join(workdir, f"{tag}.console")
    res = {"variant": variant}
    res["waited_for_quiet_s"] = round(bootbench.wait_quiet(args, tag), 1)
    res["probe_before_ms"] = speed_probe()
    with open(errpath, "wb") as err:
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=err, cwd=workdir)
        tracker = CpuTracker(vmm, proc.pid)
        con = Console(proc.stdout, conpath, t0, tracker)
        try:
            deadline = t0 + args.timeout
            i_run = con.wait_for(lambda l: "oxvm selftest: running" in l, deadline)
            if i_run is None:
                raise BenchError(f"{tag}: no 'oxvm selftest: running' within {args.timeout:.0f} s")
            res["boot_to_selftest_s"] = con.lines[i_run][0] - t0
            prev = i_run
            phases = []
            for n, j in enumerate(job_list):
                i_res = con.wait_nth("OXVM-SELFTEST blkbench ", n, deadline)
                if i_res is None:
                    raise BenchError(f"{tag}: job {j['name']}: no result line")
                line = con.lines[i_res][1]
                if " blkbench ok " not in line:
                    raise BenchError(f"{tag}: job {j['name']} failed: {line}")
                i_start = con.wait_nth("OXVM-MARK blkbench start", n, deadline)
                if i_start is None or i_start > i_res:
                    raise BenchError(f"{tag}: job {j['name']}: no start marker")
                g = parse_kv(line.split(" blkbench ok ", 1)[1])
                for k in ("bs", "bytes", "off", "seed"):
                    if g.get(k) != j[k]:
                        raise BenchError(f"{tag}: job {j['name']}: guest reports {k}={g.get(k)}, "
                                         f"expected {j[k]}: {line}")
                cpu = window(vmm, con.lines[prev][2], con.lines[i_res][2])
                reqs = g["write_reqs"] if j["mode"] == "write" else g["read_reqs"]
                phases.append({
                    "job": j["name"], "guest": g, "requests": reqs, "bytes": j["bytes"],
                    "cpu": cpu,
                    "host_wall_start_to_ok_s": con.lines[i_res][0] - con.lines[i_start][0],
                })
                prev = i_res
            res["phases"] = phases
            i_done = con.wait_for(lambda l: "OXVM-SELFTEST done" in l, time.monotonic() + 120)
            if i_done is None:
                raise BenchError(f"{tag}: no 'OXVM-SELFTEST done'")
            try:
                res["exit_status"] = proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                res["exit_status"] = f"still running 60 s after done: {bootbench.stop_process(proc)}"
            res["threads_seen"] = sorted({c for c, *_ in tracker.sample()["threads"].values()})
        except BaseException as e:
            rc = bootbench.stop_process(proc, signal.SIGKILL, 5)
            con.thread.join(timeout=5)
            if isinstance(e, BenchError):
                with open(errpath, "rb") as f:
                    err_tail = f.read()[-3000:].decode("utf-8", "replace")
                raise BenchError(
                    f"{e}\n---- console tail ({conpath}) ----\n{con.tail(40)}\n"
                    f"---- stderr tail ({errpath}) ----\n{err_tail}\n---- exit {rc}") from None
            raise
        finally:
            tracker.stop()
        con.thread.join(timeout=5)
    res["probe_after_ms"] = speed_probe()
    # The images hold what the guest wrote.
    bad = []
    for j in job_list:
        if j["mode"] != "write":
            continue
        at = verify_image(os.path.join(workdir, f"{j['image']}.raw"), j["off"], j["bytes"], j["seed"])
        if at is not None:
            bad.append(f"{j['name']}: {j['image']}.raw differs at byte {at}")
    if bad:
        raise BenchError(f"{tag}: host check of the images failed: {'; '.join(bad)}")
    res["host_image_check"] = "ok"
    return res


# ---------------------------------------------------------------------------
# fio


def fio_run(args, path, name, rw, bs, size, off):
    """One fio job, the range gone over --loops times for enough requests that fio's CPU
    figures (rusage) mean something."""
    loops = max(1, -(-args.fio_min_requests // (size // bs)), -(-args.fio_min_bytes // size))
    cmd = ["fio", f"--name={name}", f"--filename={path}", f"--rw={rw}", f"--bs={bs}",
           f"--size={size}", f"--offset={off}", f"--loops={loops}", "--direct=1",
           f"--ioengine={args.fio_engine}", "--iodepth=1", "--numjobs=1", "--output-format=json"]
    if rw == "write":
        cmd.append("--end_fsync=1")
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise BenchError(f"fio failed: {' '.join(cmd)}\n{r.stderr}")
    doc = json.loads(r.stdout[r.stdout.index("{"):])
    jb = doc["jobs"][0]
    d = jb["write" if rw == "write" else "read"]
    runtime_s = jb["job_runtime"] / 1e3 if jb.get("job_runtime") else d["runtime"] / 1e3
    cpu_s = (jb["usr_cpu"] + jb["sys_cpu"]) / 100 * runtime_s
    ios = d["total_ios"]
    return {
        "command": " ".join(cmd),
        "requests": ios, "bytes": d["io_bytes"], "runtime_s": runtime_s,
        "usr_cpu_pct": jb["usr_cpu"], "sys_cpu_pct": jb["sys_cpu"],
        "cpu_ns": cpu_s * 1e9,
        "bw_mib_s": d["bw_bytes"] / MIB,
        "clat_mean_us": d["clat_ns"]["mean"] / 1e3,
    }


def fio_all(args, workdir):
    path = os.path.join(workdir, "bench.raw")
    small = args.small_bs * args.small_count
    large = args.large_bs * args.large_count
    out = {
        "small-write": fio_run(args, path, "small-write", "write", args.small_bs, small, 0),
        "small-read": fio_run(args, path, "small-read", "read", args.small_bs, small, 0),
        "large-write": fio_run(args, path, "large-write", "write", args.large_bs, large, small),
        "large-read": fio_run(args, path, "large-read", "read", args.large_bs, large, small),
    }
    if args.paced_gap_ms:
        for job, rw, bs, size, off in (("small-write", "write", args.small_bs, small, 0),
                                       ("small-read", "read", args.small_bs, small, 0),
                                       ("large-write", "write", args.large_bs, large, small),
                                       ("large-read", "read", args.large_bs, large, small)):
            out[job + "@paced"] = paced_run(path, rw, bs, size, off, args.paced_gap_ms / 1e3)
    return out


def paced_run(path, rw, bs, size, off, gap_s):
    """The VMMs' device threads wake once per request, every 30-100 ms here (the guest is
    emulated), with cold caches. This does the same requests from Python at that pace:
    O_DIRECT pwritev/preadv (one fdatasync after the writes), `gap_s` of sleep before each,
    and counts the thread's CPU time (CLOCK_THREAD_CPUTIME_ID) around each call."""
    import mmap
    buf = mmap.mmap(-1, bs)  # page aligned, as O_DIRECT needs
    buf.write(b"\xa5" * bs)
    fd = os.open(path, (os.O_RDWR if rw == "write" else os.O_RDONLY) | os.O_DIRECT)
    call_ns = 0
    n = 0
    try:
        loop0 = time.thread_time_ns()
        for pos in range(off, off + size, bs):
            time.sleep(gap_s)
            t = time.thread_time_ns()
            if rw == "write":
                done = os.pwritev(fd, [buf], pos)
            else:
                done = os.preadv(fd, [buf], pos)
            call_ns += time.thread_time_ns() - t
            if done != bs:
                raise BenchError(f"paced {rw} at {pos}: {done} of {bs} bytes")
            n += 1
        if rw == "write":
            t = time.thread_time_ns()
            os.fdatasync(fd)
            call_ns += time.thread_time_ns() - t
        loop_ns = time.thread_time_ns() - loop0
    finally:
        os.close(fd)
        buf.close()
    return {"requests": n, "bytes": n * bs, "gap_ms": gap_s * 1e3,
            "cpu_ns": call_ns, "loop_cpu_ns": loop_ns}


# ---------------------------------------------------------------------------
# Reporting


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def phase_metrics(p):
    """Derived per-phase figures of one boot."""
    reqs, mib = p["requests"], p["bytes"] / MIB
    c, g = p["cpu"], p["guest"]
    guest_ns = g["write_ns"] if g["mode"] == "write" else g["read_ns"]
    guest_cpu_ns = g["gen_ns"] if g["mode"] == "write" else g["verify_ns"]
    return {
        "device_us_per_req": c["device"]["ns"] / reqs / 1e3,
        "device_ms_per_mib": c["device"]["ns"] / mib / 1e6,
        "nonvcpu_us_per_req": c["nonvcpu_ns"] / reqs / 1e3,
        "nonvcpu_ms_per_mib": c["nonvcpu_ns"] / mib / 1e6,
        "vcpu_us_per_req": c["vcpu"]["ns"] / reqs / 1e3,
        "process_us_per_req": c["process_ns"] / reqs / 1e3,
        "device_sys_pct": (100 * c["device"]["stime_ticks"] /
                           max(1, c["device"]["utime_ticks"] + c["device"]["stime_ticks"])),
        "guest_io_us_per_req": (guest_ns - guest_cpu_ns) / reqs / 1e3,
        "guest_mib_s": mib / (guest_ns / 1e9) if guest_ns else None,
        "host_wall_s": p["host_wall_start_to_ok_s"],
        "guest_ns": guest_ns,
        "others_cpu_pct": c["others_cpu_pct"],
        "steal_pct": c["steal_pct"],
        "dev_requests": g["dev_writes"] if g["mode"] == "write" else g["dev_reads"],
    }


ROWS = [
    # key, title, fmt
    ("device_us_per_req", "device threads CPU per request [us]", "{:.1f}"),
    ("device_ms_per_mib", "device threads CPU per MiB [ms]", "{:.2f}"),
    ("nonvcpu_us_per_req", "all non-vCPU threads CPU per request [us]", "{:.1f}"),
    ("nonvcpu_ms_per_mib", "all non-vCPU threads CPU per MiB [ms]", "{:.2f}"),
    ("vcpu_us_per_req", "vCPU threads CPU per request (emulated guest) [us]", "{:.1f}"),
    ("process_us_per_req", "whole process CPU per request [us]", "{:.1f}"),
    ("device_sys_pct", "device threads: system share of CPU (ticks) [%]", "{:.0f}"),
    ("guest_io_us_per_req", "guest: time per request, pattern work excluded [us]", "{:.1f}"),
    ("guest_mib_s", "guest: throughput (guest clock, info) [MiB/s]", "{:.1f}"),
    ("host_wall_s", "host wall, start marker -> result line [s]", "{:.3f}"),
    ("others_cpu_pct", "other processes' CPU during the job [%]", "{:.1f}"),
    ("steal_pct", "steal (hypervisor below this machine) during the job [%]", "{:.1f}"),
]


def summarize(runs, variants, fio_runs):
    s = {}
    for v in variants:
        s[v] = {}
        for r in runs:
            if v not in r:
                continue
            for p in r[v]["phases"]:
                m = phase_metrics(p)
                for k, x in m.items():
                    s[v].setdefault(p["job"], {}).setdefault(k, []).append(x)
    med = {v: {job: {k: median(xs) for k, xs in d.items()} for job, d in s[v].items()}
           for v in s}
    fio = {}
    for fr in fio_runs:
        for job, d in fr.items():
            f = fio.setdefault(job, {})
            f.setdefault("cpu_us_per_req", []).append(d["cpu_ns"] / d["requests"] / 1e3)
            f.setdefault("cpu_ms_per_mib", []).append(d["cpu_ns"] / (d["bytes"] / MIB) / 1e6)
            for k in ("bw_mib_s", "clat_mean_us", "usr_cpu_pct", "sys_cpu_pct", "loop_cpu_ns"):
                if k in d:
                    f.setdefault(k, []).append(d[k] / d["requests"] / 1e3 if k == "loop_cpu_ns"
                                               else d[k])
    fio_med = {job: {k: median(xs) for k, xs in d.items()} for job, d in fio.items()}
    return {"per_run": s, "median": med, "fio_per_run": fio, "fio_median": fio_med}


def fmt(v, f):
    return "-" if v is None else f.format(v)


def print_tables(summary, variants, job_names, gap_ms):
    med, per = summary["median"], summary["per_run"]
    pairs = [(a, b) for a, b in PAIRS if a in variants and b in variants]
    for job in job_names:
        print(f"\n== {job}")
        head = f"  {'metric':<54}" + "".join(f"{v:>14}" for v in variants)
        head += "".join(f"{a + '/' + b:>20}" for a, b in pairs)
        print(head)
        for key, title, f in ROWS:
            vals = [med.get(v, {}).get(job, {}).get(key) for v in variants]
            if all(x is None for x in vals):
                continue
            line = f"  {title:<54}" + "".join(f"{fmt(x, f):>14}" for x in vals)
            for a, b in pairs:
                x, y = med.get(a, {}).get(job, {}).get(key), med.get(b, {}).get(job, {}).get(key)
                line += f"{fmt(x / y if (x is not None and y) else None, '{:.2f}'):>20}"
            print(line)
        for v in variants:
            xs = per.get(v, {}).get(job, {})
            if xs:
                print(f"  per run {v:<12} device us/req "
                      + " ".join(fmt(x, "{:.1f}") for x in xs.get("device_us_per_req", []))
                      + "; non-vCPU us/req "
                      + " ".join(fmt(x, "{:.1f}") for x in xs.get("nonvcpu_us_per_req", []))
                      + "; host wall s "
                      + " ".join(fmt(x, "{:.2f}") for x in xs.get("host_wall_s", [])))
        fm = summary["fio_median"].get(job)
        if fm:
            print(f"  host fio, back to back (upper bound): CPU {fm['cpu_us_per_req']:.1f} us/req, "
                  f"{fm['cpu_ms_per_mib']:.2f} ms/MiB (usr {fm['usr_cpu_pct']:.1f} %, "
                  f"sys {fm['sys_cpu_pct']:.1f} %), {fm['bw_mib_s']:.1f} MiB/s, "
                  f"latency {fm['clat_mean_us']:.1f} us")
        fg = summary["fio_median"].get(f"{job}@paced")
        if fg:
            print(f"  host, same requests paced {gap_ms:g} ms apart: CPU {fg['cpu_us_per_req']:.1f} us/req "
                  f"in the system calls ({fg['cpu_ms_per_mib']:.2f} ms/MiB), "
                  f"{fg['loop_cpu_ns']:.1f} us/req with the script's loop and wake-ups")
        for v in variants:
            d = med.get(v, {}).get(job, {}).get("device_us_per_req")
            if d is None or not fm or not fm["cpu_us_per_req"]:
                continue
            line = f"  {v}: device CPU / fio CPU = {d / fm['cpu_us_per_req']:.2f} (back to back)"
            if fg and fg["cpu_us_per_req"]:
                line += f", {d / fg['cpu_us_per_req']:.2f} (paced)"
            print(line)


# ---------------------------------------------------------------------------


def interrupted(signum, frame):
    """SIGTERM as Ctrl-C: the running VM is stopped and the logs are kept."""
    raise KeyboardInterrupt()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3, help="boots per variant (default 3)")
    p.add_argument("--variants", default="oxvm,qemu",
                   help="comma-separated, of: " + ", ".join(VARIANTS) +
                        " (default oxvm,qemu; -native: oxvm io=native, QEMU aio=native)")
    p.add_argument("--kernel", default=os.path.join(REPO, "target/guest/vmlinux"))
    p.add_argument("--oxvm", default=os.path.join(REPO, "target/release/oxvm"))
    p.add_argument("--qemu", default=shutil.which("qemu-system-x86_64") or "qemu-system-x86_64")
    p.add_argument("--qemu-cpu", default=QEMU_CPU, help=f"QEMU -cpu (default {QEMU_CPU})")
    p.add_argument("--small-bs", type=size_arg, default=4096, help="default 4096")
    p.add_argument("--small-count", type=int, default=512, help="requests per direction (default 512)")
    p.add_argument("--large-bs", type=size_arg, default=MIB, help="default 1M")
    p.add_argument("--large-count", type=int, default=16, help="requests per direction (default 16)")
    p.add_argument("--throttle-rate", type=int, default=MIB, help="bytes/s (default 1048576)")
    p.add_argument("--throttle-bytes", type=size_arg, default=4 * MIB, help="default 4M")
    p.add_argument("--throttle-bs", type=size_arg, default=64 << 10, help="default 64k")
    p.add_argument("--fio-engine", default="psync", help="fio ioengine (default psync)")
    p.add_argument("--fio-min-requests", type=int, default=8192,
                   help="fio repeats each range until it made this many requests (default 8192)")
    p.add_argument("--fio-min-bytes", type=size_arg, default=256 * MIB,
                   help="... and moved this many bytes (default 256M)")
    p.add_argument("--paced-gap-ms", type=float, default=30,
                   help="also do the workload's requests from the script with this pause "
                        "before each, the pace of the VMMs' device threads here, and count "
                        "their CPU time (default 30; 0: skip)")
    p.add_argument("--no-fio", action="store_true", help="skip the host fio bound")
    p.add_argument("--timeout", type=float, default=900, help="seconds per boot (default 900)")
    p.add_argument("--quiet-wait", type=float, default=600,
                   help="before each boot wait up to this long for < 15%% CPU use (default 600)")
    p.add_argument("--max-others", type=float, default=25,
                   help="repeat a boot during whose jobs other processes used more than this "
                        "%% of the CPUs (default 25)")
    p.add_argument("--max-slowdown", type=float, default=2.0,
                   help="repeat a boot whose speed probe before or after was slower than this "
                        "factor times the best probe of the invocation (default 2)")
    p.add_argument("--retries", type=int, default=1,
                   help="repeats per boot for --max-others/--max-slowdown (default 1)")
    p.add_argument("--workdir", metavar="DIR",
                   help="parent of the work directory with the images (default: $TMPDIR or /tmp)")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.add_argument("--json-out", metavar="FILE", help="also write the JSON to FILE")
    args = p.parse_args()
    signal.signal(signal.SIGTERM, interrupted)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    for v in variants:
        if v not in VARIANTS:
            p.error(f"unknown variant {v}")
    if args.runs < 1:
        p.error("--runs must be >= 1")

    args.kernel = os.path.abspath(args.kernel)
    args.oxvm = os.path.abspath(args.oxvm)
    if not os.path.isfile(args.kernel):
        sys.exit(f"devices.py: kernel {args.kernel} missing: bash resources/guest/build.sh")
    if any(VARIANTS[v][0] == "oxvm" for v in variants) and not os.path.isfile(args.oxvm):
        sys.exit(f"devices.py: {args.oxvm} missing: cargo build --release")
    if any(VARIANTS[v][0] == "qemu" for v in variants):
        if not shutil.which(args.qemu):
            sys.exit(f"devices.py: {args.qemu} not found (apt-get install -y qemu-system-x86)")
        args.qemu = shutil.which(args.qemu)
    if not args.no_fio and not shutil.which("fio"):
        sys.exit("devices.py: fio not found (apt-get install -y fio, or --no-fio)")

    workdir = tempfile.mkdtemp(prefix="oxvm-bench-devices.", dir=args.workdir)
    kernel_src = args.kernel
    args.kernel = os.path.join(workdir, os.path.basename(kernel_src))
    shutil.copyfile(kernel_src, args.kernel)
    sizes = image_sizes(args)
    for name, size in sizes.items():
        make_image(os.path.join(workdir, f"{name}.raw"), size)

    facts = bootbench.host_facts(args)
    facts["kernel_file"] = kernel_src
    facts["kernel_sha256"] = bootbench.sha256(args.kernel)[:16]
    if os.path.isfile(args.oxvm):
        facts["oxvm_sha256"] = bootbench.sha256(args.oxvm)[:16]
    facts["fio_version"] = (subprocess.run(["fio", "--version"], capture_output=True, text=True)
                            .stdout.strip() if shutil.which("fio") else None)
    facts["workdir_fs"] = subprocess.run(["df", "-T", workdir], capture_output=True,
                                         text=True).stdout.splitlines()[-1]
    log(f"work dir {workdir}; images {sizes}")

    runs, fio_runs, discarded, commands = [], [], [], {}
    probe_ref = min(speed_probe() for _ in range(5))
    facts["probe_reference_ms"] = probe_ref
    log(f"speed probe reference {probe_ref:.1f} ms")
    failed = None
    job_names = [j["name"] for j in jobs(args, 0)]
    try:
        for i in range(args.runs):
            run = {}
            order = variants if i % 2 == 0 else list(reversed(variants))
            for v in order:
                vmm, io = VARIANTS[v]
                tag = f"run{i + 1}-{v}"
                for attempt in range(1 + args.retries):
                    seed = 1000 * (i + 1) + 100 * variants.index(v) + 10 * attempt
                    jl = jobs(args, seed)
                    cmdline = kernel_cmdline(jl)
                    cmd = (oxvm_command(args, workdir, cmdline, io) if vmm == "oxvm"
                           else qemu_command(args, workdir, cmdline, io))
                    commands[v] = cmd
                    log(f"{tag}: booting ({' '.join(cmd)})")
                    r = boot_run(v, cmd, args, workdir, tag, jl)
                    r["attempt"] = attempt + 1
                    r["cmdline"] = cmdline
                    worst = max(p["cpu"]["others_cpu_pct"] for p in r["phases"])
                    probe_ref = min(probe_ref, r["probe_before_ms"], r["probe_after_ms"])
                    slow = max(r["probe_before_ms"], r["probe_after_ms"]) / probe_ref
                    r["slowdown"] = round(slow, 2)
                    for p in r["phases"]:
                        m = phase_metrics(p)
                        log(f"{tag}: {p['job']}: {p['requests']} reqs (device saw "
                            f"{m['dev_requests']}), device {m['device_us_per_req']:.1f} us/req, "
                            f"non-vCPU {m['nonvcpu_us_per_req']:.1f} us/req, vCPU "
                            f"{m['vcpu_us_per_req']:.1f} us/req, host wall {m['host_wall_s']:.2f} s, "
                            f"device threads {p['cpu']['device']['threads']}, others "
                            f"{m['others_cpu_pct']} %")
                    log(f"{tag}: speed probe {r['probe_before_ms']:.1f} / {r['probe_after_ms']:.1f} ms "
                        f"before / after (x{slow:.2f} of the best, {probe_ref:.1f} ms)")
                    if (worst <= args.max_others and slow <= args.max_slowdown) \
                            or attempt == args.retries:
                        break
                    log(f"{tag}: discarded (other processes {worst} % of the CPUs, probe "
                        f"x{slow:.2f}), repeating")
                    discarded.append({"run": i + 1, "variant": v, "others_cpu_pct": worst,
                                      "slowdown": round(slow, 2),
                                      "phases": {p["job"]: phase_metrics(p) for p in r["phases"]}})
                run[v] = r
            runs.append(run)
            if not args.no_fio:
                bootbench.wait_quiet(args, f"run{i + 1}-fio")
                fr = fio_all(args, workdir)
                for job, d in fr.items():
                    log(f"run{i + 1} host {job}: {d['requests']} reqs, "
                        f"{d['cpu_ns'] / d['requests'] / 1e3:.1f} us CPU/req"
                        + (f", {d['bw_mib_s']:.1f} MiB/s" if "bw_mib_s" in d else ""))
                fio_runs.append(fr)
            with open(os.path.join(workdir, "results.json"), "w") as f:
                json.dump({"host": facts, "runs": runs, "fio": fio_runs}, f, indent=2)
    except BenchError as e:
        failed = str(e)
    except KeyboardInterrupt:
        failed = "interrupted"

    if failed:
        print(f"devices.py: FAILED: {failed}", file=sys.stderr)
        print(f"devices.py: logs kept in {workdir}", file=sys.stderr)
        if not runs:
            sys.exit(1)

    summary = summarize(runs, variants, fio_runs)
    doc = {
        "host": facts,
        "config": {"kernel": kernel_src, "vcpus": VCPUS, "memory_mib": MEM_MIB,
                   "jobs": jobs(args, 0), "commands": commands, "images": sizes,
                   "runs": len(runs), "variants": variants},
        "runs": runs, "fio": fio_runs, "discarded": discarded,
        "summary": summary, "failed": failed,
    }
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(doc, f, indent=2)
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(f"oxvm vs QEMU block device benchmark, {len(runs)} run(s), {facts['date']}")
        print(f"host: {facts['kernel']}, {facts['cpus']} CPUs, PVM={facts['kvm_pvm']}; "
              f"{facts['qemu_version']}; {facts['fio_version']}; repo at {facts['oxvm_git']}")
        print(f"images on: {facts['workdir_fs']}")
        print(f"guest: {kernel_src} (sha256 {facts['kernel_sha256']}), {VCPUS} vCPU, {MEM_MIB} MiB")
        print("jobs (per boot, in order): " + "; ".join(
            f"{j['name']}={j['bs']}x{j['bytes'] // j['bs']} {j['mode']}" for j in jobs(args, 0)))
        print("CPU: sum_exec_runtime of the VMM's threads between the line before each job and "
              "its result line; device = oxvm blk-*, QEMU 'IO io0' + 'worker'")
        print_tables(summary, variants, job_names, args.paced_gap_ms)
        print("\nspeed probe per run (x the best probe; 1.00 = as fast as the machine got): " +
              "; ".join(f"run {i + 1} " + ", ".join(f"{v} x{r[v]['slowdown']}" for v in r)
                        for i, r in enumerate(runs)))
        if discarded:
            print(f"discarded and repeated (others > {args.max_others} % or probe > "
                  f"x{args.max_slowdown}): " + ", ".join(
                      f"run {d['run']} {d['variant']} (others {d['others_cpu_pct']} %, probe "
                      f"x{d['slowdown']}, small-write device "
                      f"{d['phases']['small-write']['device_us_per_req']:.0f} us/req)"
                      for d in discarded))
    if not failed and not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    elif not failed:
        log(f"logs kept in {workdir}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
