//! `lava-send`, `lava-wait`, `lava-wait-all` and `lava-sync`.

use std::io::Write;
use std::path::Path;

use lava_protocol::{Parties, RequestKind};
use serde_json::{Map, Value};

use crate::cache;
use crate::cli::print_lines;
use crate::error::Error;
use crate::link::{in_group, Link};

/// A message id as given: not empty, one line.
pub fn message_id(id: &str) -> Result<&str, Error> {
    if id.is_empty() {
        return Err(Error::Usage("the message ID is empty".into()));
    }
    if id.contains(['\n', '\r']) {
        return Err(Error::Usage(format!(
            "the message ID {id:?} contains a line break"
        )));
    }
    Ok(id)
}

/// `key=value` arguments, split at the first `=`; a repeated key keeps its last value.
/// Values may hold spaces, `=` and any Unicode, but no line break (the received data is
/// line-oriented).
pub fn parse_pairs(args: &[String]) -> Result<Map<String, Value>, Error> {
    let mut out = Map::new();
    for arg in args {
        let Some((key, value)) = arg.split_once('=') else {
            return Err(Error::Usage(format!("{arg:?} is not a key=value pair")));
        };
        if key.is_empty() {
            return Err(Error::Usage(format!("{arg:?} has an empty key")));
        }
        if arg.contains(['\n', '\r']) {
            return Err(Error::Usage(format!(
                "{key}: values cannot contain a line break"
            )));
        }
        out.insert(key.to_owned(), Value::String(value.to_owned()));
    }
    Ok(out)
}

/// Where `lava-send` sends: to everybody (LAVA's), to one member, or into a queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Everybody,
    To(String),
    /// `--queue` (for one member with `--to`).
    Queue(Option<String>),
}

/// The refusal of a coordinator that does not know our extension (LAVA's answers a bare
/// `nack`), or of the console transport, which only carries LAVA's calls.
fn needs_ours(s: &dyn Link, what: &str) -> Option<Error> {
    s.lava_only().then(|| {
        Error::Unsupported(format!(
            "{what} needs our coordinator over TCP: LAVA's console markers cannot carry it \
             (LAVA_MULTINODE_TRANSPORT is console)"
        ))
    })
}

fn not_ours(what: &str, e: Error) -> Error {
    match e.is_bare_nack() {
        true => Error::Unsupported(format!(
            "{what} needs this project's lava-coordinator: the coordinator does not know it \
             (LAVA's own coordinator?)"
        )),
        false => e,
    }
}

pub fn send(
    s: &dyn Link,
    id: &str,
    message: Map<String, Value>,
    to: &Destination,
) -> Result<(), Error> {
    let (id, message) = (id.to_owned(), Value::Object(message));
    let (kind, what) = match to {
        Destination::Everybody => {
            s.call(RequestKind::Send { id, message })?;
            return Ok(());
        }
        Destination::To(to) => (
            RequestKind::SendTo {
                to: to.clone(),
                id,
                message,
            },
            "lava-send --to",
        ),
        Destination::Queue(to) => (
            RequestKind::Enqueue {
                id,
                to: to.clone(),
                message,
            },
            "lava-send --queue",
        ),
    };
    if let Some(e) = needs_ours(s, what) {
        return Err(e);
    }
    s.call(kind).map_err(|e| not_ours(what, e))?;
    Ok(())
}

/// `lava-wait --consume ID`: takes the oldest entry of queue ID this node may take (waiting
/// for one), prints it as `sender:key=value` lines and replaces the cache file with them.
pub fn consume(
    s: &dyn Link,
    cache_path: &Path,
    id: &str,
    out: &mut dyn Write,
) -> Result<(), Error> {
    if let Some(e) = needs_ours(s, "lava-wait --consume") {
        return Err(e);
    }
    cache::remove(cache_path)?;
    let what = format!("an entry of queue {id:?}{}", in_group(s, "of"));
    let reply = s
        .wait(RequestKind::Consume { id: id.to_owned() }, &what)
        .map_err(|e| not_ours("lava-wait --consume", e))?;
    let lines = cache::lines(reply.message.as_ref().unwrap_or(&Value::Null));
    print_lines(out, &lines)?;
    cache::write(cache_path, &lines)
}

/// `lava-wait ID` (`role` = `None`) or `lava-wait-all ID [ROLE]` (`role` = `Some(..)`):
/// prints the received pairs and replaces the cache file with them.
pub fn wait(
    s: &dyn Link,
    cache_path: &Path,
    id: &str,
    role: Option<Option<&str>>,
    out: &mut dyn Write,
) -> Result<(), Error> {
    // No stale data survives a failed wait.
    cache::remove(cache_path)?;
    let (kind, what) = match role {
        None => (
            RequestKind::Wait { id: id.to_owned() },
            format!("message {id:?} from any member{}", in_group(s, "of")),
        ),
        Some(None) => (
            RequestKind::WaitAll {
                id: id.to_owned(),
                role: None,
            },
            format!("message {id:?} from every member{}", in_group(s, "of")),
        ),
        Some(Some(role)) => (
            RequestKind::WaitAll {
                id: id.to_owned(),
                role: Some(role.to_owned()),
            },
            format!(
                "message {id:?} from every member of role {role:?}{}",
                in_group(s, "in")
            ),
        ),
    };
    let reply = s.wait(kind, &what)?;
    let lines = cache::lines(reply.message.as_ref().unwrap_or(&Value::Null));
    print_lines(out, &lines)?;
    cache::write(cache_path, &lines)
}

