//! Settings and where they come from.
//!
//! Precedence, highest first: command-line flags (`--coordinator ...`), environment variables
//! (`LAVA_MULTINODE_COORDINATOR ...`), a file of the same `KEY=value` lines
//! (`$LAVA_MULTINODE_CONF`, else `/etc/lava-multinode.conf`), and the kernel command line
//! (`lava_multinode.coordinator=...`, read from `$LAVA_MULTINODE_CMDLINE`, else
//! `/proc/cmdline`), so that a VM image needs nothing but the binary. An empty value counts
//! as unset.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Default coordinator port when an address gives none (LAVA's).
pub use lava_protocol::DEFAULT_PORT;

pub const DEFAULT_CONF: &str = "/etc/lava-multinode.conf";
pub const DEFAULT_CMDLINE: &str = "/proc/cmdline";
pub const DEFAULT_CACHE: &str = "/tmp/lava_multi_node_cache.txt";
pub const DEFAULT_TIMEOUT: f64 = 600.0;
/// A waiting tool asks again at once after each `wait`: 10 s is ample, yet a killed tool is
/// noticed soon after its last held request ends.
pub const DEFAULT_LEASE: f64 = 10.0;
pub const DEFAULT_POLL: f64 = 1.0;
/// Environment variable naming the configuration file.
pub const CONF_ENV: &str = "LAVA_MULTINODE_CONF";
/// Environment variable naming the kernel command line file (for tests and containers).
pub const CMDLINE_ENV: &str = "LAVA_MULTINODE_CMDLINE";
/// Prefix of the kernel command line parameters.
pub const CMDLINE_PREFIX: &str = "lava_multinode.";

/// A setting. Everything about each one (its names in every source, which commands take it
/// as a flag, its texts for errors, `--help` and docs/TOOLS.md) is in one table,
/// [`Key::setting`]; parsing, help and the documentation's table are made from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    Coordinator,
    Group,
    Client,
    Role,
    GroupSize,
    Timeout,
    Poll,
    /// How long the coordinator waits for a waiting tool to ask again before counting it gone.
    Lease,
    Cache,
    HostIp,
    /// The lab's secret: environment, file or kernel command line only, never a flag.
    Secret,
    /// The group's secret: likewise.
    GroupSecret,
    /// How the commands reach the group: `tcp` (the coordinator) or `console` (LAVA's markers
    /// on standard output, replies on standard input). Environment, file or kernel command
    /// line only: it belongs to the machine, not to one call.
    Transport,
}

/// Which commands take a setting as a flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagScope {
    /// Every command that reaches the group (not `install`, `vm-group`).
    Commands,
    /// `lava-start-vms` only.
    StartVms,
}

/// A setting's flag: `--NAME VALUE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flag {
    /// Without its dashes.
    pub name: &'static str,
    /// What the value is, for help (`HOST[:PORT]`).
    pub value: &'static str,
    pub scope: FlagScope,
}

/// One row of the settings table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    /// `None`: no command takes it as a flag (a secret would show in `ps`; the transport
    /// belongs to the machine).
    pub flag: Option<Flag>,
    /// The environment variable, also the key in the configuration file.
    pub env: &'static str,
    /// The kernel command line key after `lava_multinode.`.
    pub cmdline: &'static str,
    /// What it is, for error messages.
    pub what: &'static str,
    /// Its line in `--help`.
    pub help: &'static str,
    /// Its meaning and its default in docs/TOOLS.md (Markdown).
    pub doc: &'static str,
    pub default: &'static str,
}

const fn flag(name: &'static str, value: &'static str) -> Option<Flag> {
    Some(Flag {
        name,
        value,
        scope: FlagScope::Commands,
    })
}

impl Key {
    /// Every setting, in the order of help and documentation.
    pub const ALL: [Key; 13] = [
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
        Key::Secret,
        Key::GroupSecret,
        Key::Transport,
    ];

