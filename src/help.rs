//! The long `--help` texts (examples, formats, exit status), kept out of `main.rs`.

pub const RUN_EXAMPLES: &str = r#"Examples:
  oxvm run resources/examples/linux-selftest.json
  oxvm run resources/examples/linux-selftest.tmpl     (an OpenNebula template)
  RUST_LOG=info oxvm run --log-level debug vm.json
  oxvm run --api-socket /run/demo.sock vm.json   (then: oxvm ctl --api-socket /run/demo.sock info)

A complete VM file (JSON; relative paths resolve against the file's folder;
unknown fields are an error):
  {
    "name": "demo",
    "vcpus": 2,
    "memory_mib": 256,
    "boot": {
      "kernel": "vmlinux",
      "initrd": null,
      "cmdline": "console=ttyS0 reboot=k panic=-1",
      "entry": "auto"
    },
    "serial": { "mode": "stdout" },
    "on_reboot": "restart",
    "cpu": { "kvm_pv_features": "safe" }
  }

  boot.kernel       ELF vmlinux or bzImage (detected from the file)
  boot.entry        auto (PVH if the ELF has the note, else 64-bit) | linux64 | pvh
  serial.mode       stdout | file (with "path") | off
  on_reboot         restart (reboot in place) | exit (end the process)
  cpu.kvm_pv_features  "safe" (default) | "host" | "none" | ["clocksource2", ...]

Exit status: 0 when the guest powers off (or reboots with on_reboot=exit, or
is destroyed through the API), 1 on an error (bad VM file, KVM failure, a vCPU that failed: registers are
dumped to stderr), 128+N when stopped by signal N (SIGTERM, SIGINT, SIGHUP)."#;

pub const SERVE_EXAMPLES: &str = r#"Examples:
  oxvm serve --api-socket /run/oxvm-demo.sock &
  oxvm ctl --api-socket /run/oxvm-demo.sock deploy vm.json     (create and boot)
  oxvm ctl --api-socket /run/oxvm-demo.sock create vm.json     (create only ...)
  oxvm ctl --api-socket /run/oxvm-demo.sock boot               (... then boot)

The process starts with no VM (state "empty") and waits for one over the API
(PUT /v1/vm or POST /v1/vm/deploy). Once that VM stops, the process exits.
The routes are in docs/api.md; the socket is created with mode 0600.

Exit status: as for `oxvm run`: 0 when the guest powers off (or is destroyed
through the API), 1 on an error, 128+N when stopped by signal N."#;

pub const CONVERT_EXAMPLES: &str = r#"Examples:
  oxvm config convert resources/examples/opennebula-vm.tmpl
  oxvm config convert vm.tmpl > vm.json

An OpenNebula template (names are case-insensitive; every attribute and how it
maps is in docs/opennebula-templates.md):
  NAME   = "web 1"
  MEMORY = 512                  # MiB
  VCPU   = 2
  OS     = [ KERNEL = "vmlinux", KERNEL_CMD = "console=ttyS0", ROOT = "vda" ]
  DISK   = [ SOURCE = "root.qcow2", DRIVER = "qcow2", CACHE = "none",
             DISCARD = "unmap", TOTAL_BYTES_SEC = 104857600 ]
  DISK   = [ SOURCE = "context.iso", TYPE = "CDROM" ]
  NIC    = [ TARGET = "one-7-0", BRIDGE = "br0", MAC = "02:00:c0:a8:01:05",
             MODEL = "virtio" ]
  RAW    = [ TYPE = "oxvm", DATA = "{ \"on_reboot\": \"exit\" }" ]

The JSON VM file goes to stdout with relative paths as written (both formats
resolve them against the file's folder, so save the JSON next to the template).
Each attribute that is not supported is named on stderr as
"oxvm: warning: line N: ATTRIBUTE: ...". A JSON VM file is accepted too and
printed with every default filled in.
Exit status: 0 when converted (warnings or not), 1 when the file is refused."#;

pub const RESTORE_EXAMPLES: &str = r#"Examples:
  oxvm ctl --api-socket /run/oxvm/web.sock save /var/lib/oxvm/web.save --stop
  oxvm restore /var/lib/oxvm/web.save
  oxvm restore --api-socket /run/oxvm/web.sock --memory copy /var/lib/oxvm/web.save
  oxvm restore --disk root=/new/place/root.qcow2 --tap eth0=one-7-0 DIR

The state file is checked before anything starts (magic, checksum, format version,
this host's CPU features); a refused file exits 1 with the reason. Exit status as
for `oxvm run`."#;
