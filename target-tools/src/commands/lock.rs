//! `lava-lock NAME` and `lava-unlock NAME`: a place in a named lock of the group (or, with
//! `--lab`, of the lab). Only our coordinator has locks, and only over TCP.

use std::io::Write;

use lava_protocol::{LockScope, Reply, RequestKind};
use serde_json::Value;

use crate::cli::print_lines;
use crate::error::Error;
use crate::link::in_group;
use crate::wait::Session;

/// What a lock command asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    pub count: u32,
    pub scope: LockScope,
    /// `--try`: answer at once, busy or not.
    pub try_once: bool,
}

/// A lock name as given: not empty, one line.
pub fn lock_name(name: &str) -> Result<&str, Error> {
    if name.is_empty() {
        return Err(Error::Usage("the lock name is empty".into()));
    }
    if name.contains(['\n', '\r']) {
        return Err(Error::Usage(format!(
            "the lock name {name:?} contains a line break"
        )));
    }
    Ok(name)
}

/// `--count N`: a whole number from 1.
pub fn count(value: Option<&str>) -> Result<u32, Error> {
    match value {
        None => Ok(1),
        Some(text) => match text.trim().parse::<u32>() {
            Ok(n) if n >= 1 => Ok(n),
            _ => Err(Error::Usage(format!(
                "--count {text:?}: expected a whole number from 1"
            ))),
        },
    }
}

/// The refusal of a coordinator that does not know locks (LAVA's answers a bare `nack`).
fn needs_ours(tool: &str, e: Error) -> Error {
    if e.is_bare_nack() {
        Error::Unsupported(format!(
            "{tool} needs this project's lava-coordinator: the coordinator does not know \
             locks (LAVA's own coordinator?)"
        ))
    } else {
        e
    }
}

/// One line: `key=value` (line breaks in the value become spaces).
fn pair(key: &str, value: &str) -> String {
    format!("{key}={}", value.replace(['\n', '\r'], " "))
}

/// What `lava-lock` prints: the lock, its holders, and when this node got a place somebody
/// gave back, whose and why.
pub fn lines(message: &Value) -> Vec<String> {
    let text = |key: &str| message.get(key).and_then(Value::as_str).unwrap_or_default();
    let holders: Vec<&str> = message
        .get("holders")
        .and_then(Value::as_array)
        .map(|h| h.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut out = vec![
        pair("lock", text("lock")),
        pair("holders", &holders.join(",")),
    ];
    if message.get("freed_by").is_some() {
        out.push(pair("freed_by", text("freed_by")));
        out.push(pair("freed_because", text("freed_because")));
    }
    out
}

/// `lock "NAME" of group "G"`, or `lab-wide lock "NAME"`.
fn lock_words(name: &str, scope: LockScope, s: &Session) -> String {
    match scope {
        LockScope::Group => format!("lock {name:?}{}", in_group(s, "of")),
        LockScope::Lab => format!("lab-wide lock {name:?}"),
    }
}

pub fn lock(s: &Session, name: &str, options: Options, out: &mut dyn Write) -> Result<(), Error> {
    let kind = RequestKind::Lock {
        name: name.to_owned(),
        count: options.count,
        scope: options.scope,
    };
    let reply: Reply = if options.try_once {
        let reply = s.ask_once(kind).map_err(|e| needs_ours("lava-lock", e))?;
        if reply.is_wait() {
            return Err(Error::Busy(format!(
                "{} has no free place",
                lock_words(name, options.scope, s)
            )));
        }
        reply
    } else {
        let what = format!("a place in {}", lock_words(name, options.scope, s));
        s.wait(kind, &what)
            .map_err(|e| needs_ours("lava-lock", e))?
    };
    let message = reply.message.unwrap_or(Value::Null);
    print_lines(out, &lines(&message))
}

pub fn unlock(s: &Session, name: &str, scope: LockScope) -> Result<(), Error> {
    s.call(RequestKind::Unlock {
        name: name.to_owned(),
        scope,
    })
    .map_err(|e| needs_ours("lava-unlock", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_lock_is_printed_one_pair_a_line() {
        let plain = json!({"lock": "dut", "scope": "group", "count": 2, "holders": ["a", "b"]});
        assert_eq!(lines(&plain), ["lock=dut", "holders=a,b"]);
        let handed = json!({"lock": "dut", "holders": ["b"], "freed_by": "a",
                            "freed_because": "\"a\" failed: disk\nfull"});
        assert_eq!(
            lines(&handed),
            [
                "lock=dut",
                "holders=b",
                "freed_by=a",
                "freed_because=\"a\" failed: disk full"
            ]
        );
    }

    #[test]
    fn bad_names_and_counts_are_usage_errors() {
        assert!(matches!(lock_name(""), Err(Error::Usage(_))));
        assert!(matches!(lock_name("a\nb"), Err(Error::Usage(_))));
        assert_eq!(count(None).unwrap(), 1);
        assert_eq!(count(Some("3")).unwrap(), 3);
        for bad in ["0", "-1", "two", ""] {
            assert!(matches!(count(Some(bad)), Err(Error::Usage(_))), "{bad}");
        }
    }
}
