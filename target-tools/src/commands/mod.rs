//! The commands' dispatch; their table is in [`crate::cli`].

pub mod fail;
pub mod install;
pub mod lock;
pub mod messaging;
pub mod roster;
pub mod vm;

use lava_protocol::message::Roles;
use lava_protocol::{LockScope, Parties};

use crate::args;
use crate::cli::{arity, print_lines, Command, Env};

use crate::config::{Config, ConfigError, Key, Transport};
use crate::console::Console;
use crate::error::Error;
use crate::help;
use crate::link::Link;
use crate::wait::Session;

/// The variables LAVA's test shell sets for `lava-self`, `lava-role` and `lava-group`; the
/// console transport falls back to them.
const LAVA_CLIENT_VAR: &str = "LAVA_HOSTNAME";
const LAVA_ROLE_VAR: &str = "TARGET_ROLE";
const LAVA_GROUP_VAR: &str = "LAVA_GROUP";

/// This node's client name or role: the setting, else (console transport, `lava`) the
/// variable LAVA's test shell sets.
fn identity(
    cfg: &Config,
    key: Key,
    lava: Option<&str>,
    var: &dyn Fn(&str) -> Option<String>,
) -> Result<String, Error> {
    if let Some(value) = cfg.get(key) {
        return Ok(value.to_owned());
    }
    let Some(name) = lava else {
        return Ok(cfg.require(key)?.to_owned());
    };
    match var(name).map(|v| v.trim().to_owned()) {
        Some(value) if !value.is_empty() => Ok(value),
        _ => {
            let mut places = cfg.places(key);
            places.push(format!("${name} (set by LAVA's test shell)"));
            Err(ConfigError::Missing { key, places }.into())
        }
    }
}

/// The roster over the console: LAVA's `$LAVA_GROUP`.
fn lava_roster(var: &dyn Fn(&str) -> Option<String>) -> Result<Roles, Error> {
    match var(LAVA_GROUP_VAR).filter(|v| !v.trim().is_empty()) {
        Some(text) => Ok(crate::console::lava_group(&text)?),
        None => Err(ConfigError::Shell(format!(
            "no group roster: ${LAVA_GROUP_VAR} is not set (over the console, lava-group and \
             lava-role list answer from the client<TAB>role lines LAVA's test shell sets in it)"
        ))
        .into()),
    }
}

/// A failure reason as it can travel over the console ([`crate::console::travelling_reason`]),
/// with a note on stderr when it had to change; over TCP as it is.
fn travelling(console: bool, reason: &str, in_value: bool) -> String {
    if !console {
        return reason.to_owned();
    }
    let adapted = crate::console::travelling_reason(reason, in_value);
    if adapted != reason {
        eprintln!(
            "note: the reason is sent as {adapted:?}: LAVA's marker and reply lines cannot \
             carry {reason:?} as it is"
        );
    }
    adapted
}

