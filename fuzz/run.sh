#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 60), from the committed
# seeds; a crash fails the script and leaves its input in fuzz/artifacts/.
# Stable toolchain: RUSTC_BOOTSTRAP=1 lets cargo-fuzz use its nightly flags.
set -euo pipefail
secs=${1:-60}
cd "$(dirname "$0")"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
for t in sse_reader publish request_path http_head; do
    mkdir -p "corpus/$t"
    echo "fuzzing $t for ${secs}s"
    cargo fuzz run "$t" "corpus/$t" "seeds/$t" -- -max_total_time="$secs" -max_len=4096
done
