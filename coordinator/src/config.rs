//! Command line and configuration file.
//!
//! The file is LAVA's `/etc/lava-coordinator/lava-coordinator.conf` (JSON: `port`,
//! `blocksize`, `poll_delay`, `coordinator_hostname`) with our optional keys added. A missing
//! file means defaults, so the coordinator runs with no configuration at all.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, ValueEnum};
use serde::Deserialize;

use crate::access::{Access, Cidr};
use crate::state::{Limits, Verdicts};

/// Environment variable that holds the lab secret (kept off the command line, where every
/// local user could read it).
pub const SECRET_ENV: &str = "LAVA_COORDINATOR_SECRET";

pub const DEFAULT_CONFIG: &str = "/etc/lava-coordinator/lava-coordinator.conf";
pub const DEFAULT_LOGFILE: &str = "/var/log/lava-coordinator.log";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "UPPER")]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

const CONFIG_HELP: &str = "\
Configuration file keys (JSON; all optional):
  port                LAVA: TCP port when `listen` is not set [3079]
  blocksize, poll_delay, coordinator_hostname
                      LAVA: accepted and ignored by the server
  listen              address to listen on, e.g. \"127.0.0.1:3079\" [0.0.0.0:port]
  block_max           longest hold of a request's `block`, seconds [30]
  hold_lava_requests  hold plain LAVA requests up to this many seconds, 0 = off [0]
  max_connections     connections served at once [4096]
  max_connections_per_address
                      connections one client address may hold at once; more are
                      refused at once (nack) [1024, or max_connections / 2 when less]
  max_inflight_bytes  bytes of request bodies being received, all connections
                      together; a large body waits for room [67108864 = 64 MiB]
  max_request_bytes   largest request body, bytes [1048576]
  read_timeout        time a client has to send its request, seconds [30]
  group_expiry        forget a group after this long without a request, seconds [86400]
  state               state file (SQLite) or \":memory:\" [see --state]
  state_sync          \"normal\": commits survive a crash or kill -9 of the coordinator;
                      \"full\": they also survive power loss (an fsync each) [normal]
  allow               client networks allowed to connect, e.g. [\"10.0.0.0/8\"] [all]
  secret              the lab secret our tools send; prefer the environment variable
                      LAVA_COORDINATOR_SECRET, which wins [none]
  secret_exempt       networks whose requests need no lab secret, e.g. the dispatchers [none]
  failure_propagation a member's `fail` answers what waits on it at once [true]
  deadlock_detection  answer a group whose live members all wait on one another [true]
  blocked_log_after   log (INFO) a request held this long, naming whom it waits for [60]
  lab_locks           allow lab-wide locks (lava-lock --lab), shared by every group [false]
  metrics_listen      address of the Prometheus endpoint, e.g. \"127.0.0.1:9079\" [none]
  web_listen          address of the web view (groups, timelines), e.g. \"127.0.0.1:8079\";
                      same allow list and lab secret as the coordinator [none]
  history_group_bytes, history_total_bytes
                      memory for the groups' histories (timelines), per group and in
                      all; over it the oldest events go first [1 MiB, 64 MiB]
  max_groups, max_group_size, max_ids_per_group, max_group_bytes, max_total_bytes
                      limits [50000, 4096, 10000, 16 MiB, 1 GiB]; over one: nack

Exit status: 0 after SIGTERM/SIGINT, 1 when it cannot listen, 2 for a bad configuration.
See docs/PROTOCOL.md for the requests and the `block` extension.";

/// LAVA MultiNode coordinator: an event-driven, drop-in replacement for lava-coordinator.
#[derive(Debug, Parser)]
#[command(
    name = "lava-coordinator",
    version,
    about,
    long_about = None,
    args_override_self = true,
    after_help = CONFIG_HELP
)]
pub struct Cli {
    /// Configuration file (LAVA's JSON format); a missing file means defaults.
    #[arg(long, value_name = "FILE", default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// Log file, or `-` for standard output.
    #[arg(long, value_name = "FILE|-", default_value = DEFAULT_LOGFILE)]
    pub logfile: String,
    /// Log level.
    #[arg(
        long,
        short = 'l',
        value_enum,
        default_value = "INFO",
        ignore_case = true
    )]
    pub loglevel: LogLevel,
    /// Address to listen on [default: 0.0.0.0:<port from the config file, 3079>].
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<SocketAddr>,
    /// State file (SQLite), or `:memory:` to keep no state across restarts
    /// [default: the config's `state`, else $XDG_STATE_HOME/lava-coordinator/state.db,
    /// else ~/.local/state/lava-coordinator/state.db].
    #[arg(long, value_name = "FILE|:memory:")]
    pub state: Option<String>,
    /// Serve Prometheus metrics at http://ADDR:PORT/metrics [default: the config's
    /// `metrics_listen`, else none].
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics: Option<SocketAddr>,
    /// Serve the web view (groups, each group's timeline) at http://ADDR:PORT/ [default:
    /// the config's `web_listen`, else none]. Use a loopback or lab-only address: it shows
    /// every group to whoever the `allow` list and the lab secret let in.
    #[arg(long, value_name = "ADDR:PORT")]
    pub web: Option<SocketAddr>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Ask a running coordinator for its groups, clients, held requests and counters.
    ///
    /// Exit status: 0 it answered; 1 it answered but refused (address not allowed, lab
    /// secret missing) or has no such group; 2 it could not be reached or answered nonsense.
    /// The lab secret is read from LAVA_COORDINATOR_SECRET or the configuration file.
    Status {
        /// Coordinator to ask [default: the configuration's listen address, 127.0.0.1 for
        /// 0.0.0.0].
        #[arg(long, value_name = "HOST:PORT")]
        address: Option<String>,
        /// Show this group only, member by member.
        #[arg(long, value_name = "NAME")]
        group: Option<String>,
        /// Print the coordinator's JSON answer as it is.
        #[arg(long)]
        json: bool,
        /// List every group even when there are many (by default, over 20 groups are
        /// summarised: counts, then the stuck and the oldest ones).
        #[arg(long)]
        all: bool,
    },
    /// Operator: answer every request held in GROUP now (nack, naming you and REASON).
    ///
    /// Operator actions need the lab secret (LAVA_COORDINATOR_SECRET or the configuration
    /// file's `secret`); the coordinator logs each at WARN. Exit status: 0 done; 1 refused
    /// (no or wrong secret, no such group or member); 2 not reachable.
    Unblock {
        group: String,
        /// Why, for the answered requests' error text.
        #[arg(long)]
        reason: Option<String>,
        /// Coordinator to ask [default: as for `status`].
        #[arg(long, value_name = "HOST:PORT")]
        address: Option<String>,
    },
    /// Operator: declare CLIENT of GROUP failed with REASON, as if it had called lava-fail.
    ///
    /// Exit status and lab secret as for `unblock`.
    Fail {
        group: String,
        client: String,
        #[arg(required = true, num_args = 1..)]
        reason: Vec<String>,
        #[arg(long, value_name = "HOST:PORT")]
        address: Option<String>,
    },
    /// Operator: send message ID with KEY=VALUE pairs to GROUP, as `operator` or, with
    /// --as, in a member's name.
    ///
    /// Exit status and lab secret as for `unblock`.
    Send {
        group: String,
        id: String,
        pairs: Vec<String>,
        /// Send in this member's name.
        #[arg(long = "as", value_name = "CLIENT")]
        sender: Option<String>,
        #[arg(long, value_name = "HOST:PORT")]
        address: Option<String>,
    },
}

