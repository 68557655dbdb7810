#!/bin/sh
# Host side of the VM group demo (the guests run packaging/vm-guest/tests/demo.sh).
#
# Usage: host-test.sh [--start-vms] [--wait-for-vms]
#   --start-vms     open the VMs' start gate first (a job with auto_start_vms: false)
#   --wait-for-vms  end with lava-wait-for-vms, as the seed's test shell does (the launcher
#                   waits for the VMs anyway)
# Checks that every guest received the host's address with the start gate, sends each a
# token and checks that every guest echoes it back, then syncs with every node.
set -eu
start=0 waitvms=0
for a in "$@"; do
    case "$a" in
        --start-vms) start=1 ;;
        --wait-for-vms) waitvms=1 ;;
        *) echo "host-test.sh: unknown argument $a" >&2; exit 2 ;;
    esac
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "host: FAILED: $*" >&2; exit 1; }

if [ $start = 1 ]; then
    echo "host: starting the VMs (lava-start-vms)"
    lava-start-vms
fi
me=$(lava-self)
guests=$(lava-group | awk -F '\t' -v me="$me" '$1 != me { n++ } END { print n + 0 }')
guest_roles=$(lava-role list | grep -vx "$(lava-role)")
echo "host: $me waits for $guests guest(s) of role(s) $(echo $guest_roles)"

# Each wait prints everything sent under the id so far: the last one has every guest's data.
for role in $guest_roles; do lava-wait-all guest-ready "$role" >"$tmp/ready"; done
cat "$tmp/ready"
[ "$(grep -c ':client=' "$tmp/ready")" = "$guests" ] || fail "not every guest reported in"
want=${LAVA_MULTINODE_HOST_IP:-10.0.2.2}
if grep ':host_ip=' "$tmp/ready" | grep -v ":host_ip=$want\$" >/dev/null; then
    fail "a guest did not receive host_ip=$want"
fi

token="token-$$-$(date +%s)"
lava-send host-token token="$token"
for role in $guest_roles; do lava-wait-all guest-echo "$role" >"$tmp/echo"; done
cat "$tmp/echo"
[ "$(grep -c ":token=$token\$" "$tmp/echo")" = "$guests" ] || fail "a guest did not echo $token"

lava-sync demo-done
echo "host: every node synced"
if [ $waitvms = 1 ]; then
    lava-wait-for-vms
    echo "host: lava-wait-for-vms returned 0"
fi
echo "host: demo passed"
