//! `lava-multinode vm-group`: VM groups (docs/VM-GROUPS.md) on the host.
//!
//! `vm-group run JOB.json` is the host's launcher (see [`launcher`]); `vm-group show JOB.json`
//! prints the group a definition gives, with each VM's expanded commands.

pub mod actions;
pub mod console;
pub mod deploy;
pub mod guest;
pub mod guest_tools;
pub mod host;
pub mod images;
pub mod job;
pub mod launcher;
pub mod qemu;
pub mod relay;
pub mod remote;
pub mod report;
pub mod results;
pub mod session;
pub mod testdef;
pub mod testshell;
pub mod yaml;

use std::path::PathBuf;
use std::time::Duration;

use crate::args::{self, Opt};
use crate::cli::{print_lines, Env};
use crate::config::{normalise_addr, Config, Key};
use crate::error::Error;
use crate::help;

use job::Job;
use launcher::Options;

/// The host's address as qemu user networking shows it to the guests.
pub const DEFAULT_HOST_IP: &str = "10.0.2.2";
pub const DEFAULT_BOOT_TIMEOUT: f64 = 120.0;

const KEYS: [Key; 4] = [Key::Coordinator, Key::Group, Key::Timeout, Key::HostIp];
const OPTS: [Opt; 4] = [
    Opt {
        name: "log-dir",
        takes_value: true,
    },
    Opt {
        name: "boot-timeout",
        takes_value: true,
    },
    Opt {
        name: "after",
        takes_value: true,
    },
    Opt {
        name: "guest-coordinator",
        takes_value: true,
    },
];

/// Group names end up in shell commands and on kernel command lines.
fn check_name(name: &str, what: &str) -> Result<(), Error> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(Error::Usage(format!(
            "{what} {name:?} may only hold letters, digits, '.', '_' and '-'"
        )));
    }
    Ok(())
}

/// A group name for this run: `vm-group-<seconds>-<pid>`.
fn default_group() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    format!("vm-group-{secs}-{}", std::process::id())
}

/// The coordinator as the guests reach it: the host's coordinator address with its host part
/// replaced by `host_ip` when it is a loopback or unspecified address (qemu user networking
/// maps `host_ip` to the host's 127.0.0.1), else the same address.
pub fn guest_coordinator(coordinator: &str, host_ip: &str) -> String {
    let (host, port) = match coordinator.rsplit_once(':') {
        Some((h, p)) => (h.trim_start_matches('[').trim_end_matches(']'), p),
        None => return coordinator.to_owned(),
    };
    let local = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback() || ip.is_unspecified());
    if !local {
        return coordinator.to_owned();
    }
    if host_ip.contains(':') {
        format!("[{host_ip}]:{port}")
    } else {
        format!("{host_ip}:{port}")
    }
}

fn seconds(text: &str, flag: &str) -> Result<Duration, Error> {
    match text.trim().parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 && s <= 1e9 => Ok(Duration::from_secs_f64(s)),
        _ => Err(Error::Usage(format!(
            "--{flag} expects a number of seconds greater than 0, not {text:?}"
        ))),
    }
}