    /// The settings table.
    pub const fn setting(self) -> Setting {
        match self {
            Key::Coordinator => Setting {
                flag: flag("coordinator", "HOST[:PORT]"),
                env: "LAVA_MULTINODE_COORDINATOR",
                cmdline: "coordinator",
                what: "coordinator address",
                help: "coordinator (port 3079 by default)",
                doc: "the coordinator (`[v6]:port` for IPv6)",
                default: "required over TCP; port 3079",
            },
            Key::Group => Setting {
                flag: flag("group", "NAME"),
                env: "LAVA_MULTINODE_GROUP",
                cmdline: "group",
                what: "group name",
                help: "group name",
                doc: "the group name",
                default: "required over TCP",
            },
            Key::Client => Setting {
                flag: flag("client", "NAME"),
                env: "LAVA_MULTINODE_CLIENT",
                cmdline: "client",
                what: "client name",
                help: "this node's name in the group",
                doc: "this node's name in the group (unique)",
                default: "required over TCP",
            },
            Key::Role => Setting {
                flag: flag("role", "ROLE"),
                env: "LAVA_MULTINODE_ROLE",
                cmdline: "role",
                what: "role",
                help: "this node's role",
                doc: "this node's role",
                default: "required over TCP",
            },
            Key::GroupSize => Setting {
                flag: flag("group-size", "N"),
                env: "LAVA_MULTINODE_GROUP_SIZE",
                cmdline: "group_size",
                what: "group size",
                help: "number of nodes (needed to create the group)",
                doc: "nodes in the group; needed by the request that creates the group (not \
                      when the roster was declared)",
                default: "unset",
            },
            Key::Timeout => Setting {
                flag: flag("timeout", "SECONDS"),
                env: "LAVA_MULTINODE_TIMEOUT",
                cmdline: "timeout",
                what: "timeout",
                help: "give up after this long (600)",
                doc: "how long a command may take in all",
                default: "600",
            },
            Key::Poll => Setting {
                flag: flag("poll", "SECONDS"),
                env: "LAVA_MULTINODE_POLL",
                cmdline: "poll",
                what: "polling interval",
                help: "polling interval against LAVA's coordinator (1)",
                doc: "polling interval against LAVA's coordinator",
                default: "1",
            },
            Key::Lease => Setting {
                flag: flag("lease", "SECONDS"),
                env: "LAVA_MULTINODE_LEASE",
                cmdline: "lease",
                what: "lease",
                help: "while waiting, ask again within this long (10)",
                doc: "while a command waits, it asks again within this long after each \
                      `wait`; the coordinator counts a tool that does not (killed) as failed",
                default: "10",
            },
            Key::Cache => Setting {
                flag: flag("cache", "FILE"),
                env: "LAVA_MULTI_NODE_CACHE",
                cmdline: "cache",
                what: "cache file",
                help: "cache file (/tmp/lava_multi_node_cache.txt)",
                doc: "the cache file (the variable has LAVA's name)",
                default: "`/tmp/lava_multi_node_cache.txt`",
            },
            Key::HostIp => Setting {
                flag: Some(Flag {
                    name: "host-ip",
                    value: "IP",
                    scope: FlagScope::StartVms,
                }),
                env: "LAVA_MULTINODE_HOST_IP",
                cmdline: "host_ip",
                what: "host address",
                help: "the host's address for the guests",
                doc: "the host's address for the guests",
                default: "over TCP, the address towards the coordinator",
            },
            Key::Secret => Setting {
                flag: None,
                env: "LAVA_MULTINODE_SECRET",
                cmdline: "secret",
                what: "lab secret",
                help: "the lab secret, where the coordinator requires one",
                doc: "the lab secret, where the coordinator requires one (never a flag: flags \
                      show in `ps`)",
                default: "none",
            },
            Key::GroupSecret => Setting {
                flag: None,
                env: "LAVA_MULTINODE_GROUP_SECRET",
                cmdline: "group_secret",
                what: "group secret",
                help: "the group's secret, where it has one",
                doc: "the group's secret: the request that creates the group sets it, every \
                      later one must carry it",
                default: "none",
            },
            Key::Transport => Setting {
                flag: None,
                env: "LAVA_MULTINODE_TRANSPORT",
                cmdline: "transport",
                what: "transport",
                help: "tcp (the coordinator) or console (LAVA's markers)",
                doc: "`tcp` (the coordinator) or `console` (LAVA's markers and replies, see \
                      [Transports](#transports))",
                default: "`tcp`",
            },
        }
    }

