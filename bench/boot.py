#!/usr/bin/env python3
"""Boot benchmark: oxvm against `qemu-system-x86_64 -M microvm` on the same kernel.

Both VMMs boot the same ELF vmlinux (both take its PVH entry) with 2 vCPUs,
256 MiB and the same kernel command line (the PVM-safe line of
resources/examples/linux-selftest.json with `oxvm.selftest=boot,idle`).
One VM at a time. Per run and VMM it measures:

  1. exec -> first KVM_RUN ioctl.
     a) ftrace (default when tracefs is usable, i.e. as root): the
        sys_enter_execve of the VMM and the first sys_enter_ioctl with
        cmd == KVM_RUN (0xae80) of any of its threads, from a private tracefs
        instance that follows only this script's descendants. Overhead: one
        trace event per execve/KVM_RUN, a filter check per ioctl (~1 us).
        Taken during the same launch as 2. and 3.; tracing stops at once after
        the first KVM_RUN.
     b) strace: a separate launch under `strace -f -ttt -e trace=execve,ioctl`,
        first `KVM_RUN` line minus the execve line; the VMM is killed right
        after. Every traced syscall of every thread is stopped, decoded and
        written by strace, so this includes strace's overhead (see
        docs/PERFORMANCE.md). Skip with --no-strace.
  2. exec -> the selftest's `OXVM-SELFTEST boot ok` console line, wall clock
     (CLOCK_MONOTONIC just before fork/exec to the moment the line is read
     from the VMM's stdout pipe). No strace (ftrace only for 1a, see above).
  3. The VMM's own memory while the guest sits in the selftest's `idle`
     check: /proc/<pid>/smaps, total Rss minus the Rss of the guest-RAM
     mapping (the anonymous mapping of exactly the guest RAM size). Also the
     total Rss, the guest RAM Rss (and its AnonHugePages), the VMM's own Rss
     split into file-backed (binary, libraries) and anonymous, and its own
     private memory (Private_Clean + Private_Dirty outside guest RAM).
  Then the VM is stopped (SIGTERM; SIGKILL after 15 s).

The machine may be shared: before each boot the script waits (--quiet-wait)
until the CPUs are nearly idle, records the CPU other processes used during
the boot, and repeats a boot during which they used more than --max-others %.

Usage: python3 bench/boot.py [--runs 3] [--kernel target/guest/vmlinux]
           [--oxvm target/release/oxvm] [--qemu qemu-system-x86_64] [--json]
Python 3 standard library only. Needs /dev/kvm; root for ftrace.
"""

import argparse
import datetime
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(REPO, "resources", "examples", "linux-selftest.json")
KVM_RUN = 0xAE80  # _IO(KVMIO, 0x80)
VCPUS = 2
MEM_MIB = 256
CHECKS = "boot,idle"
BOOT_LINE = "OXVM-SELFTEST boot ok"
IDLE_LINE = "OXVM-SELFTEST idle ok"
# The same CPU as oxvm offers: oxvm passes KVM_GET_SUPPORTED_CPUID through,
# which QEMU does with `host,migratable=no` (plain `host` hides e.g. the
# invariant TSC; the guest then stays on kvm-clock, which made QEMU boots here
# several times slower, with RCU stalls). oxvm's default
# `cpu.kvm_pv_features: "safe"` is the host's set without pv_send_ipi,
# pv_unhalt and pv_sched_yield (they hang SMP bring-up on PVM): the same here.
QEMU_CPU = "host,migratable=no,kvm-pv-ipi=off,kvm-pv-unhalt=off,kvm-pv-sched-yield=off"
VMMS = ("oxvm", "qemu")


