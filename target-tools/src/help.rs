//! `--help` texts.

use crate::commands::Command;

const SETTINGS: &str = "\
Settings (highest precedence first: flag, environment variable, line in the configuration
file $LAVA_MULTINODE_CONF or /etc/lava-multinode.conf, kernel command line parameter
lava_multinode.KEY=value in $LAVA_MULTINODE_CMDLINE or /proc/cmdline):
  --coordinator HOST[:PORT]  LAVA_MULTINODE_COORDINATOR  coordinator (port 3079 by default)
  --group NAME               LAVA_MULTINODE_GROUP        group name
  --client NAME              LAVA_MULTINODE_CLIENT       this node's name in the group
  --role ROLE                LAVA_MULTINODE_ROLE         this node's role
  --group-size N             LAVA_MULTINODE_GROUP_SIZE   number of nodes (needed to create the group)
  --timeout SECONDS          LAVA_MULTINODE_TIMEOUT      give up after this long (600)
  --poll SECONDS             LAVA_MULTINODE_POLL         polling interval against LAVA's coordinator (1)
  --cache FILE               LAVA_MULTI_NODE_CACHE       cache file (/tmp/lava_multi_node_cache.txt)";

const EXIT: &str = "\
Exit status:
  0  success
  1  negative answer (lava-group ROLE: no such member; lava-wait-for-vms: a member failed)
  2  bad arguments
  3  a setting is missing or invalid
  4  the coordinator refused the request (nack)
  5  timeout
  6  coordinator unreachable until the timeout, or an unusable reply
  7  local error (cache file, standard output, install links)";

fn usage(cmd: Command) -> &'static str {
    match cmd {
        Command::Send => {
            "\
Usage: lava-send ID [KEY=VALUE ...]

Sends message ID with the given pairs (split at the first '='; values may hold spaces,
'=' and any Unicode, not line breaks) to every node of the group."
        }
        Command::Wait => {
            "\
Usage: lava-wait ID

Waits until any node of the group has sent message ID, then prints the data sent under
ID as 'sender:key=value' lines and writes the same lines to the cache file (replacing it)."
        }
        Command::WaitAll => {
            "\
Usage: lava-wait-all ID [ROLE]

Waits until every node of the group (or every node of ROLE) has sent message ID, then
prints the data sent under ID as 'sender:key=value' lines and writes them to the cache file."
        }
        Command::Sync => {
            "\
Usage: lava-sync ID

Waits until every node of the group has called lava-sync ID. Leaves the cache file alone."
        }
        Command::StartVms => {
            "\
Usage: lava-start-vms [--host-ip IP]

On the host of a VM group: opens the start gate of the VMs (message lava_vm_start with
host_ip). The host's address defaults to this machine's address towards the coordinator
(--host-ip, LAVA_MULTINODE_HOST_IP, or lava_multinode.host_ip= set it)."
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
REASON (status=failed). The host's lava-wait-for-vms returns once every member has."
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
        Command::Install => {
            "\
Usage: lava-multinode install [--force] DIR

Creates the lava-* commands in DIR as links to this binary. Existing links are replaced;
other files only with --force."
        }
    }
}

/// The help of one command.
pub fn text(cmd: Command) -> String {
    let settings = if cmd == Command::Install {
        String::new()
    } else {
        format!("{SETTINGS}\n\n")
    };
    format!("{}\n\n{settings}{EXIT}", usage(cmd))
}

/// The help of `lava-multinode` itself.
pub fn main_text() -> String {
    let mut commands = String::new();
    for cmd in Command::ALL {
        commands.push_str(&format!("  {}\n", cmd.name()));
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
