//! `--help` texts.

use crate::cli::Command;
use crate::config::help_lines;

/// The settings part of a command's help: the lines come from the settings table.
fn settings_text(cmd: Command) -> String {
    let lines = help_lines(cmd == Command::StartVms).join("\n");
    format!(
        "\
Settings (highest precedence first: flag, environment variable, line in the configuration
file $LAVA_MULTINODE_CONF or /etc/lava-multinode.conf, kernel command line parameter
lava_multinode.KEY=value in $LAVA_MULTINODE_CMDLINE or /proc/cmdline):
{lines}

Transport: tcp talks to the coordinator. console prints LAVA's marker line on standard output
(<LAVA_MULTI_NODE> <LAVA_WAIT ID>) and reads the reply line the relay (LAVA's dispatcher,
the VM-group launcher) types on standard input, as LAVA's shell helpers do; it needs no
coordinator, group, client or role (lava-self, lava-role, lava-group fall back to
$LAVA_HOSTNAME, $TARGET_ROLE, $LAVA_GROUP). See docs/TOOLS.md, Transports."
    )
}

const EXIT: &str = "\
Exit status:
  0  success
  1  negative answer (lava-group ROLE: no such member; lava-wait-for-vms: a member failed)
  2  bad arguments
  3  a setting is missing or invalid
  4  the coordinator refused the request (nack; console: the relay did); our extensions
     (locks, any-of waits): the coordinator is not ours, or the transport is the console
  5  timeout
  6  coordinator unreachable until the timeout, or an unusable reply; console: it closed
  7  local error (cache file, standard output, install links; lava-fail: nobody was told)
  8  lava-lock --try: the lock has no free place";

