#!/bin/sh
# Builds the Debian package of the coordinator, which replaces Debian's lava-coordinator:
#
#     packaging/build-deb.sh
#
# writes dist/lava-multinode-coordinator_<version>-1_<arch>.deb (and prints its path). It
# builds `lava-coordinator` in release mode, generates the man page from the real command line
# (coordinator/examples/manpage.rs, clap_mangen) and packs with cargo-deb, installing cargo-deb
# first (`cargo install cargo-deb --locked`) when it is missing. Needs dpkg-dev for the
# shared-library dependencies (`apt-get install dpkg-dev`). The package's contents are in
# [package.metadata.deb] of coordinator/Cargo.toml and in packaging/deb/.
set -eu

cd "$(dirname "$0")/.."
ROOT=$(pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}

say() { printf 'build-deb: %s\n' "$*" >&2; }

if ! cargo deb --version >/dev/null 2>&1; then
    say "installing cargo-deb"
    cargo install cargo-deb --locked
fi

say "building lava-coordinator (release)"
cargo build --quiet --release -p lava-coordinator

say "generating the man page"
mkdir -p "$TARGET_DIR/release/man"
cargo run --quiet --release -p lava-coordinator --example manpage \
    >"$TARGET_DIR/release/man/lava-coordinator.1.tmp"
gzip -9n <"$TARGET_DIR/release/man/lava-coordinator.1.tmp" >"$TARGET_DIR/release/man/lava-coordinator.1.gz"
rm "$TARGET_DIR/release/man/lava-coordinator.1.tmp"

say "packing"
mkdir -p dist
# --no-build: the binary above is the one packed.
deb=$(cargo deb --no-build -p lava-coordinator --output "$ROOT/dist/")

# cargo-deb writes no md5sums; add them as dh_md5sums does (every file but the conffiles),
# for `dpkg --verify` and debsums.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
dpkg-deb -R "$deb" "$work/pkg"
(
    cd "$work/pkg"
    sed 's|^/||' DEBIAN/conffiles >"$work/conffiles"
    find . -path ./DEBIAN -prune -o -type f -print | sed 's|^\./||' | LC_ALL=C sort |
        grep -vxF -f "$work/conffiles" | xargs md5sum >DEBIAN/md5sums
)
chmod 644 "$work/pkg/DEBIAN/md5sums"
dpkg-deb --root-owner-group -Zxz -b "$work/pkg" "$deb" >/dev/null
echo "$deb"
