//! The tools' error type and its exit codes (documented in `--help` and docs/TOOLS.md).

use std::fmt;
use std::time::Duration;

use crate::config::ConfigError;

/// Exit status of a successful command.
pub const EXIT_OK: i32 = 0;
/// A negative answer: `lava-group ROLE` found nobody, `lava-wait-for-vms` saw a failed member.
pub const EXIT_NEGATIVE: i32 = 1;
/// Bad command-line arguments.
pub const EXIT_USAGE: i32 = 2;
/// A setting is missing or invalid.
pub const EXIT_CONFIG: i32 = 3;
/// The coordinator (or, over the console, the relay) refused the request (`nack`).
pub const EXIT_NACK: i32 = 4;
/// The timeout passed before the coordinator gave the answer waited for.
pub const EXIT_TIMEOUT: i32 = 5;
/// The coordinator could not be reached until the timeout, or its reply was unusable; over
/// the console: the console closed (end of standard input) or could not be used.
pub const EXIT_COORDINATOR: i32 = 6;
/// A local failure: the cache file or the links of `install` could not be written.
pub const EXIT_LOCAL: i32 = 7;
/// `lava-lock --try`: the lock has no free place now.
pub const EXIT_BUSY: i32 = 8;

#[derive(Debug)]
pub enum Error {
    /// Bad arguments; the text says which and how to get help.
    Usage(String),
    Config(ConfigError),
    /// `nack`; `error` is the coordinator's reason when it gave one (LAVA's never does).
    Nack {
        request: &'static str,
        error: Option<String>,
    },
    Timeout {
        what: String,
        after: Duration,
    },
    /// Every attempt failed to reach the coordinator until the timeout.
    Unreachable {
        addr: String,
        after: Duration,
        last: String,
    },
    /// The coordinator answered something this request cannot use.
    BadReply(String),
    /// A negative answer, printed as is.
    Negative(String),
    Local(String),
    /// An invalid VM group job definition: the field and what is wrong.
    #[cfg_attr(not(feature = "vm-group"), allow(dead_code))]
    Job(String),
    /// Console transport: the relay answered `nack` to this marker (LAVA's carries no reason).
    Refused {
        marker: String,
    },
    /// Console transport: the console closed (end of standard input), or standard input or
    /// output failed; the text says which.
    Console(String),
    /// `lava-lock --try`: no free place; the text names the lock.
    Busy(String),
    /// A command that needs our coordinator over TCP (locks), against LAVA's coordinator or
    /// over the console; the text says which.
    Unsupported(String),
}

impl Error {
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) => EXIT_USAGE,
            Error::Config(_) | Error::Job(_) => EXIT_CONFIG,
            Error::Nack { .. } | Error::Refused { .. } | Error::Unsupported(_) => EXIT_NACK,
            Error::Busy(_) => EXIT_BUSY,
            Error::Timeout { .. } => EXIT_TIMEOUT,
            Error::Unreachable { .. } | Error::BadReply(_) | Error::Console(_) => EXIT_COORDINATOR,
            Error::Negative(_) => EXIT_NEGATIVE,
            Error::Local(_) => EXIT_LOCAL,
        }
    }

    /// A `nack` without a reason: what LAVA's coordinator answers to a request it does not
    /// know, so the tools fall back to LAVA's message ids.
    pub fn is_bare_nack(&self) -> bool {
        matches!(self, Error::Nack { error: None, .. })
    }
}

/// Seconds as a short human text: `600 s`, `2.5 s`.
pub fn secs(d: Duration) -> String {
    let text = format!("{:.1}", d.as_secs_f64());
    format!("{} s", text.strip_suffix(".0").unwrap_or(&text))
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(text) => write!(f, "{text}"),
            Error::Config(e) => write!(f, "{e}"),
            Error::Nack {
                request,
                error: Some(error),
            } => write!(f, "coordinator refused `{request}`: {error}"),
            Error::Nack {
                request,
                error: None,
            } => {
                let hint = match *request {
                    "lava_wait_all" => "before any node has sent the message id",
                    _ => "for a group it does not know when no group size is set",
                };
                write!(
                    f,
                    "coordinator refused `{request}` (nack, no reason given; LAVA's \
                     coordinator answers so {hint})"
                )
            }
            Error::Timeout { what, after } => {
                write!(f, "timed out after {} waiting for {what}", secs(*after))
            }
            Error::Unreachable { addr, after, last } => write!(
                f,
                "coordinator at {addr} unreachable for {}: {last}",
                secs(*after)
            ),
            Error::BadReply(text) => write!(f, "unexpected reply from the coordinator: {text}"),
            Error::Negative(text) | Error::Local(text) => write!(f, "{text}"),
            Error::Job(text) => write!(f, "invalid job definition: {text}"),
            Error::Refused { marker } => write!(
                f,
                "the relay refused {marker} (nack; LAVA's nack gives no reason: the coordinator \
                 refused the call, or the relay could not make it)"
            ),
            Error::Console(text) | Error::Busy(text) | Error::Unsupported(text) => {
                write!(f, "{text}")
            }
        }
    }
}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Self {
        Error::Config(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(secs(Duration::from_secs(600)), "600 s");
        assert_eq!(secs(Duration::from_millis(10_004)), "10 s");
        assert_eq!(secs(Duration::from_millis(2_500)), "2.5 s");
    }

    #[test]
    fn only_a_nack_without_reason_is_bare() {
        let bare = Error::Nack {
            request: "roster",
            error: None,
        };
        assert!(bare.is_bare_nack());
        assert_eq!(bare.exit_code(), EXIT_NACK);
        let ours = Error::Nack {
            request: "roster",
            error: Some("no such group".into()),
        };
        assert!(!ours.is_bare_nack());
        assert_eq!(
            ours.to_string(),
            "coordinator refused `roster`: no such group"
        );
    }
}