/// `lava-wait ID1 ID2 ...` (`role` = `None`, the id printed first) or `lava-wait-all ID
/// [ROLE] --any`: waits until any of `ids` has been sent (by a member of `role`), prints
/// the id that was when `print_id`, then the received pairs, and replaces the cache file with
/// the pairs. Only our coordinator knows `wait_any`.
pub fn wait_any(
    s: &dyn Link,
    cache_path: &Path,
    ids: &[&str],
    role: Option<&str>,
    print_id: bool,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let tool = if print_id {
        "lava-wait with several IDs"
    } else {
        "lava-wait-all --any"
    };
    if s.lava_only() {
        return Err(Error::Unsupported(format!(
            "{tool} needs our coordinator over TCP: LAVA's console markers have no any-of wait \
             (LAVA_MULTINODE_TRANSPORT is console)"
        )));
    }
    cache::remove(cache_path)?;
    let names: Vec<String> = ids.iter().map(|id| format!("{id:?}")).collect();
    let what = match role {
        None => format!(
            "any of messages {} from any member{}",
            names.join(", "),
            in_group(s, "of")
        ),
        Some(role) => format!(
            "message {} from any member of role {role:?}{}",
            names.join(", "),
            in_group(s, "in")
        ),
    };
    let kind = RequestKind::WaitAny {
        ids: ids.iter().map(|id| id.to_string()).collect(),
        role: role.map(str::to_owned),
    };
    let reply = s.wait(kind, &what).map_err(|e| match e.is_bare_nack() {
        true => Error::Unsupported(format!(
            "{tool} needs this project's lava-coordinator: the coordinator does not know \
             wait_any (LAVA's own coordinator?)"
        )),
        false => e,
    })?;
    let lines = cache::lines(reply.message.as_ref().unwrap_or(&Value::Null));
    let mut printed = Vec::with_capacity(lines.len() + 1);
    if print_id {
        let id = reply
            .message_id
            .ok_or_else(|| Error::BadReply("`wait_any` answered without its messageID".into()))?;
        printed.push(id);
    }
    printed.extend(lines.iter().cloned());
    print_lines(out, &printed)?;
    cache::write(cache_path, &lines)
}

/// `lava-sync --role ROLE ID` / `lava-sync --count N ID`: a barrier on part of the group.
pub fn barrier(s: &dyn Link, id: &str, parties: Parties) -> Result<(), Error> {
    let tool = match &parties {
        Parties::Role(_) => "lava-sync --role",
        Parties::Count(_) => "lava-sync --count",
    };
    if let Some(e) = needs_ours(s, tool) {
        return Err(e);
    }
    let what = match &parties {
        Parties::Role(role) => format!(
            "every member of role {role:?}{} at {id:?}",
            in_group(s, "in")
        ),
        Parties::Count(n) => format!("{n} members{} at {id:?}", in_group(s, "of")),
    };
    s.wait(
        RequestKind::Barrier {
            id: id.to_owned(),
            parties,
        },
        &what,
    )
    .map_err(|e| not_ours(tool, e))?;
    Ok(())
}

pub fn sync(s: &dyn Link, id: &str) -> Result<(), Error> {
    s.wait(
        RequestKind::Sync {
            id: id.to_owned(),
            message: Value::Null,
        },
        &format!("every member{} to sync on {id:?}", in_group(s, "of")),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pairs(args: &[&str]) -> Result<Value, Error> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        parse_pairs(&args).map(Value::Object)
    }

    #[test]
    fn pairs_split_at_the_first_equals() {
        assert_eq!(
            pairs(&[
                "ip=10.0.0.1",
                "cmd=a=b c",
                "empty=",
                "uni=ünï ✓",
                "ip=10.0.0.2"
            ])
            .unwrap(),
            json!({"ip": "10.0.0.2", "cmd": "a=b c", "empty": "", "uni": "ünï ✓"})
        );
        assert_eq!(pairs(&[]).unwrap(), json!({}));
    }

    #[test]
    fn bad_pairs_are_usage_errors() {
        for bad in [&["novalue"][..], &["=v"], &["k=a\nb"], &["k=a\rb"]] {
            assert!(matches!(pairs(bad), Err(Error::Usage(_))), "{bad:?}");
        }
        assert!(matches!(message_id(""), Err(Error::Usage(_))));
        assert!(matches!(message_id("a\nb"), Err(Error::Usage(_))));
        assert_eq!(message_id("ready-1").unwrap(), "ready-1");
    }
}
