#!/usr/bin/python3
"""Runs a real LAVA v2 MultiNode job of 3 nodes on this machine, without hardware.

One `lava-run` (Debian's lava-dispatcher 2023.01) per node, all at once, against a coordinator
that already listens on 127.0.0.1:PORT (ours or Debian's; this script does not start it):

- each node's device is of type `ssh`: an sshd on a free loopback port, in its own mount
  namespace (`unshare -m`) with a private /tmp (so /tmp/lava_multi_node_cache.txt is per node,
  as on real boards) and a private /root (the home of the login: its own authorized_keys and
  prompt; nothing of the machine's /root is used or changed), accepting a key made here;
- lava-server does what it does for a MultiNode submission: its own `split_multinode_yaml()`
  splits the job into sub-jobs, its scheduler's `roles` (job id -> role) is filled in as
  `transition_multinode_jobs()` does, and its device-type templates (`ssh.jinja2`,
  `base.jinja2`) render each node's device dictionary (lava-server is only extracted, see
  tests/interop/install.sh; Django is not needed);
- the dispatcher finds the coordinator in /etc/lava-coordinator/lava-coordinator.conf: it is
  written for the run (poll_delay 1) and restored afterwards, also after a failure or a signal;
  runs that touch it are serialised with a lock file, and a run killed with SIGKILL is undone by
  the next run;
- a test failure does not fail a LAVA job: the results (every `lava-test-case` and the
  dispatcher's own MultiNode cases) are read from each lava-run's log and compared with the
  cases the job's test definitions must report.

Variants (--variant):
  lava  the test definitions call LAVA's own helpers (lava-send, ... from the dispatcher's
        overlay);
  ours  the test definitions call our static `lava-multinode` (--tools BINARY, copied onto
        each node) through `lava-*` links that shadow LAVA's, with
        LAVA_MULTINODE_TRANSPORT=console: the tools print LAVA's markers on the console and
        read the dispatcher's reply from it.

Output: WORK_DIR/summary.json (per node: job id, role, exit status, job result, every case
and its result, the cases expected and which of them did not pass), WORK_DIR/node-ID/ (the
job, device and dispatcher files, lava-run's log `lava-run.log`, `results.yaml`, the sshd log).
Exit status: 0 every expected case passed; 1 some did not (see the summary); 2 bad usage; 3 a
prerequisite is missing (one message says which, and to run tests/interop/install.sh); 4 the
run could not be set up or did not finish in time.
"""

import argparse
import contextlib
import copy
import errno
import fcntl
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import traceback
import types
import uuid

CONF = "/etc/lava-coordinator/lava-coordinator.conf"
# What the harness overwrote, kept until it is restored (JSON: {"existed": bool, "text": str});
# a run that finds it was killed before restoring: the next one restores it first.
CONF_SAVED = CONF + ".lava-run-harness-saved"
LOCK = "/run/lock/lava-multinode-lava-run.lock"
SERVER_DIR = os.environ.get("LAVA_SERVER_EXTRACT_DIR", "/opt/lava-server-extract")
SERVER_PY = os.path.join(SERVER_DIR, "usr/lib/python3/dist-packages")
DEVICE_TYPES = os.path.join(SERVER_DIR, "usr/share/lava-server/device-types")
INSTALL_HINT = "run `sudo bash tests/interop/install.sh` (idempotent)"
CACHE = "/tmp/lava_multi_node_cache.txt"
PROMPT = "lava-mn-node# "
# Where the node's copy of our tools lives, inside its private /root.
NODE_TOOLS = "/root/mn"
SLOW_CLIENT_DELAY = 4


class Missing(Exception):
    """A prerequisite is missing."""


class SetupError(Exception):
    """The run could not be set up."""


def log(msg):
    print("lava-run harness: %s" % msg, flush=True)


# ---------------------------------------------------------------------------------------------
# Prerequisites