fn usage(cmd: Command) -> &'static str {
    match cmd {
        Command::Send => {
            "\
Usage: lava-send [--to CLIENT] [--queue] ID [KEY=VALUE ...]

Sends message ID with the given pairs (split at the first '='; values may hold spaces,
'=' and any Unicode, not line breaks) to every node of the group. --to CLIENT: to that node
only (only its lava-wait ID sees it; the client must be a member). --queue: appends the pairs
to queue ID instead, where each entry is taken once by a lava-wait --consume ID (with --to,
only by CLIENT). --to and --queue need our coordinator over TCP (else exit 4). Over the console it only
prints LAVA's marker (no reply comes), and what a marker cannot carry is refused (exit 2):
whitespace in ID, keys other than letters, digits and '_', '=' in values, '<' or '>'."
        }
        Command::Wait => {
            "\
Usage: lava-wait ID [ID ...]
       lava-wait --consume ID

Waits until any node of the group has sent message ID, then prints the data sent under
ID as 'sender:key=value' lines and writes the same lines to the cache file (replacing it).
With several IDs: waits until any of them has been sent, prints that ID alone on the first
line, then its data as above (the cache file gets the data lines only); when several were
sent already, the first in the order given. Several IDs need our coordinator over TCP
(against LAVA's, or over the console, exit 4).
--consume: takes the oldest entry of queue ID (lava-send --queue) this node may take,
waiting for one, and prints it as 'sender:key=value' lines (and writes the cache file); each
entry is taken by one node only. Needs our coordinator over TCP (else exit 4)."
        }
        Command::WaitAll => {
            "\
Usage: lava-wait-all [--any] ID [ROLE]

Waits until every node of the group (or every node of ROLE) has sent message ID, then
prints the data sent under ID as 'sender:key=value' lines and writes them to the cache file.
--any: waits until any one node (of ROLE) has sent ID instead, and prints the data of the
nodes (of ROLE) that have; it needs our coordinator over TCP (else exit 4)."
        }
        Command::Sync => {
            "\
Usage: lava-sync ID
       lava-sync --role ROLE ID
       lava-sync --count N ID

Waits until every node of the group has called lava-sync ID. Leaves the cache file alone.
--role ROLE (this node's role, given on the command line): a barrier of the nodes of ROLE
only: waits until every node of ROLE has called lava-sync --role ROLE ID. --count N: waits
until N nodes, whichever, have called lava-sync --count N ID. Both are reusable: the next
calls make the next round (the coordinator's status shows the round). They need our
coordinator over TCP (else exit 4); exit 4 too when the round can no longer fill (a node of
the role failed, too few nodes left). Without --role, the role set elsewhere
(LAVA_MULTINODE_ROLE, the file, the kernel command line) makes no role barrier."
        }
        Command::StartVms => {
            "\
Usage: lava-start-vms [--host-ip IP]

On the host of a VM group: opens the start gate of the VMs (message lava_vm_start with
host_ip). The host's address defaults to this machine's address towards the coordinator
(--host-ip, LAVA_MULTINODE_HOST_IP, or lava_multinode.host_ip= set it); over the console
there is no coordinator to find it from, so it must be set (else exit 3)."
        }
        Command::WaitForVms | Command::WaitVms => {
            "\
Usage: lava-wait-for-vms   (also: lava-wait-vms)

On the host of a VM group: reports the host's own end (lava_vm_stop status=ok), waits
until every member of the group has reported its end, and fails (exit 1) naming the
members that reported status=failed."
        }
        Command::VmDone => {
            "\
Usage: lava-vm-done [--failed REASON]

In a VM guest: reports that this VM has finished (lava_vm_stop status=ok), or failed with
REASON (status=failed). The host's lava-wait-for-vms returns once every member has.
Over the console the reason travels in LAVA's reply lines: runs of whitespace become one
space, and '=', '<', '>' become '_' (with a note on stderr)."
        }
        Command::Fail => {
            "\
Usage: lava-fail REASON...

Declares that this node failed, with REASON. Our coordinator answers at once, with a
failure naming this node and REASON, every request that waits on it: a lava-sync it has
not reached, a lava-wait-all that needs its lava-send, a lava-wait only it could still
answer. Those tools exit 4. Against LAVA's own coordinator nothing can be told (exit 7).
Over the console it prints <LAVA_MULTI_NODE> <LAVA_FAIL REASON>, which our VM-group
launcher relays and LAVA's dispatcher ignores: no reply within 10 s (or the timeout) is
exit 7."
        }
        Command::FailureScope => {
            "\
Usage: lava-failure-scope ROLE...
       lava-failure-scope --none
       lava-failure-scope --all

Says whose failures end this node's waits: only those of the nodes of the ROLEs (--none:
nobody's; --all: everybody's again, the default). A support server that must keep serving when
a client fails calls lava-failure-scope server (or --none): a failed client then no longer
ends its lava-sync, lava-wait-all, lava-wait and the like; they wait on, ended by the
timeout, the others, or the deadlock verdict (every live node waiting). Exit 4 for a role no
node has (once the group's members are known), and against LAVA's coordinator or over the
console (it needs ours)."
        }
        Command::Lock => {
            "\
Usage: lava-lock [--try] [--count N] [--lab] NAME

Takes a place in lock NAME of the group: waits until one is free (the timeout applies, exit
5), then prints 'lock=NAME' and 'holders=CLIENT,...' lines; when the place was handed over,
also 'freed_by=HOLDER' and 'freed_because=REASON' (unlocked, failed, cleared the group, lease
expired, its group was deleted). A lock has one place, or N with --count N (every holder must
ask with the same N). Taking a place held already answers at once. --try answers at once:
exit 8 when no place is free. --lab: a lab-wide lock, shared by every group, where the
coordinator allows them (setting lab_locks); holders are then GROUP/CLIENT.
A place is given back by lava-unlock, and at once when its holder fails (lava-fail), clears
the group, or is counted gone (its waiting tool stopped asking). Needs our coordinator over
TCP: against LAVA's, or over the console, exit 4."
        }
        Command::Unlock => {
            "\
Usage: lava-unlock [--lab] NAME

Gives back this node's place in lock NAME (--lab: the lab-wide lock); the first waiter gets
it. Exit 4 when this node holds no place in it."
        }
        Command::SelfName => {
            "\
Usage: lava-self

Prints this node's client name."
        }
        Command::Role => {
            "\
Usage: lava-role [list]

Prints this node's role; with 'list', every role of the group once, one per line (from the
declared roster, else once the group is complete)."
        }
        Command::Group => {
            "\
Usage: lava-group [ROLE]

Prints 'client<TAB>role' for every node of the group, or with ROLE the clients of that role
(exit 1 when there is none). Answers from the declared roster, else once the group is
complete."
        }
        Command::VmGroup => VM_GROUP,
        Command::Install => {
            "\
Usage: lava-multinode install [--force] DIR

Creates the lava-* commands in DIR as links to this binary. Existing links are replaced;
other files only with --force."
        }
    }
}

const VM_GROUP: &str = "\
Usage: lava-multinode vm-group run JOB [OPTIONS] [-- HOST_TEST [ARGS ...]]
       lava-multinode vm-group show JOB [OPTIONS]

The host of a VM group (docs/VM-GROUPS.md). JOB is a VM-group job as LAVA v1 wrote it, JSON
or YAML: timeout, job_name, vm_group {host {device_type, role, ssh}, auto_start_vms (true),
vms [{device_type, role, count (1), image, launch_with, shell_prompt, auto_login
{login_prompt, username, password_prompt, password}, console_commands}]} and actions, run in
order: deploy_linaro_image {image, role}, deploy_linaro_kernel {kernel, ramdisk, dtb, rootfs,
role}, lava_test_shell {testdef_urls, testdef_repos, role, timeout}; boot_linaro_image and
submit_results are skipped, any other command refused.

run: fetches the images and test definitions, declares the group's roster ('host' client =
the host's role; VMs are ROLE-1 .. ROLE-N), opens the VMs' start gate (at once with
auto_start_vms, else when the host's test calls lava-start-vms), then starts every VM: its
launch_with commands (sh -c, in order), else qemu for its device_type (KVM when it works, else
TCG) on its own overlay of its image. The last command runs on a pseudo-terminal: the VM's
console, kept in LOG_DIR/CLIENT.log. On each console the launcher logs in (auto_login), waits
for shell_prompt ('# ' or '$ ' when none is given), types the console_commands and the VM's
test shells (the test definitions, helpers and, when the guest has none, our tools) and
relays LAVA's MultiNode markers (<LAVA_MULTI_NODE> <LAVA_SEND ...>, WAIT, WAIT_ALL, SYNC) to
the coordinator in the VM's name, typing LAVA's reply lines back: a guest needs no network.
After its last test shell it reports the VM's end and powers it off. A VM whose process ends
before its end was reported is reported failed in its name. Meanwhile HOST_TEST and the
host's first test shell run with the host's settings; then the launcher reports the host's end,
waits for every member's end (lava-wait-for-vms), runs the host's further test shells and the
--after commands, prints the results table, writes results.yaml and junit.xml to LOG_DIR,
clears the group and writes LOG_DIR/report.html (nodes, boot and run times, results and the
group's timeline, from the coordinator's history when it keeps one; opens offline). With vm_group.host.ssh, the VMs and the host's test shells run on that host.
show: prints the group and each VM's commands with the placeholders filled in.

Options:
  --coordinator HOST[:PORT]  the coordinator, as the host reaches it (LAVA_MULTINODE_COORDINATOR)
  --group NAME               group name (LAVA_MULTINODE_GROUP; default vm-group-<time>-<pid>)
  --host-ip IP               the host's address for the guests, sent with the start gate
                             (LAVA_MULTINODE_HOST_IP; default 10.0.2.2, qemu user networking)
  --guest-coordinator ADDR   the coordinator as the guests reach it (default: the host's
                             coordinator address, with a loopback host replaced by --host-ip)
  --log-dir DIR              console logs (CLIENT.log) and bin/ with the lava-* links
                             (default: $TMPDIR/lava-GROUP)
  --boot-timeout SECONDS     longest wait for a VM's login and shell prompts (120)
  --timeout SECONDS          longest wait for every member's end after the host test, for
                             a console command, and for a relayed call (600)
  --after COMMAND            a shell command run after every VM has ended (repeatable)

Placeholders in launch_with: {coordinator} {group} {client} {role} {group_size} {host_ip}
{image} {index} {device_type} {log_dir} and {kernel_cmdline} = 'lava_multinode.coordinator=..
lava_multinode.group=.. lava_multinode.client=.. lava_multinode.role=..
lava_multinode.group_size=..'; also in the environment as LAVA_VM_<NAME>. '{{' and '}}' are
literal braces; ${...} is left to the shell.

Exit status:
  0  every member finished with status=ok, every host step passed and no test case failed
  1  a VM or the host failed, a test case failed, the host test or an --after command
     failed, or the job's timeout was reached
  2  bad arguments
  3  invalid job definition (the message names the field) or setting
  4  the coordinator refused a request (e.g. the group exists with another roster)
  5  timeout waiting for the VMs
  6  coordinator unreachable
  7  local error (log folder, links)";

/// The help of `lava-multinode vm-group`.
pub fn vm_group_text() -> String {
    VM_GROUP.to_owned()
}

/// The help of one command.
pub fn text(cmd: Command) -> String {
    if cmd == Command::VmGroup {
        return vm_group_text();
    }
    let settings = if cmd == Command::Install {
        String::new()
    } else {
        format!("{}\n\n", settings_text(cmd))
    };
    format!("{}\n\n{settings}{EXIT}", usage(cmd))
}

/// The help of `lava-multinode` itself.
pub fn main_text() -> String {
    let mut commands = String::new();
    for cmd in Command::ALL {
        commands.push_str(&format!("  {:<13} {}\n", cmd.name(), cmd.summary()));
    }
    format!(
        "\
Usage: lava-multinode COMMAND [ARGS ...]   or, through a link, lava-COMMAND [ARGS ...]

LAVA MultiNode helpers for test shells on hosts and VM guests. Commands:
{commands}
'lava-multinode COMMAND --help' describes each. 'lava-multinode install DIR' creates the
lava-* links.

{EXIT}"
    )
}