/// The configuration file's keys. Unknown keys are ignored, as LAVA does.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// LAVA: the TCP port (used when `listen` is not set).
    pub port: u16,
    /// LAVA: the dispatchers' read size; accepted and ignored (we write whole frames).
    pub blocksize: u64,
    /// LAVA: the dispatchers' polling interval; accepted and ignored by the server.
    pub poll_delay: Option<f64>,
    /// LAVA: accepted and ignored, as LAVA does (use `listen`).
    pub coordinator_hostname: Option<String>,
    /// Address to listen on, e.g. "127.0.0.1:3079".
    pub listen: Option<SocketAddr>,
    /// Longest time a request's `block` may hold its connection, seconds.
    pub block_max: f64,
    /// Hold plain LAVA requests (without `block`) up to this many seconds; 0 = off.
    pub hold_lava_requests: f64,
    /// Connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// Largest request body accepted, bytes.
    pub max_request_bytes: usize,
    /// Connections one client address may hold at once; `None`: 1024, or half of
    /// `max_connections` when that is less.
    pub max_connections_per_address: Option<usize>,
    /// Bytes of request bodies being received by all connections together.
    pub max_inflight_bytes: usize,
    /// Time a client has to send its whole request, seconds.
    pub read_timeout: f64,
    /// A group with no request for this long is forgotten, seconds.
    pub group_expiry: f64,
    /// State file, or ":memory:".
    pub state: Option<String>,
    /// "full": commits survive power loss; "normal": they survive a crash of the process.
    pub state_sync: crate::store::Sync,
    /// Client networks allowed to connect; empty: all.
    pub allow: Vec<Cidr>,
    /// The lab's shared secret (`LAVA_COORDINATOR_SECRET` in the environment wins).
    pub secret: Option<String>,
    /// Networks whose requests need no lab secret (e.g. LAVA's dispatchers).
    pub secret_exempt: Vec<Cidr>,
    pub max_groups: usize,
    pub max_group_size: usize,
    pub max_ids_per_group: usize,
    pub max_group_bytes: usize,
    pub max_total_bytes: usize,
    /// Address of the Prometheus metrics endpoint; none when unset.
    pub metrics_listen: Option<SocketAddr>,
    /// Address of the web view; none when unset.
    pub web_listen: Option<SocketAddr>,
    /// Memory for one group's history, bytes.
    pub history_group_bytes: usize,
    /// Memory for all groups' histories, bytes.
    pub history_total_bytes: usize,
    /// A member's `fail` answers at once what waits on it.
    pub failure_propagation: bool,
    /// A group whose live members all wait on one another is answered at once.
    pub deadlock_detection: bool,
    /// Log (INFO) a request held longer than this, naming whom it waits for, seconds.
    pub blocked_log_after: f64,
    /// Lab-wide locks (`lava-lock --lab`), shared by every group, are allowed.
    pub lab_locks: bool,
}

