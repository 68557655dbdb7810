#!/bin/sh
# Builds the static target tools: dist/<triple>/lava-multinode for each target below, with
# the workspace's size-optimised `tools` profile (opt-level z, LTO, panic=abort, stripped),
# linked statically against musl (its own resolver reads /etc/hosts and /etc/resolv.conf: host
# names resolve without glibc's NSS). They are the tools for devices and guests: built without
# the `vm-group` feature (the host's launcher, with its image decoders, YAML and regex), which
# keeps them under 1 MiB.
#
# Usage: packaging/build-static.sh [TRIPLE ...]
#   default triples: x86_64-unknown-linux-musl aarch64-unknown-linux-musl
#                    armv7-unknown-linux-musleabihf
# Environment: LAVA_MULTINODE_MAX_SIZE (bytes, default 1048576): a larger binary fails the build.
#
# x86_64 and aarch64: the stable toolchain with rustup's standard library for the target
# (added when missing), linked by rust-lld (no C cross toolchain needed).
#
# armv7 (32-bit ARM, hard float): rustup serves no standard library for this target, so it is
# built from source on the nightly toolchain (`-Zbuild-std`, with its rust-src component) and
# linked by Debian's cross toolchain against Debian's musl for armhf: gcc-arm-linux-gnueabihf
# and musl-dev:armhf (`dpkg --add-architecture armhf`), whose arm-linux-musleabihf-gcc wrapper
# supplies musl's start files and libc. Rust's standard library asks for `libunwind`; GCC's
# unwinder (libgcc_eh.a) is that library. tests/prepare.sh installs all of it.
set -eu

cd "$(dirname "$0")/.."
ROOT=$(pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
MAX_SIZE=${LAVA_MULTINODE_MAX_SIZE:-1048576}
TRIPLES=${*:-x86_64-unknown-linux-musl aarch64-unknown-linux-musl armv7-unknown-linux-musleabihf}

say() { printf 'build-static: %s\n' "$*" >&2; }

# `CARGO_TARGET_<TRIPLE>_<NAME>`: upper case, '-' and '.' as '_'.
target_var() {
    printf 'CARGO_TARGET_%s_%s' "$(printf '%s' "$1" | tr 'a-z.-' 'A-Z__')" "$2"
}

has_target() {
    rustup target list --installed 2>/dev/null | grep -qx "$1"
}

# Stable toolchain, rustup's standard library, rust-lld.
build_with_rustup_std() {
    triple=$1
    if ! has_target "$triple"; then
        say "installing the $triple standard library"
        rustup target add "$triple"
    fi
    # rust-lld ships with the toolchain; musl's crt objects and libc come with rust-std.
    # A non-PIE executable: `file` reports it "statically linked" on every target.
    env "$(target_var "$triple" LINKER)=rust-lld" \
        "$(target_var "$triple" RUSTFLAGS)=-C target-feature=+crt-static -C relocation-model=static" \
        cargo build --quiet -p lava-multinode --profile tools --no-default-features --target "$triple"
}

# Debian's armhf cross toolchain and musl, which the armv7 build links with.
check_armhf_toolchain() {
    for need in "arm-linux-musleabihf-gcc:musl-dev:armhf" \
        "arm-linux-gnueabihf-gcc:gcc-arm-linux-gnueabihf"; do
        if ! command -v "${need%%:*}" >/dev/null 2>&1; then
            say "ERROR: the armv7 build needs ${need%%:*}, which is not installed:"
            say "  dpkg --add-architecture armhf && apt-get update && apt-get install --no-install-recommends gcc-arm-linux-gnueabihf musl-dev:armhf"
            say "(or build the other targets only: packaging/build-static.sh x86_64-unknown-linux-musl aarch64-unknown-linux-musl)"
            exit 1
        fi
    done
}

# Nightly's std built from source, linked by Debian's musl cross wrapper.
build_with_build_std() {
    triple=$1
    linker=arm-linux-musleabihf-gcc
    if ! rustup toolchain list | grep -q '^nightly'; then
        say "installing the nightly toolchain with rust-src"
        rustup toolchain install nightly --profile minimal --component rust-src
    elif ! rustup component list --toolchain nightly --installed | grep -q '^rust-src'; then
        say "installing the nightly toolchain's rust-src"
        rustup component add rust-src --toolchain nightly
    fi
    # The unwinder under the name Rust's std links it by.
    link_dir="$TARGET_DIR/$triple-link"
    mkdir -p "$link_dir"
    cp "$(arm-linux-gnueabihf-gcc -print-file-name=libgcc_eh.a)" "$link_dir/libunwind.a"
    # The wrapper's specs add musl's start files and libc (not rustc's self-contained ones,
    # which come only with rustup's standard library).
    env "$(target_var "$triple" LINKER)=$linker" \
        "$(target_var "$triple" RUSTFLAGS)=-C target-feature=+crt-static -C relocation-model=static -C link-self-contained=no -L native=$link_dir" \
        cargo +nightly build --quiet -Zbuild-std=std,panic_abort \
        -p lava-multinode --profile tools --no-default-features --target "$triple"
}

build() {
    triple=$1
    out="$ROOT/dist/$triple"
    say "building $triple"
    case "$triple" in
        armv7-unknown-linux-musleabihf) build_with_build_std "$triple" ;;
        *) build_with_rustup_std "$triple" ;;
    esac
    mkdir -p "$out"
    cp "$TARGET_DIR/$triple/tools/lava-multinode" "$out/lava-multinode"
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

# Before building anything: what the armv7 build links with is here.
case " $TRIPLES " in
    *" armv7-unknown-linux-musleabihf "*) check_armhf_toolchain ;;
esac

for triple in $TRIPLES; do
    build "$triple"
done
