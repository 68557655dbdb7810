# A guest that dies: waits for the start gate, then powers off without reporting its end
# (no lava-vm-done), as a crashed VM would.
lava-wait lava_vm_start
echo "crash: powering off without lava-vm-done"
poweroff -f