impl Default for Settings {
    fn default() -> Self {
        let limits = Limits::default();
        Settings {
            port: lava_protocol::DEFAULT_PORT,
            blocksize: 4096,
            poll_delay: None,
            coordinator_hostname: None,
            listen: None,
            block_max: 30.0,
            hold_lava_requests: 0.0,
            max_connections: 4096,
            max_request_bytes: 1 << 20,
            max_connections_per_address: None,
            max_inflight_bytes: 64 << 20,
            read_timeout: 30.0,
            group_expiry: 24.0 * 3600.0,
            state: None,
            state_sync: crate::store::Sync::Normal,
            allow: Vec::new(),
            secret: None,
            secret_exempt: Vec::new(),
            max_groups: limits.max_groups,
            max_group_size: limits.max_group_size,
            max_ids_per_group: limits.max_ids_per_group,
            max_group_bytes: limits.max_group_bytes,
            max_total_bytes: limits.max_total_bytes,
            metrics_listen: None,
            web_listen: None,
            history_group_bytes: 1 << 20,
            history_total_bytes: 64 << 20,
            failure_propagation: true,
            deadlock_detection: true,
            blocked_log_after: 60.0,
            lab_locks: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid configuration: {source}")]
    Parse {
        path: PathBuf,
        source: serde_path_to_error::Error<serde_json::Error>,
    },
    #[error("{path}: `{key}` {reason}")]
    Invalid {
        path: PathBuf,
        key: &'static str,
        reason: &'static str,
    },
}

impl Settings {
    /// Reads `path`; `Ok(None)` when it does not exist.
    pub fn load(path: &Path) -> Result<Option<Settings>, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })
            }
        };
        let json = &mut serde_json::Deserializer::from_str(&text);
        let settings: Settings =
            serde_path_to_error::deserialize(json).map_err(|source| ConfigError::Parse {
                path: path.to_owned(),
                source,
            })?;
        settings.validate(path)?;
        Ok(Some(settings))
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key, reason| ConfigError::Invalid {
            path: path.to_owned(),
            key,
            reason,
        };
        let seconds = |v: f64| v.is_finite() && (0.0..=1e9).contains(&v);
        if !seconds(self.block_max) {
            return Err(invalid("block_max", "must be a number of seconds"));
        }
        if !seconds(self.hold_lava_requests) {
            return Err(invalid("hold_lava_requests", "must be a number of seconds"));
        }
        if !seconds(self.read_timeout) || self.read_timeout == 0.0 {
            return Err(invalid(
                "read_timeout",
                "must be a positive number of seconds",
            ));
        }
        if !seconds(self.blocked_log_after) {
            return Err(invalid("blocked_log_after", "must be a number of seconds"));
        }
        if !seconds(self.group_expiry) || self.group_expiry == 0.0 {
            return Err(invalid(
                "group_expiry",
                "must be a positive number of seconds",
            ));
        }
        if self.max_connections == 0 {
            return Err(invalid("max_connections", "must be at least 1"));
        }
        if self.max_request_bytes < 64 {
            return Err(invalid("max_request_bytes", "must be at least 64"));
        }
        if self.max_connections_per_address == Some(0) {
            return Err(invalid("max_connections_per_address", "must be at least 1"));
        }
        if self.max_inflight_bytes < self.max_request_bytes {
            return Err(invalid(
                "max_inflight_bytes",
                "must be at least max_request_bytes (else the largest request never fits)",
            ));
        }
        for (key, value) in [
            ("max_groups", self.max_groups),
            ("max_group_size", self.max_group_size),
            ("max_ids_per_group", self.max_ids_per_group),
            ("max_group_bytes", self.max_group_bytes),
            ("max_total_bytes", self.max_total_bytes),
            ("history_group_bytes", self.history_group_bytes),
            ("history_total_bytes", self.history_total_bytes),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        Ok(())
    }

    pub fn listen_addr(&self, cli: Option<SocketAddr>) -> SocketAddr {
        cli.or(self.listen)
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], self.port)))
    }

    /// The access rules; the lab secret from the environment wins over the file's.
    pub fn access(&self) -> Access {
        let from_env = std::env::var(SECRET_ENV).ok().filter(|s| !s.is_empty());
        Access {
            allow: self.allow.clone(),
            secret: from_env.or_else(|| self.secret.clone().filter(|s| !s.is_empty())),
            secret_exempt: self.secret_exempt.clone(),
        }
    }

    pub fn verdicts(&self) -> Verdicts {
        Verdicts {
            failure_propagation: self.failure_propagation,
            deadlock_detection: self.deadlock_detection,
        }
    }

    pub fn blocked_log_after(&self) -> Duration {
        Duration::from_secs_f64(self.blocked_log_after)
    }

    pub fn limits(&self) -> Limits {
        Limits {
            max_groups: self.max_groups,
            max_group_size: self.max_group_size,
            max_ids_per_group: self.max_ids_per_group,
            max_group_bytes: self.max_group_bytes,
            max_total_bytes: self.max_total_bytes,
        }
    }

    /// Where the state lives: `None` for memory only.
    pub fn state_path(&self, cli: Option<&str>) -> Option<PathBuf> {
        let chosen = cli.or(self.state.as_deref());
        match chosen {
            Some(":memory:") => None,
            Some(path) => Some(PathBuf::from(path)),
            None => {
                let base = std::env::var_os("XDG_STATE_HOME")
                    .filter(|v| !v.is_empty())
                    .map(PathBuf::from)
                    .or_else(|| {
                        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state"))
                    })
                    .unwrap_or_else(|| PathBuf::from("/var/lib"));
                Some(base.join("lava-coordinator").join("state.db"))
            }
        }
    }

    /// Connections one address may hold at once. The default serves a dispatcher host (or a
    /// VM-group host) that runs 200 nodes' clients, each with a held request, a retry and a
    /// closing connection (1024 > 200 x 5), while one address can never take more than a
    /// quarter of the default `max_connections` (half of a lower one).
    pub fn max_connections_per_address(&self) -> usize {
        self.max_connections_per_address
            .unwrap_or_else(|| 1024.min((self.max_connections / 2).max(1)))
    }

    pub fn block_max(&self) -> Duration {
        Duration::from_secs_f64(self.block_max)
    }

    pub fn hold_lava_requests(&self) -> Duration {
        Duration::from_secs_f64(self.hold_lava_requests)
    }

    pub fn read_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.read_timeout)
    }

    pub fn group_expiry(&self) -> Duration {
        Duration::from_secs_f64(self.group_expiry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Option<Settings>, ConfigError> {
        let dir =
            std::env::temp_dir().join(format!("lc-config-{}-{}", std::process::id(), text.len()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.conf");
        std::fs::write(&path, text).unwrap();
        let out = Settings::load(&path);
        std::fs::remove_dir_all(&dir).unwrap();
        out
    }

    #[test]
    fn reads_lavas_shipped_config() {
        let s = load(r#"{"port": 3080, "blocksize": 4096, "poll_delay": 3, "coordinator_hostname": "localhost"}"#)
            .unwrap()
            .unwrap();
        assert_eq!(s.port, 3080);
        assert_eq!(s.listen_addr(None).to_string(), "0.0.0.0:3080");
        assert_eq!(s.block_max, 30.0);
    }

    #[test]
    fn missing_file_is_none_and_bad_values_are_errors() {
        assert!(Settings::load(Path::new("/nonexistent/x.conf"))
            .unwrap()
            .is_none());
        assert!(matches!(load("{"), Err(ConfigError::Parse { .. })));
        assert!(matches!(
            load(r#"{"port": "x"}"#),
            Err(ConfigError::Parse { .. })
        ));
        assert!(matches!(
            load(r#"{"block_max": -1}"#),
            Err(ConfigError::Invalid {
                key: "block_max",
                ..
            })
        ));
        assert!(matches!(
            load(r#"{"max_connections": 0}"#),
            Err(ConfigError::Invalid {
                key: "max_connections",
                ..
            })
        ));
    }

    #[test]
    fn connection_limits() {
        let s = Settings::default();
        assert_eq!(s.max_connections_per_address(), 1024);
        assert_eq!(s.max_inflight_bytes, 64 << 20);
        let s = load(r#"{"max_connections": 300}"#).unwrap().unwrap();
        assert_eq!(s.max_connections_per_address(), 150);
        let s = load(r#"{"max_connections_per_address": 7}"#)
            .unwrap()
            .unwrap();
        assert_eq!(s.max_connections_per_address(), 7);
        assert!(matches!(
            load(r#"{"max_connections_per_address": 0}"#),
            Err(ConfigError::Invalid {
                key: "max_connections_per_address",
                ..
            })
        ));
        assert!(matches!(
            load(r#"{"max_inflight_bytes": 1000}"#),
            Err(ConfigError::Invalid {
                key: "max_inflight_bytes",
                ..
            })
        ));
    }

    #[test]
    fn cli_listen_wins() {
        let s = Settings::default();
        let cli: SocketAddr = "127.0.0.1:9".parse().unwrap();
        assert_eq!(s.listen_addr(Some(cli)), cli);
    }
}
