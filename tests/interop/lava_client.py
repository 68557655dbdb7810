#!/usr/bin/python3
"""Plays one node of a MultiNode group with LAVA's real client code.

Run with Debian's python3 and the extracted lava-dispatcher on the path:

    PYTHONPATH=/opt/lava-dispatcher-client/usr/lib/python3/dist-packages \
        /usr/bin/python3 tests/interop/lava_client.py SCRIPT.json|-|'{"port": ...}'

The script is one JSON object, given as the first argument (inline JSON, a file name, or `-`
for standard input):

    {"port": 3079, "host": "127.0.0.1", "group": "g", "client": "101", "role": "server",
     "group_size": 3, "poll_delay": 0.1, "timeout": 30, "system_timeout": 90,
     "hostname": "node-a",
     "steps": [{"op": "group_data"},
               {"op": "send", "id": "ready", "message": {"ip": "10.0.0.1"}},
               {"op": "wait", "id": "ready"},
               {"op": "wait_all", "id": "ready"},
               {"op": "wait_all", "id": "ready", "role": "client"},
               {"op": "sync", "id": "done"},
               {"op": "vm_start", "host_ip": "10.0.2.2"}, {"op": "vm_wait_start"},
               {"op": "vm_stop", "status": "ok"}, {"op": "vm_wait_all"},
               {"op": "lava_start", "message": {"k": "v"}},
               {"op": "delayed_start"},  # needs "expect_role": ROLE in the script
               {"op": "clear"}]}

Each step goes through the real `lava_dispatcher.protocols.multinode.MultinodeProtocol`:
`group_data` is `initialise_group()` and `clear` is `finalise_protocol()`, as the job's set-up
and clean-up call them, `delayed_start` is the rest of `set_up()` for a job whose start waits
for `expect_role`, `lava_start` is `request_lava_start()`; the API steps are `protocol(msg)` (`__call__` -> `_api_select` ->
`request_*` -> `_send` -> `poll`) with the very messages the test shell's SignalDirector builds
for `<LAVA_SEND>`, `<LAVA_WAIT>`, `<LAVA_WAIT_ALL>` and `<LAVA_SYNC>`. The VM steps are what
LAVA's `lava-start-vms` and `lava-wait-for-vms` helpers signal: `lava_send lava_vm_start
host_ip=...`, `lava_wait lava_vm_start`, `lava_send lava_vm_stop status=...` and
`lava_wait_all lava_vm_stop`.

For each step one JSON line goes to stdout:

    {"step": 0, "op": "send", "request": {...the last request sent...},
     "reply": {...the coordinator's final reply...}, "result": <what LAVA's API returned>,
     "polls": 1, "seconds": 0.01}

A step that raises (a LAVA timeout, a JobError, ...) prints {"step": i, "op": ...,
"error": "Type: text"} and the driver exits with status 2 at once.
"""

import json
import logging
import os
import socket
import sys
import time


def load_script(arg):
    if arg == "-":
        return json.load(sys.stdin)
    if arg.lstrip().startswith("{"):
        return json.loads(arg)
    with open(arg, encoding="utf-8") as stream:
        return json.load(stream)


def make_protocol(script):
    from lava_dispatcher.protocols.multinode import MultinodeProtocol

    name = MultinodeProtocol.name
    parameters = {
        "protocols": {
            name: {
                "target_group": script["group"],
                "role": script["role"],
                "group_size": script["group_size"],
                "sub_id": script.get("sub_id", 0),
            }
        }
    }
    if "expect_role" in script:
        # A delayed start (LAVA's `lava-start` protocol request): this node waits for
        # `lava_start` from every node of `expect_role` before its job starts.
        parameters["protocols"][name]["request"] = "lava-start"
        parameters["protocols"][name]["expect_role"] = script["expect_role"]
    protocol = MultinodeProtocol(parameters, str(script["client"]))
    # What set_up() does, without /etc/lava-coordinator/lava-coordinator.conf.
    protocol.settings = {
        "port": int(script["port"]),
        "blocksize": 4096,
        "poll_delay": script.get("poll_delay", 0.1),
        "coordinator_hostname": script.get("host", "127.0.0.1"),
    }
    protocol.base_message = {
        "port": protocol.settings["port"],
        "blocksize": protocol.settings["blocksize"],
        "poll_delay": protocol.settings["poll_delay"],
        "host": protocol.settings["coordinator_hostname"],
        "hostname": script.get("hostname", socket.gethostname()),
        "client_name": protocol.job_id,
        "group_name": parameters["protocols"][name]["target_group"],
        "role": parameters["protocols"][name]["role"],
    }
    protocol.poll_timeout.duration = script.get("timeout", 30)
    protocol.system_timeout.duration = script.get("system_timeout", 90)
    return protocol