    /// The environment variable, also the key in the configuration file.
    pub fn env(self) -> &'static str {
        self.setting().env
    }

    /// The long flag, without its dashes, when commands take one.
    pub fn flag(self) -> Option<&'static str> {
        self.setting().flag.map(|f| f.name)
    }

    /// The kernel command line key after `lava_multinode.`.
    pub fn cmdline(self) -> &'static str {
        self.setting().cmdline
    }

    /// What the setting is, for error messages.
    pub fn describe(self) -> &'static str {
        self.setting().what
    }

    /// The settings a command that reaches the group takes as flags (with `start_vms`, also
    /// those of `lava-start-vms` only).
    pub fn flags(start_vms: bool) -> Vec<Key> {
        Key::ALL
            .into_iter()
            .filter(|k| match k.setting().flag {
                Some(f) => f.scope == FlagScope::Commands || start_vms,
                None => false,
            })
            .collect()
    }

    pub fn from_flag(name: &str) -> Option<Key> {
        Key::ALL.into_iter().find(|k| k.flag() == Some(name))
    }

    fn from_env(name: &str) -> Option<Key> {
        Key::ALL.into_iter().find(|k| k.env() == name)
    }

    fn from_cmdline(name: &str) -> Option<Key> {
        Key::ALL.into_iter().find(|k| k.cmdline() == name)
    }
}

/// `--help`'s lines of the settings a command takes (`start_vms`: with `--host-ip`) and of
/// those no command takes as a flag.
pub fn help_lines(start_vms: bool) -> Vec<String> {
    let flags = Key::flags(start_vms);
    let rows: Vec<(String, &str, &str)> = Key::ALL
        .into_iter()
        .filter(|k| k.flag().is_none() || flags.contains(k))
        .map(|k| {
            let s = k.setting();
            let flag = match s.flag {
                Some(f) => format!("--{} {}", f.name, f.value),
                None => "(no flag)".to_owned(),
            };
            (flag, s.env, s.help)
        })
        .collect();
    let flag_width = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    let env_width = rows.iter().map(|r| r.1.len()).max().unwrap_or(0);
    rows.iter()
        .map(|(flag, env, help)| format!("  {flag:flag_width$}  {env:env_width$}  {help}"))
        .collect()
}

/// The settings table of docs/TOOLS.md (Markdown), which a test keeps equal to this one.
#[cfg(test)]
pub fn doc_table() -> String {
    let mut out = String::from(
        "| flag | environment variable / file key | kernel command line | meaning | default |\n\
         | --- | --- | --- | --- | --- |\n",
    );
    for key in Key::ALL {
        let s = key.setting();
        let flag = match s.flag {
            Some(f) if f.scope == FlagScope::StartVms => {
                format!("`--{} {}` (`lava-start-vms` only)", f.name, f.value)
            }
            Some(f) => format!("`--{} {}`", f.name, f.value),
            None => "(no flag)".to_owned(),
        };
        out.push_str(&format!(
            "| {flag} | `{}` | `{CMDLINE_PREFIX}{}=` | {} | {} |\n",
            s.env, s.cmdline, s.doc, s.default
        ));
    }
    out
}

/// Where a value was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Flag,
    Env,
    File(PathBuf),
    Cmdline(PathBuf),
}

