#!/bin/sh
# Builds the bootable test guest of the VM group tests and demo from Debian's packages:
#
#   OUT/vmlinuz        the kernel of the package linux-image-cloud-amd64 depends on
#   OUT/initrd.gz      initramfs (newc cpio, gzip): busybox-static, the static lava-multinode
#                      and its lava-* links, the virtio network modules, /init, /tests/*.sh,
#                      LAVA's own shell helpers (from Debian's lava-dispatcher) in /lava-test-bin
#   OUT/kernel-package the versioned kernel package used
#
# OUT is target/vm-guest (or $LAVA_VM_GUEST_DIR). Nothing is rebuilt when the inputs (kernel
# package, busybox, lava-multinode, LAVA's helpers, the files of this folder) are unchanged.
#
# Environment: LAVA_VM_GUEST_DIR (OUT), LAVA_VM_GUEST_TOOLS (the static lava-multinode to pack,
# default dist/x86_64-unknown-linux-musl/lava-multinode), LAVA_VM_GUEST_LAVA_DIR (lava-dispatcher's
# lava_test_shell folder; default: /opt/lava-dispatcher-client (tests/interop/install.sh), the
# installed package, else `apt-get download lava-dispatcher` unpacked in OUT/cache).
#
# Usage: packaging/vm-guest/build.sh [--force]
# Needs: apt-get/apt-cache (Debian's package lists: run `apt-get update` once), dpkg-deb, cpio,
# gzip, busybox-static (/bin/busybox), dist/x86_64-unknown-linux-musl/lava-multinode (built
# with packaging/build-static.sh when missing).
#
# Boot it (no KVM needed, about 2 s):
#   qemu-system-x86_64 -M q35 -accel tcg -m 256 -nographic -no-reboot \
#     -kernel target/vm-guest/vmlinuz -initrd target/vm-guest/initrd.gz \
#     -append 'console=ttyS0 quiet lava_multinode.test=done lava_multinode.coordinator=...' \
#     -netdev user,id=n0 -device virtio-net-pci,netdev=n0,romfile=
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
OUT=${LAVA_VM_GUEST_DIR:-$ROOT/target/vm-guest}
TOOLS=${LAVA_VM_GUEST_TOOLS:-$ROOT/dist/x86_64-unknown-linux-musl/lava-multinode}
BUSYBOX=/bin/busybox
# Modules for virtio-net, in load order (those the kernel has as modules; built-in ones and
# absent ones are skipped), then qemu_fw_cfg for test scripts given with -fw_cfg.
MODULES="virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci failover net_failover virtio_net qemu_fw_cfg"
FORCE=0
[ "${1:-}" = "--force" ] && FORCE=1

say() { printf 'vm-guest: %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

for tool in apt-cache apt-get dpkg-deb cpio gzip find sha256sum; do
    command -v "$tool" >/dev/null || die "$tool is missing"
done
[ -x "$BUSYBOX" ] || die "$BUSYBOX is missing: apt-get install busybox-static"
case "$(file -b "$BUSYBOX" 2>/dev/null || echo static)" in
    *dynamically*) die "$BUSYBOX is dynamically linked: apt-get install busybox-static" ;;
esac

if [ ! -x "$TOOLS" ]; then
    [ -z "${LAVA_VM_GUEST_TOOLS:-}" ] || die "LAVA_VM_GUEST_TOOLS=$TOOLS is not an executable"
    say "building the static lava-multinode"
    sh "$ROOT/packaging/build-static.sh" x86_64-unknown-linux-musl
fi

# The versioned kernel package behind the meta package, e.g. linux-image-6.1.0-56-cloud-amd64.
resolve_kernel() {
    apt-cache depends linux-image-cloud-amd64 2>/dev/null |
        awk '$1 == "Depends:" && $2 ~ /^linux-image-/ { print $2; exit }'
}
KPKG=$(resolve_kernel)
if [ -z "$KPKG" ] && [ "$(id -u)" = 0 ]; then
    # A fresh machine may have no package lists yet.
    say "apt-cache does not know linux-image-cloud-amd64: running apt-get update"
    apt-get update -qq >&2 || true
    KPKG=$(resolve_kernel)
fi
[ -n "$KPKG" ] || die "cannot resolve linux-image-cloud-amd64 with apt-cache depends (run apt-get update)"
KVER=$(apt-cache policy "$KPKG" | awk '$1 == "Candidate:" { print $2 }')

