#!/usr/bin/env python3
"""Control-API benchmark: exec -> API-ready, and the round trip of `info`.

oxvm:  `oxvm serve --api-socket S` (no VM: the API alone) and
       `oxvm run --api-socket S vm.json` (a 1-vCPU, 32 MiB raw guest that halts).
       Ready = the first `GET /v1/version` over the socket that answers 200.
QEMU:  `qemu-system-x86_64 -M microvm -S -qmp unix:S,server=on,wait=off` with the
       same memory, no devices. Ready = the QMP greeting read after `qmp_capabilities`
       answered.

For each launch: wall time from just before fork/exec to ready, and the CPU time the
process had used at that moment (sum over its threads of /proc/<pid>/task/*/schedstat
field 1, nanoseconds) -- Firecracker's promise is 8 CPU ms to API-ready.

Round trip: N sequential `GET /v1/vm` (oxvm; each on a new connection, as `oxvm ctl`
does) and N `query-status` (QMP; one connection, negotiated once). Median and p99.

Usage: python3 bench/api.py [--runs 20] [--requests 1000] [--oxvm PATH]
"""
import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HALT_GUEST = bytes([0xF4, 0xEB, 0xFD])  # hlt; jmp $-1


def cpu_ns(pid):
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return total


def http_get(path, sock_path, timeout=5.0):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(sock_path)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    status = int(data.split(b" ", 2)[1])
    return status, data.split(b"\r\n\r\n", 1)[1]


def wait_ready(probe, pid, deadline_s=30.0):
    start = time.monotonic()
    while time.monotonic() - start < deadline_s:
        try:
            if probe():
                return True
        except OSError:
            pass
        time.sleep(0.0002)
    raise RuntimeError(f"pid {pid} not ready within {deadline_s} s")


def launch(cmd, probe):
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_ready(probe, p.pid)
    wall = time.monotonic() - t0
    cpu = cpu_ns(p.pid)
    return p, wall, cpu


def stop(p):
    p.kill()
    p.wait()


def oxvm_ready(sock):
    def probe():
        st, _ = http_get("/v1/version", sock, timeout=1.0)
        return st == 200
    return probe


class Qmp:
    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(5.0)
        self.s.connect(path)
        self.f = self.s.makefile("rwb")
        json.loads(self.f.readline())  # greeting
        self.cmd("qmp_capabilities")

    def cmd(self, name):
        self.f.write(json.dumps({"execute": name}).encode() + b"\n")
        self.f.flush()
        while True:
            msg = json.loads(self.f.readline())
            if "return" in msg or "error" in msg:
                return msg

    def close(self):
        self.s.close()


def qmp_ready(sock):
    def probe():
        q = Qmp(sock)
        q.close()
        return True
    return probe


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--oxvm", default=os.path.join(REPO, "target/release/oxvm"))
    ap.add_argument("--qemu", default="qemu-system-x86_64")
    a = ap.parse_args()
    if not os.path.exists(a.oxvm):
        subprocess.check_call(["cargo", "build", "--release"], cwd=REPO)

    work = tempfile.mkdtemp(prefix="oxvm-bench-api-")
    with open(os.path.join(work, "halt.bin"), "wb") as f:
        f.write(HALT_GUEST)
    vm = {
        "name": "benchapi", "vcpus": 1, "memory_mib": 32,
        "boot": {"raw": {"path": "halt.bin", "load_address": 0x100000}},
        "serial": {"mode": "off"},
    }
    vm_file = os.path.join(work, "vm.json")
    with open(vm_file, "w") as f:
        json.dump(vm, f)
    os.environ["OXVM_RUNTIME_DIR"] = os.path.join(work, "run")
    sock = os.path.join(work, "api.sock")

    cases = {
        "oxvm serve (API only)": ([a.oxvm, "serve", "--api-socket", sock], oxvm_ready(sock)),
        "oxvm run (API + VM)": ([a.oxvm, "run", "--api-socket", sock, vm_file], oxvm_ready(sock)),
        "QEMU microvm -S (QMP)": ([a.qemu, "-M", "microvm", "-S", "-m", "32", "-nodefaults",
                                   "-no-user-config", "-display", "none",
                                   "-qmp", f"unix:{sock},server=on,wait=off"], qmp_ready(sock)),
    }
    print(f"exec -> API-ready, {a.runs} launches each (medians)", file=sys.stderr)
    ready = {}
    for name, (cmd, probe) in cases.items():
        walls, cpus = [], []
        for _ in range(a.runs):
            if os.path.exists(sock):
                os.unlink(sock)
            p, wall, cpu = launch(cmd, probe)
            stop(p)
            walls.append(wall * 1e3)
            cpus.append(cpu / 1e6)
        ready[name] = (statistics.median(walls), statistics.median(cpus))

    # Round trips against a running VM.
    if os.path.exists(sock):
        os.unlink(sock)
    p, _, _ = launch(cases["oxvm run (API + VM)"][0], oxvm_ready(sock))
    lat = []
    for _ in range(a.requests):
        t = time.monotonic()
        st, _ = http_get("/v1/vm", sock)
        lat.append((time.monotonic() - t) * 1e6)
        assert st == 200
    stop(p)
    os.unlink(sock) if os.path.exists(sock) else None
    p, _, _ = launch(cases["QEMU microvm -S (QMP)"][0], qmp_ready(sock))
    q = Qmp(sock)
    qlat = []
    for _ in range(a.requests):
        t = time.monotonic()
        r = q.cmd("query-status")
        qlat.append((time.monotonic() - t) * 1e6)
        assert "return" in r
    q.close()
    stop(p)

    print("| launch | exec -> API-ready (wall ms) | CPU ms used by then |")
    print("|---|---|---|")
    for name, (w, c) in ready.items():
        print(f"| {name} | {w:.1f} | {c:.1f} |")
    print()
    print(f"| round trip ({a.requests} sequential) | median µs | p99 µs |")
    print("|---|---|---|")
    print(f"| oxvm GET /v1/vm (new connection each) | {statistics.median(lat):.0f} | {pct(lat, 99):.0f} |")
    print(f"| QEMU QMP query-status (one connection) | {statistics.median(qlat):.0f} | {pct(qlat, 99):.0f} |")
    ox, qe = ready["oxvm serve (API only)"], ready["QEMU microvm -S (QMP)"]
    print(f"\nratios oxvm serve / QEMU: wall {ox[0] / qe[0]:.2f}, CPU {ox[1] / qe[1]:.2f}; "
          f"info median {statistics.median(lat) / statistics.median(qlat):.2f}")


if __name__ == "__main__":
    main()