impl Source {
    /// How `key` is spelled in this source: `--timeout`, `$LAVA_MULTINODE_TIMEOUT`,
    /// `LAVA_MULTINODE_TIMEOUT=`, `lava_multinode.timeout=`.
    pub fn setting(&self, key: Key) -> String {
        match self {
            Source::Flag => match key.flag() {
                Some(f) => format!("--{f}"),
                None => "a flag".to_owned(),
            },
            Source::Env => format!("${}", key.env()),
            Source::File(_) => format!("{}=", key.env()),
            Source::Cmdline(_) => format!("{CMDLINE_PREFIX}{}=", key.cmdline()),
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Flag => write!(f, "command line"),
            Source::Env => write!(f, "environment"),
            Source::File(p) => write!(f, "{}", p.display()),
            Source::Cmdline(p) => write!(f, "kernel command line {}", p.display()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// A required setting is set nowhere; `places` lists every place looked at.
    Missing { key: Key, places: Vec<String> },
    Invalid {
        key: Key,
        value: String,
        source: Source,
        reason: &'static str,
    },
    /// The configuration file exists (or was named) but cannot be used.
    File { path: PathBuf, reason: String },
    /// A variable of LAVA's test shell (console transport: `$LAVA_GROUP`) is missing or
    /// unusable; the text says which and why.
    Shell(String),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Missing { key, places } => write!(
                f,
                "no {} set; looked for {}",
                key.describe(),
                places.join(", ")
            ),
            ConfigError::Invalid {
                key,
                value,
                source,
                reason,
            } => write!(
                f,
                "invalid {} {value:?} ({} from {source}): {reason}",
                key.describe(),
                source.setting(*key)
            ),
            ConfigError::File { path, reason } => {
                write!(f, "configuration file {}: {reason}", path.display())
            }
            ConfigError::Shell(text) => write!(f, "{text}"),
        }
    }
}

/// How the commands reach the group ([`Key::Transport`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Requests to the coordinator over TCP (the default).
    Tcp,
    /// LAVA's markers on standard output, the relay's reply lines on standard input.
    Console,
}

/// What became of an optional file source.
#[derive(Debug, Clone, PartialEq, Eq)]
enum FileState {
    Read,
    NotFound,
}

/// Every setting found, with its source.
#[derive(Debug, Clone)]
pub struct Config {
    values: Vec<(Key, String, Source)>,
    conf: (PathBuf, FileState),
    cmdline: (PathBuf, FileState),
}

/// Parses `KEY=value` lines: `#` comments, blank lines, an optional `export ` and matching
/// quotes around the value are allowed, so the file can also be sourced by a shell.
/// Unknown keys are ignored; a line that is no assignment is an error.
pub fn parse_conf(text: &str, path: &Path) -> Result<Vec<(Key, String)>, ConfigError> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
        let Some((name, value)) = line.split_once('=') else {
            return Err(ConfigError::File {
                path: path.to_path_buf(),
                reason: format!("line {}: expected KEY=value, got {line:?}", n + 1),
            });
        };
        if let Some(key) = Key::from_env(name.trim()) {
            out.push((key, unquote(value.trim()).to_owned()));
        }
    }
    Ok(out)
}

fn unquote(value: &str) -> &str {
    for q in ['"', '\''] {
        if let Some(inner) = value.strip_prefix(q).and_then(|v| v.strip_suffix(q)) {
            return inner;
        }
    }
    value
}

/// Splits a kernel command line into parameters: whitespace separates them except inside
/// double quotes, which are removed (`lava_multinode.role="a b"`).
pub fn split_cmdline(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in text.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(cur);
    }
    out
}

/// The `lava_multinode.KEY=value` parameters of a kernel command line; others are ignored.
pub fn parse_cmdline(text: &str) -> Vec<(Key, String)> {
    split_cmdline(text)
        .iter()
        .filter_map(|param| {
            let rest = param.strip_prefix(CMDLINE_PREFIX)?;
            let (name, value) = rest.split_once('=')?;
            Some((Key::from_cmdline(name)?, value.to_owned()))
        })
        .collect()
}

/// Reads an optional file: `Ok(None)` when it does not exist.
fn read_optional(path: &Path) -> Result<Option<String>, std::io::Error> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

