//! The commands: names, the flags each takes, and dispatch.

pub mod fail;
pub mod install;
pub mod messaging;
pub mod roster;
pub mod vm;

use std::io::Write;

use crate::args::{self, Opt, Parsed};
use crate::config::{Config, Key};
use crate::error::Error;
use crate::help;
use crate::wait::Session;

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
    SelfName,
    Role,
    Group,
    Install,
    /// `lava-multinode vm-group`: the VM group launcher (a sub-command only).
    VmGroup,
}

/// Settings every coordinator command takes as flags; the last, `--host-ip`, only
/// `lava-start-vms` takes.
const FLAG_KEYS: [Key; 10] = [
    Key::Coordinator,
    Key::Group,
    Key::Client,
    Key::Role,
    Key::GroupSize,
    Key::Timeout,
    Key::Poll,
    Key::Lease,
    Key::Cache,
    Key::HostIp,
];

pub(crate) const FAILED: Opt = Opt {
    name: "failed",
    takes_value: true,
};
pub(crate) const FORCE: Opt = Opt {
    name: "force",
    takes_value: false,
};

impl Command {
    pub const ALL: [Command; 14] = [
        Command::Send,
        Command::Wait,
        Command::WaitAll,
        Command::Sync,
        Command::StartVms,
        Command::WaitForVms,
        Command::WaitVms,
        Command::VmDone,
        Command::Fail,
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
            Command::SelfName => "self",
            Command::Role => "role",
            Command::Group => "group",
            Command::Install => "install",
            Command::VmGroup => "vm-group",
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

    fn keys(self) -> &'static [Key] {
        match self {
            Command::Install | Command::VmGroup => &[],
            Command::StartVms => &FLAG_KEYS,
            _ => &FLAG_KEYS[..FLAG_KEYS.len() - 1],
        }
    }