/// `lava-multinode vm-group ARGS...`.
pub fn run(argv: &[String], env: Env<'_>) -> Result<(), Error> {
    // Everything after the first `--` is the host test's command line.
    let (ours, test) = match argv.iter().position(|a| a == "--") {
        Some(i) => (&argv[..i], argv[i + 1..].to_vec()),
        None => (argv, Vec::new()),
    };
    let parsed = args::parse(ours, &KEYS, &OPTS).map_err(Error::Usage)?;
    if parsed.help {
        return print_lines(env.out, &[help::vm_group_text()]);
    }
    let pos = &parsed.positional;
    let (action, job_path) = match pos.as_slice() {
        [] => return Err(Error::Usage("missing action: run or show".into())),
        [a] if a == "run" || a == "show" => {
            return Err(Error::Usage("missing job definition file".into()))
        }
        [a, path] if a == "run" || a == "show" => (a.as_str(), PathBuf::from(path)),
        [a, _, extra, ..] if a == "run" || a == "show" => {
            return Err(Error::Usage(format!(
                "unexpected argument {extra:?} (the host test comes after --)"
            )))
        }
        [a, ..] => return Err(Error::Usage(format!("unknown action {a:?} (run or show)"))),
    };
    if action == "show" && !test.is_empty() {
        return Err(Error::Usage("show takes no host test".into()));
    }
    let text = std::fs::read_to_string(&job_path)
        .map_err(|e| Error::Local(format!("cannot read {}: {e}", job_path.display())))?;
    let job = Job::parse(&text).map_err(|e| Error::Job(format!("{}: {e}", job_path.display())))?;

    let cfg = Config::load(&parsed.config_flags(), env.var)?;
    // `show` works without a coordinator setting: LAVA's default port on loopback.
    let coordinator = match cfg.coordinator() {
        Err(crate::config::ConfigError::Missing { .. }) if action == "show" => {
            format!("127.0.0.1:{}", crate::config::DEFAULT_PORT)
        }
        other => other?,
    };
    let group = cfg
        .get(Key::Group)
        .map(str::to_owned)
        .unwrap_or_else(default_group);
    check_name(&group, "group name")?;
    let host_ip = cfg.get(Key::HostIp).unwrap_or(DEFAULT_HOST_IP).to_owned();
    let guest_coordinator = match parsed.option("guest-coordinator").flatten() {
        Some(addr) => normalise_addr(addr).ok_or_else(|| {
            Error::Usage(format!("--guest-coordinator {addr:?} is not HOST[:PORT]"))
        })?,
        None => guest_coordinator(&coordinator, &host_ip),
    };
    let boot_timeout = match parsed.option("boot-timeout").flatten() {
        Some(t) => seconds(t, "boot-timeout")?,
        None => Duration::from_secs_f64(DEFAULT_BOOT_TIMEOUT),
    };
    let log_dir = match parsed.option("log-dir").flatten() {
        Some(d) => PathBuf::from(d),
        None => std::env::temp_dir().join(format!("lava-{group}")),
    };
    let after: Vec<String> = parsed
        .options
        .iter()
        .filter(|(n, _)| *n == "after")
        .filter_map(|(_, v)| v.clone())
        .collect();
    let debug = (env.var)("LAVA_MULTINODE_DEBUG").is_some_and(|v| !v.is_empty() && v != "0");
    let opts = Options {
        job,
        coordinator,
        guest_coordinator,
        group,
        host_ip,
        log_dir,
        boot_timeout,
        timeout: cfg.timeout()?,
        poll: cfg.poll()?,
        test,
        after,
        debug,
        secret: cfg.get(Key::Secret).map(str::to_owned),
        group_secret: cfg.get(Key::GroupSecret).map(str::to_owned),
    };
    match action {
        "show" => show(&opts, env.out),
        _ => launcher::run(opts),
    }
}

/// `vm-group show`: the derived group, one node per line, and each VM's commands.
fn show(opts: &Options, out: &mut dyn std::io::Write) -> Result<(), Error> {
    let job = &opts.job;
    let log = launcher::Log::new();
    let launch = launcher::prepare_launch(opts, &log, false)?;
    let mut lines = vec![
        format!("group\t{}", opts.group),
        format!("group_size\t{}", job.group_size()),
        format!("auto_start_vms\t{}", job.auto_start_vms),
        format!("coordinator\t{}", opts.coordinator),
        format!("guest_coordinator\t{}", opts.guest_coordinator),
        format!("host_ip\t{}", opts.host_ip),
    ];
    for node in job.nodes() {
        let kind = if node.vm.is_some() { "vm" } else { "host" };
        lines.push(format!(
            "node\t{}\t{}\t{kind}\t{}",
            node.client, node.role, node.device_type
        ));
        if node.vm.is_some() {
            let disk = deploy::disk_path(&launcher::log_dir_there(opts), &node.client);
            let (_, commands) =
                launcher::commands_of(opts, &node, &opts.host_ip, &launch, Some(&disk))
                    .map_err(Error::Job)?;
            for c in commands {
                lines.push(format!("launch\t{}\t{c}", node.client));
            }
        }
    }
    print_lines(out, &lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guests_reach_a_local_coordinator_through_the_host_ip() {
        assert_eq!(
            guest_coordinator("127.0.0.1:3079", "10.0.2.2"),
            "10.0.2.2:3079"
        );
        assert_eq!(
            guest_coordinator("localhost:4000", "10.0.2.2"),
            "10.0.2.2:4000"
        );
        assert_eq!(guest_coordinator("[::1]:4000", "10.0.2.2"), "10.0.2.2:4000");
        assert_eq!(
            guest_coordinator("lava.example:3079", "10.0.2.2"),
            "lava.example:3079"
        );
        assert_eq!(
            guest_coordinator("192.168.1.5:3079", "10.0.2.2"),
            "192.168.1.5:3079"
        );
    }

    #[test]
    fn group_names_are_checked() {
        assert!(check_name("vm-group-1.a_b", "group name").is_ok());
        assert!(check_name("a b", "group name").is_err());
        assert!(check_name("", "group name").is_err());
        assert!(check_name("x'y", "group name").is_err());
    }
}
