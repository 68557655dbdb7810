//! What the commands share: their table (names, the settings and options each takes), what a
//! run needs from the outside world ([`Env`]), and small helpers for output and arguments.
//! `main`, the commands, `--help` and the VM-group launcher use it; it uses none of them.

use std::io::Write;

use crate::args::{Opt, Parsed};
use crate::config::Key;
use crate::error::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Send,
    Wait,
    WaitAll,
    Sync,
    StartVms,
    WaitForVms,
    /// `lava-wait-vms`: the seed's other name of `lava-wait-for-vms`.
    WaitVms,
    VmDone,
    /// `lava-fail REASON`: this node failed.
    Fail,
    /// `lava-failure-scope ROLE... | --none | --all`: whose failures end this node's waits.
    FailureScope,
    /// `lava-lock NAME`: take a place in a lock.
    Lock,
    /// `lava-unlock NAME`: give it back.
    Unlock,
    SelfName,
    Role,
    Group,
    Install,
    /// `lava-multinode vm-group`: the VM group launcher (a sub-command only).
    VmGroup,
}

pub(crate) const FAILED: Opt = Opt {
    name: "failed",
    takes_value: true,
};
pub(crate) const FORCE: Opt = Opt {
    name: "force",
    takes_value: false,
};
pub(crate) const TRY: Opt = Opt {
    name: "try",
    takes_value: false,
};
pub(crate) const COUNT: Opt = Opt {
    name: "count",
    takes_value: true,
};
pub(crate) const TO: Opt = Opt {
    name: "to",
    takes_value: true,
};
pub(crate) const QUEUE: Opt = Opt {
    name: "queue",
    takes_value: false,
};
pub(crate) const CONSUME: Opt = Opt {
    name: "consume",
    takes_value: false,
};
pub(crate) const NONE: Opt = Opt {
    name: "none",
    takes_value: false,
};
pub(crate) const ALL_FAILURES: Opt = Opt {
    name: "all",
    takes_value: false,
};
pub(crate) const ANY: Opt = Opt {
    name: "any",
    takes_value: false,
};
pub(crate) const LAB: Opt = Opt {
    name: "lab",
    takes_value: false,
};

impl Command {
    pub const ALL: [Command; 17] = [
        Command::Send,
        Command::Wait,
        Command::WaitAll,
        Command::Sync,
        Command::StartVms,
        Command::WaitForVms,
        Command::WaitVms,
        Command::VmDone,
        Command::Fail,
        Command::FailureScope,
        Command::Lock,
        Command::Unlock,
        Command::SelfName,
        Command::Role,
        Command::Group,
        Command::Install,
        Command::VmGroup,
    ];

    /// The name after `lava-multinode` (and, with `lava-` in front, the link name).
    pub fn name(self) -> &'static str {
        match self {
            Command::Send => "send",
            Command::Wait => "wait",
            Command::WaitAll => "wait-all",
            Command::Sync => "sync",
            Command::StartVms => "start-vms",
            Command::WaitForVms => "wait-for-vms",
            Command::WaitVms => "wait-vms",
            Command::VmDone => "vm-done",
            Command::Fail => "fail",
            Command::FailureScope => "failure-scope",
            Command::Lock => "lock",
            Command::Unlock => "unlock",
            Command::SelfName => "self",
            Command::Role => "role",
            Command::Group => "group",
            Command::Install => "install",
            Command::VmGroup => "vm-group",
        }
    }

    /// What it does, in a line (the top-level help).
    pub fn summary(self) -> &'static str {
        match self {
            Command::Send => "send a message (ID and key=value data) to the group (--to: one node)",
            Command::Wait => "wait until any member has sent a message ID (or any of several IDs)",
            Command::WaitAll => {
                "wait until every member (of a role; --any: any one) has sent a message ID"
            }
            Command::Sync => "wait until every member has reached the same point",
            Command::StartVms => "open the VMs' start gate (the host's side)",
            Command::WaitForVms => "report the host's end and wait for every VM's",
            Command::WaitVms => "the same as wait-for-vms (the seed's other name)",
            Command::VmDone => "report this VM's end (ok, or --failed REASON)",
            Command::Fail => "declare this node failed: every wait that needs it ends",
            Command::FailureScope => "say whose failures end this node's waits (ROLE..., --none)",
            Command::Lock => "take a place in a named lock (waits; --try, --count N, --lab)",
            Command::Unlock => "give back this node's place in a named lock",
            Command::SelfName => "print this node's client name",
            Command::Role => "print this node's role ('list': every role)",
            Command::Group => "print the group's members and roles (or the members of a role)",
            Command::Install => "create the lava-* links in a folder",
            Command::VmGroup => "run a VM-group job on the host (run JOB / show JOB)",
        }
    }

    /// The tool's name as test writers call it (`lava-send`); `install` and `vm-group`
    /// have none (sub-commands of `lava-multinode` only).
    pub fn tool_name(self) -> Option<String> {
        (!matches!(self, Command::Install | Command::VmGroup))
            .then(|| format!("lava-{}", self.name()))
    }

    /// The command a program name (`lava-send`) or sub-command (`send`, `lava-send`) means.
    pub fn lookup(name: &str) -> Option<Command> {
        let short = name.strip_prefix("lava-").unwrap_or(name);
        Command::ALL
            .into_iter()
            .find(|c| c.name() == short && (c.tool_name().is_some() || short == name))
    }

    /// The settings it takes as flags (from the settings table).
    pub fn keys(self) -> Vec<Key> {
        match self {
            Command::Install | Command::VmGroup => Vec::new(),
            _ => Key::flags(self == Command::StartVms),
        }
    }

    /// Its own options.
    pub fn options(self) -> &'static [Opt] {
        match self {
            Command::VmDone => &[FAILED],
            Command::Lock => &[TRY, COUNT, LAB],
            Command::FailureScope => &[NONE, ALL_FAILURES],
            Command::WaitAll => &[ANY],
            Command::Send => &[TO, QUEUE],
            Command::Wait => &[CONSUME],
            Command::Sync => &[COUNT],
            Command::Unlock => &[LAB],
            Command::Install => &[FORCE],
            _ => &[],
        }
    }
}