    fn options(self) -> &'static [Opt] {
        match self {
            Command::VmDone => &[FAILED],
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
    fn debug(&self) -> bool {
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
fn arity(p: &Parsed, min: usize, max: usize, what: &str) -> Result<(), Error> {
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

/// Runs `cmd` with its arguments (program name excluded).
pub fn run(cmd: Command, argv: &[String], env: Env<'_>) -> Result<(), Error> {
    if cmd == Command::VmGroup {
        return crate::vmgroup::run(argv, env);
    }
    let parsed = args::parse(argv, cmd.keys(), cmd.options()).map_err(Error::Usage)?;
    if parsed.help {
        return print_lines(env.out, &[help::text(cmd)]);
    }
    if cmd == Command::Install {
        arity(&parsed, 1, 1, "target folder")?;
        return install::install(
            std::path::Path::new(&parsed.positional[0]),
            parsed.switch("force"),
        );
    }
    let cfg = Config::load(&parsed.config_flags(), env.var)?;
    let debug = env.debug();
    let session = || Session::from_config(&cfg, debug);
    let pos = &parsed.positional;
    match cmd {
        Command::Send => {
            arity(&parsed, 1, usize::MAX, "message ID")?;
            let id = messaging::message_id(&pos[0])?;
            let message = messaging::parse_pairs(&pos[1..])?;
            messaging::send(&session()?, id, message)
        }
        Command::Wait => {
            arity(&parsed, 1, 1, "message ID")?;
            let id = messaging::message_id(&pos[0])?;
            messaging::wait(&session()?, &cfg.cache(), id, None, env.out)
        }
        Command::WaitAll => {
            arity(&parsed, 1, 2, "message ID")?;
            let id = messaging::message_id(&pos[0])?;
            let role = pos.get(1).map(String::as_str);
            messaging::wait(&session()?, &cfg.cache(), id, Some(role), env.out)
        }
        Command::Sync => {
            arity(&parsed, 1, 1, "message ID")?;
            messaging::sync(&session()?, messaging::message_id(&pos[0])?)
        }
        Command::SelfName => {
            arity(&parsed, 0, 0, "")?;
            let client = cfg.require(Key::Client)?.to_owned();
            print_lines(env.out, &[client])
        }
        Command::Role => {
            arity(&parsed, 0, 1, "")?;
            match pos.first().map(String::as_str) {
                None => {
                    let role = cfg.require(Key::Role)?.to_owned();
                    print_lines(env.out, &[role])
                }
                Some("list") => roster::role_list(&session()?, env.out),
                Some(other) => Err(Error::Usage(format!(
                    "unexpected argument {other:?} (only \"list\" is known)"
                ))),
            }
        }
        Command::Group => {
            arity(&parsed, 0, 1, "")?;
            roster::group(&session()?, pos.first().map(String::as_str), env.out)
        }
        Command::StartVms => {
            arity(&parsed, 0, 0, "")?;
            let session = session()?;
            let host_ip = match cfg.get(Key::HostIp) {
                Some(ip) => ip.to_owned(),
                None => vm::local_address(&session.addr)?,
            };
            vm::start_vms(&session, &host_ip)
        }
        Command::WaitForVms | Command::WaitVms => {
            arity(&parsed, 0, 0, "")?;
            vm::wait_for_vms(&session()?)
        }
        Command::VmDone => {
            arity(&parsed, 0, 0, "")?;
            let failed = parsed.option("failed").flatten();
            if failed.is_some_and(|r| r.contains(['\n', '\r'])) {
                return Err(Error::Usage("the --failed reason must be one line".into()));
            }
            vm::vm_done(&session()?, failed)
        }
        Command::Fail => {
            arity(&parsed, 1, usize::MAX, "reason")?;
            let reason = pos.join(" ");
            if reason.contains(['\n', '\r']) {
                return Err(Error::Usage("the reason must be one line".into()));
            }
            fail::fail(&session()?, &reason)
        }
        Command::Install | Command::VmGroup => unreachable!("handled above"),
    }
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

    fn run_with(cmd: Command, argv: &[&str], vars: &[(&str, &str)]) -> (Result<(), Error>, String) {
        let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let var = move |name: &str| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let mut out = Vec::new();
        let result = run(
            cmd,
            &argv,
            Env {
                var: &var,
                out: &mut out,
            },
        );
        (result, String::from_utf8(out).unwrap())
    }

    const NO_FILES: [(&str, &str); 2] = [
        ("LAVA_MULTINODE_CMDLINE", "/nonexistent/cmdline"),
        ("LAVA_MULTINODE_CONF", ""),
    ];

    #[test]
    fn local_commands_answer_from_settings() {
        let (r, out) = run_with(Command::SelfName, &["--client", "c1"], &NO_FILES);
        assert!(r.is_ok());
        assert_eq!(out, "c1\n");
        let mut vars = NO_FILES.to_vec();
        vars.push(("LAVA_MULTINODE_ROLE", "server"));
        let (r, out) = run_with(Command::Role, &[], &vars);
        assert!(r.is_ok());
        assert_eq!(out, "server\n");
    }

    #[test]
    fn usage_errors() {
        let usage = |cmd, argv: &[&str]| {
            let (r, _) = run_with(cmd, argv, &NO_FILES);
            match r {
                Err(Error::Usage(text)) => text,
                other => panic!("{cmd:?} {argv:?}: {other:?}"),
            }
        };
        assert_eq!(usage(Command::Send, &[]), "missing message ID");
        assert_eq!(
            usage(Command::Wait, &["a", "b"]),
            "unexpected argument \"b\""
        );
        assert_eq!(
            usage(Command::WaitAll, &["a", "b", "c"]),
            "unexpected argument \"c\""
        );
        assert!(usage(Command::Send, &["id", "novalue"]).contains("key=value"));
        assert!(usage(Command::Send, &["id", "k=a\nb"]).contains("line break"));
        assert!(usage(Command::Send, &["", "k=v"]).contains("empty"));
        assert!(usage(Command::Role, &["lsit"]).contains("\"lsit\""));
        assert!(usage(Command::SelfName, &["--host-ip", "1"]).contains("--host-ip"));
        assert!(usage(Command::VmDone, &["--failed", "a\nb"]).contains("one line"));
        assert_eq!(usage(Command::Install, &[]), "missing target folder");
    }

    #[test]
    fn missing_settings_are_config_errors() {
        let (r, _) = run_with(Command::Send, &["id"], &NO_FILES);
        let err = r.unwrap_err();
        assert_eq!(err.exit_code(), crate::error::EXIT_CONFIG);
        assert!(
            err.to_string().contains("LAVA_MULTINODE_COORDINATOR"),
            "{err}"
        );
    }

    #[test]
    fn help_is_printed() {
        for cmd in Command::ALL {
            let (r, out) = run_with(cmd, &["--help"], &NO_FILES);
            assert!(r.is_ok());
            assert!(out.contains("Exit status"), "{cmd:?}: {out}");
        }
    }
}