def check_prerequisites(variant, tools):
    if os.geteuid() != 0:
        raise Missing("root is needed (lava-run, sshd, mount namespaces): run me as root")
    for path, what in [
        ("/usr/bin/lava-run", "lava-run (package lava-dispatcher)"),
        ("/usr/sbin/sshd", "sshd (package openssh-server)"),
        ("/usr/lib/openssh/sftp-server", "sftp-server (package openssh-sftp-server)"),
        ("/usr/bin/ssh-keygen", "ssh-keygen (package openssh-client)"),
        ("/usr/bin/scp", "scp (package openssh-client)"),
        ("/usr/bin/unshare", "unshare (package util-linux)"),
        (os.path.join(SERVER_PY, "lava_scheduler_app/utils.py"),
         "lava-server extracted in %s (or $LAVA_SERVER_EXTRACT_DIR)" % SERVER_DIR),
        (os.path.join(DEVICE_TYPES, "ssh.jinja2"), "lava-server's ssh.jinja2 in %s" % DEVICE_TYPES),
        (os.path.join(DEVICE_TYPES, "base.jinja2"), "lava-server's base.jinja2 in %s" % DEVICE_TYPES),
    ]:
        if not os.path.exists(path):
            raise Missing("%s is missing (%s)" % (what, path))
    try:
        import jinja2  # noqa: F401
        import yaml  # noqa: F401
        import voluptuous  # noqa: F401
        import lava_dispatcher  # noqa: F401
    except ImportError as exc:
        raise Missing("a Python module is missing under %s: %s" % (sys.executable, exc))
    if variant == "ours":
        if not tools:
            raise SetupError("--variant ours needs --tools PATH (our lava-multinode binary)")
        if not os.access(tools, os.X_OK):
            raise SetupError(
                "%s is not an executable lava-multinode: build it (cargo build -p "
                "lava-multinode, or packaging/build-static.sh)" % tools
            )


# ---------------------------------------------------------------------------------------------
# lava-server: validation, splitting, device rendering


def import_lava_server():
    """lava_scheduler_app.utils and .schema without Django: they only read two settings."""
    if "django" not in sys.modules:
        django = types.ModuleType("django")
        django.VERSION = (3, 2, 0)
        conf = types.ModuleType("django.conf")
        conf.settings = types.SimpleNamespace(EXTRA_CONTEXT_VARIABLES=[])
        django.conf = conf
        sys.modules["django"] = django
        sys.modules["django.conf"] = conf
    if SERVER_PY not in sys.path:
        sys.path.append(SERVER_PY)
    from lava_scheduler_app import schema, utils

    return schema, utils


def split_job(submission, first_job_id):
    """What lava-server does with a MultiNode submission: validate it, split it into one
    sub-job per node (`split_multinode_yaml`), give each a job id (in role order, as
    `_create_pipeline_job` does), and put the group's roster in every sub-job
    (`transition_multinode_jobs`: `roles` maps each job id to its role).
    Returns [(job_id, role, definition)]."""
    schema, utils = import_lava_server()
    schema.validate_submission(copy.deepcopy(submission))
    target_group = str(uuid.uuid4())
    by_role = utils.split_multinode_yaml(copy.deepcopy(submission), target_group)
    if not by_role:
        raise SetupError("lava-server could not split the MultiNode submission")
    jobs = []
    job_id = first_job_id
    for role in submission["protocols"]["lava-multinode"]["roles"]:
        for definition in by_role[role]:
            jobs.append((str(job_id), role, definition))
            job_id += 1
    roster = {job_id: role for job_id, role, _ in jobs}
    for _, _, definition in jobs:
        definition["protocols"]["lava-multinode"]["roles"] = dict(roster)
    return jobs


def render_device(hostname, ssh_port, identity_file, devices_dir):
    """The device dictionary of one node, rendered like lava-server's
    `Device.load_configuration()`: a sandboxed Jinja2 environment over the device
    dictionaries and lava-server's device-type templates."""
    from jinja2 import FileSystemLoader
    from jinja2.sandbox import SandboxedEnvironment

    with open(os.path.join(devices_dir, "%s.jinja2" % hostname), "w") as out:
        out.write(
            "{%% extends 'ssh.jinja2' %%}\n"
            "{%% set ssh_host = '127.0.0.1' %%}\n"
            "{%% set ssh_port = %d %%}\n"
            "{%% set ssh_user = 'root' %%}\n"
            "{%% set ssh_identity_file = '%s' %%}\n"
            # The results directory in the node's private /tmp, not at the machine's /.
            "{%% set lava_test_results_dir = '/tmp/lava-%%s' %%}\n"
            # No schroot boot method (ssh.jinja2: "can be removed by defining this block
            # empty in the device config").
            "{%% block schroot %%}{%% endblock schroot %%}\n"
            % (ssh_port, identity_file)
        )
    env = SandboxedEnvironment(
        loader=FileSystemLoader([devices_dir, DEVICE_TYPES]),
        autoescape=False,
        trim_blocks=True,
        cache_size=-1,
    )
    text = env.get_template("%s.jinja2" % hostname).render()
    import yaml

    schema, _ = import_lava_server()
    schema.validate_device(yaml.safe_load(text))
    return text


