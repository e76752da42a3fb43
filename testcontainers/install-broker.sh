#!/usr/bin/env bash
# Installs the pinned test broker (nisshi 0.8.1, a Kafka-protocol broker in Rust)
# into ~/.cargo/bin when it is missing. Safe to run concurrently: a lock file
# makes a second caller wait for the first build instead of starting another.
#
# nisshi needs rustc >= 1.96, so it builds with the nightly toolchain. Without
# nightly, tansu 0.6.0 (its predecessor) builds on stable with the same features.
set -euo pipefail

NISSHI_VERSION=0.8.1
TANSU_VERSION=0.6.0
FEATURES=dynostore,libsql
CARGO_BIN="${CARGO_HOME:-$HOME/.cargo}/bin"

installed() {
    if [ -n "${KAVARI_BROKER_BIN:-}" ] && [ -x "$KAVARI_BROKER_BIN" ]; then return 0; fi
    if [ -x "$CARGO_BIN/nisshi" ] && "$CARGO_BIN/nisshi" --version 2>/dev/null | grep -q "$NISSHI_VERSION"; then return 0; fi
    if [ -x "$CARGO_BIN/tansu" ]; then return 0; fi
    return 1
}

if installed; then
    echo "install-broker: test broker already installed in $CARGO_BIN"
    exit 0
fi

mkdir -p "$CARGO_BIN"
exec 9>"$CARGO_BIN/.kavari-broker-install.lock"
flock 9
if installed; then
    echo "install-broker: test broker installed by a concurrent run"
    exit 0
fi

start=$(date +%s)
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    echo "install-broker: building nisshi $NISSHI_VERSION with cargo +nightly; this takes about 11 minutes on 2 cores, once" >&2
    cargo +nightly install nisshi --version "$NISSHI_VERSION" --no-default-features --features "$FEATURES" --locked
else
    echo "install-broker: no nightly toolchain; building tansu $TANSU_VERSION on stable (about 11 minutes on 2 cores, once)" >&2
    cargo install tansu --version "$TANSU_VERSION" --no-default-features --features "$FEATURES" --locked
fi
echo "install-broker: done in $(( $(date +%s) - start )) s" >&2