def log(msg):
    print(f"[boot.py {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class BenchError(Exception):
    pass


# ---------------------------------------------------------------------------
# Command lines


def kernel_cmdline():
    with open(EXAMPLE) as f:
        base = json.load(f)["boot"]["cmdline"]
    kept = [w for w in base.split() if not w.startswith("oxvm.selftest=")]
    return " ".join(kept + [f"oxvm.selftest={CHECKS}"])


def oxvm_command(args, workdir, cmdline):
    vm = {
        "name": "bench-oxvm",
        "vcpus": VCPUS,
        "memory_mib": MEM_MIB,
        "boot": {"kernel": args.kernel, "initrd": None, "cmdline": cmdline},
        "serial": {"mode": "stdout"},
        "on_reboot": "exit",
    }
    path = os.path.join(workdir, "vm.json")
    with open(path, "w") as f:
        json.dump(vm, f, indent=2)
    return [args.oxvm, "run", path]


def qemu_command(args, cmdline):
    return [
        args.qemu,
        "-M", "microvm",
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
    ]


# ---------------------------------------------------------------------------
# ftrace: exec -> first KVM_RUN with negligible overhead


class Ftrace:
    """A private tracefs instance following this process and its descendants."""

    def __init__(self):
        self.root = None
        self.mounted = None
        self.inst = None
        for cand in ("/sys/kernel/tracing", "/sys/kernel/debug/tracing"):
            if os.path.isdir(os.path.join(cand, "instances")):
                self.root = cand
                break
        if self.root is None:
            mnt = tempfile.mkdtemp(prefix="oxvm-bench-tracefs.")
            r = subprocess.run(["mount", "-t", "tracefs", "nodev", mnt],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            if r.returncode != 0:
                os.rmdir(mnt)
                raise BenchError(f"tracefs not mounted and mount failed: {r.stderr.strip()}")
            self.root = self.mounted = mnt
        try:
            self.inst = os.path.join(self.root, "instances", f"oxvm-bench-{os.getpid()}")
            os.mkdir(self.inst)
            self._w("tracing_on", "0")
            self._w("trace_clock", "mono")
            self._w("buffer_size_kb", "1024")
            self._w("options/overwrite", "0")  # keep the first events if full
            self._w("options/event-fork", "1")
            self._w("set_event_pid", str(os.getpid()))
            self._w("events/syscalls/sys_enter_ioctl/filter", f"cmd == {KVM_RUN:#x}")
            self._w("events/syscalls/sys_enter_execve/enable", "1")
            self._w("events/syscalls/sys_enter_ioctl/enable", "1")
        except Exception:
            self.close()
            raise

    def _w(self, name, value):
        with open(os.path.join(self.inst, name), "w") as f:
            f.write(value)

    def start(self):
        self._w("tracing_on", "0")
        self._w("trace", "")  # clear
        self._w("tracing_on", "1")

    def stop(self):
        self._w("tracing_on", "0")

    LINE = re.compile(r"-(\d+)\s+(?:\(\s*[-\d]+\)\s+)?\[\d+\]\s+\S*\s*(\d+\.\d+):\s+(sys_execve|sys_ioctl)\(")

    def first_kvm_run(self, pid):
        """(seconds from the execve of `pid` to the first KVM_RUN, or None)."""
        with open(os.path.join(self.inst, "trace")) as f:
            text = f.read()
        t_exec = None
        for line in text.splitlines():
            m = self.LINE.search(line)
            if not m:
                continue
            tid, ts, what = int(m.group(1)), float(m.group(2)), m.group(3)
            if what == "sys_execve" and tid == pid and t_exec is None:
                t_exec = ts
            elif what == "sys_ioctl" and t_exec is not None:
                return ts - t_exec
        return None

    def close(self):
        if self.inst and os.path.isdir(self.inst):
            try:
                self._w("tracing_on", "0")
                for ev in ("sys_enter_execve", "sys_enter_ioctl"):
                    self._w(f"events/syscalls/{ev}/enable", "0")
                self._w("events/syscalls/sys_enter_ioctl/filter", "0")
            except OSError:
                pass
            for _ in range(50):
                try:
                    os.rmdir(self.inst)
                    break
                except OSError:
                    time.sleep(0.1)
        self.inst = None
        if self.mounted:
            subprocess.run(["umount", self.mounted], check=False)
            try:
                os.rmdir(self.mounted)
            except OSError:
                pass
            self.mounted = None


# ---------------------------------------------------------------------------
# Memory


SMAPS_HEAD = re.compile(r"^([0-9a-f]+)-([0-9a-f]+)\s+\S+\s+\S+\s+\S+\s+\d+\s*(.*)$")


def read_smaps(pid):
    maps = []
    cur = None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            m = SMAPS_HEAD.match(line)
            if m:
                cur = {"start": int(m.group(1), 16), "end": int(m.group(2), 16),
                       "name": m.group(3).strip()}
                maps.append(cur)
                continue
            key, _, rest = line.partition(":")
            parts = rest.split()
            if cur is not None and len(parts) == 2 and parts[1] == "kB":
                cur[key] = int(parts[0])
    return maps


def is_anonymous(name):
    return (name == "" or name.startswith("[anon") or name.startswith("/memfd:")
            or name.startswith("/dev/zero") or name.startswith("/SYSV"))


def memory_sample(pid):
    maps = read_smaps(pid)
    want = MEM_MIB * 1024
    exact = [m for m in maps if m.get("Size") == want and is_anonymous(m["name"])]
    note = ""
    if exact:
        ram = max(exact, key=lambda m: m.get("Rss", 0))
        if len(exact) > 1:
            note = f"{len(exact)} mappings of {want} KiB; took the one with most Rss"
    else:
        bigger = [m for m in maps if m.get("Size", 0) >= want and is_anonymous(m["name"])]
        if not bigger:
            raise BenchError(f"no anonymous mapping of >= {want} KiB in /proc/{pid}/smaps")
        ram = min(bigger, key=lambda m: m["Size"])
        note = f"no mapping of exactly {want} KiB; took {ram['Size']} KiB {ram['name'] or '(anon)'}"
    total = sum(m.get("Rss", 0) for m in maps)
    priv = sum(m.get("Private_Clean", 0) + m.get("Private_Dirty", 0) for m in maps)
    ram_priv = ram.get("Private_Clean", 0) + ram.get("Private_Dirty", 0)
    rest = [m for m in maps if m is not ram]
    files = [m for m in rest if m["name"].startswith("/") and not is_anonymous(m["name"])]
    return {
        "total_rss_kib": total,
        "own_file_rss_kib": sum(m.get("Rss", 0) for m in files),
        "own_anon_rss_kib": sum(m.get("Rss", 0) for m in rest if m not in files),
        "shared_objects": len({m["name"] for m in files if ".so" in os.path.basename(m["name"])}),
        "guest_ram_rss_kib": ram.get("Rss", 0),
        "guest_ram_anon_huge_kib": ram.get("AnonHugePages", 0),
        "own_rss_kib": total - ram.get("Rss", 0),
        "own_private_kib": priv - ram_priv,
        "guest_ram_mapping": f"{ram['start']:x}-{ram['end']:x} {ram['name'] or '(anon)'}",
        "mappings": len(maps),
        "note": note,
    }


# ---------------------------------------------------------------------------
# One VM


class Console:
    """Reads a VMM's stdout line by line, stamping each line on arrival.

    Also writes <tag>.console in the work directory as it goes, each line
    prefixed with the wall-clock seconds since exec."""

    def __init__(self, stream, path, t0):
        self.t0 = t0
        self.lines = []  # (monotonic, text)
        self.cond = threading.Condition()
        self.eof = False
        self.path = path
        self.thread = threading.Thread(target=self._run, args=(stream,), daemon=True)
        self.thread.start()

    def _run(self, stream):
        with open(self.path, "w") as copy:  # live copy, for watching and for failures
            for raw in iter(stream.readline, b""):
                t = time.monotonic()
                text = raw.decode("utf-8", "replace").rstrip("\r\n")
                with self.cond:
                    self.lines.append((t, text))
                    self.cond.notify_all()
                copy.write(f"{t - self.t0:9.3f} {text}\n")  # wall seconds since exec
                copy.flush()
        with self.cond:
            self.eof = True
            self.cond.notify_all()

    def find(self, needle):
        with self.cond:
            for t, line in self.lines:
                if needle in line:
                    return t, line
        return None

    def wait_for(self, needle, deadline, proc):
        """(t, line) of the first line containing needle; None on EOF/exit/timeout."""
        with self.cond:
            while True:
                for t, line in self.lines:
                    if needle in line:
                        return t, line
                if self.eof or time.monotonic() >= deadline:
                    return None
                self.cond.wait(timeout=min(1.0, max(0.0, deadline - time.monotonic())))

    def tail(self, n=40):
        with self.cond:
            return "\n".join(line for _, line in self.lines[-n:])


# ---------------------------------------------------------------------------
# Interference: other VMs and CPU load on this (small, shared) machine

CLK_TCK = os.sysconf("SC_CLK_TCK")


def other_kvm_users(exclude):
    """[(pid, comm)] of processes, other than `exclude`, holding a KVM VM fd."""
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) in exclude:
            continue
        try:
            for fd in os.listdir(f"/proc/{d}/fd"):
                try:
                    link = os.readlink(f"/proc/{d}/fd/{fd}")
                except OSError:
                    continue
                if link.startswith("anon_inode:kvm-vm"):
                    with open(f"/proc/{d}/comm") as f:
                        found.append((int(d), f.read().strip()))
                    break
        except OSError:
            continue
    return found


def cpu_times():
    """(busy, steal, total) jiffies of the whole machine from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (v + [0] * 8)[:8]
    busy = user + nice + system + irq + softirq
    return busy, steal, busy + steal + idle + iowait


def proc_cpu(pid):
    """utime + stime (all threads, guest time included) in jiffies."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def wait_quiet(args, tag):
    """Wait until the machine is nearly idle (<= --quiet-wait s); other VMs are logged."""
    if args.quiet_wait <= 0:
        return 0.0
    start = time.monotonic()
    last_log = 0.0
    while True:
        users = other_kvm_users({os.getpid()})
        b0, s0, t0 = cpu_times()
        time.sleep(2)
        b1, s1, t1 = cpu_times()
        busy = (b1 - b0) / max(1, t1 - t0)
        waited = time.monotonic() - start
        # Idle VMs of other users cost little; what distorts numbers is CPU use.
        if busy < 0.15:
            if waited > 5:
                log(f"{tag}: machine quiet after {waited:.0f} s (other VMs: {users or 'none'})")
            return waited
        if waited >= args.quiet_wait:
            log(f"{tag}: machine still busy after {waited:.0f} s (other VMs {users}, "
                f"CPU {busy:.0%}); measuring anyway")
            return waited
        if waited - last_log >= 60 or last_log == 0.0:
            log(f"{tag}: waiting for a quiet machine (other VMs {users}, CPU busy {busy:.0%})")
            last_log = max(waited, 0.001)
        time.sleep(8)


def stop_process(proc, sig=signal.SIGTERM, grace=15.0):
    if proc.poll() is None:
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


GUEST_TS = re.compile(r"^\[\s*(\d+\.\d+)\]")


def boot_run(vmm, cmd, args, workdir, tag, ftrace):
    """Launch once: 1a (ftrace), 2 (boot ok) and 3 (memory in idle)."""
    errpath = os.path.join(workdir, f"{tag}.stderr")
    conpath = os.path.join(workdir, f"{tag}.console")
    res = {"vmm": vmm}
    with open(errpath, "wb") as err:
        res["waited_for_quiet_s"] = round(wait_quiet(args, tag), 1)
        if ftrace:
            ftrace.start()
        cpu0 = cpu_times()
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=err, cwd=workdir)
        con = Console(proc.stdout, conpath, t0)
        others = {p for p in other_kvm_users({os.getpid(), proc.pid})}
        try:
            # 1a: poll the trace until the first KVM_RUN, then stop tracing.
            if ftrace:
                limit = time.monotonic() + 60
                while True:
                    v = ftrace.first_kvm_run(proc.pid)
                    if v is not None or time.monotonic() > limit or proc.poll() is not None:
                        break
                    time.sleep(0.02)
                ftrace.stop()
                if v is None:
                    v = ftrace.first_kvm_run(proc.pid)
                res["exec_to_kvm_run_ftrace_s"] = v
                if v is None:
                    log(f"{tag}: no KVM_RUN seen by ftrace within 60 s")

            # 2: boot ok on the console.
            got = con.wait_for(BOOT_LINE, t0 + args.timeout, proc)
            if got is None:
                raise BenchError(
                    f"{tag}: no '{BOOT_LINE}' within {args.timeout:.0f} s "
                    f"(process {'exited ' + str(proc.poll()) if proc.poll() is not None else 'still running'})")
            t_boot, line = got
            res["exec_to_boot_ok_s"] = t_boot - t0
            # CPU use from exec to boot ok: the VMM's own (all threads) and the
            # rest of the machine's (other processes, other VMs), plus steal.
            vmm_cpu = proc_cpu(proc.pid) / CLK_TCK
            cpu1 = cpu_times()
            span = (cpu1[2] - cpu0[2]) / CLK_TCK  # CPU-seconds available
            res["vmm_cpu_to_boot_ok_s"] = vmm_cpu
            res["others_cpu_pct"] = round(
                100 * max(0.0, (cpu1[0] - cpu0[0]) / CLK_TCK - vmm_cpu) / max(span, 1e-9), 1)
            res["steal_pct"] = round(100 * (cpu1[1] - cpu0[1]) / CLK_TCK / max(span, 1e-9), 1)
            others |= set(other_kvm_users({os.getpid(), proc.pid}))
            res["other_vms_seen"] = sorted(f"{c}({p})" for p, c in others)
            res["boot_line"] = line[line.find("OXVM-SELFTEST"):]
            m = GUEST_TS.match(line)
            res["guest_clock_boot_ok_s"] = float(m.group(1)) if m else None
            cpus = re.search(r"cpus=(\d+)", line)
            if not cpus or int(cpus.group(1)) != VCPUS:
                raise BenchError(f"{tag}: guest does not see {VCPUS} CPUs: {line}")

            # 3: memory while idle.
            got = con.wait_for(IDLE_LINE, time.monotonic() + 120, proc)
            if got is None:
                raise BenchError(f"{tag}: no '{IDLE_LINE}' within 120 s after boot ok")
            time.sleep(args.settle)
            samples = []
            for i in range(3):
                if proc.poll() is not None:
                    raise BenchError(f"{tag}: VMM exited ({proc.returncode}) while idle")
                samples.append(memory_sample(proc.pid))
                if i < 2:
                    time.sleep(1.0)
            res["memory"] = samples[-1]
            res["memory_samples_own_rss_kib"] = [s["own_rss_kib"] for s in samples]
        except BaseException as e:
            rc = stop_process(proc, signal.SIGKILL, 5)
            con.thread.join(timeout=5)
            if isinstance(e, BenchError):
                with open(errpath, "rb") as f:
                    err_tail = f.read()[-3000:].decode("utf-8", "replace")
                raise BenchError(
                    f"{e}\n---- console tail ({conpath}) ----\n{con.tail(40)}\n"
                    f"---- stderr tail ({errpath}) ----\n{err_tail}\n---- exit {rc}") from None
            raise
        finally:
            if ftrace:
                ftrace.stop()
        res["exit_status_after_sigterm"] = stop_process(proc, signal.SIGTERM, 15)
        con.thread.join(timeout=5)
    return res