mkdir -p "$OUT/cache"

# LAVA's own shell helpers, packed unchanged: the MultiNode ones and lava-test-case (which
# sources lava-common-functions).
LAVA_MULTI_NODE_HELPERS="lava-send lava-wait lava-wait-all lava-sync lava-multi-node.lib lava-self lava-role lava-group lava-start-vms lava-wait-for-vms"
LAVA_SHELL_HELPERS="lava-test-case lava-common-functions"
LAVA_PY=usr/lib/python3/dist-packages/lava_dispatcher/lava_test_shell
lava_shell_dir() {
    for d in "${LAVA_VM_GUEST_LAVA_DIR:-}" "/opt/lava-dispatcher-client/$LAVA_PY" "/$LAVA_PY" \
        "$OUT/cache/lava-dispatcher/$LAVA_PY"; do
        [ -n "$d" ] || continue
        ok=yes
        for h in $LAVA_MULTI_NODE_HELPERS; do [ -f "$d/multi_node/$h" ] || ok=no; done
        for h in $LAVA_SHELL_HELPERS; do [ -f "$d/$h" ] || ok=no; done
        [ "$ok" = yes ] && { echo "$d"; return 0; }
    done
    return 1
}
if ! LAVA_SHELL=$(lava_shell_dir); then
    [ -z "${LAVA_VM_GUEST_LAVA_DIR:-}" ] || die "LAVA_VM_GUEST_LAVA_DIR=$LAVA_VM_GUEST_LAVA_DIR lacks LAVA's helpers"
    say "downloading lava-dispatcher (LAVA's shell helpers)"
    rm -rf "$OUT/cache/lava-dispatcher" "$OUT/cache/lava-dispatcher-deb"
    mkdir -p "$OUT/cache/lava-dispatcher-deb"
    (cd "$OUT/cache/lava-dispatcher-deb" && apt-get download -q lava-dispatcher 2>&1 | grep -v '^W: Download is performed unsandboxed' >&2 || true)
    LDEB=$(ls "$OUT/cache/lava-dispatcher-deb/lava-dispatcher_"*.deb 2>/dev/null | head -n 1 || true)
    [ -n "$LDEB" ] || die "apt-get download lava-dispatcher failed (run apt-get update)"
    dpkg-deb -x "$LDEB" "$OUT/cache/lava-dispatcher"
    LAVA_SHELL=$(lava_shell_dir) || die "no LAVA shell helpers in $LDEB"
fi
LAVA_HELPER_FILES=
for h in $LAVA_MULTI_NODE_HELPERS; do LAVA_HELPER_FILES="$LAVA_HELPER_FILES $LAVA_SHELL/multi_node/$h"; done
for h in $LAVA_SHELL_HELPERS; do LAVA_HELPER_FILES="$LAVA_HELPER_FILES $LAVA_SHELL/$h"; done

