# Guest side of the VM group demo (packaging/vm-guest/demo/host-test.sh is the host side).
# Waits for the start gate, reports in with the host's address it received, echoes the host's
# token back, syncs with every node, and reports its end.
me=$(lava-self)
role=$(lava-role)
lava-wait lava_vm_start >/tmp/start
host_ip=$(sed -n 's/^[^:]*:host_ip=//p' /tmp/start | head -n 1)
echo "demo: $me ($role) started; host_ip=$host_ip"
lava-send guest-ready client="$me" role="$role" host_ip="$host_ip" kernel="$(uname -r)"
lava-wait host-token >/tmp/token
token=$(sed -n 's/^[^:]*:token=//p' /tmp/token | head -n 1)
echo "demo: token from the host: $token"
lava-send "guest-echo" token="$token"
lava-sync demo-done
echo "demo: synced"
lava-vm-done
