#!/usr/bin/env bash
# Runs the state-machine fuzz target for a bounded time: `coordinator/fuzz/run.sh [SECONDS per target]`.
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz --locked`).
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-60}
for target in state_machine; do
    mkdir -p "corpus/$target"
    # A private copy of the seed corpus, so that a run leaves the checkout clean.
    work=$(mktemp -d)
    cp -r "corpus/$target/." "$work/"
    cargo +nightly fuzz run "$target" "$work" -- -max_total_time="$seconds" -max_len=8192 -timeout=10
    rm -rf "$work"
done
