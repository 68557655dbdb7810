# Waits for the start gate and reports a successful end at once.
lava-wait lava_vm_start
lava-vm-done
