#!/bin/sh
# Builds the Debian packages of the coordinator, which replace Debian's lava-coordinator:
#
#     packaging/build-deb.sh [ARCH ...]        ARCH: amd64, arm64 (default: both)
#
# writes dist/lava-multinode-coordinator_<version>-1_<arch>.deb for each (and prints their
# paths). It builds `lava-coordinator` in release mode for the architecture's glibc target,
# generates the man page from the real command line (coordinator/examples/manpage.rs,
# clap_mangen) and packs with cargo-deb, installing cargo-deb first (`cargo install cargo-deb
# --locked`) when it is missing, then adds the md5sums. Needs dpkg-dev for the shared-library
# dependencies, and for a foreign architecture Debian's cross toolchain (arm64 on amd64:
# gcc-aarch64-linux-gnu and libc6-dev-arm64-cross; .cargo/config.toml names the linker) and
# its rustup target. The package's contents are in [package.metadata.deb] of
# coordinator/Cargo.toml and in packaging/deb/.
set -eu

cd "$(dirname "$0")/.."
ROOT=$(pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
HOST_ARCH=$(dpkg --print-architecture)
ARCHES=${*:-amd64 arm64}

say() { printf 'build-deb: %s\n' "$*" >&2; }

# The Rust target of a Debian architecture.
rust_target() {
    case "$1" in
        amd64) echo x86_64-unknown-linux-gnu ;;
        arm64) echo aarch64-unknown-linux-gnu ;;
        *) say "ERROR: no Rust target known for architecture $1 (amd64, arm64)"; exit 2 ;;
    esac
}

# Debian's cross compiler for an architecture other than this machine's: its GNU triplet.
cross_gcc() {
    case "$1" in
        arm64) echo aarch64-linux-gnu-gcc ;;
        amd64) echo x86_64-linux-gnu-gcc ;;
    esac
}

# Before building anything: every architecture is known, and its cross compiler is here.
for arch in $ARCHES; do
    rust_target "$arch" >/dev/null
    if [ "$arch" != "$HOST_ARCH" ] && ! command -v "$(cross_gcc "$arch")" >/dev/null 2>&1; then
        say "ERROR: the $arch package needs Debian's cross toolchain, which is not installed:"
        say "  apt-get install --no-install-recommends gcc-$(cross_gcc "$arch" | sed 's/-gcc$//; s/_/-/g') libc6-dev-$arch-cross"
        say "(or build this machine's architecture only: packaging/build-deb.sh $HOST_ARCH)"
        exit 1
    fi
done

if ! cargo deb --version >/dev/null 2>&1; then
    say "installing cargo-deb"
    cargo install cargo-deb --locked
fi

# The man page is the same for every architecture: generated once, by a host build.
say "generating the man page"
man="$TARGET_DIR/release/man/lava-coordinator.1.gz"
mkdir -p "$TARGET_DIR/release/man"
# Through a file of this run's own: two runs (one per architecture) may overlap.
cargo run --quiet --release -p lava-coordinator --example manpage | gzip -9n >"$man.$$"
mv "$man.$$" "$man"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p dist

for arch in $ARCHES; do
    target=$(rust_target "$arch")
    if [ "$arch" = "$HOST_ARCH" ]; then
        say "building lava-coordinator (release, $arch)"
        cargo build --quiet --release -p lava-coordinator
        set --
    else
        if ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
            say "installing the $target standard library"
            rustup target add "$target"
        fi
        say "building lava-coordinator (release, $arch: $target)"
        cargo build --quiet --release -p lava-coordinator --target "$target"
        # cargo-deb reads the assets under target/release/ from target/<triple>/release/.
        mkdir -p "$TARGET_DIR/$target/release/man"
        cp "$man" "$TARGET_DIR/$target/release/man/"
        set -- --target "$target"
    fi

    say "packing $arch"
    # --no-build: the binary above is the one packed.
    deb=$(cargo deb --no-build -p lava-coordinator "$@" --output "$ROOT/dist/")

    # cargo-deb writes no md5sums; add them as dh_md5sums does (every file but the
    # conffiles), for `dpkg --verify` and debsums.
    rm -rf "$work/pkg"
    dpkg-deb -R "$deb" "$work/pkg"
    (
        cd "$work/pkg"
        sed 's|^/||' DEBIAN/conffiles >"$work/conffiles"
        find . -path ./DEBIAN -prune -o -type f -print | sed 's|^\./||' | LC_ALL=C sort |
            grep -vxF -f "$work/conffiles" | xargs md5sum >DEBIAN/md5sums
    )
    chmod 644 "$work/pkg/DEBIAN/md5sums"
    # dpkg-shlibdeps names a cross build's libc "libc6:arm64": on the package's own
    # architecture that is plain libc6.
    sed -i "/^Depends:/s/:$arch\b//g" "$work/pkg/DEBIAN/control"
    dpkg-deb --root-owner-group -Zxz -b "$work/pkg" "$deb" >/dev/null
    echo "$deb"
done
