#!/usr/bin/env python3
"""Save, restore and live-migration benchmark with small raw guests.

Guests: hand-written x86-64 machine code (no Linux), 1 vCPU, loaded at 0x100000 and
entered in 64-bit mode with the first 4 GiB identity-mapped. Each guest first fills
FILL MiB of RAM from 16 MiB up with a non-zero 64-bit pattern (`rep stosq`), then
loops forever:
  - "idle" guest (save/restore): increments a 64-bit counter at COUNTER_GPA;
  - "dirty" guest (migration): stamps the next number into the first word of each
    4 KiB page of a DIRTY MiB region (right after the filled range), page after
    page, and writes the same number to COUNTER_GPA.
The counter is read from the host through /proc/<pid>/mem (as tests/common/guest_mem.rs
does), so "the guest runs" is seen in guest memory, not asked of the VMM.

Per guest size (RAM:FILL MiB, default 256:64 and 1024:256) and run:

  1. save: `oxvm run --api-socket S vm.json`, wait until the fill is done (counter > 0),
     then `POST /v1/vm/save {"dir": D, "stop": true}`: the request's round trip,
     `memory.raw` length and allocated bytes (st_blocks * 512), `state.oxvm` size.
  2. restore, lazy and copy (alternating which goes first): `oxvm restore --api-socket S
     --memory M D`, from just before fork/exec to (a) `GET /v1/vm` answering state
     `running`, (b) the counter in guest RAM differing from the saved one (the guest
     runs). Then the process's RSS, and `destroy`.
  3. live migration of the dirty guest, over TCP loopback and a Unix socket, per
     downtime target, and a local hand-over ("local": the guest has memory_shared, the
     request says local: true over a Unix socket, the memfd is passed, no pages sent): destination `oxvm serve --api-socket D` + `POST
     /v1/vm/migration/incoming {"listen": ADDR}`, then on the source `POST
     /v1/vm/migration {"to": ADDR, "downtime_ms": N, "max_iterations": I, "wait": true}`:
     the request's round trip (total time) and the final MigrationStatus it answers
     (iterations, bytes, dirty_pages_per_s, downtime_ms as measured by oxvm), and the
     guest's own write rate before the migration (counter increments = pages
     stamped per second over 0.5 s, no dirty logging). A thread polls the source's
     GET /v1/vm/migration and the destination's GET /v1/vm every few ms: "observed
     pause" is from the last poll that saw the source still in pre-copy to the first
     that saw the destination running (a cross-check of downtime_ms at the polling
     resolution; the source's own figure also includes the destination's
     acknowledgement, so it can be a little longer). CPU time during the migration:
     the source's threads by name (schedstat; `migrate-send`, `vcpu`, ...), the
     largest value each had in the polls before the source exits, and the
     destination's whole process (utime + stime, which keeps the receive thread's
     time after it ends). After each migration the destination's guest must go on,
     its dirty region must be consistent (consecutive stamps, one break at most) and
     the filled pages must hold the pattern.

Each case runs --runs times (default 3); medians go to stdout as markdown tables with
the exact commands, per-run values and load to stderr / --json-out. The machine may be
shared: before each case (none of our VMs running) the script waits up to --quiet-wait
s for the whole machine to be under --quiet-threshold % CPU busy (2 s probes) and
records the last probe and the load average with the run. The oxvm binary is copied
into the work directory first, so a concurrent rebuild of target/ does not change it
mid-run.

  4. named snapshot of the idle guest with a 64 MiB qcow2 disk (`snapshots_dir` set):
     `POST /v1/vm/snapshots {"name": "s1"}` round trip (the guest is paused for it),
     then once the guest counted on, `POST /v1/vm/snapshots/s1/revert` round trip and
     the time until the reverted guest's counter moves (memory is copied back from the
     snapshot, the machine rebuilt), then `DELETE /v1/vm/snapshots/s1`.

Usage: python3 bench/snapshot.py [--runs 3] [--sizes 256:64,1024:256] [--dirty-mib 16]
           [--downtimes 300,30] [--transports tcp,unix,local] [--max-iterations 30]
           [--only save,restore,migrate,named] [--drop-caches] [--quiet-wait 60]
           [--oxvm PATH] [--keep] [--json-out F]
Python 3 standard library only. Needs /dev/kvm (root or the kvm group) and ptrace
access to its own children (/proc/<pid>/mem).
"""

import argparse
import datetime
import hashlib
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RAW_LOAD = 0x100000
COUNTER_GPA = 0xF00000          # 15 MiB: below the fill, above the code
FILL_START = 0x1000000          # 16 MiB
PATTERN = 0x5A5A_A5A5_0123_4567
PAGE = 4096