STRACE_LINE = re.compile(r"^(\d+)\s+(\d+\.\d+)\s+(execve|ioctl)\((.*)$")


def strace_run(vmm, cmd, workdir, tag):
    """1b: exec -> first KVM_RUN under strace; the VMM is killed right after."""
    out = os.path.join(workdir, f"{tag}.strace")
    scmd = ["strace", "-f", "-ttt", "-e", "trace=execve,ioctl", "-o", out, "--"] + cmd
    proc = subprocess.Popen(scmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, cwd=workdir)
    t_exec = vmm_pid = None
    result = None
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
            try:
                with open(out) as f:
                    text = f.read()
            except FileNotFoundError:
                continue
            for line in text.splitlines():
                m = STRACE_LINE.match(line)
                if not m:
                    continue
                pid, ts, what, rest = int(m.group(1)), float(m.group(2)), m.group(3), m.group(4)
                if what == "execve" and t_exec is None:
                    t_exec, vmm_pid = ts, pid
                elif what == "ioctl" and t_exec is not None and (
                        "KVM_RUN" in rest or f"{KVM_RUN:#x}" in rest):
                    result = ts - t_exec
                    break
            if result is not None:
                break
    finally:
        if vmm_pid is not None:
            try:
                os.kill(vmm_pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        else:
            # strace has not exec'd the VMM yet (or failed): stop strace itself.
            proc.kill()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if result is None:
        raise BenchError(f"{tag}: no KVM_RUN in {out} within 120 s")
    return result


# ---------------------------------------------------------------------------
# Reporting


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


METRICS = [
    # key, title, unit, scale, fmt
    ("exec_to_kvm_run_ftrace_s", "1a. exec -> first KVM_RUN (ftrace)", "ms", 1e3, "{:.1f}"),
    ("exec_to_kvm_run_strace_s", "1b. exec -> first KVM_RUN (under strace)", "ms", 1e3, "{:.1f}"),
    ("exec_to_boot_ok_s", "2. exec -> 'OXVM-SELFTEST boot ok' (wall)", "s", 1, "{:.2f}"),
    ("guest_clock_boot_ok_s", "   guest clock at 'boot ok' (printk time, info)", "s", 1, "{:.2f}"),
    ("vmm_cpu_to_boot_ok_s", "   VMM CPU time (all threads) exec -> boot ok (info)", "s", 1, "{:.2f}"),
    ("others_cpu_pct", "   CPU used by other processes during the boot (info)", "%", 1, "{:.1f}"),
    ("own_rss_kib", "3. VMM own RSS = total Rss - guest RAM Rss (idle)", "MiB", 1 / 1024, "{:.1f}"),
    ("own_file_rss_kib", "   of which file-backed (binary, shared libraries)", "MiB", 1 / 1024, "{:.1f}"),
    ("own_anon_rss_kib", "   of which anonymous (heap, stacks, other)", "MiB", 1 / 1024, "{:.1f}"),
    ("total_rss_kib", "   total RSS (idle)", "MiB", 1 / 1024, "{:.1f}"),
    ("guest_ram_rss_kib", "   guest RAM Rss (idle)", "MiB", 1 / 1024, "{:.1f}"),
    ("own_private_kib", "   VMM own private (Private_* outside guest RAM)", "MiB", 1 / 1024, "{:.1f}"),
]


def metric_values(runs, vmm, key):
    out = []
    for r in runs:
        v = r.get(vmm, {}).get(key)
        if v is None:
            v = r.get(vmm, {}).get("memory", {}).get(key)
        out.append(v)
    return out


def summarize(runs):
    summary = {}
    for key, title, unit, scale, fmt in METRICS:
        o = metric_values(runs, "oxvm", key)
        q = metric_values(runs, "qemu", key)
        if all(v is None for v in o + q):
            continue
        mo, mq = median(o), median(q)
        summary[key] = {
            "title": title.strip(), "unit_raw": {"s": "s", "kib": "KiB", "pct": "%"}[key.rsplit("_", 1)[1]],
            "oxvm": o, "qemu": q, "oxvm_median": mo, "qemu_median": mq,
            "ratio_oxvm_over_qemu": (mo / mq) if (mo is not None and mq) else None,
        }
    return summary


def print_tables(summary, nruns):
    for key, title, unit, scale, fmt in METRICS:
        s = summary.get(key)
        if not s:
            continue
        f = lambda v: "-" if v is None else fmt.format(v * scale)
        print(f"\n{title} [{unit}]")
        print(f"  {'run':<8}{'oxvm':>12}{'qemu':>12}")
        for i in range(nruns):
            print(f"  {i + 1:<8}{f(s['oxvm'][i]):>12}{f(s['qemu'][i]):>12}")
        print(f"  {'median':<8}{f(s['oxvm_median']):>12}{f(s['qemu_median']):>12}")
        r = s["ratio_oxvm_over_qemu"]
        print(f"  {'ratio':<8}{'oxvm/qemu = ' + ('-' if r is None else f'{r:.3f}'):>24}")


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def host_facts(args):
    def first_line(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.splitlines()[0]
        except Exception:
            return None
    rev = first_line(["git", "-C", REPO, "rev-parse", "--short", "HEAD"])
    dirty = first_line(["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no"])
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "kvm_pvm": os.path.isdir("/sys/module/kvm_pvm"),
        "qemu_version": first_line([args.qemu, "--version"]),
        "strace_version": first_line(["strace", "-V"]) if shutil.which("strace") else None,
        "oxvm_git": (rev + ("-dirty" if dirty else "")) if rev else None,
    }


# ---------------------------------------------------------------------------


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3, help="runs per VMM (default 3)")
    p.add_argument("--kernel", default=os.path.join(REPO, "target/guest/vmlinux"),
                   help="ELF vmlinux with PVH note (default target/guest/vmlinux)")
    p.add_argument("--oxvm", default=os.path.join(REPO, "target/release/oxvm"),
                   help="oxvm binary (default target/release/oxvm; built with cargo if missing)")
    p.add_argument("--qemu", default=shutil.which("qemu-system-x86_64") or "qemu-system-x86_64",
                   help="QEMU binary (default qemu-system-x86_64 from PATH)")
    p.add_argument("--qemu-cpu", default=QEMU_CPU, help=f"QEMU -cpu (default {QEMU_CPU})")
    p.add_argument("--timeout", type=float, default=600, help="seconds to 'boot ok' (default 600)")
    p.add_argument("--settle", type=float, default=2.0,
                   help="seconds to wait after the idle line before sampling memory (default 2)")
    p.add_argument("--quiet-wait", type=float, default=900,
                   help="before each boot, wait up to this many seconds until the CPUs are "
                        "nearly idle (< 15%% busy; default 900; 0: do not wait)")
    p.add_argument("--max-others", type=float, default=10,
                   help="repeat a boot during which other processes used more than this "
                        "%% of the machine's CPU (default 10)")
    p.add_argument("--retries", type=int, default=3,
                   help="repeats per boot for --max-others (default 3; then it is kept)")
    p.add_argument("--no-strace", action="store_true", help="skip metric 1b")
    p.add_argument("--no-ftrace", action="store_true", help="skip metric 1a")
    p.add_argument("--only", choices=VMMS, help="run one VMM only (diagnosis; no ratios)")
    p.add_argument("--keep", action="store_true", help="keep the work directory (consoles, strace logs)")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.add_argument("--json-out", metavar="FILE", help="also write the JSON to FILE")
    args = p.parse_args()
    if args.runs < 1:
        p.error("--runs must be >= 1")

    args.kernel = os.path.abspath(args.kernel)
    args.oxvm = os.path.abspath(args.oxvm)
    if not os.path.isfile(args.kernel):
        sys.exit(f"boot.py: kernel {args.kernel} missing: build it with `bash resources/guest/build.sh`")
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        sys.exit("boot.py: /dev/kvm is not accessible")
    if not os.path.isfile(args.oxvm):
        if args.oxvm != os.path.join(REPO, "target/release/oxvm"):
            sys.exit(f"boot.py: {args.oxvm} missing")
        log("target/release/oxvm missing: cargo build --release")
        subprocess.run(["cargo", "build", "--release"], cwd=REPO, check=True,
                       stdout=sys.stderr)
    if not shutil.which(args.qemu):
        sys.exit(f"boot.py: {args.qemu} not found (Debian: apt-get install -y qemu-system-x86)")
    args.qemu = shutil.which(args.qemu)
    if not args.no_strace and not shutil.which("strace"):
        sys.exit("boot.py: strace not found (apt-get install -y strace, or --no-strace)")

    ftrace = None
    if not args.no_ftrace:
        try:
            ftrace = Ftrace()
        except (BenchError, OSError) as e:
            log(f"ftrace unavailable ({e}); metric 1a skipped")

    workdir = tempfile.mkdtemp(prefix="oxvm-bench.")
    # Every boot uses one snapshot of the kernel, even if the file is rebuilt meanwhile.
    kernel_src = args.kernel
    args.kernel = os.path.join(workdir, os.path.basename(kernel_src))
    shutil.copyfile(kernel_src, args.kernel)
    cmdline = kernel_cmdline()
    cmds = {"oxvm": oxvm_command(args, workdir, cmdline), "qemu": qemu_command(args, cmdline)}
    facts = host_facts(args)
    facts["kernel_file"] = kernel_src
    facts["kernel_sha256"] = sha256(args.kernel)[:16]
    facts["oxvm_binary"] = args.oxvm
    facts["oxvm_sha256"] = sha256(args.oxvm)[:16]
    log(f"work dir {workdir}; kernel {args.kernel}")
    for v in VMMS:
        log(f"{v}: {' '.join(cmds[v])}")

    vmms = (args.only,) if args.only else VMMS
    runs = []
    discarded = []
    failed = None
    try:
        # Warm-up (not measured): page cache for binaries, libraries and kernel.
        if not args.no_strace:
            for v in vmms:
                strace_run(v, cmds[v], workdir, f"warmup-{v}")
        for i in range(args.runs):
            run = {}
            order = vmms if i % 2 == 0 else tuple(reversed(vmms))
            for v in order:
                tag = f"run{i + 1}-{v}"
                log(f"{tag}: booting")
                for attempt in range(1 + args.retries):
                    r = boot_run(v, cmds[v], args, workdir, tag, ftrace)
                    r["attempt"] = attempt + 1
                    if r["others_cpu_pct"] <= args.max_others or attempt == args.retries:
                        break
                    log(f"{tag}: other processes used {r['others_cpu_pct']}% of the CPUs during "
                        f"the boot (> {args.max_others}%): discarded "
                        f"(boot ok {r['exec_to_boot_ok_s']:.1f} s), repeating")
                    discarded.append({"run": i + 1, **r})
                if not args.no_strace:
                    r["exec_to_kvm_run_strace_s"] = strace_run(v, cmds[v], workdir, tag)
                m = r["memory"]
                log(f"{tag}: exec->KVM_RUN ftrace "
                    f"{'-' if r.get('exec_to_kvm_run_ftrace_s') is None else '%.1f ms' % (r['exec_to_kvm_run_ftrace_s'] * 1e3)}"
                    f", strace {'-' if r.get('exec_to_kvm_run_strace_s') is None else '%.1f ms' % (r['exec_to_kvm_run_strace_s'] * 1e3)}"
                    f"; boot ok {r['exec_to_boot_ok_s']:.2f} s (guest {r['guest_clock_boot_ok_s']} s)"
                    f"; own RSS {m['own_rss_kib']} KiB of {m['total_rss_kib']} KiB"
                    f" (guest RAM {m['guest_ram_rss_kib']} KiB in {m['guest_ram_mapping']})"
                    f"{'; ' + m['note'] if m['note'] else ''}; exit after SIGTERM {r['exit_status_after_sigterm']}"
                    f"; VMM CPU {r['vmm_cpu_to_boot_ok_s']:.1f} s, others {r['others_cpu_pct']}%"
                    f", steal {r['steal_pct']}%, other VMs {r['other_vms_seen'] or 'none'}")
                run[v] = r
                with open(os.path.join(workdir, "results.json"), "w") as f:
                    json.dump({"host": facts, "runs": runs + [run], "discarded": discarded},
                              f, indent=2)
            runs.append(run)
    except BenchError as e:
        failed = str(e)
    except KeyboardInterrupt:
        failed = "interrupted"
    finally:
        if ftrace:
            ftrace.close()

    if failed:
        print(f"boot.py: FAILED: {failed}", file=sys.stderr)
        print(f"boot.py: logs kept in {workdir}", file=sys.stderr)
        if not runs:
            sys.exit(1)

    summary = summarize(runs)
    doc = {
        "host": facts,
        "config": {"kernel": kernel_src, "vcpus": VCPUS, "memory_mib": MEM_MIB,
                   "cmdline": cmdline, "commands": cmds, "runs": len(runs)},
        "runs": runs,
        "discarded": discarded,
        "summary": summary,
        "failed": failed,
    }
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(doc, f, indent=2)
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(f"oxvm vs QEMU microvm boot benchmark, {len(runs)} run(s) each, {facts['date']}")
        print(f"host: {facts['kernel']}, {facts['cpus']} CPUs, PVM={facts['kvm_pvm']}; "
              f"{facts['qemu_version']}; repo at {facts['oxvm_git']}")
        print(f"oxvm binary: {args.oxvm} (sha256 {facts['oxvm_sha256']})")
        print(f"guest: {kernel_src} (sha256 {facts['kernel_sha256']}), {VCPUS} vCPUs, {MEM_MIB} MiB, "
              f"cmdline: {cmdline}")
        print_tables(summary, len(runs))
        if discarded:
            print(f"\ndiscarded and repeated (other processes > {args.max_others}% CPU during the boot):")
            for d in discarded:
                print(f"  run {d['run']} {d['vmm']}: others {d['others_cpu_pct']}%, "
                      f"boot ok {d['exec_to_boot_ok_s']:.2f} s")
        kept = [(i + 1, v, r[v]["others_cpu_pct"]) for i, r in enumerate(runs) for v in r
                if r[v]["others_cpu_pct"] > args.max_others]
        for n, v, pct in kept:
            print(f"  note: run {n} {v} kept after {args.retries} repeats with others {pct}%")
    if not failed and not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    elif not failed:
        log(f"logs kept in {workdir}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
