#!/usr/bin/env bash
# The whole test suite on a fresh machine: builds (or takes from cache) the test guest
# kernel, checks formatting and lints, then runs every test, including the ones that
# boot Linux. `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

bash resources/guest/build.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