# ---------------------------------------------------------------------------------------------
# The job: 3 nodes, server x1 and client x2, exercising the MultiNode API


def case(name, command):
    return "lava-test-case %s --shell %s" % (name, command)


def steps_for(role, variant):
    """The run steps of the inline test definition of `role`, and the cases it reports."""
    steps = []
    cases = []

    def add(name, command):
        steps.append(case(name, command))
        cases.append(name)

    if variant == "ours":
        # Our tools take the node's identity from the environment; LAVA 2023.01 keeps it in
        # its own lava-self/lava-role/lava-group scripts only (checked here, so that a LAVA
        # that exports them shows), so take it from them before our links shadow them.
        add(
            "lava-exports-no-identity",
            "'[ -z \"${LAVA_HOSTNAME-}${TARGET_ROLE-}${LAVA_GROUP-}\" ]'",
        )
        steps += [
            'export LAVA_HOSTNAME="$(lava-self)"',
            'export TARGET_ROLE="$(lava-role)"',
            "export LAVA_GROUP=\"$(lava-group | sed -e 's/^\\t//')\"",
            "export LAVA_MULTINODE_TRANSPORT=console",
            "mkdir -p %s/bin" % NODE_TOOLS,
            "%s/lava-multinode install %s/bin" % (NODE_TOOLS, NODE_TOOLS),
            "export PATH=%s/bin:$PATH" % NODE_TOOLS,
        ]
    steps += [
        "export C=%s" % CACHE,
        "export SERVER=\"$(lava-group server | tr -d '[:space:]')\"",
    ]

    if variant == "ours":
        add("tools-are-ours", "'[ \"$(command -v lava-send)\" = %s/bin/lava-send ]'" % NODE_TOOLS)
    # Identity: lava-self, lava-role, lava-group.
    add("self-is-job-id", "'[ \"$(lava-self)\" = \"$LAVA_JOB_ID\" ]'")
    add("role-is-%s" % role, "'[ \"$(lava-role)\" = %s ]'" % role)
    add("group-has-three-members", "'[ \"$(lava-group | grep -c .)\" = 3 ]'")
    add(
        "group-lists-self",
        "'lava-group | grep -qE \"^[[:space:]]*$(lava-self)[[:space:]]+$(lava-role)$\"'",
    )
    add("group-one-server", "'[ \"$(lava-group server | grep -c .)\" = 1 ]'")
    add("group-two-clients", "'[ \"$(lava-group client | grep -c .)\" = 2 ]'")
    # lava-send with key=value data, lava-wait.
    if role == "server":
        add("send-server-ready", "lava-send server-ready addr=127.0.0.1 port=4242")
    else:
        add("wait-server-ready", "lava-wait server-ready")
        add(
            "server-ready-data",
            "'grep -qx \"$SERVER:addr=127.0.0.1\" $C && grep -qx \"$SERVER:port=4242\" $C'",
        )
    # lava-wait-all over the whole group.
    add("send-hello", "'lava-send hello node=$(lava-self) role=$(lava-role)'")
    add("wait-all-hello", "lava-wait-all hello")
    add(
        "hello-from-all",
        "'[ \"$(grep -cE \"^([0-9]+):node=\\1\\$\" $C)\" = 3 ] && grep -qx \"$SERVER:role=server\" $C"
        " && [ \"$(grep -c \":role=client\\$\" $C)\" = 2 ]'",
    )
    # lava-wait-all by role: the server waits for both clients, one of which is slow; twice,
    # so that each client is the slow one once (Debian's coordinator releases the server
    # as soon as the client that registered first has sent: in one of the rounds, early).
    for round_, slow in ((1, "tail"), (2, "head")):
        if role == "server":
            add("wait-all-clients-%d" % round_, "lava-wait-all client-ready-%d client" % round_)
            add(
                "clients-ready-data-%d" % round_,
                "'[ \"$(grep -cE \"^([0-9]+):client=\\1\\$\" $C)\" = 2 ]'",
            )
        else:
            steps.append(
                "[ \"$(lava-self)\" != \"$(lava-group client | tr -d '\\t ' | sort -n | %s -n 1)\" ]"
                " || sleep %d" % (slow, SLOW_CLIENT_DELAY)
            )
            add(
                "send-client-ready-%d" % round_,
                "'lava-send client-ready-%d client=$(lava-self)'" % round_,
            )
        # Both rounds start together.
        add("sync-round-%d" % round_, "lava-sync round-%d" % round_)
    # lava-sync, then twice in a row on one id.
    add("sync-once", "lava-sync sync-once")
    add("sync-twice-1", "lava-sync sync-twice")
    add("sync-twice-2", "lava-sync sync-twice")
    steps.append("lava-test-case reached-end --result pass")
    cases.append("reached-end")
    return steps, cases


