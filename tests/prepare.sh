#!/usr/bin/env bash
# Installs and builds what the tests need on a Debian machine (run by `cargo xtask test`):
# Debian's LAVA coordinator and dispatcher (interop); the static tools (x86_64, aarch64, armv7:
# rustup targets, nightly's rust-src, Debian's armhf cross toolchain and musl) and qemu-user
# to run the foreign ones; qemu and the test guest and its disk images (VM groups); the Debian
# packages (amd64, and arm64 with Debian's cross toolchain), lintian to check them, and the
# tools tarballs (packaging); headless chromium and its WebDriver (the web view's browser
# tests). Idempotent: what is there is kept. Not root and something missing: it says the
# exact command to run and exits 1.
set -euo pipefail
cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND=noninteractive
PACKAGES=(qemu-user-static file qemu-system-x86 busybox-static cpio syslinux mtools dosfstools
    fdisk dpkg-dev systemd logrotate lintian gcc-aarch64-linux-gnu libc6-dev-arm64-cross
    gcc-arm-linux-gnueabihf musl-dev:armhf chromium chromium-driver)
missing=()
for p in "${PACKAGES[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
# musl-dev:armhf (Debian's musl for the armv7 tools) is a package of a foreign architecture.
add_armhf=""
if ! dpkg --print-foreign-architectures | grep -qx armhf; then
    add_armhf="dpkg --add-architecture armhf && "
fi
if [ "$(id -u)" != 0 ]; then
    if [ ${#missing[@]} -gt 0 ]; then
        echo "prepare: missing Debian packages; run as root:" >&2
        echo "  ${add_armhf}apt-get update && apt-get install --no-install-recommends ${missing[*]} && bash tests/interop/install.sh" >&2
        exit 1
    fi
else
    if [ ${#missing[@]} -gt 0 ]; then
        echo "prepare: installing ${missing[*]}"
        [ -z "$add_armhf" ] || dpkg --add-architecture armhf
        # A list that fails to download (a mirror mid-sync) leaves the others usable; a
        # package that cannot be found then fails the install below, saying which.
        apt-get update -qq || echo "prepare: apt-get update reported errors (above); going on with the lists it has" >&2
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
    # Debian's LAVA coordinator and dispatcher client, for the interop tests.
    bash tests/interop/install.sh
fi

# Rust: the standard libraries of the static tools' and the arm64 package's targets, and the
# nightly toolchain's rust-src, from which the armv7 tools build theirs (rustup has none).
installed_targets=$(rustup target list --installed)
for target in x86_64-unknown-linux-musl aarch64-unknown-linux-musl aarch64-unknown-linux-gnu; do
    grep -qx "$target" <<<"$installed_targets" || rustup target add "$target"
done
if grep -q '^nightly' <<<"$(rustup toolchain list)"; then
    grep -q '^rust-src' <<<"$(rustup component list --toolchain nightly --installed)" ||
        rustup component add rust-src --toolchain nightly
else
    rustup toolchain install nightly --profile minimal --component rust-src
fi

# Static target tools (x86_64, aarch64 and armv7 musl).
bash packaging/build-static.sh

# VM groups: the test guest and its disk images.
sh packaging/vm-guest/build.sh
sh packaging/vm-guest/build-disk.sh

# Packaging: the Debian packages, amd64 and arm64 (cargo-deb), and the tools tarballs.
cargo deb --version >/dev/null 2>&1 || cargo install cargo-deb --locked
bash packaging/build-deb.sh
LAVA_MULTINODE_SKIP_BUILD=1 bash packaging/build-tools-tarballs.sh
