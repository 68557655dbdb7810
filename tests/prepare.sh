#!/usr/bin/env bash
# Installs and builds what the tests need on a Debian machine (run by `cargo xtask test`):
# Debian's LAVA coordinator and dispatcher (interop), the static tools (x86_64, aarch64) and
# qemu-user to run the aarch64 one, qemu and the test guest and its disk images (VM groups),
# the Debian packages (amd64, and arm64 with Debian's cross toolchain), lintian to check them,
# and the tools tarballs (packaging). Idempotent: what is there is kept. Not root and
# something missing: it says the exact command to run and exits 1.
set -euo pipefail
cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND=noninteractive
PACKAGES=(qemu-user-static file qemu-system-x86 busybox-static cpio syslinux mtools dosfstools
    fdisk dpkg-dev systemd logrotate lintian gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
missing=()
for p in "${PACKAGES[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ "$(id -u)" != 0 ]; then
    if [ ${#missing[@]} -gt 0 ]; then
        echo "prepare: missing Debian packages; run as root:" >&2
        echo "  apt-get update && apt-get install --no-install-recommends ${missing[*]} && bash tests/interop/install.sh" >&2
        exit 1
    fi
else
    if [ ${#missing[@]} -gt 0 ]; then
        echo "prepare: installing ${missing[*]}"
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
    # Debian's LAVA coordinator and dispatcher client, for the interop tests.
    bash tests/interop/install.sh
fi

# Static target tools (x86_64 and aarch64 musl; rustup targets added as needed).
bash packaging/build-static.sh

# VM groups: the test guest and its disk images.
sh packaging/vm-guest/build.sh
sh packaging/vm-guest/build-disk.sh

# Packaging: the Debian packages, amd64 and arm64 (cargo-deb; the arm64 rustup target is
# added by build-deb.sh), and the tools tarballs.
cargo deb --version >/dev/null 2>&1 || cargo install cargo-deb --locked
bash packaging/build-deb.sh
LAVA_MULTINODE_SKIP_BUILD=1 bash packaging/build-tools-tarballs.sh