STAMP=$( (
    echo "$KPKG $KVER"
    # shellcheck disable=SC2086
    sha256sum "$BUSYBOX" "$TOOLS" "$HERE/build.sh" "$HERE/init" "$HERE/run-test" "$HERE/profile" \
        "$HERE/udhcpc.script" "$HERE"/tests/*.sh $LAVA_HELPER_FILES | cut -d' ' -f1
) | sha256sum | cut -d' ' -f1)
if [ "$FORCE" = 0 ] && [ -f "$OUT/stamp" ] && [ "$(cat "$OUT/stamp")" = "$STAMP" ] &&
    [ -f "$OUT/vmlinuz" ] && [ -f "$OUT/initrd.gz" ]; then
    say "up to date: $OUT ($KPKG)"
    exit 0
fi

# The kernel package, downloaded once per version.
DEB=$(ls "$OUT/cache/${KPKG}_"*.deb 2>/dev/null | head -n 1 || true)
if [ -z "$DEB" ] || ! dpkg-deb -f "$DEB" Version | grep -qx "$KVER"; then
    rm -f "$OUT/cache/"*.deb
    say "downloading $KPKG $KVER"
    (cd "$OUT/cache" && apt-get download -q "$KPKG" 2>&1 | grep -v '^W: Download is performed unsandboxed' >&2 || true)
    DEB=$(ls "$OUT/cache/${KPKG}_"*.deb 2>/dev/null | head -n 1 || true)
    [ -n "$DEB" ] || die "apt-get download $KPKG failed"
fi
KDIR=$OUT/cache/kernel
rm -rf "$KDIR"
dpkg-deb -x "$DEB" "$KDIR"
UNAME=$(ls "$KDIR/lib/modules" | head -n 1)
[ -n "$UNAME" ] && [ -f "$KDIR/boot/vmlinuz-$UNAME" ] || die "no kernel in $DEB"

# The initramfs tree.
TREE=$OUT/cache/initramfs
rm -rf "$TREE"
mkdir -p "$TREE/bin" "$TREE/sbin" "$TREE/etc" "$TREE/proc" "$TREE/sys" "$TREE/dev" \
    "$TREE/tmp" "$TREE/root" "$TREE/lib/modules" "$TREE/tests" "$TREE/lava-test-bin"
cp "$BUSYBOX" "$TREE/bin/busybox"
for applet in $("$BUSYBOX" --list); do
    [ -e "$TREE/bin/$applet" ] || ln -s busybox "$TREE/bin/$applet"
done
cp "$TOOLS" "$TREE/bin/lava-multinode"
"$TREE/bin/lava-multinode" install "$TREE/bin" >/dev/null
cp "$HERE/init" "$TREE/init"
cp "$HERE/run-test" "$TREE/bin/lava-guest-test"
cp "$HERE/profile" "$TREE/etc/profile"
cp "$HERE/udhcpc.script" "$TREE/etc/udhcpc.script"
cp "$HERE"/tests/*.sh "$TREE/tests/"
chmod 755 "$TREE/init" "$TREE/bin/lava-guest-test" "$TREE/etc/udhcpc.script"
# shellcheck disable=SC2086
cp $LAVA_HELPER_FILES "$TREE/lava-test-bin/"
chmod 755 "$TREE"/lava-test-bin/*
echo "lava-guest" >"$TREE/etc/hostname"
# root's password is "lava" (lava_multinode.console=login), hashed by this busybox.
PW=$("$BUSYBOX" mkpasswd -m sha512 lava lavaguestsalt) || die "busybox mkpasswd failed"
echo "root:$PW:0:0:root:/root:/bin/sh" >"$TREE/etc/passwd"
echo "root:x:0:" >"$TREE/etc/group"

# Modules: decompressed, in load order.
: >"$TREE/lib/modules/order"
for m in $MODULES; do
    f=$(find "$KDIR/lib/modules/$UNAME" -name "$m.ko" -o -name "$m.ko.xz" -o -name "$m.ko.zst" -o -name "$m.ko.gz" | head -n 1)
    if [ -z "$f" ]; then
        if grep -q "/$m.ko" "$KDIR/lib/modules/$UNAME/modules.builtin" 2>/dev/null; then
            say "$m is built in"
        else
            say "$m: no such module in $UNAME, skipped"
        fi
        continue
    fi
    case "$f" in
        *.ko.xz) xz -dc "$f" >"$TREE/lib/modules/$m.ko" ;;
        *.ko.zst) zstd -qdc "$f" >"$TREE/lib/modules/$m.ko" ;;
        *.ko.gz) gzip -dc "$f" >"$TREE/lib/modules/$m.ko" ;;
        *) cp "$f" "$TREE/lib/modules/$m.ko" ;;
    esac
    echo "$m" >>"$TREE/lib/modules/order"
done
grep -qx virtio_net "$TREE/lib/modules/order" ||
    grep -q "/virtio_net.ko" "$KDIR/lib/modules/$UNAME/modules.builtin" 2>/dev/null ||
    die "no virtio_net module in $UNAME"

(cd "$TREE" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) | gzip -6 >"$OUT/initrd.gz.new"
cp "$KDIR/boot/vmlinuz-$UNAME" "$OUT/vmlinuz.new"
mv "$OUT/initrd.gz.new" "$OUT/initrd.gz"
mv "$OUT/vmlinuz.new" "$OUT/vmlinuz"
echo "$KPKG $KVER" >"$OUT/kernel-package"
MODS=$(tr '\n' ' ' <"$TREE/lib/modules/order")
echo "$STAMP" >"$OUT/stamp"
rm -rf "$TREE" "$KDIR"
say "built $OUT/vmlinuz ($UNAME) and $OUT/initrd.gz ($(wc -c <"$OUT/initrd.gz") bytes; modules: $MODS; LAVA helpers from $LAVA_SHELL)"