def submission(variant):
    definitions = {}
    cases = {}
    for role in ("server", "client"):
        steps, role_cases = steps_for(role, variant)
        cases[role] = role_cases
        definitions[role] = {
            "from": "inline",
            "name": "multinode-api-%s" % role,
            "path": "inline/multinode-api-%s.yaml" % role,
            "repository": {
                "metadata": {
                    "format": "Lava-Test Test Definition 1.0",
                    "name": "multinode-api-%s" % role,
                    "description": "LAVA MultiNode API, %s side (%s helpers)"
                    % (role, "LAVA's" if variant == "lava" else "our"),
                },
                "run": {"steps": steps},
            },
        }
    job = {
        "job_name": "lava-multinode-api-%s" % variant,
        "priority": "medium",
        "visibility": "public",
        "timeouts": {
            "job": {"minutes": 4},
            "action": {"minutes": 2},
            "connection": {"minutes": 1},
        },
        "protocols": {
            "lava-multinode": {
                "roles": {
                    "server": {"device_type": "ssh", "count": 1},
                    "client": {"device_type": "ssh", "count": 2},
                },
                # Each API call's timeout: a stranded node gives up after this.
                "timeout": {"seconds": 30},
            }
        },
        "actions": [
            {
                "deploy": {
                    "role": ["server", "client"],
                    "to": "ssh",
                    "os": "debian",
                    "timeout": {"minutes": 1},
                }
            },
            {
                "boot": {
                    "role": ["server", "client"],
                    "method": "ssh",
                    "connection": "ssh",
                    "prompts": [PROMPT],
                    "timeout": {"minutes": 1},
                }
            },
        ],
    }
    for role in ("server", "client"):
        job["actions"].append(
            {
                "test": {
                    "role": [role],
                    "timeout": {"minutes": 2},
                    "definitions": [definitions[role]],
                }
            }
        )
    return job, cases


# ---------------------------------------------------------------------------------------------
# The coordinator configuration the dispatcher reads


def read_saved():
    with open(CONF_SAVED) as f:
        return json.load(f)


def restore_conf():
    """Puts back what the harness overwrote (no-op when nothing is saved)."""
    try:
        saved = read_saved()
    except FileNotFoundError:
        return
    except (OSError, ValueError) as exc:
        raise SetupError(
            "cannot read %s (%s): restore %s by hand and remove it" % (CONF_SAVED, exc, CONF)
        )
    if saved.get("existed"):
        write_atomic(CONF, saved.get("text", ""))
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(CONF)
    os.unlink(CONF_SAVED)


