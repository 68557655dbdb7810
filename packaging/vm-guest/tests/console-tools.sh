# A guest without a network device that takes part through its console with our tools
# (lava_multinode.transport=console on the kernel command line: each lava-* command prints
# LAVA's marker on standard output, the console, and reads the reply the launcher types back
# on standard input; so their output is not redirected here: a wait's data is read from the
# cache file, as with LAVA's helpers).
# Waits for the gate and the host's data, checks them, sends its own, syncs with the host and
# the other VM, and reports its end (lava-vm-done: `lava-send lava_vm_stop status=ok`).
# Any mismatch exits non-zero: the guest is then reported failed.
cache=${LAVA_MULTI_NODE_CACHE:-/tmp/lava_multi_node_cache.txt}
me=$(lava-self)
role=$(lava-role)
lava-wait lava_vm_start
grep -q 'host:host_ip=10.0.2.2' "$cache" || { echo "console-tools: bad gate data"; exit 2; }
lava-wait host-data
cp "$cache" /tmp/host-data
token=$(sed -n 's/^.*host:token=\([^ ]*\).*$/\1/p' /tmp/host-data)
[ "$token" = console-t42 ] || { echo "console-tools: bad token '$token'"; exit 3; }
grep -q "host:${role}_data=for-$role" /tmp/host-data || { echo "console-tools: no data for $role"; exit 4; }
lava-send guest-data client="$me" role="$role" echo="$token" via=console-tools
lava-sync console-done
echo "console-tools: $me ($role) synced"
lava-vm-done