class Recorder:
    """Wraps the instance's real poll() and _recv_message() to see what went over the wire."""

    def __init__(self, protocol):
        self.last_request = None
        self.last_reply = None
        self.polls = 0
        real_poll = protocol.poll
        real_recv = protocol._recv_message

        def poll(message, timeout=None):
            self.last_request = message
            reply = real_poll(message, timeout=timeout)
            self.last_reply = reply
            return reply

        def recv():
            self.polls += 1
            return real_recv()

        protocol.poll = poll
        protocol._recv_message = recv

    def reset(self):
        self.last_request = None
        self.last_reply = None
        self.polls = 0


def api_message(step):
    """The dict LAVA's SignalDirector passes to the protocol for this step."""
    op = step["op"]
    if op == "send":
        return {
            "request": "lava_send",
            "messageID": step["id"],
            "message": step.get("message", {}),
        }
    if op == "wait":
        return {"request": "lava_wait", "messageID": step["id"], "message": None}
    if op == "wait_all":
        return {
            "request": "lava_wait_all",
            "messageID": step["id"],
            "role": step.get("role"),
        }
    if op == "sync":
        return {"request": "lava_sync", "messageID": step["id"], "message": None}
    if op == "vm_start":
        return {
            "request": "lava_send",
            "messageID": "lava_vm_start",
            "message": {"host_ip": step.get("host_ip", "")},
        }
    if op == "vm_wait_start":
        return {"request": "lava_wait", "messageID": "lava_vm_start", "message": None}
    if op == "vm_stop":
        message = {"status": step.get("status", "ok")}
        if step.get("reason"):
            message["reason"] = step["reason"]
        return {"request": "lava_send", "messageID": "lava_vm_stop", "message": message}
    if op == "vm_wait_all":
        return {"request": "lava_wait_all", "messageID": "lava_vm_stop", "role": None}
    raise ValueError("unknown op %r" % op)


def run_step(protocol, recorder, step):
    op = step["op"]
    if op == "group_data":
        protocol.initialise_group()
        return None
    if op == "delayed_start":
        # The tail of MultinodeProtocol.set_up() for a delayed start, as written there.
        if not protocol.delayed_start:
            raise ValueError("delayed_start needs expect_role (and a different role)")
        expect_role = protocol.parameters["protocols"][protocol.name]["expect_role"]
        sync_msg = {
            "request": "lava_wait_all",
            "waitrole": expect_role,
            "messageID": "lava_start",
        }
        protocol._send(sync_msg, True)
        return None
    if op == "lava_start":
        # What LAVA's lava-start action calls on the role the others wait for.
        return protocol.request_lava_start(step.get("message", {}))
    if op == "clear":
        protocol.finalise_protocol()
        return None
    if op == "sleep":
        time.sleep(float(step["seconds"]))
        return None
    return protocol(api_message(step))


def main(argv):
    if len(argv) != 2:
        sys.stderr.write(__doc__)
        return 64
    script = load_script(argv[1])
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if os.environ.get("LAVA_CLIENT_DEBUG") else logging.WARNING,
        format="%(asctime)s " + str(script["client"]) + " %(levelname)s %(message)s",
    )
    protocol = make_protocol(script)
    recorder = Recorder(protocol)
    for index, step in enumerate(script["steps"]):
        recorder.reset()
        started = time.monotonic()
        line = {"step": index, "op": step["op"]}
        try:
            result = run_step(protocol, recorder, step)
        except Exception as exc:  # report LAVA's own exceptions as they are
            line["error"] = "%s: %s" % (type(exc).__name__, exc)
            line["polls"] = recorder.polls
            print(json.dumps(line), flush=True)
            return 2
        if recorder.last_request is not None:
            line["request"] = json.loads(recorder.last_request)
            try:
                line["reply"] = json.loads(recorder.last_reply)
            except (TypeError, ValueError):
                line["reply_text"] = recorder.last_reply
        line["result"] = result
        line["polls"] = recorder.polls
        line["seconds"] = round(time.monotonic() - started, 3)
        print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
