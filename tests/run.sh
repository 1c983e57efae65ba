#!/usr/bin/env bash
# The whole test suite on a fresh machine: builds (or takes from cache) the test guest
# kernel, checks formatting and lints, then runs every test, including the ones that
# boot Linux. `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

# Host tools the tests use: qemu-img (checks qcow2 images the guest wrote), ip
# (network namespaces and taps for the NIC test), python3 (the UDP echo server).
need=()
command -v qemu-img >/dev/null || need+=(qemu-utils)
command -v ip >/dev/null || need+=(iproute2)
command -v python3 >/dev/null || need+=(python3)
if ((${#need[@]})); then
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=600 "${need[@]}"
fi

bash resources/guest/build.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
