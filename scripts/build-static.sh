#!/usr/bin/env bash
# Builds the fully static release binary (musl libc linked in) that runs in Woodpecker's
# official images, scratch and Alpine alike, and anywhere else on that architecture.
# Installs what it needs: the Rust target (rustup) and Debian's musl-tools. Builds natively:
# the target's architecture must be this machine's (README.md, "Official images", has the
# aarch64 recipes).
#
# Usage: bash scripts/build-static.sh [rust-target]   (default $(uname -m)-unknown-linux-musl)
# Output (the path is printed as the last line of stdout):
#   $CARGO_TARGET_DIR/static/<target>/woodpecker-s3-logs        stripped, what ships
#   $CARGO_TARGET_DIR/static/<target>/woodpecker-s3-logs.debug  its line tables (debuglink)
set -euo pipefail
cd "$(dirname "$0")/.."

target="${1:-$(uname -m)-unknown-linux-musl}"
if [ "${target%%-*}" != "$(uname -m)" ]; then
    echo "build-static: $target is not this machine's architecture ($(uname -m)); see README.md for cross builds" >&2
    exit 1
fi
target_dir="${CARGO_TARGET_DIR:-$PWD/target}"

if ! rustup target list --installed | grep -qx "$target"; then
    echo "==> rustup target add $target" >&2
    rustup target add "$target" >&2
fi
# The C parts (aws-lc, zstd) are compiled against musl by musl-gcc.
if ! command -v musl-gcc >/dev/null; then
    echo "==> installing musl-tools (Debian)" >&2
    sudo_cmd=()
    [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq musl-tools >&2
fi

echo "==> cargo build --release --locked --target $target -p woodpecker-s3-logs (line tables kept for the split)" >&2
CARGO_PROFILE_RELEASE_DEBUG=line-tables-only CARGO_PROFILE_RELEASE_STRIP=none \
    cargo build --release --locked --target "$target" -p woodpecker-s3-logs >&2

built="$target_dir/$target/release/woodpecker-s3-logs"
out="$target_dir/static/$target"
mkdir -p "$out"
# The usual distribution split: debug info into its own file, the shipped binary stripped of
# it and of symbols, with a debuglink so gdb/addr2line find the .debug file when it is beside.
objcopy --only-keep-debug "$built" "$out/woodpecker-s3-logs.debug"
objcopy --strip-all --add-gnu-debuglink="$out/woodpecker-s3-logs.debug" "$built" "$out/woodpecker-s3-logs.tmp"
mv "$out/woodpecker-s3-logs.tmp" "$out/woodpecker-s3-logs"

description="$(file -b "$out/woodpecker-s3-logs")"
echo "$out/woodpecker-s3-logs: $description, $(du -h "$out/woodpecker-s3-logs" | cut -f1)" >&2
case "$description" in
    *"static-pie linked"* | *"statically linked"*) ;;
    *) echo "not a static binary: $description" >&2; exit 1 ;;
esac
echo "$out/woodpecker-s3-logs"