impl Config {
    /// Gathers the settings from `flags`, the environment `env` and the files it points to.
    pub fn load(
        flags: &[(Key, String)],
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let var = |name: &str| env(name).filter(|v| !v.is_empty());
        let mut values: Vec<(Key, String, Source)> = Vec::new();
        values.extend(flags.iter().map(|(k, v)| (*k, v.clone(), Source::Flag)));
        for key in Key::ALL {
            if let Some(v) = var(key.env()) {
                values.push((key, v, Source::Env));
            }
        }

        // The configuration file: a file named by the environment must exist.
        let named = var(CONF_ENV);
        let conf_path = PathBuf::from(named.as_deref().unwrap_or(DEFAULT_CONF));
        let conf_text = read_optional(&conf_path).map_err(|e| ConfigError::File {
            path: conf_path.clone(),
            reason: e.to_string(),
        })?;
        let conf_state = match conf_text {
            Some(text) => {
                let source = Source::File(conf_path.clone());
                for (k, v) in parse_conf(&text, &conf_path)? {
                    values.push((k, v, source.clone()));
                }
                FileState::Read
            }
            None if named.is_some() => {
                return Err(ConfigError::File {
                    path: conf_path,
                    reason: format!("not found (named by {CONF_ENV})"),
                })
            }
            None => FileState::NotFound,
        };

        // The kernel command line: unreadable counts as empty (not every system has /proc).
        let cmdline_path = PathBuf::from(var(CMDLINE_ENV).as_deref().unwrap_or(DEFAULT_CMDLINE));
        let cmdline_state = match read_optional(&cmdline_path).ok().flatten() {
            Some(text) => {
                let source = Source::Cmdline(cmdline_path.clone());
                for (k, v) in parse_cmdline(&text) {
                    values.push((k, v, source.clone()));
                }
                FileState::Read
            }
            None => FileState::NotFound,
        };

        values.retain(|(_, v, _)| !v.is_empty());
        Ok(Config {
            values,
            conf: (conf_path, conf_state),
            cmdline: (cmdline_path, cmdline_state),
        })
    }

    /// The value of `key` from the source of highest precedence, with that source.
    pub fn lookup(&self, key: Key) -> Option<(&str, &Source)> {
        self.values
            .iter()
            .find(|(k, _, _)| *k == key)
            .map(|(_, v, s)| (v.as_str(), s))
    }

    pub fn get(&self, key: Key) -> Option<&str> {
        self.lookup(key).map(|(v, _)| v)
    }

    /// Every place a value of `key` was looked for, for the error of a missing setting.
    pub fn places(&self, key: Key) -> Vec<String> {
        let note = |state: &FileState| match state {
            FileState::Read => "",
            FileState::NotFound => " (not found)",
        };
        let flag = key.flag().map(|f| format!("--{f}"));
        flag.into_iter()
            .chain([
                format!("${}", key.env()),
                format!(
                    "{}= in {}{}",
                    key.env(),
                    self.conf.0.display(),
                    note(&self.conf.1)
                ),
                format!(
                    "{CMDLINE_PREFIX}{}= in {}{}",
                    key.cmdline(),
                    self.cmdline.0.display(),
                    note(&self.cmdline.1)
                ),
            ])
            .collect()
    }

    pub fn require(&self, key: Key) -> Result<&str, ConfigError> {
        self.get(key).ok_or_else(|| ConfigError::Missing {
            key,
            places: self.places(key),
        })
    }

    fn invalid(&self, key: Key, reason: &'static str) -> ConfigError {
        let (value, source) = self
            .lookup(key)
            .map(|(v, s)| (v.to_owned(), s.clone()))
            .unwrap_or((String::new(), Source::Flag));
        ConfigError::Invalid {
            key,
            value,
            source,
            reason,
        }
    }

    /// A number of seconds, more than 0, or `default`.
    fn seconds(&self, key: Key, default: f64) -> Result<Duration, ConfigError> {
        let Some(text) = self.get(key) else {
            return Ok(Duration::from_secs_f64(default));
        };
        match text.trim().parse::<f64>() {
            Ok(s) if s.is_finite() && s > 0.0 && s <= 1e9 => Ok(Duration::from_secs_f64(s)),
            _ => Err(self.invalid(key, "expected a number of seconds greater than 0")),
        }
    }

    pub fn timeout(&self) -> Result<Duration, ConfigError> {
        self.seconds(Key::Timeout, DEFAULT_TIMEOUT)
    }

    pub fn poll(&self) -> Result<Duration, ConfigError> {
        self.seconds(Key::Poll, DEFAULT_POLL)
    }

    pub fn lease(&self) -> Result<Duration, ConfigError> {
        self.seconds(Key::Lease, DEFAULT_LEASE)
    }

    pub fn group_size(&self) -> Result<Option<u32>, ConfigError> {
        match self.get(Key::GroupSize) {
            None => Ok(None),
            Some(text) => match text.trim().parse::<u32>() {
                Ok(n) if n > 0 => Ok(Some(n)),
                _ => Err(self.invalid(Key::GroupSize, "expected a whole number greater than 0")),
            },
        }
    }

