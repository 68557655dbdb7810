#!/bin/sh
# Builds the static target tools: dist/<triple>/lava-multinode for each target below, with
# the workspace's size-optimised `tools` profile (opt-level z, LTO, panic=abort, stripped),
# linked statically against musl by rust-lld (no C cross toolchain needed). They are the
# tools for devices and guests: built without the `vm-group` feature (the host's launcher,
# with its image decoders, YAML and regex), which keeps them under 1 MiB.
#
# Usage: packaging/build-static.sh [TRIPLE ...]
#   default triples: x86_64-unknown-linux-musl aarch64-unknown-linux-musl
#                    armv7-unknown-linux-musleabihf (skipped, with a note, when rustup cannot
#                    install its standard library)
# Environment: LAVA_MULTINODE_MAX_SIZE (bytes, default 1048576): a larger binary fails the build.
set -eu

cd "$(dirname "$0")/.."
ROOT=$(pwd)
MAX_SIZE=${LAVA_MULTINODE_MAX_SIZE:-1048576}
REQUIRED="x86_64-unknown-linux-musl aarch64-unknown-linux-musl"
OPTIONAL="armv7-unknown-linux-musleabihf"
if [ $# -gt 0 ]; then
    REQUIRED="$*"
    OPTIONAL=""
fi

say() { printf 'build-static: %s\n' "$*" >&2; }

# `CARGO_TARGET_<TRIPLE>_LINKER`: upper case, '-' and '.' as '_'.
linker_var() {
    printf 'CARGO_TARGET_%s_LINKER' "$(printf '%s' "$1" | tr 'a-z.-' 'A-Z__')"
}
rustflags_var() {
    printf 'CARGO_TARGET_%s_RUSTFLAGS' "$(printf '%s' "$1" | tr 'a-z.-' 'A-Z__')"
}

has_target() {
    rustup target list --installed 2>/dev/null | grep -qx "$1"
}

build() {
    triple=$1
    out="$ROOT/dist/$triple"
    say "building $triple"
    # rust-lld ships with the toolchain; musl's crt objects and libc come with rust-std.
    # A non-PIE executable: `file` reports it "statically linked" on every target.
    env "$(linker_var "$triple")=rust-lld" \
        "$(rustflags_var "$triple")=-C target-feature=+crt-static -C relocation-model=static" \
        cargo build --quiet -p lava-multinode --profile tools --no-default-features --target "$triple"
    mkdir -p "$out"
    cp "$ROOT/target/$triple/tools/lava-multinode" "$out/lava-multinode"
    size=$(wc -c <"$out/lava-multinode")
    info=$(file -b "$out/lava-multinode")
    say "$out/lava-multinode: $size bytes; $info"
    case "$info" in
        *"statically linked"*) ;;
        *) say "ERROR: $triple binary is not statically linked"; return 1 ;;
    esac
    if [ "$size" -ge "$MAX_SIZE" ]; then
        say "ERROR: $triple binary is $size bytes, not under $MAX_SIZE"
        return 1
    fi
}

for triple in $REQUIRED; do
    if ! has_target "$triple"; then
        say "installing the $triple standard library"
        rustup target add "$triple"
    fi
    build "$triple"
done

for triple in $OPTIONAL; do
    if has_target "$triple" || rustup target add "$triple" >/dev/null 2>&1; then
        build "$triple"
    else
        say "skipping $triple: 'rustup target add $triple' failed (no rust-std for this toolchain here)"
    fi
done