def write_atomic(path, text):
    tmp = "%s.tmp-%d" % (path, os.getpid())
    with open(tmp, "w") as f:
        f.write(text)
    if os.path.exists(path):
        shutil.copymode(path, tmp)
    else:
        os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def install_conf(port):
    restore_conf()  # a previous run that was killed before it could
    try:
        with open(CONF) as f:
            saved = {"existed": True, "text": f.read()}
    except FileNotFoundError:
        saved = {"existed": False, "text": ""}
    os.makedirs(os.path.dirname(CONF), exist_ok=True)
    write_atomic(CONF_SAVED, json.dumps(saved))
    write_atomic(
        CONF,
        json.dumps(
            {
                "port": port,
                "blocksize": 4096,
                "poll_delay": 1,
                "coordinator_hostname": "127.0.0.1",
            },
            indent=4,
        )
        + "\n",
    )


# ---------------------------------------------------------------------------------------------
# Processes


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port):
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def mount_ns(pid):
    try:
        return os.readlink("/proc/%d/ns/mnt" % pid)
    except OSError:
        return None


def pids_in_mount_ns(ns):
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and mount_ns(int(entry)) == ns:
            found.append(int(entry))
    return found


def descendants(pid):
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                stat = f.read()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may contain spaces and parentheses.
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 1 and fields[1].isdigit():
            children.setdefault(int(fields[1]), []).append(int(entry))
    out = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def kill_all(pids, sig):
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


class Processes:
    """Every sshd and lava-run this run started; `stop()` kills them and whatever they left
    (ssh and scp clients, the shells of the ssh sessions in a node's mount namespace)."""

    def __init__(self):
        self.sshd = []  # (Popen, mount namespace)
        self.lava_run = []  # Popen
        self.stopped_sshd = 0
        self.stopped_lava_run = 0

    def stop(self):
        for proc in self.lava_run[self.stopped_lava_run:]:
            if proc.poll() is None:
                family = descendants(proc.pid)
                kill_all([proc.pid] + family, signal.SIGKILL)
            with contextlib.suppress(Exception):
                proc.wait(timeout=10)
        self.stopped_lava_run = len(self.lava_run)
        for proc, ns in self.sshd[self.stopped_sshd:]:
            members = []
            # Only while the sshd holds its namespace: a freed namespace's number may be
            # reused by another one.
            if ns and proc.poll() is None and mount_ns(proc.pid) == ns:
                members = pids_in_mount_ns(ns)
            kill_all([proc.pid] + members, signal.SIGKILL)
            with contextlib.suppress(Exception):
                proc.wait(timeout=10)
        self.stopped_sshd = len(self.sshd)


# Run by `unshare --mount` with $1 = the node's home, $2 = an empty folder: builds the node's
# own root file system and starts sshd in it. `/` is a tmpfs of its own (LAVA's overlay is
# unpacked at /lava-JOB_ID: on the node, not on this machine), holding the machine's top-level
# folders bind-mounted (read-write, as a board's would be), its own empty /tmp (so that
# /tmp/lava_multi_node_cache.txt is the node's), and the node's home as /root. Everything
# goes away with the namespace.
NODE_ROOT_SCRIPT = r"""
set -e
home="$1"; new="$2"
mkdir -p "$new"
mount -t tmpfs -o mode=0755 lava-mn-node-root "$new"
for p in /* /.[!.]*; do
    [ -e "$p" ] || [ -L "$p" ] || continue
    name="${p#/}"
    case "$name" in
    tmp|root|mnt|media|lost+found) mkdir "$new/$name"; continue ;;
    esac
    if [ -L "$p" ]; then
        ln -s "$(readlink "$p")" "$new/$name"
    elif [ -d "$p" ]; then
        mkdir "$new/$name"
        mount --rbind "$p" "$new/$name"
    else
        touch "$new/$name"
        mount --bind "$p" "$new/$name"
    fi
done
chmod 1777 "$new/tmp"
mount -t tmpfs -o mode=1777 lava-mn-node-tmp "$new/tmp"
mount --bind "$home" "$new/root"
exec /usr/sbin/chroot "$new" /usr/sbin/sshd -D -e -f /root/.sshd/sshd_config
"""


