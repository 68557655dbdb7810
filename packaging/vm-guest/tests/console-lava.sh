# A guest without a network device that takes part through its console with LAVA's own shell
# helpers from /lava-test-bin (unchanged from Debian's lava-dispatcher): they print LAVA's
# marker and read the reply the launcher types back; a wait's data lands in the cache file
# ($LAVA_MULTI_NODE_CACHE), which a later helper call replaces (lava-sync empties it).
# Waits for the gate and the host's data, checks them, sends its own, syncs with the host and
# the other VM, records a test case, and reports its end as LAVA's helpers can:
# `lava-send lava_vm_stop status=ok`. Any mismatch exits non-zero: the guest is then reported
# failed.
B=$LAVA_TEST_BIN
[ -n "$B" ] && [ -f "$B/lava-multi-node.lib" ] || { echo "console-lava: no LAVA helpers in '$B'"; exit 2; }
# lava-test-case sources lava-common-functions from PATH; lava-start-vms calls lava-send.
export PATH="$B:$PATH"
me=$("$B/lava-self")
role=$("$B/lava-role")
[ "$me" = "$(hostname)" ] || { echo "console-lava: lava-self says '$me'"; exit 2; }
"$B/lava-wait" lava_vm_start
cat "$LAVA_MULTI_NODE_CACHE"
grep -q 'host:host_ip=10.0.2.2' "$LAVA_MULTI_NODE_CACHE" || { echo "console-lava: bad gate data"; exit 2; }
"$B/lava-wait" host-data
cat "$LAVA_MULTI_NODE_CACHE"
grep -q 'host:token=console-t42' "$LAVA_MULTI_NODE_CACHE" || { echo "console-lava: bad token"; exit 3; }
grep -q "host:${role}_data=for-$role" "$LAVA_MULTI_NODE_CACHE" || { echo "console-lava: no data for $role"; exit 4; }
"$B/lava-send" guest-data client="$me" role="$role" echo=console-t42 via=console-lava
"$B/lava-sync" console-done
echo "console-lava: $me ($role) synced"
"$B/lava-test-case" console-lava --result pass
"$B/lava-send" lava_vm_stop status=ok