/// Runs `cmd` with its arguments (program name excluded).
pub fn run(cmd: Command, argv: &[String], env: Env<'_>) -> Result<(), Error> {
    // `lava-send --version` as well as `lava-multinode --version`.
    if matches!(argv.first().map(String::as_str), Some("--version" | "-V")) && argv.len() == 1 {
        let name = cmd
            .tool_name()
            .unwrap_or_else(|| format!("lava-multinode {}", cmd.name()));
        return print_lines(
            env.out,
            &[format!(
                "{name} (lava-multinode) {}",
                env!("CARGO_PKG_VERSION")
            )],
        );
    }
    if cmd == Command::VmGroup {
        #[cfg(feature = "vm-group")]
        return crate::vmgroup::run(argv, env);
        #[cfg(not(feature = "vm-group"))]
        return Err(Error::Usage(
            "this build has no VM-group launcher (a static build for devices and guests): \
             use the host's lava-multinode"
                .into(),
        ));
    }
    let parsed = args::parse(argv, &cmd.keys(), cmd.options()).map_err(Error::Usage)?;
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
    let transport = cfg.transport()?;
    let console = transport == Transport::Console;
    let debug = env.debug();
    // Over TCP every request names this node; over the console LAVA's markers carry no
    // identity, and only the timeout is needed.
    let link = || -> Result<Box<dyn Link>, Error> {
        Ok(match transport {
            Transport::Tcp => Box::new(Session::from_config(&cfg, debug)?),
            Transport::Console => Box::new(Console::from_config(&cfg, debug)?),
        })
    };
    let var = env.var;
    let roles = || match transport {
        Transport::Tcp => roster::roster(&Session::from_config(&cfg, debug)?),
        Transport::Console => lava_roster(var),
    };
    let group_name = if console { None } else { cfg.get(Key::Group) };
    let pos = &parsed.positional;
    match cmd {
        Command::Send => {
            arity(&parsed, 1, usize::MAX, "message ID")?;
            let id = messaging::message_id(&pos[0])?;
            let message = messaging::parse_pairs(&pos[1..])?;
            let to = parsed.option("to").flatten().map(str::to_owned);
            let destination = match (to, parsed.switch("queue")) {
                (to, true) => messaging::Destination::Queue(to),
                (Some(to), false) => messaging::Destination::To(to),
                (None, false) => messaging::Destination::Everybody,
            };
            if matches!(&destination, messaging::Destination::To(to) | messaging::Destination::Queue(Some(to)) if to.is_empty())
            {
                return Err(Error::Usage("the --to client name is empty".into()));
            }
            messaging::send(&*link()?, id, message, &destination)
        }
        Command::Wait => {
            arity(&parsed, 1, usize::MAX, "message ID")?;
            let ids = pos
                .iter()
                .map(|id| messaging::message_id(id))
                .collect::<Result<Vec<_>, _>>()?;
            if parsed.switch("consume") {
                return match ids.as_slice() {
                    [id] => messaging::consume(&*link()?, &cfg.cache(), id, env.out),
                    _ => Err(Error::Usage("--consume takes one message ID".into())),
                };
            }
            match ids.as_slice() {
                [id] => messaging::wait(&*link()?, &cfg.cache(), id, None, env.out),
                ids => messaging::wait_any(&*link()?, &cfg.cache(), ids, None, true, env.out),
            }
        }
        Command::WaitAll => {
            arity(&parsed, 1, 2, "message ID")?;
            let id = messaging::message_id(&pos[0])?;
            let role = pos.get(1).map(String::as_str);
            match parsed.switch("any") {
                true => messaging::wait_any(&*link()?, &cfg.cache(), &[id], role, false, env.out),
                false => messaging::wait(&*link()?, &cfg.cache(), id, Some(role), env.out),
            }
        }
        Command::Sync => {
            arity(&parsed, 1, 1, "message ID")?;
            let id = messaging::message_id(&pos[0])?;
            // `lava-sync --role ROLE`: this node's role, given on the command line, makes a
            // barrier of the role's nodes (a node of another role could not join it).
            let role = parsed
                .config
                .iter()
                .rev()
                .find(|(k, _)| *k == Key::Role)
                .map(|(_, v)| v.as_str());
            let count = parsed.option("count").flatten();
            let parties = match (role, count) {
                (None, None) => return messaging::sync(&*link()?, id),
                (Some(_), Some(_)) => {
                    return Err(Error::Usage("give --role or --count, not both".into()))
                }
                (Some(""), None) => return Err(Error::Usage("the --role is empty".into())),
                (Some(role), None) => Parties::Role(role.to_owned()),
                (None, Some(n)) => Parties::Count(lock::count(Some(n))?),
            };
            messaging::barrier(&*link()?, id, parties)
        }
        Command::SelfName => {
            arity(&parsed, 0, 0, "")?;
            let lava = console.then_some(LAVA_CLIENT_VAR);
            let client = identity(&cfg, Key::Client, lava, var)?;
            print_lines(env.out, &[client])
        }
        Command::Role => {
            arity(&parsed, 0, 1, "")?;
            match pos.first().map(String::as_str) {
                None => {
                    let lava = console.then_some(LAVA_ROLE_VAR);
                    let role = identity(&cfg, Key::Role, lava, var)?;
                    print_lines(env.out, &[role])
                }
                Some("list") => roster::role_list(&roles()?, env.out),
                Some(other) => Err(Error::Usage(format!(
                    "unexpected argument {other:?} (only \"list\" is known)"
                ))),
            }
        }
        Command::Group => {
            arity(&parsed, 0, 1, "")?;
            let role = pos.first().map(String::as_str);
            roster::group(&roles()?, group_name, role, env.out)
        }
        Command::StartVms => {
            arity(&parsed, 0, 0, "")?;
            let link = link()?;
            let host_ip = match (cfg.get(Key::HostIp), transport) {
                (Some(ip), _) => ip.to_owned(),
                (None, Transport::Tcp) => vm::local_address(&cfg.coordinator()?)?,
                // No coordinator to find the address towards: it must be set.
                (None, Transport::Console) => cfg.require(Key::HostIp)?.to_owned(),
            };
            vm::start_vms(&*link, &host_ip)
        }
        Command::WaitForVms | Command::WaitVms => {
            arity(&parsed, 0, 0, "")?;
            vm::wait_for_vms(&*link()?)
        }
        Command::VmDone => {
            arity(&parsed, 0, 0, "")?;
            let failed = parsed.option("failed").flatten();
            if failed.is_some_and(|r| r.contains(['\n', '\r'])) {
                return Err(Error::Usage("the --failed reason must be one line".into()));
            }
            let reason = failed.map(|r| travelling(console, r, true));
            vm::vm_done(&*link()?, reason.as_deref())
        }
        Command::Fail => {
            arity(&parsed, 1, usize::MAX, "reason")?;
            let reason = pos.join(" ");
            if reason.contains(['\n', '\r']) {
                return Err(Error::Usage("the reason must be one line".into()));
            }
            fail::fail(&*link()?, &travelling(console, &reason, false))
        }
        Command::FailureScope => {
            let roles = match (parsed.switch("none"), parsed.switch("all"), pos.is_empty()) {
                (true, false, true) => Some(Vec::new()),
                (false, true, true) => None,
                (false, false, false) => Some(pos.clone()),
                _ => {
                    return Err(Error::Usage(
                        "give the roles, or --none, or --all (one of them)".into(),
                    ))
                }
            };
            if roles.iter().flatten().any(|r| r.is_empty()) {
                return Err(Error::Usage("a role is empty".into()));
            }
            fail::failure_scope(&*link()?, roles)
        }
        Command::Lock | Command::Unlock => {
            arity(&parsed, 1, 1, "lock name")?;
            let name = lock::lock_name(&pos[0])?;
            let scope = match parsed.switch("lab") {
                true => LockScope::Lab,
                false => LockScope::Group,
            };
            if console {
                return Err(Error::Unsupported(format!(
                    "{} needs our coordinator over TCP: LAVA's console markers have no \
                     locks (LAVA_MULTINODE_TRANSPORT is console)",
                    cmd.tool_name().unwrap_or_default()
                )));
            }
            let session = Session::from_config(&cfg, debug)?;
            if cmd == Command::Unlock {
                return lock::unlock(&session, name, scope);
            }
            let options = lock::Options {
                count: lock::count(parsed.option("count").flatten())?,
                scope,
                try_once: parsed.switch("try"),
            };
            lock::lock(&session, name, options, env.out)
        }
        Command::Install | Command::VmGroup => unreachable!("handled above"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(usage(Command::Wait, &["a", ""]).contains("empty"));
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