def start_sshd(node_dir, home, procs):
    """An sshd on a free loopback port, in its own mount namespace with its own root file
    system (NODE_ROOT_SCRIPT). Returns its port."""
    last = ""
    for _ in range(5):
        port = free_port()
        config = os.path.join(home, ".sshd", "sshd_config")
        with open(config, "w") as f:
            f.write(
                "ListenAddress 127.0.0.1:%d\n"
                "HostKey /root/.sshd/host_key\n"
                "PidFile none\n"
                "PermitRootLogin prohibit-password\n"
                "PubkeyAuthentication yes\n"
                "AuthorizedKeysFile /root/.ssh/authorized_keys\n"
                "PasswordAuthentication no\n"
                "KbdInteractiveAuthentication no\n"
                "UsePAM no\n"
                "StrictModes no\n"
                "UseDNS no\n"
                "PrintMotd no\n"
                "PrintLastLog no\n"
                "Subsystem sftp /usr/lib/openssh/sftp-server\n"
                "LogLevel VERBOSE\n" % port
            )
        log_path = os.path.join(node_dir, "sshd.log")
        with open(log_path, "ab") as log_file:
            proc = subprocess.Popen(
                ["/usr/bin/unshare", "--mount", "--propagation", "private",
                 "/bin/sh", "-c", NODE_ROOT_SCRIPT, "sh", home, os.path.join(node_dir, "root")],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
            )
        # Ready when it says it listens (a port that answers could be someone else's).
        listening = "Server listening on 127.0.0.1 port %d." % port
        deadline = time.monotonic() + 10
        ns = None
        while time.monotonic() < deadline and proc.poll() is None:
            with open(log_path, errors="replace") as f:
                if listening in f.read() and port_open(port):
                    ns = mount_ns(proc.pid)
                    break
            time.sleep(0.05)
        if ns is not None and proc.poll() is None:
            procs.sshd.append((proc, ns))
            return port
        procs.sshd.append((proc, mount_ns(proc.pid)))
        with open(log_path, errors="replace") as f:
            last = f.read()[-2000:]
    raise SetupError("sshd did not start (log %s):\n%s" % (log_path, last))


def make_key(path):
    subprocess.run(
        ["/usr/bin/ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "lava-run-harness",
         "-f", path],
        check=True,
        stdin=subprocess.DEVNULL,
    )


def prepare_node(work, job_id, identity, host_key, variant, tools):
    node_dir = os.path.join(work, "node-%s" % job_id)
    home = os.path.join(node_dir, "home")
    os.makedirs(os.path.join(home, ".ssh"), mode=0o700)
    os.makedirs(os.path.join(home, ".sshd"), mode=0o700)
    os.chmod(home, 0o700)
    shutil.copy(identity + ".pub", os.path.join(home, ".ssh", "authorized_keys"))
    shutil.copy(host_key, os.path.join(home, ".sshd", "host_key"))
    os.chmod(os.path.join(home, ".sshd", "host_key"), 0o600)
    profile = (
        "# the lava-run harness's node: a fixed prompt the job's boot action waits for\n"
        "PS1='%s'\n" % PROMPT
    )
    with open(os.path.join(home, ".bashrc"), "w") as f:
        f.write(profile)
    with open(os.path.join(home, ".profile"), "w") as f:
        f.write("[ -f ~/.bashrc ] && . ~/.bashrc\n")
    if variant == "ours":
        # Our tools, deployed onto the node as a lab would: /root/mn/lava-multinode.
        tools_dir = os.path.join(home, "mn")
        os.makedirs(tools_dir)
        shutil.copy(tools, os.path.join(tools_dir, "lava-multinode"))
        os.chmod(os.path.join(tools_dir, "lava-multinode"), 0o755)
    return node_dir, home


# ---------------------------------------------------------------------------------------------
# Results


def read_log(path):
    """lava-run's log (one YAML flow mapping per line): the results and the last errors."""
    import yaml

    results = []
    errors = []
    console = []
    try:
        with open(path, errors="replace") as f:
            lines = f.readlines()
    except OSError:
        return results, errors, console
    for line in lines:
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            entry = yaml.safe_load(line)
        except yaml.YAMLError:
            continue
        if not isinstance(entry, dict):
            continue
        if entry.get("lvl") == "results" and isinstance(entry.get("msg"), dict):
            results.append(entry["msg"])
        elif entry.get("lvl") in ("error", "exception"):
            errors.append(str(entry.get("msg"))[:500])
        elif entry.get("lvl") == "target":
            console.append(str(entry.get("msg"))[:300])
    return results, errors, console