    /// `tcp` (the default) or `console`.
    pub fn transport(&self) -> Result<Transport, ConfigError> {
        match self.get(Key::Transport).map(str::trim) {
            None | Some("tcp") => Ok(Transport::Tcp),
            Some("console") => Ok(Transport::Console),
            Some(_) => Err(self.invalid(Key::Transport, "expected tcp or console")),
        }
    }

    pub fn cache(&self) -> PathBuf {
        PathBuf::from(self.get(Key::Cache).unwrap_or(DEFAULT_CACHE))
    }

    /// The coordinator's `host:port`; a bare host (or `[v6]`) gets LAVA's port 3079.
    pub fn coordinator(&self) -> Result<String, ConfigError> {
        let addr = self.require(Key::Coordinator)?.trim();
        normalise_addr(addr).ok_or_else(|| {
            self.invalid(
                Key::Coordinator,
                "expected HOST:PORT, HOST or [IPv6]:PORT with a port from 1 to 65535",
            )
        })
    }
}

/// `host:port` with the default port added when missing; `None` when malformed.
pub fn normalise_addr(addr: &str) -> Option<String> {
    let port_ok = |p: &str| matches!(p.parse::<u16>(), Ok(n) if n > 0);
    if addr.is_empty() || addr.chars().any(char::is_whitespace) {
        return None;
    }
    if let Some(rest) = addr.strip_prefix('[') {
        let (host, tail) = rest.split_once(']')?;
        if host.is_empty() {
            return None;
        }
        return match tail {
            "" => Some(format!("[{host}]:{DEFAULT_PORT}")),
            t => t
                .strip_prefix(':')
                .filter(|p| port_ok(p))
                .map(|_| addr.to_owned()),
        };
    }
    match addr.matches(':').count() {
        0 => Some(format!("{addr}:{DEFAULT_PORT}")),
        1 => {
            let (host, port) = addr.split_once(':')?;
            (!host.is_empty() && port_ok(port)).then(|| addr.to_owned())
        }
        // A bare IPv6 address.
        _ => Some(format!("[{addr}]:{DEFAULT_PORT}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Scratch(PathBuf);
    impl Scratch {
        fn new(tag: &str) -> Self {
            let p =
                std::env::temp_dir().join(format!("lava-mn-config-{tag}-{}", std::process::id()));
            std::fs::create_dir_all(&p).unwrap();
            Scratch(p)
        }
        fn file(&self, name: &str, text: &str) -> String {
            let p = self.0.join(name);
            std::fs::write(&p, text).unwrap();
            p.display().to_string()
        }
    }
    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn load(flags: &[(Key, &str)], env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let flags: Vec<(Key, String)> = flags.iter().map(|(k, v)| (*k, v.to_string())).collect();
        Config::load(&flags, &|name| env.get(name).cloned())
    }

    #[test]
    fn precedence_is_flag_env_file_cmdline() {
        let dir = Scratch::new("precedence");
        let conf = dir.file(
            "conf",
            "# comment\n\nLAVA_MULTINODE_COORDINATOR=file:1\nexport LAVA_MULTINODE_GROUP=\"file-group\"\n\
             LAVA_MULTINODE_CLIENT='file-client'\nOTHER=ignored\nLAVA_MULTINODE_ROLE=file-role\n",
        );
        let cmdline = dir.file(
            "cmdline",
            "console=ttyS0 lava_multinode.coordinator=cmd:2 lava_multinode.group=cmd-group \
             lava_multinode.client=cmd-client lava_multinode.role=cmd-role lava_multinode.group_size=4 \
             lava_multinode.timeout=7\n",
        );
        let env = [
            ("LAVA_MULTINODE_CONF", conf.as_str()),
            ("LAVA_MULTINODE_CMDLINE", cmdline.as_str()),
            ("LAVA_MULTINODE_COORDINATOR", "env:3"),
            ("LAVA_MULTINODE_GROUP", "env-group"),
            ("LAVA_MULTINODE_CLIENT", ""),
        ];
        let cfg = load(&[(Key::Coordinator, "flag:4")], &env).unwrap();
        assert_eq!(
            cfg.lookup(Key::Coordinator),
            Some(("flag:4", &Source::Flag))
        );
        assert_eq!(cfg.lookup(Key::Group), Some(("env-group", &Source::Env)));
        // An empty environment variable counts as unset.
        assert_eq!(
            cfg.lookup(Key::Client),
            Some(("file-client", &Source::File(PathBuf::from(&conf))))
        );
        assert_eq!(cfg.get(Key::Role), Some("file-role"));
        assert_eq!(
            cfg.lookup(Key::GroupSize),
            Some(("4", &Source::Cmdline(PathBuf::from(&cmdline))))
        );
        assert_eq!(cfg.group_size(), Ok(Some(4)));
        assert_eq!(cfg.timeout(), Ok(Duration::from_secs(7)));
        assert_eq!(cfg.poll(), Ok(Duration::from_secs(1)));
        assert_eq!(cfg.cache(), PathBuf::from(DEFAULT_CACHE));
        assert_eq!(cfg.coordinator().unwrap(), "flag:4");

        let cfg = load(&[], &env).unwrap();
        assert_eq!(cfg.get(Key::Coordinator), Some("env:3"));
        let cfg = load(&[], &env[..2]).unwrap();
        assert_eq!(cfg.get(Key::Coordinator), Some("file:1"));
        assert_eq!(cfg.get(Key::Group), Some("file-group"));
        let cfg = load(&[], &env[1..2]).unwrap();
        assert_eq!(cfg.get(Key::Coordinator), Some("cmd:2"));
    }

    #[test]
    fn missing_setting_names_every_place() {
        let dir = Scratch::new("missing");
        let cmdline = dir.file("cmdline", "quiet\n");
        let env = [
            ("LAVA_MULTINODE_CMDLINE", cmdline.as_str()),
            ("LAVA_MULTINODE_CONF", ""),
        ];
        let cfg = load(&[], &env).unwrap();
        let err = cfg.require(Key::Group).unwrap_err().to_string();
        for place in [
            "--group",
            "$LAVA_MULTINODE_GROUP",
            "LAVA_MULTINODE_GROUP= in /etc/lava-multinode.conf",
            &format!("lava_multinode.group= in {cmdline}"),
        ] {
            assert!(err.contains(place), "{place:?} not in {err:?}");
        }
        assert!(err.starts_with("no group name set"), "{err}");
    }

    #[test]
    fn named_conf_file_must_exist_and_parse() {
        let dir = Scratch::new("conf");
        let missing = dir.0.join("nope").display().to_string();
        let err = load(&[], &[("LAVA_MULTINODE_CONF", &missing)]).unwrap_err();
        assert!(err.to_string().contains("not found"), "{err}");
        let bad = dir.file("bad", "LAVA_MULTINODE_GROUP=g\njust words\n");
        let err = load(&[], &[("LAVA_MULTINODE_CONF", &bad)]).unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
    }

    #[test]
    fn invalid_values_name_value_and_source() {
        let cfg = load(
            &[(Key::Timeout, "soon")],
            &[
                ("LAVA_MULTINODE_GROUP_SIZE", "0"),
                ("LAVA_MULTINODE_POLL", "-1"),
            ],
        )
        .unwrap();
        let t = cfg.timeout().unwrap_err().to_string();
        assert!(t.contains("\"soon\"") && t.contains("command line"), "{t}");
        let g = cfg.group_size().unwrap_err().to_string();
        assert!(g.contains("\"0\"") && g.contains("environment"), "{g}");
        assert!(cfg.poll().is_err());
        let cfg = load(&[(Key::Timeout, "0.5")], &[]).unwrap();
        assert_eq!(cfg.timeout(), Ok(Duration::from_millis(500)));
    }

    #[test]
    fn transport_from_env_file_or_cmdline() {
        let dir = Scratch::new("transport");
        let empty = dir.file("empty", "");
        let no_files = [
            ("LAVA_MULTINODE_CONF", empty.as_str()),
            ("LAVA_MULTINODE_CMDLINE", empty.as_str()),
        ];
        assert_eq!(
            load(&[], &no_files).unwrap().transport(),
            Ok(Transport::Tcp)
        );
        let mut env = no_files.to_vec();
        env.push(("LAVA_MULTINODE_TRANSPORT", "console"));
        assert_eq!(load(&[], &env).unwrap().transport(), Ok(Transport::Console));
        env.pop();
        env.push(("LAVA_MULTINODE_TRANSPORT", "tcp"));
        assert_eq!(load(&[], &env).unwrap().transport(), Ok(Transport::Tcp));

        let conf = dir.file("conf", "LAVA_MULTINODE_TRANSPORT=console\n");
        let env = [
            ("LAVA_MULTINODE_CONF", conf.as_str()),
            ("LAVA_MULTINODE_CMDLINE", empty.as_str()),
        ];
        assert_eq!(load(&[], &env).unwrap().transport(), Ok(Transport::Console));
        let cmdline = dir.file("cmdline", "quiet lava_multinode.transport=console\n");
        let env = [
            ("LAVA_MULTINODE_CONF", empty.as_str()),
            ("LAVA_MULTINODE_CMDLINE", cmdline.as_str()),
        ];
        assert_eq!(load(&[], &env).unwrap().transport(), Ok(Transport::Console));

        // Anything else names the value, the setting and where it came from.
        let bad = dir.file("bad", "root=/dev/vda lava_multinode.transport=serial\n");
        let env = [
            ("LAVA_MULTINODE_CONF", empty.as_str()),
            ("LAVA_MULTINODE_CMDLINE", bad.as_str()),
        ];
        let err = load(&[], &env)
            .unwrap()
            .transport()
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            format!(
                "invalid transport \"serial\" (lava_multinode.transport= from kernel command line \
                 {bad}): expected tcp or console"
            )
        );
        let err = load(&[], &[("LAVA_MULTINODE_TRANSPORT", "TCP ")])
            .unwrap()
            .transport()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("$LAVA_MULTINODE_TRANSPORT from environment"),
            "{err}"
        );
    }

    #[test]
    fn one_table_for_every_setting() {
        for (i, key) in Key::ALL.into_iter().enumerate() {
            assert!(!Key::ALL[..i].contains(&key), "{key:?} twice");
            assert_eq!(Key::from_env(key.env()), Some(key));
            assert_eq!(Key::from_cmdline(key.cmdline()), Some(key));
            if let Some(flag) = key.flag() {
                assert_eq!(Key::from_flag(flag), Some(key));
            }
        }
        // Secrets never travel as flags (they would show in `ps`), nor does the transport.
        for key in [Key::Secret, Key::GroupSecret, Key::Transport] {
            assert_eq!(key.flag(), None);
        }
        let help = help_lines(false).join("\n");
        assert!(help.contains("--timeout SECONDS") && help.contains("LAVA_MULTINODE_TRANSPORT"));
        assert!(!help.contains("--host-ip"));
        assert!(help_lines(true).join("\n").contains("--host-ip IP"));
    }

    /// docs/TOOLS.md's settings table is this table's (regenerate it from the failure
    /// message after changing a setting).
    #[test]
    fn docs_show_the_settings_table() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/TOOLS.md");
        let docs = std::fs::read_to_string(path).unwrap();
        let table = doc_table();
        assert!(
            docs.contains(&table),
            "the settings table of docs/TOOLS.md should read:\n{table}"
        );
    }

    #[test]
    fn cmdline_split_handles_quotes() {
        assert_eq!(
            split_cmdline("a  b=\"x y\" \"c d\"\n"),
            vec!["a", "b=x y", "c d"]
        );
        assert_eq!(
            parse_cmdline("lava_multinode.role=\"vm guest\" lava_multinode.bogus=1 lava_multinode.host_ip=10.0.2.2"),
            vec![
                (Key::Role, "vm guest".to_owned()),
                (Key::HostIp, "10.0.2.2".to_owned())
            ]
        );
    }

    #[test]
    fn addresses_get_the_default_port() {
        assert_eq!(normalise_addr("10.0.2.2").as_deref(), Some("10.0.2.2:3079"));
        assert_eq!(normalise_addr("h:80").as_deref(), Some("h:80"));
        assert_eq!(normalise_addr("[::1]").as_deref(), Some("[::1]:3079"));
        assert_eq!(normalise_addr("[::1]:9").as_deref(), Some("[::1]:9"));
        assert_eq!(normalise_addr("::1").as_deref(), Some("[::1]:3079"));
        for bad in ["", "h:", "h:0", "h:70000", ":80", "[::1]x", "a b:1"] {
            assert_eq!(normalise_addr(bad), None, "{bad}");
        }
    }
}
