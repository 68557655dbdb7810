#!/bin/sh
# The VM group demo in one command: builds the tools, the coordinator and the test guest,
# starts our coordinator on 127.0.0.1, and runs `lava-multinode vm-group run` as the host of
# two qemu guests (roles server and client) that wait for the start gate, exchange data with
# the host, lava-sync with every node and report their end; then an after step runs.
#
# Usage: packaging/vm-guest/demo.sh [--manual]
#   --manual  auto_start_vms: false; the host test opens the gate with lava-start-vms and ends
#             with lava-wait-for-vms (the seed's example)
# Environment: LAVA_DEMO_PORT (coordinator port, default 39079).
# Needs: cargo, qemu-system-x86_64, busybox-static, cpio, Debian's package lists.
# Console logs: target/vm-guest/demo-logs/CLIENT.log; coordinator log beside them.
set -eu
cd "$(dirname "$0")/../.."
PORT=${LAVA_DEMO_PORT:-39079}
JOB=packaging/vm-guest/demo/job.json
HOST_ARGS=
if [ "${1:-}" = "--manual" ]; then
    mkdir -p target/vm-guest
    sed 's/"auto_start_vms": true/"auto_start_vms": false/' "$JOB" >target/vm-guest/demo-manual.json
    JOB=target/vm-guest/demo-manual.json
    HOST_ARGS="--start-vms --wait-for-vms"
fi

cargo build -q -p lava-coordinator -p lava-multinode
[ -x dist/x86_64-unknown-linux-musl/lava-multinode ] ||
    sh packaging/build-static.sh x86_64-unknown-linux-musl
sh packaging/vm-guest/build.sh

LOGS=target/vm-guest/demo-logs
rm -rf "$LOGS"
mkdir -p "$LOGS"
target/debug/lava-coordinator --listen "127.0.0.1:$PORT" --state :memory: \
    --logfile "$LOGS/coordinator.log" --loglevel DEBUG --config /nonexistent &
COORD=$!
trap 'kill $COORD 2>/dev/null || true' EXIT INT TERM
sleep 0.3
if ! kill -0 "$COORD" 2>/dev/null; then
    echo "demo: the coordinator did not start (port $PORT in use? set LAVA_DEMO_PORT):" >&2
    tail -n 1 "$LOGS/coordinator.log" >&2
    exit 1
fi

# The launcher retries while the coordinator starts.
# shellcheck disable=SC2086
target/debug/lava-multinode vm-group run "$JOB" --coordinator "127.0.0.1:$PORT" \
    --log-dir "$LOGS" --boot-timeout 60 --timeout 120 \
    --after 'echo "after step: every VM has ended; their reports:"; lava-wait-all lava_vm_stop' \
    -- sh packaging/vm-guest/demo/host-test.sh $HOST_ARGS
