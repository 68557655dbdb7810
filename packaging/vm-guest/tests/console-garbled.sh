# A guest that prints garbled MultiNode markers on its console (no closing '>' before the
# line end), then a good one with our tools (console transport: lava_multinode.transport=
# console), then fails: the launcher must neither hang on the garbage nor lose what follows.
lava-wait lava_vm_start
echo '<LAVA_MULTI_NODE> <LAVA_WAIT'
echo '<LAVA_MULTI_NODE> <LAVA_WAIT garbled-id'
echo "console-garbled: printed two markers without their closing '>'"
lava-send garbled-after relayed=yes
exit 3
