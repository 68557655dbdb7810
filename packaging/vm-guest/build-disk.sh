#!/bin/sh
# Builds bootable whole-disk images of the test guest (a job's `image`, as LAVA's
# deploy_linaro_image deploys one) from the kernel and initramfs of build.sh, without mounting
# anything (no loop device, no mount, no root):
#
#   OUT/disk.img        raw disk: MBR (Debian's syslinux mbr.bin) and one bootable FAT16
#                       partition (type 0x0e, from sector 2048) with syslinux (ldlinux.sys,
#                       ldlinux.c32), syslinux.cfg, vmlinuz and initrd.gz. Kernel command line:
#                       console=ttyS0 quiet lava_multinode.console=shell lava_multinode.net=none
#                       panic=-1 -> a root shell on the serial console, prompt "lava-guest# ",
#                       no network (a guest that takes part through its console only)
#   OUT/disk-login.img  the same with lava_multinode.console=login: "login: " on the serial
#                       console, user root, password lava (for auto_login)
#   OUT/disk.stamp      the checksum of the inputs
#
# The guest needs nothing from the disk once booted (everything is in the initramfs), so the
# kernel's lack of built-in virtio_blk/ATA drivers does not matter: the firmware (SeaBIOS) reads
# the disk, the guest never does. Boot one without changing it, through a qcow2 overlay:
#
#   qemu-img create -q -f qcow2 -b "$PWD/target/vm-guest/disk.img" -F raw /tmp/guest.qcow2
#   qemu-system-x86_64 -M q35 -accel tcg -m 256 -nographic -no-reboot \
#     -drive file=/tmp/guest.qcow2,if=virtio,format=qcow2 -nic none
#
# (if=ide works too). OUT is target/vm-guest (or $LAVA_VM_GUEST_DIR), as for build.sh, which is
# run first when OUT/vmlinuz or OUT/initrd.gz is missing. Nothing is rebuilt when the inputs
# (vmlinuz, initrd.gz, this script, syslinux's files) are unchanged.
#
# Usage: packaging/vm-guest/build-disk.sh [--force] [--check]
#   --force   rebuild even when up to date
#   --check   then boot both images under qemu (TCG, through qcow2 overlays, virtio and ide)
#             with python3-pexpect: disk.img must show "lava-guest# " and run `echo hi` and
#             `poweroff` (when that has not ended qemu within 5 s: a warning, and
#             `poweroff -f`); disk-login.img must log in as root/lava first. Prints the boot
#             times; exits non-zero on a failure (consoles kept in a folder it names). LAVA_VM_DISK_CHECK_TIMEOUT (s, default 60) bounds
#             each wait for the console.
# Needs: syslinux (the mtools installer and /usr/lib/SYSLINUX/mbr.bin), mtools, dosfstools
# (mkfs.fat), fdisk (sfdisk), coreutils; for --check qemu-system-x86, qemu-utils and
# python3-pexpect.
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
OUT=${LAVA_VM_GUEST_DIR:-$ROOT/target/vm-guest}
FORCE=0
CHECK=0
for a in "$@"; do
    case "$a" in
        --force) FORCE=1 ;;
        --check) CHECK=1 ;;
        -h | --help) sed -n '2,/^set -eu/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "usage: $0 [--force] [--check]" >&2; exit 2 ;;
    esac
done