def summarise(nodes, expected, elapsed, timed_out):
    import yaml

    summary = {"elapsed_seconds": round(elapsed, 1), "timed_out": timed_out, "nodes": []}
    all_ok = not timed_out
    for node in nodes:
        results, errors, console = read_log(node["log"])
        with open(os.path.join(node["dir"], "results.yaml"), "w") as f:
            yaml.safe_dump(results, f, default_flow_style=False)
        cases = {}
        job_result = None
        for r in results:
            name = r.get("case")
            if r.get("definition") == "lava" and name == "job":
                job_result = r.get("result")
                continue
            if r.get("definition") == "lava":
                continue  # the dispatcher's own actions
            # A case reported twice keeps its worst result.
            if cases.get(name) != "fail":
                cases[name] = r.get("result")
        want = expected[node["role"]]
        not_passed = [c for c in want if cases.get(c) != "pass"]
        other_failed = sorted(c for c, r in cases.items() if r == "fail" and c not in want)
        ok = (
            not not_passed
            and not other_failed
            and job_result == "pass"
            and node["exit"] == 0
        )
        all_ok = all_ok and ok
        summary["nodes"].append(
            {
                "job_id": node["job_id"],
                "role": node["role"],
                "exit": node["exit"],
                "seconds": node["seconds"],
                "job_result": job_result,
                "cases": cases,
                "expected": want,
                "not_passed": not_passed,
                "other_failed": other_failed,
                "errors": errors[-5:],
                # The end of what the node's test shell printed.
                "console_tail": console[-12:],
                "dir": node["dir"],
                "log": node["log"],
            }
        )
    summary["ok"] = all_ok
    return summary


def print_summary(summary):
    for node in summary["nodes"]:
        log(
            "node %s (%s): lava-run exit %s after %.1f s, job %s, %d cases, not passed: %s%s"
            % (
                node["job_id"],
                node["role"],
                node["exit"],
                node["seconds"],
                node["job_result"],
                len(node["cases"]),
                ", ".join(
                    "%s (%s)" % (c, node["cases"].get(c, "missing")) for c in node["not_passed"]
                )
                or "none",
                "; other failed: %s" % ", ".join(node["other_failed"])
                if node["other_failed"]
                else "",
            )
        )
    log(
        "whole job %.1f s%s: %s"
        % (
            summary["elapsed_seconds"],
            " (timed out)" if summary["timed_out"] else "",
            "every expected case passed" if summary["ok"] else "NOT every expected case passed",
        )
    )


# ---------------------------------------------------------------------------------------------


