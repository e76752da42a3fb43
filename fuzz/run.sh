#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 30) each, after installing what
# cargo fuzz needs (the nightly toolchain, cargo-fuzz) when it is missing.
# A crash leaves its input in fuzz/artifacts/TARGET/ and fails the run; turn
# it into a regression test beside the decoder it broke.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-30}"
if ! rustup toolchain list | grep -q '^nightly'; then
    echo "fuzz: installing the nightly toolchain (cargo fuzz needs it)"
    rustup toolchain install nightly --profile minimal
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz 0.13.2 (about a minute, once)"
    cargo +nightly install cargo-fuzz --version 0.13.2 --locked
fi
cargo +nightly fuzz build
log="$(mktemp)"
for target in $(cargo +nightly fuzz list); do
    echo "fuzz: $target for ${seconds} s"
    mkdir -p "corpus/$target"
    # A decoder may refuse what it reads; it may not panic, abort, allocate
    # more than 256 MiB at once or grow past 2 GiB.
    status=0
    cargo +nightly fuzz run "$target" "corpus/$target" -- \
        -max_total_time="$seconds" -malloc_limit_mb=256 -rss_limit_mb=2048 \
        -print_final_stats=1 >"$log" 2>&1 || status=$?
    grep -E '^(Done|stat::number_of_executed_units|stat::peak_rss_mb)' "$log" || true
    if [ "$status" -ne 0 ] || ! grep -q '^Done' "$log"; then
        tail -n 60 "$log" >&2
        echo "fuzz: $target failed (exit $status); an input that breaks it is in fuzz/artifacts/$target/" >&2
        exit 1
    fi
done