# mkfs.fat and sfdisk live in /sbin, which a user's PATH may lack.
PATH=$PATH:/usr/sbin:/sbin
say() { printf 'vm-guest disk: %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

# panic=-1: a guest whose /init fails reboots at once, i.e. qemu -no-reboot ends, rather than
# hanging until a timeout.
KERNEL_CMDLINE="console=ttyS0 quiet lava_multinode.console=@MODE@ lava_multinode.net=none panic=-1"
# Partition start (sectors of 512 bytes): 1 MiB, as partitioning tools do.
PART_START=2048

for tool in mkfs.fat mcopy mdir syslinux sfdisk sha256sum dd truncate; do
    command -v "$tool" >/dev/null || die "$tool is missing (apt-get install syslinux mtools dosfstools fdisk)"
done
MBR=
for f in /usr/lib/SYSLINUX/mbr.bin /usr/lib/syslinux/mbr/mbr.bin /usr/lib/syslinux/mbr.bin; do
    [ -f "$f" ] && { MBR=$f; break; }
done
[ -n "$MBR" ] || die "no syslinux mbr.bin (apt-get install syslinux)"
[ "$(wc -c <"$MBR")" -le 440 ] || die "$MBR is larger than 440 bytes"

if [ ! -f "$OUT/vmlinuz" ] || [ ! -f "$OUT/initrd.gz" ]; then
    say "no $OUT/vmlinuz or initrd.gz: running build.sh"
    sh "$HERE/build.sh"
fi
[ -f "$OUT/vmlinuz" ] && [ -f "$OUT/initrd.gz" ] || die "build.sh made no vmlinuz/initrd.gz in $OUT"
# Absolute: the qcow2 overlays of --check name it as their backing file.
OUT=$(cd "$OUT" && pwd)

STAMP=$( (
    echo "$KERNEL_CMDLINE $PART_START"
    sha256sum "$OUT/vmlinuz" "$OUT/initrd.gz" "$HERE/build-disk.sh" "$MBR" "$(command -v syslinux)" |
        cut -d' ' -f1
) | sha256sum | cut -d' ' -f1)

# One image: $1 file name, $2 lava_multinode.console value.
build_image() {
    img=$1
    mode=$2
    work=$OUT/cache/disk-$mode
    rm -rf "$work"
    mkdir -p "$work"

    cat >"$work/syslinux.cfg" <<EOF
DEFAULT guest
PROMPT 0
TIMEOUT 0
SERIAL 0 115200
LABEL guest
  KERNEL /vmlinuz
  INITRD /initrd.gz
  APPEND $(echo "$KERNEL_CMDLINE" | sed "s/@MODE@/$mode/")
EOF

    # The FAT partition: the files plus 4 MiB of room, in whole MiB.
    bytes=$(($(wc -c <"$OUT/vmlinuz") + $(wc -c <"$OUT/initrd.gz") + 4 * 1048576))
    part_mib=$(((bytes + 1048575) / 1048576))
    part_sectors=$((part_mib * 2048))
    # FAT16 (FAT12 would do for small ones; syslinux boots both), hidden sectors = the partition
    # start (the BPB's partition offset), a fixed volume id so that equal inputs give equal
    # images (timestamps aside).
    mkfs.fat -C -F 16 -h "$PART_START" -i 4c415641 -n LAVAGUEST "$work/part.img" $((part_mib * 1024)) >/dev/null
    # The boot loader first (ldlinux.sys and ldlinux.c32, written through mtools), then the files.
    syslinux --install "$work/part.img"
    mcopy -i "$work/part.img" -m "$OUT/vmlinuz" ::/vmlinuz
    mcopy -i "$work/part.img" -m "$OUT/initrd.gz" ::/initrd.gz
    mcopy -i "$work/part.img" "$work/syslinux.cfg" ::/syslinux.cfg
    mdir -i "$work/part.img" -a :: | grep -qi '^ldlinux  *sys ' || die "syslinux did not install ldlinux.sys"

    # The disk: the partition table (one active FAT16 LBA partition), the MBR's boot code
    # (the first 440 bytes only: the table and signature stay), then the partition.
    truncate -s $(((PART_START + part_sectors) * 512)) "$work/disk.img"
    printf 'label: dos\nlabel-id: 0x4c415641\nstart=%s, size=%s, type=e, bootable\n' \
        "$PART_START" "$part_sectors" | sfdisk -q --no-reread --no-tell-kernel "$work/disk.img" >/dev/null
    dd if="$MBR" of="$work/disk.img" bs=440 count=1 conv=notrunc status=none
    dd if="$work/part.img" of="$work/disk.img" bs=512 seek="$PART_START" conv=notrunc,sparse status=none
    mv "$work/disk.img" "$OUT/$img"
    rm -rf "$work"
    say "built $OUT/$img ($((PART_START / 2048 + part_mib)) MiB, console=$mode)"
}

if [ "$FORCE" = 0 ] && [ -f "$OUT/disk.stamp" ] && [ "$(cat "$OUT/disk.stamp")" = "$STAMP" ] &&
    [ -f "$OUT/disk.img" ] && [ -f "$OUT/disk-login.img" ]; then
    say "up to date: $OUT/disk.img, $OUT/disk-login.img"
else
    mkdir -p "$OUT/cache"
    rm -f "$OUT/disk.stamp"
    build_image disk.img shell
    build_image disk-login.img login
    echo "$STAMP" >"$OUT/disk.stamp"
fi

[ "$CHECK" = 1 ] || exit 0

# The boot check: each image through a qcow2 overlay (the image stays unchanged), on a virtio
# disk and on an IDE (q35: AHCI) disk.
for tool in qemu-system-x86_64 qemu-img; do
    command -v "$tool" >/dev/null || die "$tool is missing (apt-get install qemu-system-x86 qemu-utils)"
done
PY=
for p in python3 /usr/bin/python3; do
    if command -v "$p" >/dev/null && "$p" -c 'import pexpect' 2>/dev/null; then PY=$p; break; fi
done
[ -n "$PY" ] || die "no python3 with pexpect (apt-get install python3-pexpect)"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/vm-guest-disk.XXXXXX")
failed=0
for img in disk.img disk-login.img; do
    for bus in virtio ide; do
        qemu-img create -q -f qcow2 -b "$OUT/$img" -F raw "$TMP/$img-$bus.qcow2"
        login=no
        [ "$img" = disk-login.img ] && login=yes
        "$PY" - "$TMP/$img-$bus.qcow2" "$bus" "$login" "${LAVA_VM_DISK_CHECK_TIMEOUT:-60}" \
            "$TMP/$img-$bus.log" "$img" <<'EOF' || failed=1
import sys, time, pexpect
overlay, bus, login, timeout, log, name = sys.argv[1], sys.argv[2], sys.argv[3] == "yes", float(sys.argv[4]), sys.argv[5], sys.argv[6]
cmd = ["qemu-system-x86_64", "-M", "q35", "-accel", "tcg", "-m", "256", "-nographic", "-no-reboot",
       "-nic", "none", "-drive", f"file={overlay},if={bus},format=qcow2"]
t0 = time.monotonic()
child = pexpect.spawn(cmd[0], cmd[1:], encoding="utf-8", codec_errors="replace", timeout=timeout)
child.logfile_read = open(log, "w")
def expect(pattern):
    # A kernel panic (panic=-1: qemu ends) or an early end fails at once.
    i = child.expect_exact([pattern, "Kernel panic", pexpect.EOF])
    if i:
        fail("kernel panic" if i == 1 else "qemu ended early")
def fail(what):
    seen = child.before if isinstance(child.before, str) else ""
    last = [l.strip() for l in seen.splitlines() if l.strip()][-2:]
    print(f"FAIL {name} ({bus}): {what}; console: {log}", flush=True)
    for l in last:
        print(f"       {l}", flush=True)
    child.terminate(force=True)
    sys.exit(1)
try:
    if login:
        expect("login: ")
        t_login = time.monotonic() - t0
        child.sendline("root")
        expect("Password: ")
        child.sendline("lava")
    expect("lava-guest# ")
    t_prompt = time.monotonic() - t0
    child.sendline("echo h''i")  # its echo on the console is not the line "hi"
    expect("\nhi\r")
    expect("lava-guest# ")
    t_cmd = time.monotonic() - t0
    child.sendline("poweroff")
    if child.expect([pexpect.EOF, pexpect.TIMEOUT], timeout=5) == 1:
        # busybox poweroff signals PID 1 (SIGUSR2), which /init, a shell, may not act upon.
        note = "; WARNING: `poweroff` did not end the guest within 5 s, `poweroff -f` did"
        child.sendline("poweroff -f")
        child.expect(pexpect.EOF)
    else:
        note = ""
    t_end = time.monotonic() - t0
except pexpect.TIMEOUT:
    fail(f"timeout ({timeout:g} s)")
child.close()
extra = f"login prompt {t_login:.1f} s, " if login else ""
print(f"ok   {name} ({bus}): {extra}shell prompt {t_prompt:.1f} s, `echo hi` done {t_cmd:.1f} s, qemu ended {t_end:.1f} s{note}", flush=True)
EOF
    done
done
[ "$failed" = 0 ] || die "boot check failed (consoles in $TMP)"
rm -rf "$TMP"
say "boot check passed"
