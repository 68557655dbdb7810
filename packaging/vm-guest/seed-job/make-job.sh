#!/bin/sh
# Writes OUT_DIR/job.json: the seed's example VM group job (job.json.in, i.e.
# LAVA v1's VM groups documentation, "Example job definition" (docs/VM-GROUPS.md), with the VMs' device type kvm, see
# README.md) with its file:// URLs made absolute: every deploy_linaro_image gets the test
# guest's whole-disk image (target/vm-guest/disk.img, or $LAVA_VM_GUEST_DIR/disk.img, built
# by build-disk.sh when missing), lava_test_shell this folder's mytestdef.yaml.
#
# Usage: packaging/vm-guest/seed-job/make-job.sh OUT_DIR
# Environment: LAVA_VM_GUEST_DIR (the image's folder), LAVA_SEED_JOB_IMAGE (another image
# file, used as it is: e.g. disk-login.img).
set -eu
[ $# -eq 1 ] || { echo "usage: $0 OUT_DIR" >&2; exit 2; }
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
GUEST=${LAVA_VM_GUEST_DIR:-$ROOT/target/vm-guest}
IMAGE=${LAVA_SEED_JOB_IMAGE:-$GUEST/disk.img}

if [ -z "${LAVA_SEED_JOB_IMAGE:-}" ] && [ ! -f "$IMAGE" ]; then
    echo "seed-job: no $IMAGE: running build-disk.sh" >&2
    sh "$HERE/../build-disk.sh"
fi
[ -f "$IMAGE" ] || { echo "seed-job: no image $IMAGE" >&2; exit 1; }
mkdir -p "$1"
OUT=$(cd "$1" && pwd)
# Absolute paths; file:// URLs carry them as they are (no spaces or '|' expected in them).
IMAGE=$(cd "$(dirname "$IMAGE")" && pwd)/$(basename "$IMAGE")
case "$IMAGE$HERE" in
    *[\ \|\&\\%\"]*) echo "seed-job: a path with a space or one of | & \\ % \" cannot go into a file:// URL unescaped: $IMAGE, $HERE" >&2; exit 1 ;;
esac
sed -e "s|@IMAGE@|$IMAGE|g" -e "s|@TESTDEF@|$HERE/mytestdef.yaml|g" "$HERE/job.json.in" >"$OUT/job.json.new"
mv "$OUT/job.json.new" "$OUT/job.json"
echo "$OUT/job.json"