def run(args):
    work = os.path.abspath(args.work_dir)
    os.makedirs(work, exist_ok=True)
    if os.listdir(work):
        raise SetupError("--work-dir %s is not empty" % work)
    job, expected = submission(args.variant)
    first = random.randint(100000, 899999) * 10
    jobs = split_job(job, first)
    procs = Processes()
    os.makedirs(os.path.dirname(LOCK), exist_ok=True)
    lock = open(LOCK, "a")
    locked = False
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log("waiting for %s (another run uses %s)" % (LOCK, CONF))
            fcntl.flock(lock, fcntl.LOCK_EX)
        locked = True
        identity = os.path.join(work, "id_lava")
        host_key = os.path.join(work, "ssh_host_key")
        make_key(identity)
        make_key(host_key)
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        devices_dir = os.path.join(work, "devices")
        os.makedirs(devices_dir)
        dispatcher = os.path.join(work, "dispatcher.yaml")
        with open(dispatcher, "w") as f:
            f.write("# lava-run harness: the worker's dispatcher configuration\n"
                    "dispatcher_ip: 127.0.0.1\n")
        import yaml

        nodes = []
        for job_id, role, definition in jobs:
            node_dir, home = prepare_node(work, job_id, identity, host_key, args.variant,
                                          args.tools)
            port = start_sshd(node_dir, home, procs)
            hostname = "lava-mn-ssh-%s" % job_id
            device = render_device(hostname, port, identity, devices_dir)
            with open(os.path.join(node_dir, "device.yaml"), "w") as f:
                f.write(device)
            with open(os.path.join(node_dir, "job.yaml"), "w") as f:
                yaml.safe_dump(definition, f, default_flow_style=False, sort_keys=False)
            nodes.append({"job_id": job_id, "role": role, "dir": node_dir, "ssh_port": port,
                          "log": os.path.join(node_dir, "lava-run.log")})
        install_conf(args.port)
        log("coordinator 127.0.0.1:%d in %s (poll_delay 1); %s"
            % (args.port, CONF, ", ".join("%s %s on ssh port %d" % (n["job_id"], n["role"],
                                                                    n["ssh_port"])
                                          for n in nodes)))
        started = time.monotonic()
        for node in nodes:
            with open(node["log"], "wb") as out:
                procs.lava_run.append(
                    subprocess.Popen(
                        ["/usr/bin/lava-run", "--job-id", node["job_id"], "--output-dir",
                         os.path.join(node["dir"], "output"), "--device",
                         os.path.join(node["dir"], "device.yaml"), "--dispatcher",
                         dispatcher, os.path.join(node["dir"], "job.yaml")],
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        cwd=node["dir"],
                    )
                )
        deadline = started + args.timeout
        timed_out = False
        ended = {}
        while any(p.poll() is None for p in procs.lava_run):
            for node, proc in zip(nodes, procs.lava_run):
                if node["job_id"] not in ended and proc.poll() is not None:
                    ended[node["job_id"]] = time.monotonic() - started
            if time.monotonic() > deadline:
                timed_out = True
                log("the job did not finish in %d s: stopping it" % args.timeout)
                break
            time.sleep(0.2)
        elapsed = time.monotonic() - started
        procs.stop()
        for node, proc in zip(nodes, procs.lava_run):
            node["exit"] = proc.returncode
            node["seconds"] = round(ended.get(node["job_id"], elapsed), 1)
        summary = summarise(nodes, expected, elapsed, timed_out)
        summary["variant"] = args.variant
        summary["coordinator_port"] = args.port
        with open(os.path.join(work, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
        print_summary(summary)
        log("summary in %s" % os.path.join(work, "summary.json"))
        return 0 if summary["ok"] else 1
    finally:
        procs.stop()
        try:
            if locked:
                restore_conf()
        finally:
            lock.close()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true",
                   help="only check that everything the run needs is installed")
    p.add_argument("--port", type=int,
                   help="the coordinator's port on 127.0.0.1 (already listening)")
    p.add_argument("--variant", choices=["lava", "ours"], default="lava",
                   help="whose helpers the test definitions call (default: lava)")
    p.add_argument("--tools", help="our lava-multinode binary (--variant ours)")
    p.add_argument("--work-dir", help="an empty or new folder for the run")
    p.add_argument("--timeout", type=int, default=150,
                   help="seconds the whole job may take (default 150)")
    args = p.parse_args()
    if not args.check and (args.port is None or args.work_dir is None):
        p.error("--port and --work-dir are needed (or --check)")

    def on_signal(signum, _frame):
        raise KeyboardInterrupt("signal %d" % signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    try:
        check_prerequisites(args.variant, args.tools)
        if args.check:
            log("everything the run needs is installed")
            return 0
        return run(args)
    except Missing as exc:
        log("%s: %s" % (exc, INSTALL_HINT))
        return 3
    except SetupError as exc:
        log("error: %s" % exc)
        return 4
    except KeyboardInterrupt as exc:
        log("interrupted (%s): sshd and lava-run stopped, %s restored" % (exc, CONF))
        return 4
    except subprocess.CalledProcessError as exc:
        log("error: %s" % exc)
        return 4
    except OSError as exc:
        if exc.errno in (errno.EPERM, errno.EACCES):
            log("error: %s (run me as root)" % exc)
        else:
            log("error: %s" % exc)
        return 4
    except Exception as exc:  # e.g. lava-server refusing the job or a device (a bug here)
        traceback.print_exc()
        log("error: %s: %s" % (type(exc).__name__, exc))
        return 4


if __name__ == "__main__":
    sys.exit(main())
