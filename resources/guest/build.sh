#!/usr/bin/env bash
# Build oxvm's test guest kernel (Linux 6.1 from Debian's linux-source-6.1)
# and put it into <repo>/target/guest/: vmlinux (ELF), bzImage (LZ4), config,
# HASH. Results are cached by a hash of all inputs; a cache hit only copies.
#
# Usage: bash resources/guest/build.sh
# Environment:
#   OXVM_GUEST_CACHE  cache directory (default: $HOME/.cache/oxvm/guest)
#
# See resources/guest/README.md.
set -euo pipefail

GUEST_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$GUEST_DIR/../.." && pwd)"
OUT_DIR="$REPO/target/guest"
CACHE_ROOT="${OXVM_GUEST_CACHE:-${HOME:?HOME is not set; set OXVM_GUEST_CACHE}/.cache/oxvm/guest}"
SRC_PKG="linux-source-6.1"
SRC_TARBALL="/usr/src/linux-source-6.1.tar.xz"
DEPS=(linux-source-6.1 flex bison bc libelf-dev libssl-dev lz4 build-essential xz-utils patch)

log() { echo "guest kernel: $*" >&2; }
die() { echo "guest kernel: ERROR: $*" >&2; exit 1; }

# The inputs, relative to a recipe directory (resources/guest/, or the
# snapshot a build takes of it): this script, the config fragment, the
# selftest (oxvm_selftest.c: runner, boot/idle checks; one file per device
# family; their shared header; all built into drivers/misc/) and the patches.
input_files() {
	local dir="$1" f
	(
		cd "$dir"
		shopt -s nullglob
		for f in build.sh config.fragment oxvm_selftest*.c oxvm_selftest.h patches/*.patch; do
			[[ -f "$f" ]] && echo "$f"
		done
	)
}

pkg_installed_version() {
	local status
	status="$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)"
	if [[ "$status" == "install ok installed" ]]; then
		dpkg-query -W -f='${Version}' "$1"
	fi
}

# Version of linux-source-6.1 that the build uses: the installed one, or
# else the one apt would install (known without network when apt lists
# exist), or else empty (unknown until installed).
source_version() {
	local v
	v="$(pkg_installed_version "$SRC_PKG")"
	if [[ -z "$v" ]] && command -v apt-cache >/dev/null; then
		v="$(apt-cache policy "$SRC_PKG" 2>/dev/null | awk '/Candidate:/ {print $2}')"
		[[ "$v" == "(none)" ]] && v=""
	fi
	echo "$v"
}

inputs_hash() {
	local version="$1" dir="$2" f
	{
		echo "linux-source-6.1 $version"
		while IFS= read -r f; do
			echo "== $f"
			cat "$dir/$f"
		done < <(input_files "$dir")
	} | sha256sum | cut -d' ' -f1
}

# Copy a complete cache entry to target/guest/ (atomically per file).
install_outputs() {
	local dir="$1" hash="$2" f
	mkdir -p "$OUT_DIR"
	for f in vmlinux bzImage config; do
		cp "$dir/$f" "$OUT_DIR/.$f.tmp.$$"
		mv -f "$OUT_DIR/.$f.tmp.$$" "$OUT_DIR/$f"
	done
	echo "$hash" > "$OUT_DIR/.HASH.tmp.$$"
	mv -f "$OUT_DIR/.HASH.tmp.$$" "$OUT_DIR/HASH"
}

cache_complete() { [[ -f "$1/complete" && -f "$1/vmlinux" && -f "$1/bzImage" && -f "$1/config" ]]; }

ensure_deps() {
	local missing=() p
	for p in "${DEPS[@]}"; do
		[[ -n "$(pkg_installed_version "$p")" ]] || missing+=("$p")
	done
	[[ ${#missing[@]} -eq 0 ]] && return 0
	local sudo=()
	if [[ $(id -u) -ne 0 ]]; then
		command -v sudo >/dev/null || die "missing packages (${missing[*]}) and not root; install them first"
		sudo=(sudo -n)
	fi
	log "installing ${missing[*]}"
	local apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -o Acquire::Retries=3)
	"${apt[@]}" update -q </dev/null >&2 || die "apt-get update failed"
	"${apt[@]}" install -y -q --no-install-recommends "${missing[@]}" </dev/null >&2 \
		|| die "apt-get install ${missing[*]} failed"
}

# Check that every option the fragment sets survived olddefconfig.
verify_config() {
	local config="$1" fragment="$2" line opt bad=0
	while IFS= read -r line || [[ -n "$line" ]]; do
		if [[ "$line" =~ ^(CONFIG_[A-Za-z0-9_]+)=(.*)$ ]]; then
			opt="${BASH_REMATCH[1]}"
			if ! grep -qxF -- "$line" "$config"; then
				echo "guest kernel: config: $opt: fragment wants '${line#*=}', .config has: $(grep -E "^(# )?$opt[= ]" "$config" || echo 'nothing (unknown or unmet dependency)')" >&2
				bad=1
			fi
		elif [[ "$line" =~ ^#\ (CONFIG_[A-Za-z0-9_]+)\ is\ not\ set$ ]]; then
			opt="${BASH_REMATCH[1]}"
			if grep -qE "^$opt=" "$config"; then
				echo "guest kernel: config: $opt: fragment wants it unset, .config has: $(grep -E "^$opt=" "$config")" >&2
				bad=1
			fi
		fi
	done < "$fragment"
	[[ $bad -eq 0 ]] || die "config fragment not satisfied (see the options above)"
}

# ---- Fast path: cache hit, no lock, no apt, no build. ----------------------
version="$(source_version)"
if [[ -n "$version" ]]; then
	hash="$(inputs_hash "$version" "$GUEST_DIR")"
	if cache_complete "$CACHE_ROOT/$hash"; then
		install_outputs "$CACHE_ROOT/$hash" "$hash"
		echo "guest kernel: cached ${hash:0:12} (linux-source-6.1 $version) copied from $CACHE_ROOT/$hash to $OUT_DIR"
		exit 0
	fi
fi

# ---- Slow path, serialized between concurrent invocations. ------------------
mkdir -p "$CACHE_ROOT"
exec 9>"$CACHE_ROOT/.lock"
if ! flock -n 9; then
	log "another build holds $CACHE_ROOT/.lock; waiting"
	flock 9
fi

ensure_deps
version="$(pkg_installed_version "$SRC_PKG")"
[[ -n "$version" ]] || die "$SRC_PKG is not installed"
[[ -f "$SRC_TARBALL" ]] || die "$SRC_TARBALL missing (package $SRC_PKG $version installed?)"

# Trees of earlier failed builds (nobody else builds: we hold the lock).
for stale in "$CACHE_ROOT"/build.*; do
	[[ -d "$stale" ]] && { log "removing stale $stale"; rm -rf "$stale"; }
done

start=$SECONDS
build="$(mktemp -d "$CACHE_ROOT/build.XXXXXX")"
buildlog="$build/build.log"

# Snapshot the inputs: the hash and the build both use this copy, so edits
# made to resources/guest/ during the build cannot end up in a cache entry
# labelled with another hash.
inputs="$build/inputs"
mkdir -p "$inputs/patches"
while IFS= read -r f; do
	cp "$GUEST_DIR/$f" "$inputs/$f"
done < <(input_files "$GUEST_DIR")
hash="$(inputs_hash "$version" "$inputs")"
entry="$CACHE_ROOT/$hash"

if cache_complete "$entry"; then
	# Built meanwhile by a concurrent invocation, or the hash became known
	# only after installing the package.
	rm -rf "$build"
	install_outputs "$entry" "$hash"
	echo "guest kernel: cached ${hash:0:12} (linux-source-6.1 $version) copied from $entry to $OUT_DIR"
	exit 0
fi

on_exit() {
	local rc=$?
	if [[ $rc -ne 0 && -d "$build" ]]; then
		if [[ -f "$buildlog" ]]; then
			echo "---- last lines of $buildlog ----" >&2
			tail -n 40 "$buildlog" >&2 || true
		fi
		echo "guest kernel: FAILED after $((SECONDS - start)) s; build tree kept at $build (removed by the next run)" >&2
	fi
}
trap on_exit EXIT

log "building ${hash:0:12} from $SRC_PKG $version in $build (log: $buildlog)"
tar -C "$build" -xf "$SRC_TARBALL"
src="$build/linux-source-6.1"
[[ -d "$src" ]] || die "$SRC_TARBALL did not contain linux-source-6.1/"

while IFS= read -r f; do
	case "$f" in
	patches/*.patch)
		log "applying ${f#patches/}"
		patch -d "$src" -p1 --forward --batch --quiet < "$inputs/$f" || die "patch $f failed"
		;;
	oxvm_selftest*.c)
		cp "$inputs/$f" "$src/drivers/misc/"
		echo "obj-y += ${f%.c}.o" >> "$src/drivers/misc/Makefile"
		;;
	oxvm_selftest*.h)
		cp "$inputs/$f" "$src/drivers/misc/"
		;;
	esac
done < <(input_files "$inputs")

log "configuring (tinyconfig + config.fragment)"
{
	make -C "$src" tinyconfig
	(cd "$src" && scripts/kconfig/merge_config.sh -m .config "$inputs/config.fragment")
	make -C "$src" olddefconfig
} >> "$buildlog" 2>&1 || die "configuration failed"
verify_config "$src/.config" "$inputs/config.fragment"

log "compiling with -j$(nproc)"
make -C "$src" -j"$(nproc)" vmlinux bzImage >> "$buildlog" 2>&1 || die "kernel build failed"

out="$build/out"
mkdir -p "$out"
cp "$src/vmlinux" "$out/vmlinux"
cp "$src/arch/x86/boot/bzImage" "$out/bzImage"
cp "$src/.config" "$out/config"
{
	echo "hash=$hash"
	echo "linux-source-6.1=$version"
	echo "built=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
	echo "seconds=$((SECONDS - start))"
} > "$out/complete"
rm -rf "$entry"
mv "$out" "$entry"
rm -rf "$build"

install_outputs "$entry" "$hash"
echo "guest kernel: built ${hash:0:12} (linux-source-6.1 $version) in $((SECONDS - start)) s, cached in $entry, copied to $OUT_DIR"