/// What a run needs from the outside world; tests give their own.
pub struct Env<'a> {
    pub var: &'a dyn Fn(&str) -> Option<String>,
    pub out: &'a mut dyn Write,
}

impl Env<'_> {
    /// `LAVA_MULTINODE_DEBUG` is set (not empty, not `0`).
    pub fn debug(&self) -> bool {
        (self.var)("LAVA_MULTINODE_DEBUG").is_some_and(|v| !v.is_empty() && v != "0")
    }
}

/// Writes lines to standard output; a closed output is a local error.
pub fn print_lines(out: &mut dyn Write, lines: &[String]) -> Result<(), Error> {
    out.write_all(crate::cache::text(lines).as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| Error::Local(format!("cannot write to standard output: {e}")))
}

/// Checks the number of positional arguments.
pub fn arity(p: &Parsed, min: usize, max: usize, what: &str) -> Result<(), Error> {
    let n = p.positional.len();
    if n < min {
        return Err(Error::Usage(format!("missing {what}")));
    }
    if n > max {
        let extra = &p.positional[max];
        return Err(Error::Usage(format!("unexpected argument {extra:?}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_commands() {
        assert_eq!(Command::lookup("lava-send"), Some(Command::Send));
        assert_eq!(Command::lookup("send"), Some(Command::Send));
        assert_eq!(Command::lookup("lava-wait-vms"), Some(Command::WaitVms));
        assert_eq!(Command::lookup("wait-for-vms"), Some(Command::WaitForVms));
        assert_eq!(Command::lookup("install"), Some(Command::Install));
        // Only the sub-command is called install; there is no lava-install tool.
        assert_eq!(Command::lookup("lava-install"), None);
        assert_eq!(Command::lookup("vm-group"), Some(Command::VmGroup));
        assert_eq!(Command::lookup("lava-vm-group"), None);
        assert_eq!(Command::lookup("lava-multinode"), None);
        assert_eq!(Command::lookup("lava-bogus"), None);
        for cmd in Command::ALL {
            if let Some(tool) = cmd.tool_name() {
                assert_eq!(Command::lookup(&tool), Some(cmd));
            }
        }
    }

    #[test]
    fn flags_come_from_the_settings_table() {
        let keys = Command::Send.keys();
        assert!(keys.contains(&Key::Coordinator) && keys.contains(&Key::Lease));
        assert!(!keys.contains(&Key::HostIp) && !keys.contains(&Key::Secret));
        assert!(!keys.contains(&Key::Transport));
        let start = Command::StartVms.keys();
        assert_eq!(start.len(), keys.len() + 1);
        assert!(start.contains(&Key::HostIp));
        assert!(Command::Install.keys().is_empty());
    }
}