def log(msg):
    print(f"[snapshot.py {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class BenchError(Exception):
    pass


# ---------------------------------------------------------------------------
# Guest code (encodings as in tests/common/asm.rs)


def u32(v):
    return struct.pack("<I", v)


def guest_code(fill_bytes, region_start=0, region_pages=0):
    c = bytearray()
    c += b"\xfc"                                      # cld
    c += b"\x48\xb8" + struct.pack("<Q", PATTERN)     # mov rax, PATTERN
    c += b"\xbf" + u32(FILL_START)                    # mov edi, FILL_START
    c += b"\xb9" + u32(fill_bytes // 8)               # mov ecx, qwords
    c += b"\xf3\x48\xab"                              # rep stosq
    c += b"\x31\xc0"                                  # xor eax, eax (rax = 0)
    if region_pages == 0:
        loop = len(c)
        c += b"\x48\xff\xc0"                          # loop: inc rax
        c += b"\x48\x89\x04\x25" + u32(COUNTER_GPA)   # mov [COUNTER], rax
        c += b"\xeb" + bytes([(loop - (len(c) + 2)) & 0xFF])  # jmp loop
        return bytes(c)
    outer = len(c)
    c += b"\xbb" + u32(region_start)                  # outer: mov ebx, region
    inner = len(c)
    c += b"\x48\xff\xc0"                              # inner: inc rax
    c += b"\x48\x89\x03"                              # mov [rbx], rax
    c += b"\x48\x89\x04\x25" + u32(COUNTER_GPA)       # mov [COUNTER], rax
    c += b"\x81\xc3" + u32(PAGE)                      # add ebx, 4096
    c += b"\x81\xfb" + u32(region_start + region_pages * PAGE)  # cmp ebx, end
    c += b"\x72" + bytes([(inner - (len(c) + 2)) & 0xFF])       # jb inner
    c += b"\xeb" + bytes([(outer - (len(c) + 2)) & 0xFF])       # jmp outer
    return bytes(c)


class Guest:
    def __init__(self, ram_mib, fill_mib, dirty_mib):
        self.ram = ram_mib << 20
        self.fill = fill_mib << 20
        self.region = FILL_START + self.fill
        self.pages = (dirty_mib << 20) // PAGE
        if self.region + self.pages * PAGE > self.ram or self.ram > 0xC0000000:
            raise BenchError(f"{ram_mib} MiB: fill {fill_mib} + dirty {dirty_mib} MiB from "
                             "16 MiB do not fit (or RAM crosses the 3 GiB MMIO gap)")
        self.code = guest_code(self.fill, self.region, self.pages)
        self.kind = "dirty" if self.pages else "idle"


def write_vm(workdir, tag, guest, ram_mib, extra=None):
    code = os.path.join(workdir, f"{tag}.bin")
    with open(code, "wb") as f:
        f.write(guest.code)
    vm = {
        "name": tag, "vcpus": 1, "memory_mib": ram_mib,
        "boot": {"raw": {"path": code, "load_address": RAW_LOAD}},
        "serial": {"mode": "off"},
        "shutdown": {"timeout_s": 1},
    }
    vm.update(extra or {})
    path = os.path.join(workdir, f"{tag}.json")
    with open(path, "w") as f:
        json.dump(vm, f, indent=2)
    return path


# ---------------------------------------------------------------------------
# HTTP over the API socket


def http(sock, method, path, body=None, timeout=10.0):
    data = b"" if body is None else json.dumps(body).encode()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(sock)
        s.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                  f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
                  .encode() + data)
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    finally:
        s.close()
    head, _, payload = out.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    try:
        return status, json.loads(payload) if payload else None
    except ValueError:
        return status, payload.decode(errors="replace")


def try_get(sock, path, timeout=2.0):
    try:
        return http(sock, "GET", path, timeout=timeout)
    except (OSError, IndexError, ValueError):
        return None, None


# ---------------------------------------------------------------------------
# Guest RAM through /proc/<pid>/mem


class GuestRam:
    """Guest-physical reads of a VM process (see tests/common/guest_mem.rs)."""

    def __init__(self, pid, size, probe):
        self.pid, self.size, self.probe = pid, size, probe
        self.base = None
        self.fd = None

    def _find(self):
        with open(f"/proc/{self.pid}/maps") as f:
            maps = f.read()
        found = []
        for line in maps.splitlines():
            fields = line.split()
            if len(fields) < 2 or not fields[1].startswith("rw"):
                continue
            a, b = (int(x, 16) for x in fields[0].split("-"))
            if b - a < self.size:
                continue
            for base in (a, b - self.size):
                try:
                    if os.pread(self.fd, len(self.probe), base + RAW_LOAD) == self.probe \
                            and base not in found:
                        found.append(base)
                except OSError:
                    pass
        if len(found) == 1:
            self.base = found[0]
        return self.base is not None

    def ready(self):
        """True once guest RAM is mapped and holds the guest's code."""
        if self.base is not None:
            return True
        try:
            if self.fd is None:
                self.fd = os.open(f"/proc/{self.pid}/mem", os.O_RDONLY)
            return self._find()
        except OSError:
            return False

    def read(self, gpa, n):
        return os.pread(self.fd, n, self.base + gpa)

    def u64(self, gpa):
        return struct.unpack("<Q", self.read(gpa, 8))[0]

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def check_memory(ram, guest):
    """The filled pages hold the pattern; the dirty region's stamps are consecutive
    except at one place (where the guest was writing). Returns a problem or None."""
    pat = struct.pack("<Q", PATTERN)
    step = max(PAGE, (guest.fill // 64) // PAGE * PAGE)
    for off in range(0, guest.fill, step):
        if ram.read(FILL_START + off + 8, 8) != pat:
            return f"filled page at {FILL_START + off:#x} lost its pattern"
    if guest.pages:
        data = ram.read(guest.region, guest.pages * PAGE)
        words = [struct.unpack_from("<Q", data, i * PAGE)[0] for i in range(guest.pages)]
        breaks = sum(1 for a, b in zip(words, words[1:]) if b != a + 1)
        if breaks > 1 or 0 in words:
            return f"dirty region inconsistent: {breaks} breaks, zero pages {words.count(0)}"
    return None


# ---------------------------------------------------------------------------
# Processes and machine state


class Procs:
    def __init__(self):
        self.live = []

    def start(self, cmd, env, log_path):
        err = open(log_path, "ab")
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=err, stderr=err, env=env)
        err.close()
        p.log_path = log_path
        self.live.append(p)
        return p

    def kill_all(self):
        for p in self.live:
            if p.poll() is None:
                p.kill()
                p.wait()


def tail(path, n=15):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


def cpu_times():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (v + [0] * 8)[:8]
    busy = user + nice + system + irq + softirq
    return busy, busy + steal + idle + iowait


def probe_busy(seconds=2.0):
    """Whole-machine CPU busy fraction (%) over `seconds`."""
    b0, t0 = cpu_times()
    time.sleep(seconds)
    b1, t1 = cpu_times()
    return round(100.0 * (b1 - b0) / max(1, t1 - t0), 1)


def wait_quiet(limit_s, threshold):
    """Before a case (none of our VMs running): wait up to `limit_s` for the machine
    to be under `threshold` % busy. Returns the last probe's busy % (others' load)."""
    start = time.monotonic()
    while True:
        busy = probe_busy()
        waited = time.monotonic() - start
        if busy < threshold or waited >= limit_s:
            if busy >= threshold and limit_s > 0:
                log(f"machine still {busy:.0f} % busy after {waited:.0f} s; measuring anyway")
            return busy
        time.sleep(3)


def thread_cpu(pid):
    """{thread name: CPU ns} of a process (schedstat; threads of one name summed)."""
    out = {}
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/comm") as f:
                    name = f.read().strip()
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    ns = int(f.read().split()[0])
            except (OSError, ValueError):
                continue
            key = "vcpu" if name.startswith("vcpu") else name
            out[key] = out.get(key, 0) + ns
    except OSError:
        return None
    return out


def proc_cpu_ms(pid):
    """utime + stime of the whole process (exited threads included), ms."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) * 1000.0 / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def cpu_delta(a, b):
    """CPU ms per thread group from sample a to b (threads new in b count from 0)."""
    if not b:
        return {}
    a = a or {}
    return {k: round((v - a.get(k, 0)) / 1e6, 1) for k, v in b.items() if v - a.get(k, 0) > 0}


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def wait_exit(p, timeout, what):
    try:
        return p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BenchError(f"{what}: pid {p.pid} still running after {timeout} s\n{tail(p.log_path)}")


def wait_for(pred, timeout, what, p=None, interval=0.0005):
    deadline = time.monotonic() + timeout
    while True:
        r = pred()
        if r:
            return r
        if p is not None and p.poll() is not None:
            raise BenchError(f"{what}: process exited with {p.returncode}\n{tail(p.log_path)}")
        if time.monotonic() > deadline:
            raise BenchError(f"{what}: not within {timeout} s" +
                             (f"\n{tail(p.log_path)}" if p is not None else ""))
        time.sleep(interval)


def api_ready(sock):
    st, _ = try_get(sock, "/v1/version", timeout=1.0)
    return st == 200


class Bench:
    def __init__(self, args, work):
        self.a = args
        self.work = work
        self.procs = Procs()
        self.env = dict(os.environ, OXVM_RUNTIME_DIR=os.path.join(work, "run"))
        self.n = 0
        self.commands = {}

    def path(self, name):
        self.n += 1
        return os.path.join(self.work, f"{self.n:03d}-{name}")

    def note(self, key, text):
        self.commands.setdefault(key, text)

    def boot_source(self, guest, ram_mib, tag, extra=None):
        vm_file = write_vm(self.work, f"{tag}", guest, ram_mib, extra)
        sock = self.path("src.sock")
        cmd = [self.a.oxvm, "run", "--api-socket", sock, vm_file]
        self.note(f"run-{guest.kind}", " ".join(cmd))
        t0 = time.monotonic()
        p = self.procs.start(cmd, self.env, sock + ".log")
        ram = GuestRam(p.pid, guest.ram, guest.code)
        wait_for(lambda: api_ready(sock), 30, "source API", p)
        wait_for(ram.ready, 30, "source guest RAM", p, 0.005)
        # Fill done: the counter starts after `rep stosq`; for the dirty guest, every
        # page of the region stamped once.
        floor = guest.pages if guest.pages else 0
        wait_for(lambda: ram.u64(COUNTER_GPA) > floor, self.a.timeout, "guest fill", p, 0.005)
        fill_s = time.monotonic() - t0
        # How fast the guest writes (pages stamped, or counter increments, per second;
        # no dirty logging yet).
        c0, t1 = ram.u64(COUNTER_GPA), time.monotonic()
        time.sleep(0.5)
        rate = (ram.u64(COUNTER_GPA) - c0) / (time.monotonic() - t1)
        return p, sock, ram, fill_s, rate

    def quiet(self):
        return wait_quiet(self.a.quiet_wait, self.a.quiet_threshold)

    def destroy(self, p, sock):
        if p.poll() is None:
            st, r = http(sock, "POST", "/v1/vm/actions/destroy", timeout=30)
            if st != 200:
                raise BenchError(f"destroy: {st} {r}")
        wait_exit(p, 30, "destroy")

    # -- 1. save ------------------------------------------------------------

    def save(self, guest, ram_mib, tag):
        others = self.quiet()
        p, sock, ram, fill_s, _ = self.boot_source(guest, ram_mib, tag)
        ram.close()
        d = self.path("save")
        body = {"dir": d, "stop": True}
        self.note("save", f"POST /v1/vm/save {json.dumps(body)}")
        t0 = time.monotonic()
        st, r = http(sock, "POST", "/v1/vm/save", body, timeout=self.a.timeout)
        save_s = time.monotonic() - t0
        if st != 200:
            raise BenchError(f"save: {st} {r}\n{tail(p.log_path)}")
        rc = wait_exit(p, 30, "source after save --stop")
        if rc != 0:
            raise BenchError(f"source exited {rc} after save --stop\n{tail(p.log_path)}")
        mem = os.stat(os.path.join(d, "memory.raw"))
        state = os.stat(os.path.join(d, "state.oxvm"))
        with open(os.path.join(d, "memory.raw"), "rb") as f:
            f.seek(COUNTER_GPA)
            saved_counter = struct.unpack("<Q", f.read(8))[0]
        return d, saved_counter, {
            "boot_fill_s": round(fill_s, 3),
            "save_ms": round(save_s * 1e3, 1),
            "reply_state": r.get("state") if isinstance(r, dict) else r,
            "memory_raw_len_mib": round(mem.st_size / 2**20, 1),
            "memory_raw_alloc_mib": round(mem.st_blocks * 512 / 2**20, 1),
            "state_oxvm_kib": round(state.st_size / 1024, 1),
            "others_busy_pct": others,
            "save_mib_per_s": round(mem.st_blocks * 512 / 2**20 / save_s, 0),
            "load": loadavg(),
        }

    # -- 2. restore ---------------------------------------------------------

    def restore(self, guest, d, saved_counter, mode):
        if self.a.drop_caches:
            os.sync()
            with open("/proc/sys/vm/drop_caches", "w") as f:
                f.write("3\n")
        others = self.quiet()
        sock = self.path(f"restore-{mode}.sock")
        cmd = [self.a.oxvm, "restore", "--api-socket", sock, "--memory", mode, d]
        self.note(f"restore-{mode}", " ".join(cmd))
        t0 = time.monotonic()
        p = self.procs.start(cmd, self.env, sock + ".log")
        ram = GuestRam(p.pid, guest.ram, guest.code)
        t_api = t_run = None
        first = None
        deadline = t0 + self.a.timeout
        while t_api is None or t_run is None:
            if t_api is None:
                st, r = try_get(sock, "/v1/vm", timeout=2.0)
                if st == 200 and r.get("state") == "running":
                    t_api = time.monotonic()
            if t_run is None and ram.ready():
                c = ram.u64(COUNTER_GPA)
                if first is None:
                    first = c
                if c != saved_counter:
                    t_run = time.monotonic()
                    if c < saved_counter:
                        raise BenchError(f"restore {mode}: counter {c} below the saved {saved_counter}")
            if p.poll() is not None:
                raise BenchError(f"restore {mode}: exited {p.returncode}\n{tail(p.log_path)}")
            if time.monotonic() > deadline:
                raise BenchError(f"restore {mode}: api {t_api}, run {t_run} after {self.a.timeout} s")
            time.sleep(0.0002)
        # RSS before the memory check below reads guest RAM (which maps file pages).
        rss = rss_kib(p.pid)
        time.sleep(0.5)
        rss_later = rss_kib(p.pid)
        problem = check_memory(ram, guest)
        ram.close()
        if problem:
            raise BenchError(f"restore {mode}: {problem}")
        self.destroy(p, sock)
        return {
            "api_running_ms": round((t_api - t0) * 1e3, 1),
            "guest_runs_ms": round((t_run - t0) * 1e3, 1),
            "rss_mib": round(rss / 1024, 1) if rss else None,
            "rss_0_5s_later_mib": round(rss_later / 1024, 1) if rss_later else None,
            "others_busy_pct": others,
            "load": loadavg(),
        }

    # -- 4. named snapshots ---------------------------------------------------

    def named(self, guest, ram_mib, tag):
        """Take a named snapshot of the running guest (qcow2 disk + state + memory),
        let it run on, revert to it: round trips, and when the counter moves again."""
        others = self.quiet()
        disk = self.path("disk.qcow2")
        subprocess.check_call(["qemu-img", "create", "-q", "-f", "qcow2", disk, "64M"])
        snaps = self.path("snaps")
        extra = {"disks": [{"id": "d0", "path": disk, "format": "qcow2"}],
                 "snapshots_dir": snaps}
        p, sock, ram, _, _ = self.boot_source(guest, ram_mib, tag, extra)
        self.note("snapshot-create", 'POST /v1/vm/snapshots {"name": "s1"}')
        t0 = time.monotonic()
        st, r = http(sock, "POST", "/v1/vm/snapshots", {"name": "s1"}, timeout=self.a.timeout)
        create_s = time.monotonic() - t0
        if st != 201:
            raise BenchError(f"snapshot create: {st} {r}\n{tail(p.log_path)}")
        with open(os.path.join(snaps, "s1", "memory.raw"), "rb") as f:
            f.seek(COUNTER_GPA)
            at_snapshot = struct.unpack("<Q", f.read(8))[0]
        wait_for(lambda: ram.u64(COUNTER_GPA) > at_snapshot + 1000, 30, "guest after snapshot", p)
        ram.close()
        self.note("snapshot-revert", "POST /v1/vm/snapshots/s1/revert")
        t0 = time.monotonic()
        st, r = http(sock, "POST", "/v1/vm/snapshots/s1/revert", {}, timeout=self.a.timeout)
        revert_s = time.monotonic() - t0
        if st != 200 or r.get("state") != "running":
            raise BenchError(f"snapshot revert: {st} {r}\n{tail(p.log_path)}")
        # The reverted guest runs in new memory: find it, then see the counter move.
        ram = GuestRam(p.pid, guest.ram, guest.code)
        wait_for(ram.ready, 30, "reverted guest RAM", p, 0.0005)
        c = ram.u64(COUNTER_GPA)
        if c < at_snapshot:
            raise BenchError(f"revert: counter {c} below the snapshot's {at_snapshot}")
        wait_for(lambda: ram.u64(COUNTER_GPA) != c, 30, "reverted guest runs", p, 0.0002)
        runs_s = time.monotonic() - t0
        problem = check_memory(ram, guest)
        ram.close()
        if problem:
            raise BenchError(f"revert: {problem}")
        self.note("snapshot-delete", "DELETE /v1/vm/snapshots/s1")
        t0 = time.monotonic()
        st, r = http(sock, "DELETE", "/v1/vm/snapshots/s1", timeout=self.a.timeout)
        delete_s = time.monotonic() - t0
        if st != 200:
            raise BenchError(f"snapshot delete: {st} {r}")
        self.destroy(p, sock)
        return {
            "create_ms": round(create_s * 1e3, 1),
            "revert_ms": round(revert_s * 1e3, 1),
            "revert_guest_runs_ms": round(runs_s * 1e3, 1),
            "delete_ms": round(delete_s * 1e3, 1),
            "others_busy_pct": others,
            "load": loadavg(),
        }

    # -- 3. migration ---------------------------------------------------------

    def migrate(self, guest, ram_mib, tag, transport, downtime):
        others = self.quiet()
        local = transport == "local"
        extra = {"memory_shared": True} if local else None
        src, ssock, sram, fill_s, stamp_rate = self.boot_source(guest, ram_mib, tag, extra)
        sram.close()
        dsock = self.path("dst.sock")
        dcmd = [self.a.oxvm, "serve", "--api-socket", dsock]
        dst = self.procs.start(dcmd, self.env, dsock + ".log")
        wait_for(lambda: api_ready(dsock), 30, "destination API", dst)
        if transport == "tcp":
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                addr = f"tcp:127.0.0.1:{s.getsockname()[1]}"
        else:
            addr = f"unix:{self.path('mig.sock')}"
        inc = {"listen": addr}
        st, r = http(dsock, "POST", "/v1/vm/migration/incoming", inc)
        if st != 202:
            raise BenchError(f"incoming: {st} {r}\n{tail(dst.log_path)}")
        body = {"to": addr, "downtime_ms": downtime,
                "max_iterations": self.a.max_iterations, "wait": True}
        if local:
            body["local"] = True
        self.note("serve", " ".join(dcmd))
        self.note(f"incoming-{transport}", f"POST /v1/vm/migration/incoming {json.dumps(inc)}")
        self.note(f"migrate-{transport}-{downtime}", f"POST /v1/vm/migration {json.dumps(body)}")

        # Observer: last time the source was seen in pre-copy, first time the
        # destination was seen running.
        obs = {"last_precopy": None, "first_stop_copy": None, "dst_running": None,
               "src_cpu": None, "dst_cpu": None}
        done = threading.Event()

        def observe():
            while not done.is_set():
                now = time.monotonic()
                # Thread CPU: the last sample the source gave before it exited.
                # Per group the largest value seen: threads end one by one as the
                # source stops, and counters only grow.
                sc = thread_cpu(src.pid)
                pc = proc_cpu_ms(src.pid)
                if sc and pc is not None:
                    sc["(process, ticks)"] = pc * 1e6
                    merged = dict(obs["src_cpu"] or {})
                    for k, v in sc.items():
                        merged[k] = max(v, merged.get(k, 0))
                    obs["src_cpu"] = merged
                if obs["dst_running"] is None:
                    st1, m = try_get(ssock, "/v1/vm/migration", timeout=1.0)
                    if st1 == 200 and isinstance(m, dict):
                        if m.get("phase") == "precopy":
                            obs["last_precopy"] = now
                        elif m.get("phase") == "stop-and-copy" and obs["first_stop_copy"] is None:
                            obs["first_stop_copy"] = now
                    st2, i = try_get(dsock, "/v1/vm", timeout=1.0)
                    if st2 == 200 and isinstance(i, dict) and i.get("state") == "running":
                        obs["dst_running"] = time.monotonic()
                time.sleep(self.a.poll_ms / 1e3)

        src_cpu0, dst_cpu0 = thread_cpu(src.pid), thread_cpu(dst.pid)
        src_cpu0["(process, ticks)"] = proc_cpu_ms(src.pid) * 1e6
        dst_cpu0["(process, ticks)"] = proc_cpu_ms(dst.pid) * 1e6
        th = threading.Thread(target=observe, daemon=True)
        th.start()
        t0 = time.monotonic()
        st, status = http(ssock, "POST", "/v1/vm/migration", body, timeout=self.a.timeout)
        total = time.monotonic() - t0
        dst_cpu1 = thread_cpu(dst.pid)
        dst_cpu1["(process, ticks)"] = proc_cpu_ms(dst.pid) * 1e6
        if st != 200:
            done.set()
            raise BenchError(f"migrate: {st} {status}\nsource:\n{tail(src.log_path)}\n"
                             f"destination:\n{tail(dst.log_path)}")
        wait_for(lambda: obs["dst_running"] is not None, 10, "destination running (observer)")
        done.set()
        th.join()
        rc = wait_exit(src, 30, "source after migration")
        if rc != 0:
            raise BenchError(f"source exited {rc} after migration\n{tail(src.log_path)}")
        st, dstatus = http(dsock, "GET", "/v1/vm/migration")
        # The guest goes on at the destination, and its memory is whole.
        dram = GuestRam(dst.pid, guest.ram, guest.code)
        wait_for(dram.ready, 10, "destination guest RAM", dst)
        c0 = dram.u64(COUNTER_GPA)
        wait_for(lambda: dram.u64(COUNTER_GPA) != c0, 30, "guest running at the destination", dst)
        st, r = http(dsock, "POST", "/v1/vm/actions/pause")
        if st != 200:
            raise BenchError(f"pause destination: {st} {r}")
        problem = check_memory(dram, guest)
        dram.close()
        if problem:
            raise BenchError(f"after migration: {problem}")
        http(dsock, "POST", "/v1/vm/actions/resume")
        self.destroy(dst, dsock)
        pause_obs = None
        if obs["last_precopy"] is not None:
            pause_obs = round((obs["dst_running"] - obs["last_precopy"]) * 1e3, 1)
        return {
            "total_ms": round(total * 1e3, 1),
            "iteration": status.get("iteration"),
            "bytes_sent_mib": round(status.get("bytes_sent", 0) / 2**20, 1),
            "pages_sent": status.get("pages_sent"),
            "total_pages": status.get("total_pages"),
            "dirty_pages_per_s": status.get("dirty_pages_per_s"),
            "guest_stamps_per_s": round(stamp_rate),
            "boot_fill_s": round(fill_s, 3),
            "remaining_pages": status.get("remaining_pages"),
            "expected_downtime_ms": status.get("expected_downtime_ms"),
            "downtime_ms": status.get("downtime_ms"),
            "observed_pause_ms": pause_obs,
            "mib_per_s": round(status.get("bytes_sent", 0) / 2**20 / total, 0),
            "phase": status.get("phase"),
            "dst_phase": dstatus.get("phase") if isinstance(dstatus, dict) else None,
            "others_busy_pct": others,
            "load": loadavg(),
            # CPU ms per thread group during the migration (source: up to its last
            # sample, a few ms before the answer at most).
            "src_cpu_ms": cpu_delta(src_cpu0, obs["src_cpu"]),
            "dst_cpu_ms": cpu_delta(dst_cpu0, dst_cpu1),
        }


# ---------------------------------------------------------------------------
# Output


def med(rows, key, sub=None):
    xs = [r[key] if sub is None else r.get(key, {}).get(sub) for r in rows]
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(v, nd=1):
    if v is None:
        return "–"
    if isinstance(v, float) and nd == 0:
        return f"{v:.0f}"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def table(title, header, rows):
    print(f"\n{title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        print("| " + " | ".join(r) + " |")


def per_run(res, key, fields):
    for case, rows in res.items():
        vals = "; ".join(", ".join(f"{f}={r.get(f)}" for f in fields) for r in rows)
        log(f"{key} {case}: {vals}")


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def git(*args):
    try:
        return subprocess.run(["git", "-C", REPO, *args], capture_output=True, text=True,
                              timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--sizes", default="256:64,1024:256",
                    help="guest RAM:filled MiB, comma-separated")
    ap.add_argument("--dirty-mib", type=int, default=16, help="region the migration guest stamps")
    ap.add_argument("--downtimes", default="300,30", help="downtime_ms targets")
    ap.add_argument("--transports", default="tcp,unix,local",
                    help="tcp, unix, local (unix + memory_shared + local: the memfd is handed over)")
    ap.add_argument("--max-iterations", type=int, default=30)
    ap.add_argument("--only", default="save,restore,migrate,named")
    ap.add_argument("--drop-caches", action="store_true",
                    help="sync + drop the page cache before each restore (root; cold file)")
    ap.add_argument("--poll-ms", type=float, default=2.0, help="migration observer interval")
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--quiet-wait", type=float, default=60.0,
                    help="before each case, wait up to this long for a quiet machine")
    ap.add_argument("--quiet-threshold", type=float, default=15.0,
                    help="quiet = whole-machine CPU busy below this %% (2 s probe)")
    ap.add_argument("--oxvm", default=os.path.join(REPO, "target/release/oxvm"))
    ap.add_argument("--workdir", default=None, help="where saves go (default: $TMPDIR)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--json-out", default=None)
    a = ap.parse_args()
    only = set(a.only.split(","))
    sizes = [tuple(int(x) for x in s.split(":")) for s in a.sizes.split(",")]
    downtimes = [int(x) for x in a.downtimes.split(",")]
    transports = a.transports.split(",")

    if not os.path.exists(a.oxvm):
        subprocess.check_call(["cargo", "build", "--release"], cwd=REPO)
    work = tempfile.mkdtemp(prefix="oxvm-bench-snapshot-", dir=a.workdir)
    # Other engineers rebuild target/: measure one fixed binary.
    binary = os.path.join(work, "oxvm")
    shutil.copy2(a.oxvm, binary)
    a.oxvm = binary
    rev = git("rev-parse", "--short", "HEAD")
    dirty = git("status", "--porcelain", "--untracked-files=no")
    facts = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "kvm_pvm": os.path.isdir("/sys/module/kvm_pvm"),
        "oxvm_git": rev + ("-dirty" if dirty else ""),
        "oxvm_sha256": sha256(binary)[:16],
        "uptime_at_start": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
        "fs": subprocess.run(["df", "-T", work], capture_output=True, text=True).stdout.splitlines()[-1],
        "args": vars(a),
    }
    log(f"work directory {work}; load at start: {facts['uptime_at_start']}")
    b = Bench(a, work)
    # A SIGTERM ends the script through `finally`, which kills the VMs it started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    results = {"facts": facts, "save": {}, "restore": {}, "migrate": {}, "named": {}}

    def dump():
        if a.json_out:
            with open(a.json_out, "w") as f:
                json.dump(results, f, indent=2)

    try:
        for ram_mib, fill_mib in sizes:
            size = f"{ram_mib} MiB (fill {fill_mib} MiB)"
            if only & {"save", "restore"}:
                idle = Guest(ram_mib, fill_mib, 0)
                for i in range(a.runs):
                    d, saved, sv = b.save(idle, ram_mib, f"save{ram_mib}")
                    results["save"].setdefault(size, []).append(sv)
                    log(f"{size} run {i + 1}: save {sv['save_ms']} ms, memory.raw "
                        f"{sv['memory_raw_alloc_mib']} MiB allocated, load {sv['load']}")
                    if "restore" in only:
                        modes = ("lazy", "copy") if i % 2 == 0 else ("copy", "lazy")
                        for mode in modes:
                            rr = b.restore(idle, d, saved, mode)
                            results["restore"].setdefault(f"{size}, {mode}", []).append(rr)
                            log(f"{size} run {i + 1}: restore {mode}: API running "
                                f"{rr['api_running_ms']} ms, guest runs {rr['guest_runs_ms']} ms")
                    shutil.rmtree(d)
                    dump()
            if "named" in only:
                idle = Guest(ram_mib, fill_mib, 0)
                for i in range(a.runs):
                    n = b.named(idle, ram_mib, f"named{ram_mib}")
                    results["named"].setdefault(size, []).append(n)
                    log(f"{size} run {i + 1}: snapshot {n['create_ms']} ms, revert "
                        f"{n['revert_ms']} ms (guest runs {n['revert_guest_runs_ms']} ms), "
                        f"delete {n['delete_ms']} ms, load {n['load']}")
                    dump()
            if "migrate" in only:
                dirty_g = Guest(ram_mib, fill_mib, a.dirty_mib)
                for i in range(a.runs):
                    for transport in transports:
                        # A local hand-over has no pre-copy: the target does not matter.
                        for dt in (downtimes[:1] if transport == "local" else downtimes):
                            m = b.migrate(dirty_g, ram_mib, f"mig{ram_mib}", transport, dt)
                            key = f"{size}, {transport}, downtime_ms {dt}"
                            results["migrate"].setdefault(key, []).append(m)
                            log(f"{key} run {i + 1}: {m['total_ms']} ms, it {m['iteration']}, "
                                f"{m['bytes_sent_mib']} MiB, dirty {m['dirty_pages_per_s']}/s, "
                                f"downtime {m['downtime_ms']} ms (observed "
                                f"{m['observed_pause_ms']}), load {m['load']}")
                            dump()
    except BenchError as e:
        log(f"FAILED: {e}")
        log(f"logs kept in {work}")
        b.procs.kill_all()
        dump()
        sys.exit(1)
    finally:
        b.procs.kill_all()

    facts["uptime_at_end"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    dump()

    # -- report --------------------------------------------------------------
    print(f"oxvm {facts['oxvm_git']} (binary sha256 {facts['oxvm_sha256']}…), "
          f"kernel {facts['kernel']}, {facts['cpus']} CPUs, PVM: {facts['kvm_pvm']}, "
          f"{facts['date']}")
    print(f"load at start: {facts['uptime_at_start']}")
    print(f"load at end:   {facts['uptime_at_end']}")
    print(f"save directory file system: {facts['fs']}")
    print(f"medians of {a.runs} runs; guests: 1 vCPU, raw code, fill from 16 MiB with a "
          f"non-zero pattern; migration guest stamps {a.dirty_mib} MiB page by page")
    print("\ncommands:\n")
    print("```")
    for k, v in b.commands.items():
        print(f"{k}: {v}")
    print("```")
    if results["save"]:
        rows = []
        for case, rs in results["save"].items():
            rows.append([case, fmt(med(rs, "save_ms")), fmt(med(rs, "memory_raw_len_mib"), 0),
                         fmt(med(rs, "memory_raw_alloc_mib")), fmt(med(rs, "state_oxvm_kib")),
                         fmt(med(rs, "save_mib_per_s"), 0), fmt(med(rs, "boot_fill_s")),
                         fmt(max(r["others_busy_pct"] for r in rs), 0)])
        table("Save (`stop: true`): API round trip",
              ["guest RAM", "save ms", "memory.raw length MiB", "allocated MiB",
               "state.oxvm KiB", "MiB/s (allocated)", "exec → fill done s", "machine busy % before (max)"], rows)
        per_run(results["save"], "save", ["save_ms", "memory_raw_alloc_mib", "others_busy_pct", "load"])
    if results["restore"]:
        rows = []
        for case, rs in results["restore"].items():
            rows.append([case, fmt(med(rs, "api_running_ms")), fmt(med(rs, "guest_runs_ms")),
                         fmt(med(rs, "rss_mib")), fmt(med(rs, "rss_0_5s_later_mib")),
                         fmt(max(r["others_busy_pct"] for r in rs), 0)])
        table("Restore: from exec of `oxvm restore`" +
              (" (page cache dropped before each)" if a.drop_caches else " (memory.raw in the page cache)"),
              ["guest RAM, memory", "API `running` ms", "guest counter moves ms",
               "RSS MiB then", "RSS MiB 0.5 s later", "machine busy % before (max)"], rows)
        per_run(results["restore"], "restore", ["api_running_ms", "guest_runs_ms", "others_busy_pct", "load"])
    if results["named"]:
        rows = []
        for case, rs in results["named"].items():
            rows.append([case, fmt(med(rs, "create_ms")), fmt(med(rs, "revert_ms")),
                         fmt(med(rs, "revert_guest_runs_ms")), fmt(med(rs, "delete_ms")),
                         fmt(max(r["others_busy_pct"] for r in rs), 0)])
        table("Named snapshots of the running guest (one qcow2 disk): API round trips",
              ["guest RAM", "create ms (guest paused)", "revert ms", "revert → counter moves ms",
               "delete ms", "machine busy % before (max)"], rows)
        per_run(results["named"], "named", ["create_ms", "revert_ms", "delete_ms", "load"])
    if results["migrate"]:
        rows = []
        for case, rs in results["migrate"].items():
            rows.append([case, fmt(med(rs, "total_ms")), fmt(med(rs, "iteration"), 0),
                         fmt(med(rs, "bytes_sent_mib")), fmt(med(rs, "mib_per_s"), 0),
                         fmt(med(rs, "guest_stamps_per_s"), 0),
                         fmt(med(rs, "dirty_pages_per_s"), 0), fmt(med(rs, "expected_downtime_ms"), 0),
                         fmt(med(rs, "downtime_ms"), 0), fmt(med(rs, "observed_pause_ms")),
                         fmt(med(rs, "src_cpu_ms", "migrate-send"), 0),
                         fmt(med(rs, "src_cpu_ms", "vcpu"), 0),
                         fmt(med(rs, "dst_cpu_ms", "(process, ticks)"), 0),
                         fmt(max(r["others_busy_pct"] for r in rs), 0)])
        table("Live migration (`wait: true`): request round trip and final status",
              ["guest RAM, transport, target", "total ms", "iterations", "MiB sent", "MiB/s",
               "guest stamps/s before", "dirty_pages_per_s (last round)", "expected downtime ms", "downtime_ms (oxvm)",
               "observed pause ms (API polls)", "source migrate-send CPU ms",
               "source vCPU CPU ms", "destination process CPU ms",
               "machine busy % before (max)"], rows)
        per_run(results["migrate"], "migrate",
                ["total_ms", "iteration", "bytes_sent_mib", "dirty_pages_per_s", "downtime_ms",
                 "observed_pause_ms", "load"])
    if a.keep:
        log(f"kept {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
