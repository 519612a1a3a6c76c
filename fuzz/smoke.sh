#!/usr/bin/env bash
# A bounded fuzzing run of every target, for CI: bash fuzz/smoke.sh [seconds per target]
# (default 60), starting from the seeds (seed-corpus.sh) and the kept corpus (corpus-kept/,
# see README.md). Fails on the first crash, leak, timeout or out-of-memory; libFuzzer prints the
# reproducer's path under fuzz/artifacts/<target>/, replay it with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run <target> fuzz/artifacts/<target>/<file>
set -euo pipefail
seconds="${1:-60}"
cd "$(dirname "$0")"

if ! command -v cargo-fuzz >/dev/null; then
    cargo install cargo-fuzz --locked --version 0.13.2
fi
./seed-corpus.sh

# cargo-fuzz passes -Z flags (the address sanitizer among them); only a stable toolchain can
# be had here, and RUSTC_BOOTSTRAP=1 lets it accept them.
export RUSTC_BOOTSTRAP=1
for target in $(cargo fuzz list); do
    mkdir -p "corpus/$target" "corpus-kept/$target"
    echo "fuzz: $target for ${seconds}s"
    # Two corpus directories: libFuzzer writes what it finds to the first (git-ignored) and
    # starts from both, so every run begins where the longer runs recorded in README.md left
    # off (corpus-kept/, minimized and committed).
    # -max_len keeps mutations fast although some seeds are hundreds of KiB; the structure
    # worth mutating sits in their first few KiB. 2 GiB RSS is far above what any input
    # justifies, so reaching it is a finding.
    cargo fuzz run "$target" "corpus/$target" "corpus-kept/$target" -- \
        -max_total_time="$seconds" -max_len=4096 -rss_limit_mb=2048 -timeout=10 -print_final_stats=1
done
